"""Concurrent write scripts share one round trip (relay/backends/redis_batch.py), on a real
Redis: each stays its own atomic compare-and-set, each caller gets its own answer, a script
Redis forgot is loaded again, and a cancelled leader still sends its followers' calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from relay import keys
from relay.backends.redis import RedisStore
from relay.backends.redis_clients import command_client
from relay.models import Mode, Status, Task, utcnow


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
