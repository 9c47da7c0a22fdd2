"""Concurrent write scripts share one round trip (relay/backends/redis_batch.py), on a real
Redis: each stays its own atomic compare-and-set, each caller gets its own answer, a script
Redis forgot is loaded again, and a cancelled leader still sends its followers' calls."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from relay import keys
from relay.backends.redis import RedisStore
from relay.backends.redis_batch import ScriptBatcher
from relay.backends.redis_clients import command_client
from relay.backends.redis_hub import RedisHub
from relay.models import Mode, Status, Task, utcnow
from tests.servers import RedisServer
from tests.waiting import until


@pytest.fixture(params=["redis", "cluster"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[aioredis.Redis | RedisCluster]:
    url: str = request.getfixturevalue("cluster_url" if request.param == "cluster" else "redis_url")
    client = command_client(url, max_connections=20)
    try:
        yield client
    finally:
        await client.aclose()


def store_on(client: aioredis.Redis | RedisCluster) -> RedisStore:
    return RedisStore(client, ttl=600, keyspace=keys.Keyspace(cluster=isinstance(client, RedisCluster)))


def task(task_id: str) -> Task:
    now = utcnow()
    return Task(task_id, "kie", "m", Mode.TEXT_TO_IMAGE, Status.PENDING, "p", (), now, now)


async def test_racing_writes_are_batched_and_each_stays_atomic(
    client: aioredis.Redis | RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_on(client)
    tasks = [task(f"batch{i:03d}") for i in range(40)]
    assert all(await asyncio.gather(*(store.insert(t) for t in tasks)))
    pipelines = 0
    original = client.pipeline

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal pipelines
        pipelines += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(client, "pipeline", counted)
    # Ten writers race for each task's version 2: exactly one may win per task.
    racers = [store.replace(replace(t, version=2, progress=n / 10), expected_version=1) for t in tasks for n in range(10)]
    won = await asyncio.gather(*racers)
    assert sum(won) == len(tasks)
    assert pipelines <= len(racers) // 8, f"{len(racers)} scripts in {pipelines} round trips"
    for t in tasks:
        stored = await store.get(t.task_id)
        assert stored is not None and stored.version == 2


async def test_a_script_redis_forgot_is_loaded_again(client: aioredis.Redis | RedisCluster) -> None:
    store = store_on(client)
    assert await store.insert(task("forgot1"))
    await client.script_flush()
    assert await store.replace(replace(task("forgot1"), version=2), expected_version=1)
    assert not await store.replace(replace(task("forgot1"), version=3), expected_version=1)


async def test_a_cancelled_leader_still_sends_its_followers(client: aioredis.Redis | RedisCluster) -> None:
    store = store_on(client)
    leader = asyncio.create_task(store.insert(task("lead0001")))
    followers = [asyncio.create_task(store.insert(task(f"follow{i:02d}"))) for i in range(5)]
    await asyncio.sleep(0)  # every call is queued; the leader yields once before sending
    leader.cancel()
    assert await asyncio.wait_for(asyncio.gather(*followers), 5) == [True] * 5
    with pytest.raises(asyncio.CancelledError):
        await leader


async def test_a_redis_that_stops_answering_is_an_outage_within_the_deadline(
    private_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The command client has no socket timeout; each operation has a deadline of its own.
    # A frozen Redis (SIGSTOP: connections stay open, nothing answers) must turn every
    # kind of operation into StoreUnavailable in time, including the followers of a
    # batched write, which must get an error rather than a cancellation.
    from relay.backends import channel_hub, redis_batch
    from relay.backends import redis as redis_backend

    for module in (redis_backend, redis_batch, channel_hub):
        monkeypatch.setattr(module, "COMMAND_TIMEOUT", 0.5)
    client = command_client(private_redis.url, max_connections=20)
    assert isinstance(client, aioredis.Redis)
    store = RedisStore(client, ttl=600)
    hub = RedisHub(private_redis.url, client)
    tasks = [task(f"frozen{i}") for i in range(8)]
    try:
        assert all(await asyncio.gather(*(store.insert(t) for t in tasks)))
        assert private_redis.proc is not None
        pid = private_redis.proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            # A leader cancelled mid-batch (its request went away): its followers fail
            # at once, as an outage, and are not cancelled with it.
            leader = asyncio.ensure_future(store.replace(replace(tasks[0], version=2), expected_version=1))
            followers = [
                asyncio.ensure_future(store.replace(replace(t, version=2), expected_version=1)) for t in tasks[1:4]
            ]
            await asyncio.sleep(0)  # one turn: all four queue their scripts

            async def sent() -> bool:
                return not store._batch._queue  # the leader took the batch to Redis

            await until(sent, timeout=2, what="the batch in flight", interval=0.01)
            leader.cancel()
            started = time.monotonic()
            cut_off = await asyncio.gather(*followers, return_exceptions=True)
            assert [type(o).__name__ for o in cut_off] == ["StoreUnavailable"] * 3, cut_off
            assert time.monotonic() - started < 0.3
            assert leader.cancelled()

            started = time.monotonic()
            outcomes = await asyncio.gather(
                store.get(tasks[0].task_id),
                *(store.replace(replace(t, version=2, progress=0.5), expected_version=1) for t in tasks),
                hub.publish(tasks[0]),
                return_exceptions=True,
            )
            took = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        assert [type(o).__name__ for o in outcomes] == ["StoreUnavailable"] * len(outcomes), outcomes
        assert took < 3, took
        # Back: the connections cut off mid-command were dropped, not reused half-read.
        moved = [replace(t, version=2, progress=0.75) for t in tasks]
        await asyncio.gather(*(store.replace(t, expected_version=1) for t in moved))
        for t in tasks:
            got = await store.get(t.task_id)
            assert got is not None and got.version == 2, got
        await hub.publish(tasks[0])
    finally:
        await hub.aclose()
        await client.aclose()


async def test_a_batch_cut_off_mid_way_leaves_no_reply_for_the_next_caller(redis_url: str) -> None:
    # One connection in the pool, so the next batch would get the same socket: had the
    # cut-off batch's late replies stayed unread, they would answer the next commands.
    client = command_client(redis_url, max_connections=1)
    assert isinstance(client, aioredis.Redis)
    try:
        await client.set("cutoff:k", "mine")
        batcher = ScriptBatcher(client)
        slow = asyncio.ensure_future(
            batcher._round_trip([("BLPOP", "cutoff:empty", 1), ("SET", "cutoff:k", "theirs")])
        )

        async def sent() -> bool:
            return bool(client.connection_pool._in_use_connections)

        await until(sent, timeout=5, what="the batch on its connection")
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        got = await batcher._round_trip([("GET", "cutoff:k"), ("GET", "cutoff:missing")])
        assert got == [b"mine", None]
        # And an error reply in a batch answers its own command only.
        got = await batcher._round_trip([("INCR", "cutoff:k"), ("GET", "cutoff:k")])
        assert isinstance(got[0], ResponseError) and got[1] == b"mine"
    finally:
        await client.delete("cutoff:k")
        await client.aclose()
