"""Redis restarted without persistence: every task record is gone. Reads rebuild tasks
from task metadata in storage (terminal ones) or from the provider's copy of the create
request; what nothing knows any more is a clean 404; open streams never hang."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from relay import auth
from tests.conftest import StartRelay
from tests.helpers import create, wait_status
from tests.servers import SECRET, RedisServer
from tests.sse import Stream


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", appendonly=False).start()
    yield server
    server.stop()


async def test_lost_records_are_rebuilt_or_reported_missing(
    start_relay: StartRelay, volatile_redis: RedisServer, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay(volatile_redis.url)
    finished = await create(client, relay.url, "finished before the crash")
    (await client.post(f"{sim}/sim/tasks/{finished['taskId']}/complete")).raise_for_status()
    before = await wait_status(client, finished["statusUrl"], "completed")
    running = await create(client, relay.url, "running during the crash")

    async with Stream(client, running["eventsUrl"]) as stream:
        assert (await stream.next()).json()["status"] == "pending"
        # A key Relay never writes: its absence shows the restart lost everything, whatever
        # Relay writes again once it reconnects (counting keys raced with that).
        volatile_redis.client().set("tests:canary", 1)
        volatile_redis.restart()  # SIGKILL; no AOF, no snapshot: Redis comes back empty
        assert volatile_redis.client().exists("tests:canary") == 0
        # The stream re-syncs after the reconnect, rebuilds the task from the provider and
        # keeps going; the completion callback then lands on the rebuilt record.
        delivery = {"status": None}
        async with asyncio.timeout(20):
            while delivery["status"] != 200:
                await asyncio.sleep(0.2)
                response = await client.post(f"{sim}/sim/tasks/{running['taskId']}/complete")
                if response.status_code == 409:  # already finished: deliver it again
                    response = await client.post(f"{sim}/sim/tasks/{running['taskId']}/resend")
                delivery = response.json()
        events = await stream.until_status("completed", timeout=20)
    assert events[-1].json()["prompt"] == "running during the crash"

    # The finished task comes back from its metadata in storage, exactly as it was.
    after = (await client.get(finished["statusUrl"])).json()
    assert after == before

    # A task nobody knows (valid token, no record, no metadata, unknown to KIE): 404, never 500.
    ghost = "ghost0123456789"
    token = auth.task_token(SECRET, ghost, 60)
    missing = await client.get(f"{relay.url}/api/tasks/{ghost}", params={"token": token})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "task_not_found"
    stream_missing = await client.get(f"{relay.url}/api/tasks/{ghost}/events", params={"token": token})
    assert stream_missing.status_code == 404
