"""`relay serve --workers N` (issue #17 item 5): uvicorn's worker processes on one port,
one shared Redis; tasks and streams work whichever worker a request lands on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import create, wait_status
from tests.servers import AppProcess, free_port, relay_env
from tests.sse import iter_events
from tests.waiting import until


def children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


@pytest.mark.timeout(90)
async def test_two_workers_share_one_redis(redis_url: str, sim: str, tmp_path: Path, client: httpx.AsyncClient) -> None:
    proc = AppProcess(["serve", "--workers", "2"], {}, ready_path="/healthz", log_path=tmp_path / "workers.log")
    proc.env = relay_env(redis_url=redis_url, sim_url=sim, public_url=proc.url, RELAY_MIRROR="off")
    proc.start()
    try:
        assert proc.proc is not None

        async def two_workers() -> bool:
            return len(children(proc.proc.pid)) >= 2  # type: ignore[union-attr]

        await until(two_workers, timeout=20, what="two worker processes")
        tasks = [await create(client, proc.url, f"worker {n}") for n in range(6)]
        async with httpx.AsyncClient(timeout=20) as streams, streams.stream("GET", tasks[0]["eventsUrl"]) as response:
            assert response.status_code == 200
            for task in tasks:
                (await client.post(f"{sim}/sim/tasks/{task['taskId']}/complete")).raise_for_status()
            statuses = [e.json()["status"] async for e in iter_events(response) if e.event == "task"]
        assert statuses[-1] == "completed", "the stream's worker heard a change another worker may have stored"
        for task in tasks:
            await wait_status(client, task["statusUrl"], "completed")
    finally:
        proc.stop()


def test_workers_need_a_shared_store(sim: str, tmp_path: Path) -> None:
    env = {**os.environ, **relay_env(redis_url="memory://", sim_url=sim, public_url="http://127.0.0.1:9")}
    done = subprocess.run(
        [sys.executable, "-m", "relay.cli", "serve", "--workers", "2", "--host", "127.0.0.1", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 2 and "--workers needs a shared store" in done.stderr
