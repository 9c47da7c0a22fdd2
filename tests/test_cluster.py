"""#18 item 3: Relay on a Redis Cluster (`redis+cluster://`). A real three-master cluster on
loopback (tests/cluster.py); real `relay serve` instances and the KIE simulator.

Each task's keys, index entries, channel and webhook messages carry its shard's hash tag
(`keys.Keyspace`), so each write is one atomic script on one node; the indexes are per
shard and merged on read; changes go out by sharded pub/sub."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster as ClusterClient

from relay import keys
from relay.backends.redis import RedisStore
from relay.backends.redis_clients import command_client
from relay.models import Mode, Status, Task
from tests.cluster import RedisCluster
from tests.conftest import StartRelay
from tests.helpers import assert_strictly_increasing, create, metric, sim_task, versions
from tests.sse import EventSource, iter_events
from tests.test_faults import deliver, progress_payload
from tests.waiting import until

CLUSTER = keys.Keyspace(cluster=True)


async def follow(client: httpx.AsyncClient, url: str, *, until_status: str = "completed") -> list[dict[str, Any]]:
    """Every `task` event of one stream, until the status given (or the stream ends)."""
    seen: list[dict[str, Any]] = []
    async with client.stream("GET", url) as response:
        assert response.status_code == 200, response.status_code
        async for event in iter_events(response):
            if event.event == "task":
                seen.append(event.json())
                if seen[-1]["status"] == until_status:
                    break
    return seen


def shards_of(task_ids: list[str]) -> set[str]:
    return {CLUSTER.tag(t) for t in task_ids}


async def test_tasks_in_every_shard_stream_to_completion(
    start_relay: StartRelay, cluster_url: str, redis_cluster: RedisCluster, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay(cluster_url, RELAY_MIRROR="off", RELAY_AUTH="none")
    tasks = [await create(client, relay.url, prompt=f"heron {i}") for i in range(24)]
    ids = [t["taskId"] for t in tasks]
    # Spread over shards, and so over the three nodes.
    nodes = {redis_cluster.node_for_key(CLUSTER.task(t)) for t in ids}
    assert len(shards_of(ids)) >= 6 and len(nodes) >= 2, (shards_of(ids), nodes)
    async with httpx.AsyncClient(timeout=20) as streams:
        followers = [asyncio.create_task(follow(streams, t["eventsUrl"])) for t in tasks]

        async def subscribed() -> bool:
            return await metric(client, relay.url, "relay_hub_channels") == len(tasks)

        await until(subscribed, timeout=10, what="a channel per stream")
        for t in ids:
            (await client.post(f"{sim}/sim/tasks/{t}/complete")).raise_for_status()
        seen = await asyncio.wait_for(asyncio.gather(*followers), 30)
    for t, events in zip(ids, seen, strict=True):
        assert events[-1]["status"] == "completed", (t, events)
        assert all(e["taskId"] == t for e in events)
    # Read back through the merged per-shard indexes: newest first, all of them, once.
    history = (await client.get(f"{relay.url}/api/tasks", params={"limit": 100})).json()
    listed = [item["taskId"] for item in history["items"]]
    assert sorted(listed) == sorted(ids) and len(listed) == len(set(listed))


async def test_history_pages_merge_the_shards_newest_first(cluster_url: str) -> None:
    client = command_client(cluster_url, max_connections=20)
    assert isinstance(client, ClusterClient)
    store = RedisStore(client, ttl=600, keyspace=CLUSTER)
    try:
        made: list[Task] = []
        for i in range(60):
            # A millisecond apart, two on each millisecond (ties go by id).
            at = datetime.fromtimestamp(1_700_000_000 + (i // 2) / 1000, UTC)
            task = Task(
                f"t{i:03d}", "kie", "m", Mode.TEXT_TO_IMAGE, Status.PENDING, f"p{i}", (), at, at,
                owner="ann" if i % 2 else "bob",
            )
            assert await store.insert(task)
            made.append(task)
        assert len(shards_of([t.task_id for t in made])) == keys.SHARDS
        expected = sorted(made, key=lambda t: (t.created_at, t.task_id), reverse=True)
        pages: list[str] = []
        cursor = None
        for _ in range(20):
            page = await store.history(limit=7, cursor=cursor)
            pages += [t.task_id for t in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert pages == [t.task_id for t in expected]
        mine = await store.history(limit=100, owner="ann")
        assert [t.task_id for t in mine.items] == [t.task_id for t in expected if t.owner == "ann"]
        open_ids = await store.open_tasks(updated_before=1e12, limit=100)
        assert sorted(open_ids) == sorted(t.task_id for t in made)
    finally:
        await store.aclose()


@pytest.mark.timeout(120)
async def test_a_node_restart_loses_no_terminal_event_and_streams_resync(
    start_relay: StartRelay, private_cluster: RedisCluster, sim: str, client: httpx.AsyncClient
) -> None:
    """A master is stopped with open streams on tasks of every node; the provider finishes
    every task while it is away (its callbacks get 503, then the reconciler asks); the node
    comes back with its data. Every stream ends with its task's terminal state, once, and
    versions only ever go up."""
    relay = start_relay(
        private_cluster.url, RELAY_MIRROR="off", RELAY_SSE_PING="0.5",
        RELAY_RECONCILE_AFTER="1", RELAY_RECONCILE_INTERVAL="0.3",
    )
    # Task ids are the provider's (random): create until every node holds three tasks.
    tasks: list[dict[str, Any]] = []
    node_of: dict[str, int] = {}
    for i in range(60):
        task = await create(client, relay.url, f"through the restart {i}")
        node = private_cluster.node_for_key(CLUSTER.task(task["taskId"]))
        if list(node_of.values()).count(node) < 3:
            tasks.append(task)
            node_of[task["taskId"]] = node
        if len(tasks) == 9:
            break
    assert sorted(node_of.values()) == [0, 0, 0, 1, 1, 1, 2, 2, 2], node_of
    ids = [t["taskId"] for t in tasks]
    stopped = node_of[ids[0]]
    outcome = {t: "failed" if i % 4 == 3 else "completed" for i, t in enumerate(ids)}
    # Half of them are already processing before the restart.
    for t in ids[::2]:
        callback_url = (await sim_task(client, sim, t))["callBackUrl"]
        assert (await client.post(callback_url, json=progress_payload(t, 30))).status_code == 200

    async with contextlib.AsyncExitStack() as stack:
        streams = {t["taskId"]: await stack.enter_async_context(EventSource(client, t["eventsUrl"])) for t in tasks}
        for source in streams.values():
            await source.next()  # the snapshot: the stream is open and subscribed
        private_cluster.kill(stopped, signal.SIGTERM)
        # A callback for a task of the stopped node: 503 (the provider retries), never a 2xx.
        on_stopped = next(t for t in ids if node_of[t] == stopped)
        callback_url = (await sim_task(client, sim, on_stopped))["callBackUrl"]
        refused = await client.post(callback_url, json=progress_payload(on_stopped, 50))
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "store_unavailable"
        # The provider finishes everything now; what cannot be written waits for the poll.
        await asyncio.gather(*(
            client.post(f"{sim}/sim/tasks/{t}/{'complete' if outcome[t] == 'completed' else 'fail'}", timeout=30)
            for t in ids
        ))
        private_cluster.start_node(stopped)
        private_cluster.wait_ok(30)
        ends = await asyncio.gather(*(streams[t].until_status(outcome[t], timeout=40) for t in ids))

    for t, events in zip(ids, ends, strict=True):
        statuses = [e.json()["status"] for e in streams[t].all]
        assert statuses.count(outcome[t]) == 1, (t, statuses)
        assert_strictly_increasing(versions(streams[t].all))
        assert events[-1].json()["taskId"] == t
        final = (await client.get(tasks[ids.index(t)]["statusUrl"])).json()
        assert final["status"] == outcome[t] and final["version"] == events[-1].json()["version"]
    # The stopped node's link came back and its streams re-read their snapshots.
    assert "link to 127.0.0.1:" in relay.log_text() and "back; re-syncing its streams" in relay.log_text()
    assert await metric(client, relay.url, "relay_redis_reconnects_total") >= 1


@pytest.mark.timeout(150)
async def test_a_master_killed_fails_over_to_its_replica_and_streams_follow(
    start_relay: StartRelay, tmp_path: Path, sim: str, client: httpx.AsyncClient
) -> None:
    """Three masters with a replica each; the master serving a watched task is SIGKILLed and
    its replica promoted. Every stream, on that shard or another, ends with its task's
    terminal state once; the link to the dead node moves to the promoted one."""
    cluster = RedisCluster(tmp_path / "cluster", replicas=1).start()
    try:
        relay = start_relay(
            cluster.url, RELAY_MIRROR="off", RELAY_SSE_PING="0.5",
            RELAY_RECONCILE_AFTER="1", RELAY_RECONCILE_INTERVAL="0.3",
        )
        tasks = [await create(client, relay.url, f"failover {i}") for i in range(8)]
        ids = [t["taskId"] for t in tasks]
        victim = cluster.node_for_key(CLUSTER.task(ids[0]))
        async with contextlib.AsyncExitStack() as stack:
            streams = {t["taskId"]: await stack.enter_async_context(EventSource(client, t["eventsUrl"])) for t in tasks}
            for source in streams.values():
                await source.next()
            cluster.replicated(victim)  # what the master acknowledged, its replica has
            cluster.kill(victim)  # SIGKILL

            async def promoted() -> bool:
                return cluster.node_for_key(CLUSTER.task(ids[0])) != victim and cluster.healthy()

            await until(promoted, timeout=40, what="the replica to take over the killed master's slots")
            await asyncio.gather(*(deliver(client, sim, t, "complete", timeout=40) for t in ids))
            ends = await asyncio.gather(*(streams[t].until_status("completed", timeout=40) for t in ids))
        for t, events in zip(ids, ends, strict=True):
            statuses = [e.json()["status"] for e in streams[t].all]
            assert statuses.count("completed") == 1, (t, statuses)
            assert_strictly_increasing(versions(streams[t].all))
            final = (await client.get(tasks[ids.index(t)]["statusUrl"])).json()
            assert final["status"] == "completed" and final["version"] == events[-1].json()["version"]
        assert f"link to 127.0.0.1:{cluster.ports[victim]} lost" in relay.log_text()
        new_master = cluster.ports[cluster.node_for_key(CLUSTER.task(ids[0]))]
        assert f"channel of {ids[0]} now on 127.0.0.1:{new_master}" in relay.log_text()
    finally:
        cluster.stop()


def test_cluster_urls_name_their_nodes_and_password() -> None:
    client = command_client("redis+cluster://:s%40cret@127.0.0.1:7000,[::1]:7001", max_connections=4)
    assert isinstance(client, ClusterClient)
    nodes = {(n.host, int(n.port)) for n in client.startup_nodes}
    assert nodes == {("127.0.0.1", 7000), ("::1", 7001)}
    assert client.connection_kwargs["password"] == "s@cret" and client.connection_kwargs["username"] is None
    named = command_client("redis+cluster://relay:pw@127.0.0.1:7000", max_connections=4)
    assert isinstance(named, ClusterClient)
    assert (named.connection_kwargs["username"], named.connection_kwargs["password"]) == ("relay", "pw")
    for bad in ("redis+cluster://127.0.0.1:7000/2", "redis+cluster://127.0.0.1", "redis+cluster://:x@h:p"):
        with pytest.raises(ValueError):
            command_client(bad, max_connections=4)


async def test_a_cluster_with_a_password(
    start_relay: StartRelay, tmp_path: Path, sim: str, client: httpx.AsyncClient
) -> None:
    """`redis+cluster://:password@...`: the command client and every pub/sub link log in."""
    cluster = RedisCluster(tmp_path / "cluster", password="cluster-s3cret").start()
    try:
        relay = start_relay(cluster.url, RELAY_MIRROR="off")
        tasks = [await create(client, relay.url, f"locked {i}") for i in range(6)]
        async with httpx.AsyncClient(timeout=20) as streams:
            followers = [asyncio.create_task(follow(streams, t["eventsUrl"])) for t in tasks]

            async def subscribed() -> bool:
                return await metric(client, relay.url, "relay_hub_channels") == len(tasks)

            await until(subscribed, timeout=10, what="a channel per stream")
            for t in tasks:
                (await client.post(f"{sim}/sim/tasks/{t['taskId']}/complete")).raise_for_status()
            seen = await asyncio.wait_for(asyncio.gather(*followers), 20)
        assert [s[-1]["status"] for s in seen] == ["completed"] * len(tasks)
        assert "cluster-s3cret" not in relay.log_text()
    finally:
        cluster.stop()
