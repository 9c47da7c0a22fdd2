"""The core event path, end to end through real servers: Relay (uvicorn subprocess), the
KIE simulator (its own HTTP server) and, where named, a real redis-server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.conftest import StartRelay
from tests.helpers import create, sim_task, success_payload, wait_status
from tests.servers import RedisServer
from tests.sse import Stream

STATUS_ORDER = ["pending", "processing", "completed"]


def assert_in_order(events: list[dict[str, Any]]) -> None:
    versions = [e["version"] for e in events]
    assert versions == sorted(set(versions)), f"versions not strictly increasing: {versions}"
    ranks = [STATUS_ORDER.index(e["status"]) for e in events]
    assert ranks == sorted(ranks), f"statuses out of order: {[e['status'] for e in events]}"


async def test_create_returns_at_once_with_ready_links(
    start_relay: StartRelay, backend: str, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay(backend)
    task = await create(client, relay.url)
    assert task["status"] == "pending" and task["version"] == 1
    assert task["mode"] == "text-to-image" and task["model"] == "google/nano-banana"
    assert task["statusUrl"].startswith(relay.url) and "token=" in task["statusUrl"]
    assert task["eventsUrl"].startswith(relay.url) and "token=" in task["eventsUrl"]
    # The provider got our callback URL with a per-task token, and the task is still running there.
    at_sim = await sim_task(client, sim, task["taskId"])
    callback = urlsplit(at_sim["callBackUrl"])
    assert f"{callback.scheme}://{callback.netloc}{callback.path}" == f"{relay.url}/api/callbacks/kie"
    assert parse_qs(callback.query)["token"][0]
    status = await client.get(task["statusUrl"])
    assert status.status_code == 200 and status.json()["taskId"] == task["taskId"]
    alias = await client.get(f"{relay.url}/api/task-status", params={"taskId": task["taskId"], "token": task["token"]})
    assert alias.json() == status.json()


async def test_stream_snapshot_then_live_until_terminal(
    start_relay: StartRelay, backend: str, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay(backend, RELAY_SSE_PING="0.2")
    task = await create(client, relay.url)
    async with Stream(client, task["eventsUrl"]) as stream:
        assert stream.status == 200
        assert stream.response_headers is not None
        assert stream.response_headers["content-type"].startswith("text/event-stream")
        assert stream.response_headers["cache-control"].startswith("no-cache")
        assert stream.response_headers["x-accel-buffering"] == "no"
        snapshot = await stream.next()
        assert snapshot.id == "1" and snapshot.json()["status"] == "pending"
        assert stream.all[0].retry is not None, "the first bytes are a retry hint"
        await asyncio.sleep(0.5)  # long enough for pings to be due (RELAY_SSE_PING=0.2)
        (await client.post(f"{sim}/sim/tasks/{task['taskId']}/complete")).raise_for_status()
        events = [snapshot] + await stream.until_status("completed")
        await asyncio.wait_for(stream.closed.wait(), 5)  # the server closes after the terminal event
    bodies = [e.json() for e in events]
    assert_in_order(bodies)
    assert [b["status"] for b in bodies] == ["pending", "processing", "completed"]
    assert [e.id for e in events] == [str(b["version"]) for b in bodies]
    processing, final = bodies[1], bodies[2]
    assert processing["providerResultUrls"] and not processing["resultUrls"]
    assert final["completedAt"] and final["resultUrls"][0].startswith(f"{relay.url}/files/generated/")
    image = await client.get(final["resultUrls"][0])
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG"), "our copy serves the bytes"
    raw = await client.get(task["statusUrl"])
    assert raw.json() == final, "the status GET and the stream see the same task object"


async def test_stream_pings(start_relay: StartRelay, sim: str, client: httpx.AsyncClient) -> None:
    relay = start_relay(RELAY_SSE_PING="0.2")
    task = await create(client, relay.url)
    async with client.stream("GET", task["eventsUrl"]) as response:
        seen = b""
        async with asyncio.timeout(5):
            async for chunk in response.aiter_bytes():
                seen += chunk
                if seen.count(b": ping") >= 2:
                    break
    assert seen.startswith(b"retry: ")


async def test_last_event_id_resumes_and_204_after_terminal(
    start_relay: StartRelay, backend: str, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay(backend)
    task = await create(client, relay.url)
    (await client.post(f"{sim}/sim/tasks/{task['taskId']}/complete")).raise_for_status()
    final = await wait_status(client, task["statusUrl"], "completed")

    # Has an older version: gets only what is newer, then the stream closes.
    async with Stream(client, task["eventsUrl"], headers={"Last-Event-ID": "1"}) as stream:
        events = await stream.until_status("completed")
        await asyncio.wait_for(stream.closed.wait(), 5)
    assert [e.json()["version"] for e in events] == [final["version"]]

    # Has the terminal version: 204 (EventSource stops reconnecting).
    done = await client.get(task["eventsUrl"], headers={"Last-Event-ID": str(final["version"])})
    assert done.status_code == 204
    via_query = await client.get(task["eventsUrl"] + f"&lastEventId={final['version']}")
    assert via_query.status_code == 204


async def test_concurrent_duplicate_callbacks_make_one_change(
    start_relay: StartRelay, backend: str, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay(backend)
    task = await create(client, relay.url)
    callback_url = (await sim_task(client, sim, task["taskId"]))["callBackUrl"]
    async with Stream(client, task["eventsUrl"]) as stream:
        assert (await stream.next()).json()["version"] == 1
        payload = success_payload(task["taskId"])
        answers = await asyncio.gather(*(client.post(callback_url, json=payload) for _ in range(50)))
        assert [a.status_code for a in answers] == [200] * 50
        final = await wait_status(client, task["statusUrl"], "completed")
        await asyncio.wait_for(stream.closed.wait(), 5)
    task_events = [e.json() for e in stream.all if e.event == "task"]
    changes = task_events[1:]
    # Exactly the changes the one success makes (completed, or processing then completed when
    # mirroring): never one per duplicate.
    assert len(changes) == final["version"] - 1 <= 2
    assert_in_order(task_events)


async def test_callback_refusals(start_relay: StartRelay, sim: str, client: httpx.AsyncClient) -> None:
    relay = start_relay()
    task = await create(client, relay.url)
    other = await create(client, relay.url, "another")
    callback_url = (await sim_task(client, sim, task["taskId"]))["callBackUrl"]
    other_url = (await sim_task(client, sim, other["taskId"]))["callBackUrl"]
    payload = success_payload(task["taskId"])

    no_token = await client.post(f"{relay.url}/api/callbacks/kie", json=payload)
    assert no_token.status_code == 401 and no_token.json()["error"]["code"] == "invalid_callback_token"
    forged = await client.post(f"{relay.url}/api/callbacks/kie?token=abc.def", json=payload)
    assert forged.status_code == 401
    crossed = await client.post(other_url, json=payload)  # a real token, but for another task
    assert crossed.status_code == 401
    garbage = await client.post(callback_url, content=b"<html>oops</html>")
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "invalid_json"
    # A body of no known shape is answered 200 (KIE would only retry it) and changes nothing.
    shapeless = await client.post(callback_url, json={"code": 200, "data": {"state": "success"}})
    assert shapeless.status_code == 200 and shapeless.json()["status"] == "ignored"
    assert "taskId" in shapeless.json()["reason"]
    alias = await client.post(callback_url.replace("/api/callbacks/kie", "/api/callback"), json=payload)
    assert alias.status_code == 200
    # Nothing from the refused requests was stored.
    assert (await client.get(other["statusUrl"])).json()["version"] == 1


async def test_status_reads_need_the_right_token(start_relay: StartRelay, sim: str, client: httpx.AsyncClient) -> None:
    relay = start_relay()
    a = await create(client, relay.url)
    b = await create(client, relay.url, "b")
    base = f"{relay.url}/api/tasks/{a['taskId']}"
    assert (await client.get(base)).status_code == 401
    assert (await client.get(base, params={"token": b["token"]})).status_code == 401
    assert (await client.get(base, headers={"Authorization": f"Bearer {a['token']}"})).status_code == 200
    assert (await client.get(f"{relay.url}/api/tasks/{a['taskId']}/events", params={"token": b["token"]})).status_code == 401
    bad_id = await client.get(f"{relay.url}/api/tasks/bad%20id")
    assert bad_id.status_code == 400 and bad_id.json()["error"]["code"] == "invalid_task_id"
    missing = await client.get(f"{relay.url}/api/nope")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"


async def test_bad_create_requests_are_clear_400s(start_relay: StartRelay, sim: str, client: httpx.AsyncClient) -> None:
    relay = start_relay()
    cases: list[tuple[Any, str]] = [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x", "imageUrls": "nope"}, "imageUrls"),
        ({"prompt": "x", "imageUrls": ["ftp://a/b.png"]}, "http"),
        ({"prompt": "x", "bogus": 1}, "bogus"),
        ([1, 2], "object"),
    ]
    for body, needle in cases:
        response = await client.post(f"{relay.url}/api/tasks", json=body)
        assert response.status_code == 400, body
        assert needle in response.json()["error"]["message"], (body, response.text)
    not_json = await client.post(f"{relay.url}/api/tasks", content=b"{")
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"
    assert (await client.get(f"{sim}/sim/tasks")).json()["tasks"] == [], "nothing reached the provider"


async def test_one_stream_for_many_tasks(start_relay: StartRelay, backend: str, sim: str, client: httpx.AsyncClient) -> None:
    relay = start_relay(backend)
    tasks = [await create(client, relay.url, f"p{i}") for i in range(3)]
    query = "&".join(f"taskId={t['taskId']}&token={t['token']}" for t in tasks)
    async with Stream(client, f"{relay.url}/api/events?{query}") as stream:
        snapshots = [await stream.next() for _ in tasks]
        assert {e.json()["taskId"] for e in snapshots} == {t["taskId"] for t in tasks}
        for t in tasks:
            (await client.post(f"{sim}/sim/tasks/{t['taskId']}/complete")).raise_for_status()
        await asyncio.wait_for(stream.closed.wait(), 15)
    finals = {e.json()["taskId"]: e for e in stream.all if e.event == "task" and e.json()["status"] == "completed"}
    assert set(finals) == {t["taskId"] for t in tasks}
    last_id = [e for e in stream.all if e.event == "task"][-1].id
    assert last_id is not None
    # The last id names every task's version: a reconnect with it has nothing left to get.
    again = await client.get(f"{relay.url}/api/events?{query}", headers={"Last-Event-ID": last_id})
    assert again.status_code == 204


async def test_two_instances_share_one_redis(
    start_relay: StartRelay, redis_url: str, sim: str, client: httpx.AsyncClient
) -> None:
    a = start_relay(redis_url)
    b = start_relay(redis_url)
    task = await create(client, a.url)
    on_b = task["eventsUrl"].replace(a.url, b.url)
    async with Stream(client, on_b) as stream:
        assert (await stream.next()).json()["status"] == "pending"
        # The simulator calls back the instance that created the task: A.
        assert (await sim_task(client, sim, task["taskId"]))["callBackUrl"].startswith(a.url)
        (await client.post(f"{sim}/sim/tasks/{task['taskId']}/complete")).raise_for_status()
        events = await stream.until_status("completed")
    bodies = [e.json() for e in events]
    assert_in_order(bodies)
    assert [b["status"] for b in bodies] == ["processing", "completed"]


async def test_stream_survives_redis_restart(
    start_relay: StartRelay, private_redis: RedisServer, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay(private_redis.url)
    task = await create(client, relay.url)
    async with Stream(client, task["eventsUrl"]) as stream:
        assert (await stream.next()).json()["version"] == 1
        private_redis.restart()  # SIGKILL, then start again on the same port with its AOF
        # The callback arrives after the restart; it may meet the store before Relay has
        # reconnected (503: KIE retries), so deliver it until it is accepted.
        delivery = (await client.post(f"{sim}/sim/tasks/{task['taskId']}/complete")).json()
        async with asyncio.timeout(15):
            while delivery["status"] != 200:
                await asyncio.sleep(0.2)
                delivery = (await client.post(f"{sim}/sim/tasks/{task['taskId']}/resend")).json()
        events = await stream.until_status("completed", timeout=15)
    assert events[-1].json()["status"] == "completed"


async def test_stream_resyncs_after_pubsub_reconnect(
    start_relay: StartRelay, private_redis: RedisServer, sim: str, client: httpx.AsyncClient
) -> None:
    """A change made while the pub/sub connection was away is never published to this
    instance; only the snapshot re-read after the reconnect can deliver it."""
    relay = start_relay(private_redis.url)
    task = await create(client, relay.url)
    async with Stream(client, task["eventsUrl"]) as stream:
        assert (await stream.next()).json()["version"] == 1
        r = private_redis.client()
        key = f"relay:task:{task['taskId']}"
        record = r.hget(key, "d")
        assert record is not None
        import json

        data = json.loads(record)
        data.update(status="failed", version=2, error={"code": "timeout", "message": "gone"})
        # Kill the pub/sub connection and change the task behind everyone's back, in one go.
        pipe = r.pipeline()
        pipe.client_kill_filter(_type="pubsub")
        pipe.hset(key, mapping={"v": 2, "d": json.dumps(data)})
        pipe.execute()
        event = await stream.next(timeout=15)
        r.close()
    assert event.json()["version"] == 2 and event.json()["status"] == "failed"


def test_serve_refuses_to_start_without_required_settings() -> None:
    env = {"PATH": "/usr/bin:/bin", "RELAY_PUBLIC_URL": "http://127.0.0.1:9", "KIE_API_KEY": "k"}
    result = subprocess.run(
        [sys.executable, "-m", "relay.cli", "serve", "--port", "9"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "relay: the configuration has 1 problem:"
    assert len(lines) == 2 and "RELAY_SECRET" in lines[1]


