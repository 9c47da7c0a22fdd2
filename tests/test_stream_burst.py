"""Issue #12 item 6, the bench's "final state lost": a burst of streams opening while
Redis stalls for a moment used up the command pool, and redis-py's default pool refuses
at once ("Too many connections"), so streams on a healthy store got 503 (and EventSource
never retries a 503). The pool now waits for a free connection. Reproduced here with a
tiny pool and a real Redis paused by CLIENT PAUSE."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import StartRelay
from tests.helpers import create
from tests.servers import RedisServer
from tests.sse import iter_events
from tests.waiting import until

STREAMS = 40


async def test_a_burst_of_streams_while_redis_pauses_gets_every_final_state(
    start_relay: StartRelay, private_redis: RedisServer, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay(
        private_redis.url, RELAY_REDIS_MAX_CONNECTIONS="4", RELAY_MAX_STREAMS_PER_CLIENT="100",
        RELAY_MIRROR="off",
    )
    task = await create(client, relay.url)
    opened: list[int] = []
    finals: list[dict[str, Any]] = []

    async def follow(stream_client: httpx.AsyncClient) -> None:
        async with stream_client.stream("GET", task["eventsUrl"]) as response:
            opened.append(response.status_code)
            if response.status_code != 200:
                return
            async for event in iter_events(response):
                if event.event == "task" and event.json()["status"] == "completed":
                    finals.append(event.json())
            # The loop ends when the server ends the stream after the terminal event.

    redis = private_redis.client()
    try:
        redis.client_pause(800, all=True)
    finally:
        redis.close()
    async with httpx.AsyncClient(timeout=20, limits=httpx.Limits(max_connections=STREAMS + 5)) as streams:
        followers = [asyncio.create_task(follow(streams)) for _ in range(STREAMS)]

        async def all_open() -> bool:
            return len(opened) == STREAMS

        await until(all_open, timeout=15, what="every stream answered")
        assert opened == [200] * STREAMS, "a busy pool must make a stream wait, not refuse it"
        (await client.post(f"{sim}/sim/tasks/{task['taskId']}/complete")).raise_for_status()
        await asyncio.wait_for(asyncio.gather(*followers), 15)
    assert len(finals) == STREAMS, "every stream got the final state and was ended by the server"
