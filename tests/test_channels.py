"""#18 item 1: an instance receives only the changes its own streams watch. Every task has
its own channel; an instance subscribes when its first stream for a task opens and
unsubscribes when the last one closes. Real `relay serve` instances on one real Redis, and
on a real three-master Redis Cluster (sharded channels, a subscription per node)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from relay import keys
from tests.cluster import RedisCluster
from tests.conftest import StartRelay
from tests.helpers import create, metric
from tests.servers import RedisServer
from tests.sse import iter_events
from tests.waiting import until


def task_channels(redis: RedisServer) -> list[str]:
    client = redis.client()
    try:
        return sorted(c.decode() if isinstance(c, bytes) else c for c in client.pubsub_channels("relay:events:*"))
    finally:
        client.close()


def shard_channels(cluster: RedisCluster) -> list[str]:
    """Every shard channel subscribed on any node (PUBSUB SHARDCHANNELS is per node)."""
    found: list[str] = []
    for port in cluster.ports:
        with cluster.client(port) as node:
            found += [c.decode() for c in node.execute_command("PUBSUB", "SHARDCHANNELS", "relay:*")]
    return sorted(found)


@dataclass
class Bus:
    url: str
    subscribed: Callable[[], list[str]]  # the task and owner channels Redis has subscribers for
    channel: Callable[[str], str]  # a task's channel


@pytest.fixture(params=["redis", "cluster"])
def bus(request: pytest.FixtureRequest) -> Bus:
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return Bus(request.getfixturevalue("cluster_url"), lambda: shard_channels(cluster),
                   keys.Keyspace(cluster=True).channel)
    server: RedisServer = request.getfixturevalue("redis_server")
    return Bus(request.getfixturevalue("redis_url"), lambda: task_channels(server), keys.events_channel)


async def follow_to_the_end(client: httpx.AsyncClient, url: str) -> list[str]:
    statuses = []
    async with client.stream("GET", url) as response:
        assert response.status_code == 200
        async for event in iter_events(response):
            if event.event == "task":
                statuses.append(event.json()["status"])
    return statuses


async def test_an_instance_with_no_streams_receives_nothing(
    start_relay: StartRelay, bus: Bus, sim: str, client: httpx.AsyncClient
) -> None:
    a = start_relay(bus.url, RELAY_MIRROR="off")
    b = start_relay(bus.url, RELAY_MIRROR="off")
    tasks = [await create(client, a.url, prompt=f"fox {i}") for i in range(10)]
    watched = tasks[:4]
    async with httpx.AsyncClient(timeout=20) as streams:
        followers = [asyncio.create_task(follow_to_the_end(streams, t["eventsUrl"])) for t in watched]

        async def subscribed() -> bool:
            return len(bus.subscribed()) == len(watched)

        await until(subscribed, timeout=10, what="a channel per watched task")
        assert bus.subscribed() == sorted(bus.channel(t["taskId"]) for t in watched)
        for task in tasks:
            (await client.post(f"{sim}/sim/tasks/{task['taskId']}/complete")).raise_for_status()
        seen = await asyncio.wait_for(asyncio.gather(*followers), 20)
    assert all(s[-1] == "completed" for s in seen)
    received_a = await metric(client, a.url, "relay_hub_messages_total")
    # A heard the watched tasks' changes (at least the completions), none of the other six.
    assert len(watched) <= received_a <= 2 * len(watched), received_a
    assert await metric(client, b.url, "relay_hub_messages_total") == 0, "B watches nothing, so it hears nothing"

    async def dropped() -> bool:
        return bus.subscribed() == []

    await until(dropped, timeout=5, what="the channels dropped once their streams ended")


async def test_stream_churn_leaves_no_subscription_and_resubscribes(
    start_relay: StartRelay, bus: Bus, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay(bus.url, RELAY_MIRROR="off", RELAY_MAX_STREAMS_PER_CLIENT="200")
    tasks = [await create(client, relay.url, prompt=f"owl {i}") for i in range(30)]
    async with httpx.AsyncClient(timeout=20, limits=httpx.Limits(max_connections=100)) as streams:
        for _ in range(3):  # open every stream, read its snapshot, walk away
            async def glance(task: dict[str, object]) -> None:
                async with streams.stream("GET", str(task["eventsUrl"])) as response:
                    assert response.status_code == 200
                    async for event in iter_events(response):
                        if event.event == "task":
                            return

            await asyncio.gather(*(glance(t) for t in tasks))

        async def dropped() -> bool:
            return bus.subscribed() == []

        await until(dropped, timeout=10, what="every channel dropped after its streams closed")
        assert await metric(client, relay.url, "relay_hub_channels") == 0
        # A task whose channel was dropped is watched again by the next stream.
        follower = asyncio.create_task(follow_to_the_end(streams, str(tasks[0]["eventsUrl"])))

        async def subscribed() -> bool:
            return bus.subscribed() == [bus.channel(str(tasks[0]["taskId"]))]

        await until(subscribed, timeout=10, what="the channel subscribed again")
        (await client.post(f"{sim}/sim/tasks/{tasks[0]['taskId']}/complete")).raise_for_status()
        assert (await asyncio.wait_for(follower, 15))[-1] == "completed"
