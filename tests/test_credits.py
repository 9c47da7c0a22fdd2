"""Users with credits (issue #14) and cancel: a create reserves the model's price before
the provider is paid, a failure, timeout or cancel refunds it once, a success settles it;
whatever arrives twice, late, out of order or across a Redis restart, the ledger holds."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt as pyjwt
import pytest

from tests.conftest import StartRelay
from tests.helpers import run_cli, sim_task_ids, wait_status
from tests.servers import AppProcess, RedisServer
from tests.waiting import until

JWT_SECRET = "jwt-secret-for-credit-tests-0123456789abcdefgh"
TERMINAL = ("completed", "failed", "cancelled")


def bearer(user: str) -> dict[str, str]:
    token = pyjwt.encode({"sub": user, "exp": int(time.time()) + 3600}, JWT_SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def credit_env(**extra: str) -> dict[str, str]:
    return {
        "RELAY_AUTH": "jwt", "RELAY_JWT_SECRET": JWT_SECRET, "RELAY_CREDITS": "on", "RELAY_DEFAULT_PRICE": "3",
        "RELAY_RATE_CREATE": "100000", "RELAY_MIRROR": "off", **extra,
    }


async def me(client: httpx.AsyncClient, relay: AppProcess, user: str) -> dict[str, Any]:
    answer = await client.get(f"{relay.url}/api/me", params={"limit": 100}, headers=bearer(user))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_cancel_is_final_and_refunds_once(
    start_relay: StartRelay, backend: str, sim: str, client: httpx.AsyncClient
) -> None:
    # Welcome credits: the only way to give a memory:// instance's users a balance.
    relay = start_relay(backend, **credit_env(RELAY_WELCOME_CREDITS="10"))
    user = "carol"
    if backend == "memory://":
        # An operator command on memory:// would change a ledger that dies with it.
        refused = await run_cli(relay.env, "credits", "grant", user, "5")
        assert "memory:// is this process only" in refused, refused
    task = (await client.post(f"{relay.url}/api/tasks", json={"prompt": "stop me"}, headers=bearer(user))).json()
    assert task["cost"] == 3 and (await me(client, relay, user))["balance"] == 7
    cancel = f"{relay.url}/api/tasks/{task['taskId']}/cancel"
    answer = await client.post(cancel, headers=bearer(user))
    assert answer.status_code == 200, answer.text
    cancelled = answer.json()
    assert cancelled["status"] == "cancelled" and cancelled["error"]["code"] == "cancelled"
    assert (await me(client, relay, user))["balance"] == 10, "the reservation came back"
    # Another user cannot cancel it (it is not theirs), and a callback after cancel changes nothing.
    assert (await client.post(cancel, headers=bearer("mallory"))).status_code == 404
    (await client.post(f"{sim}/sim/tasks/{task['taskId']}/complete")).raise_for_status()
    again = await client.post(cancel, headers=bearer(user))
    assert again.status_code == 200 and again.json()["version"] == cancelled["version"]
    read = (await client.get(f"{relay.url}/api/tasks/{task['taskId']}", headers=bearer(user))).json()
    assert read["status"] == "cancelled" and read["version"] == cancelled["version"]
    account = await me(client, relay, user)
    assert account["balance"] == 10
    assert [e["reason"] for e in reversed(account["ledger"])] == ["welcome credits", "reserve", "task cancelled"]
    # A finished task cannot be cancelled.
    done = (await client.post(f"{relay.url}/api/tasks", json={"prompt": "finish me"}, headers=bearer(user))).json()
    (await client.post(f"{sim}/sim/tasks/{done['taskId']}/complete")).raise_for_status()
    await wait_status(client, f"{relay.url}/api/tasks/{done['taskId']}", "completed", headers=bearer(user))
    late = await client.post(f"{relay.url}/api/tasks/{done['taskId']}/cancel", headers=bearer(user))
    assert late.status_code == 409 and late.json()["error"]["code"] == "already_finished"
    assert (await me(client, relay, user))["balance"] == 7, "a completed task is charged"


async def test_short_balance_is_402_before_the_provider(
    start_relay: StartRelay, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay("memory://", **credit_env())
    answer = await client.post(f"{relay.url}/api/tasks", json={"prompt": "free?"}, headers=bearer("dave"))
    assert answer.status_code == 402
    assert answer.json()["error"] == {
        "code": "insufficient_credits", "message": "this generation costs 3 credits; the balance is 0",
        "balance": 0, "price": 3,
    }
    assert sim_task_ids(sim) == [], "the provider was never called"


@pytest.mark.timeout(120)
async def test_the_ledger_holds_across_instances_failures_and_a_redis_restart(
    start_relay: StartRelay, private_redis: RedisServer, sim: str, client: httpx.AsyncClient
) -> None:
    """A balance for exactly 10 generations; 50 concurrent creates on two instances; the
    simulator fails 30% of tasks and sends duplicate and out-of-order callbacks; Redis is
    restarted in the middle. Exactly 10 are accepted, and at the end the balance is
    start - price x completed and the ledger sums to it."""
    price, user = 3, "erin"
    env = credit_env(RELAY_RECONCILE_AFTER="1", RELAY_RECONCILE_INTERVAL="0.5")
    first = start_relay(private_redis.url, **env)
    second = start_relay(private_redis.url, **env)
    start = 10 * price
    granted = await run_cli(first.env, "credits", "grant", user, str(start))
    assert f"balance {start}" in granted, granted
    await client.patch(
        f"{sim}/sim/config",
        json={"callback_delay": 1.0, "failure_rate": 0.3, "duplicate_callbacks": 2, "out_of_order": True},
    )

    async def attempt(n: int) -> httpx.Response:
        relay = first if n % 2 else second
        return await client.post(f"{relay.url}/api/tasks", json={"prompt": f"ledger {n}"}, headers=bearer(user))

    answers = await asyncio.gather(*(attempt(n) for n in range(50)))
    accepted = [a.json() for a in answers if a.status_code == 202]
    refused = [a for a in answers if a.status_code == 402]
    assert len(accepted) == 10 and len(refused) == 40, [a.status_code for a in answers]
    assert all(r.json()["error"]["code"] == "insufficient_credits" for r in refused)
    assert len(sim_task_ids(sim)) == 10, "refused creates never reached the provider"
    private_redis.restart()

    async def all_terminal() -> list[dict[str, Any]] | None:
        finals = []
        for task in accepted:
            try:
                answer = await client.get(f"{second.url}/api/tasks/{task['taskId']}", headers=bearer(user))
            except httpx.HTTPError:
                return None
            if answer.status_code != 200 or answer.json()["status"] not in TERMINAL:
                return None
            finals.append(answer.json())
        return finals

    finals = await until(all_terminal, timeout=60, what="every accepted task terminal", interval=0.5)
    completed = sum(1 for f in finals if f["status"] == "completed")

    async def settled() -> dict[str, Any] | None:
        account = await me(client, second, user)
        # Every hold finished: one reserve and one settle-or-refund entry per task.
        return account if len(account["ledger"]) == 1 + 2 * len(accepted) else None

    account = await until(settled, timeout=30, what="every hold settled or refunded")
    assert account["balance"] == start - price * completed, (account["balance"], completed)
    assert sum(e["delta"] for e in account["ledger"]) == account["balance"]
    by_hold: dict[str, list[str]] = {}
    for entry in account["ledger"]:
        if entry["hold"]:
            by_hold.setdefault(entry["hold"], []).append(entry["reason"])
    assert len(by_hold) == 10 and all(len(reasons) == 2 for reasons in by_hold.values()), by_hold
    print(f"\n50 creates: 10 accepted, {completed} completed, balance {start} -> {account['balance']}")
