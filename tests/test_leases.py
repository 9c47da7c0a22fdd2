"""Leases belong to a live owner: an instance killed while copying results frees its
tasks within seconds, and the deadline wins over any lease. Two `relay serve` instances
on one real redis-server, the simulator as a slow result host, SIGKILL."""

from __future__ import annotations

import signal
from datetime import datetime
from typing import Any

import httpx

from tests.conftest import StartRelay
from tests.waiting import until

TASKS = 40
DEADLINE = 20.0
INTERVAL = 0.5


async def test_killed_instance_frees_its_copies(
    start_relay: StartRelay, redis_url: str, sim: str, client: httpx.AsyncClient
) -> None:
    env = {
        "RELAY_TASK_DEADLINE": str(DEADLINE), "RELAY_RECONCILE_AFTER": "1",
        "RELAY_RECONCILE_INTERVAL": str(INTERVAL), "RELAY_RATE_CREATE": "1000",
    }
    victim = start_relay(redis_url, **env)
    survivor = start_relay(redis_url, **env)
    # Results take 60 s to download: the victim's copies are in flight when it dies.
    await client.patch(f"{sim}/sim/config", json={"callback_delay": 0.2, "file_delay": 60})
    tasks = []
    for n in range(TASKS):
        answer = await client.post(f"{victim.url}/api/tasks", json={"prompt": f"slow {n}"})
        assert answer.status_code == 202, answer.text
        tasks.append(answer.json())

    async def all_processing() -> bool:
        states = [(await client.get(t["statusUrl"])).json() for t in tasks]
        return all(s["status"] == "processing" and s["providerResultUrls"] for s in states)

    await until(all_processing, timeout=15, what="every task generated and being copied")
    victim.stop(signal.SIGKILL)
    await client.patch(f"{sim}/sim/config", json={"file_delay": 0})

    async def all_terminal() -> list[dict[str, Any]] | None:
        states = [(await client.get(t["statusUrl"].replace(victim.url, survivor.url))).json() for t in tasks]
        return states if all(s["status"] in ("completed", "failed") for s in states) else None

    finals = await until(all_terminal, timeout=DEADLINE + 10, what="every task terminal on the survivor")
    for final in finals:
        created = datetime.fromisoformat(str(final["createdAt"]).replace("Z", "+00:00")).timestamp()
        ended = datetime.fromisoformat(str(final["completedAt"]).replace("Z", "+00:00")).timestamp()
        assert ended - created <= DEADLINE + 2 * INTERVAL + 1, final
        assert final["status"] == "completed"
    # The survivor copied what the victim could not: our URLs, not the provider's.
    assert all("/files/generated/" in str(f["resultUrls"][0]) for f in finals)
