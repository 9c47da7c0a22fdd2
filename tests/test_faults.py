"""Fault behaviour with real processes on loopback: redis-server (killed, restarted, with and
without persistence), Relay under uvicorn (SIGKILL, SIGTERM), Debian's nginx running
deploy/nginx.conf, a reader that stops reading, and a burst of 200 tasks.

Every wait is a condition with a deadline (`tests.waiting.until`, `asyncio.timeout`); the
only sleeps are the reconnection delay of the EventSource-like client (what a browser does)
and the hammer's pacing between request rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay import auth
from relay.models import Mode, Status, Task, utcnow
from relay.sim.png import gradient_png
from tests.conftest import StartRelay
from tests.deploy_nginx import LoadBalancer
from tests.helpers import (
    TERMINAL,
    assert_strictly_increasing,
    create,
    metric,
    open_streams,
    sim_task,
    success_payload,
    versions,
)
from tests.s3server import LocalServer
from tests.servers import HOST, SECRET, AppProcess, RedisServer
from tests.sse import EventSource, Stream, iter_events
from tests.waiting import until

# --------------------------------------------------------------------------- helpers


@pytest.fixture(params=["redis", "cluster"])
def shared_url(request: pytest.FixtureRequest) -> str:
    """What the instances share: one Redis, or (#18) a three-master Redis Cluster."""
    url: str = request.getfixturevalue("cluster_url" if request.param == "cluster" else "redis_url")
    return url


def failure_payload(task_id: str) -> dict[str, Any]:
    """A jobs-API failure callback exactly as KIE sends it."""
    return {
        "code": 501,
        "msg": "Playground task failed.",
        "data": {
            "taskId": task_id, "model": "google/nano-banana", "state": "fail", "param": "{}",
            "resultJson": "", "failCode": "500", "failMsg": "Internal server error",
            "consumeCredits": 0, "remainedCredits": 1000, "costTime": 0,
            "createTime": 1755599634000, "completeTime": 1755599644000, "updateTime": 1755599644000,
        },
    }


def progress_payload(task_id: str, percent: float) -> dict[str, Any]:
    """A jobs-API callback for a task still generating, with its progress (0..100)."""
    return {
        "code": 200,
        "msg": "generating",
        "data": {
            "taskId": task_id, "model": "google/nano-banana", "state": "generating", "param": "{}",
            "resultJson": "", "failCode": "", "failMsg": "", "progress": percent,
            "createTime": 1755599634000, "updateTime": 1755599640000,
        },
    }


async def read_status(client: httpx.AsyncClient, status_url: str) -> dict[str, Any] | None:
    """The task object, or None while the read is refused (503 while Redis is away)."""
    response = await client.get(status_url)
    if response.status_code != 200:
        assert response.status_code == 503, (response.status_code, response.text)
        return None
    body: dict[str, Any] = response.json()
    return body


async def wait_for_status(
    client: httpx.AsyncClient, status_url: str, statuses: str | tuple[str, ...], timeout: float = 20
) -> dict[str, Any]:
    wanted = (statuses,) if isinstance(statuses, str) else statuses

    async def reached() -> dict[str, Any] | None:
        body = await read_status(client, status_url)
        return body if body is not None and body["status"] in wanted else None

    body = await until(reached, timeout=timeout, what=f"{status_url.split('?')[0]} to be {'/'.join(wanted)}")
    assert body is not None
    return body


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def pid_of(app: AppProcess) -> int:
    assert app.proc is not None
    return app.proc.pid


async def deliver(client: httpx.AsyncClient, sim: str, task_id: str, action: str = "complete", timeout: float = 20) -> None:
    """Finish a task at the simulator and have its callback accepted, re-sending it (as KIE
    retries) while Relay answers 503."""

    async def accepted() -> bool:
        response = await client.post(f"{sim}/sim/tasks/{task_id}/{action}")
        if response.status_code == 409:  # already finished: post its callback again
            response = await client.post(f"{sim}/sim/tasks/{task_id}/resend")
        response.raise_for_status()
        return bool(response.json()["status"] == 200)

    await until(accepted, timeout=timeout, what=f"the {action} callback of {task_id} to be accepted", interval=0.2)


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis without persistence: a restart comes back empty."""
    server = RedisServer(tmp_path / "volatile-redis", appendonly=False).start()
    yield server
    server.stop()


@pytest.fixture
async def load_balancer(tmp_path: Path) -> AsyncIterator[LoadBalancer]:
    lb = LoadBalancer(tmp_path / "nginx")
    yield lb
    lb.stop()


# --------------------------------------------------------------------------- Redis down


@pytest.mark.timeout(90)
async def test_callback_while_redis_is_down_gets_503_and_the_reconciler_catches_up(
    start_relay: StartRelay, private_redis: RedisServer, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay(private_redis.url, RELAY_RECONCILE_AFTER="1", RELAY_RECONCILE_INTERVAL="0.3")
    tasks = [await create(client, relay.url, f"outage {i}") for i in range(4)]
    ids = [t["taskId"] for t in tasks]
    outcome = dict(zip(ids, ["completed", "completed", "failed", "completed"], strict=True))
    callback_urls = {i: (await sim_task(client, sim, i))["callBackUrl"] for i in ids}

    private_redis.kill()
    # A callback straight to Relay: 503 with the JSON error, never a 2xx without a write.
    direct = await client.post(callback_urls[ids[0]], json=progress_payload(ids[0], 40))
    assert direct.status_code == 503, direct.text
    assert direct.json()["error"]["code"] == "store_unavailable"
    assert (await client.get(tasks[0]["statusUrl"])).status_code == 503
    ready = await client.get(f"{relay.url}/readyz")
    assert ready.status_code == 503 and ready.json()["components"]["store"]["ok"] is False

    # The provider finishes every task while Redis is down. The simulator posts each
    # callback with KIE's retries (4 attempts over ~1.75 s): every attempt gets 503.
    answers = await asyncio.gather(
        *(
            client.post(f"{sim}/sim/tasks/{i}/{'complete' if outcome[i] == 'completed' else 'fail'}", timeout=30)
            for i in ids
        )
    )
    assert [a.json() for a in answers] == [{"delivered": False, "status": 503}] * len(ids)
    polls_while_down = {i: (await sim_task(client, sim, i))["statusQueries"] for i in ids}

    private_redis.start()  # same port, its AOF replayed: the tasks are still open
    # Nobody re-sends a callback: the reconciler polls the provider and finishes each task.
    finals = {
        t["taskId"]: await wait_for_status(client, t["statusUrl"], outcome[t["taskId"]], timeout=30) for t in tasks
    }
    for task_id in ids:
        at_sim = await sim_task(client, sim, task_id)
        assert at_sim["callbacksSent"] == 1 and at_sim["lastCallbackStatus"] == 503, at_sim
        assert at_sim["statusQueries"] > polls_while_down[task_id], "the reconciler asked the provider"
        final = finals[task_id]
        assert final["completedAt"]
        if outcome[task_id] == "completed":
            assert final["providerResultUrls"] and final["mirrorError"] is None
            assert final["resultUrls"][0].startswith(f"{relay.url}/files/generated/{task_id}/")
            image = await client.get(final["resultUrls"][0])
            assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
        else:
            assert final["error"]["code"] == "provider_failed" and final["resultUrls"] == []


# --------------------------------------------------------------------------- Redis killed, AOF on


@pytest.mark.timeout(90)
async def test_redis_killed_with_aof_keeps_every_state_and_streams_resync(
    start_relay: StartRelay, private_redis: RedisServer, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay(private_redis.url, RELAY_SSE_PING="0.5")
    pending = await create(client, relay.url, "pending across the crash")
    processing = await create(client, relay.url, "processing across the crash")
    completed = await create(client, relay.url, "completed before the crash")
    failed = await create(client, relay.url, "failed before the crash")
    callback_url = (await sim_task(client, sim, processing["taskId"]))["callBackUrl"]
    assert (await client.post(callback_url, json=progress_payload(processing["taskId"], 35))).status_code == 200
    await deliver(client, sim, completed["taskId"], "complete")
    await deliver(client, sim, failed["taskId"], "fail")
    await wait_for_status(client, completed["statusUrl"], "completed")
    await wait_for_status(client, failed["statusUrl"], "failed")
    await wait_for_status(client, processing["statusUrl"], "processing")
    every = [pending, processing, completed, failed]
    before = {t["taskId"]: (await client.get(t["statusUrl"])).json() for t in every}
    assert [before[t["taskId"]]["status"] for t in every] == ["pending", "processing", "completed", "failed"]

    async with EventSource(client, pending["eventsUrl"]) as s1, EventSource(client, processing["eventsUrl"]) as s2:
        assert (await s1.next()).json()["version"] == 1
        assert (await s2.next()).json()["status"] == "processing"
        assert await open_streams(client, relay.url) == 2

        private_redis.restart()  # SIGKILL, then the same port with its append-only file

        # Every state survived, field for field.
        for t in every:
            after = await until(
                partial(read_status, client, t["statusUrl"]), timeout=15, what="status reads after the restart"
            )
            assert after == before[t["taskId"]]
        # The terminal changes land as soon as Redis answers, possibly before Relay's
        # pub/sub connection is back: only the re-sync after the reconnect delivers them then.
        await asyncio.gather(
            deliver(client, sim, pending["taskId"], "complete"), deliver(client, sim, processing["taskId"], "fail")
        )
        done1 = await s1.until_status("completed", timeout=20)
        done2 = await s2.until_status("failed", timeout=20)
        await asyncio.wait_for(asyncio.gather(s1.stopped.wait(), s2.stopped.wait()), 15)

    assert done1[-1].json()["prompt"] == "pending across the crash"
    assert done2[-1].json()["error"]["code"] == "provider_failed"
    for source in (s1, s2):
        assert_strictly_increasing(versions(source.all))
        assert [e.json()["status"] for e in source.all].count(source.all[-1].json()["status"]) == 1
        # The stream was never broken; after its terminal event the reconnect got 204.
        assert [c.ended for c in source.connections] == ["closed", "stopped: 204"]
    assert "redis pub/sub reconnected; re-syncing open streams" in relay.log_text()


# --------------------------------------------------------------------------- Redis restarted empty


@dataclass
class Hit:
    what: str
    started: str  # the phase when the request was sent
    ended: str  # the phase when its answer was read
    status: int | str  # HTTP status, or "timeout" / "error: ..."
    seconds: float


@pytest.mark.timeout(120)
async def test_redis_restarted_without_persistence_never_500s_and_rebuilds_tasks(
    start_relay: StartRelay, volatile_redis: RedisServer, sim: str, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    relay = start_relay(
        volatile_redis.url, RELAY_RATE_CREATE="100000", RELAY_MAX_STREAMS_PER_CLIENT="100000", RELAY_SSE_PING="0.5"
    )
    finished = await create(client, relay.url, "finished before the flush")
    failed = await create(client, relay.url, "failed before the flush")
    running = await create(client, relay.url, "running across the flush")
    await deliver(client, sim, finished["taskId"], "complete")
    await deliver(client, sim, failed["taskId"], "fail")
    before_finished = await wait_for_status(client, finished["statusUrl"], "completed")
    before_failed = await wait_for_status(client, failed["statusUrl"], "failed")
    files = tmp_path / "files-0" / "kie-tasks"  # start_relay's storage folder for the first instance

    async def metadata_written() -> bool:
        return all((files / f"{t['taskId']}.json").exists() for t in (finished, failed))

    await until(metadata_written, timeout=10, what="task metadata in storage")
    ghost = "ghost0123456789abcdef"
    ghost_token = auth.task_token(SECRET, ghost, 600)
    # A task only Redis knew (no metadata, unknown to the provider): after the flush its
    # open stream must end, and the reconnect get 404, rather than wait forever.
    vanishing = "vanishing0123456789"
    now = utcnow()
    record = Task(
        task_id=vanishing, provider="kie", model="google/nano-banana", mode=Mode.TEXT_TO_IMAGE,
        status=Status.PENDING, prompt="known only to Redis", image_urls=(), created_at=now, updated_at=now,
    ).to_record()
    direct = volatile_redis.client()
    direct.hset(f"relay:task:{vanishing}", mapping={"v": 1, "d": record})
    direct.close()
    vanishing_url = f"{relay.url}/api/tasks/{vanishing}/events?token={auth.task_token(SECRET, vanishing, 600)}"

    phase = ["up"]
    hits: list[Hit] = []
    created_up: list[dict[str, Any]] = []
    counter = iter(range(10**6))

    async def status_of(url: str) -> int:
        return (await client.get(url)).status_code

    async def first_event(url: str) -> int:
        async with client.stream("GET", url, timeout=httpx.Timeout(10)) as response:
            if response.status_code == 200:
                async for event in iter_events(response):
                    if event.event == "task":
                        break
            return response.status_code

    async def create_one() -> int:
        prompt = f"hammer {next(counter)}"
        response = await client.post(f"{relay.url}/api/tasks", json={"prompt": prompt})
        if response.status_code == 202 and phase[0] == "up":
            created_up.append(response.json())
        return response.status_code

    targets: dict[str, Callable[[], Awaitable[int]]] = {
        "status finished": lambda: status_of(finished["statusUrl"]),
        "status failed": lambda: status_of(failed["statusUrl"]),
        "status running": lambda: status_of(running["statusUrl"]),
        "alias running": lambda: status_of(
            f"{relay.url}/api/task-status?taskId={running['taskId']}&token={running['token']}"
        ),
        "stream running": lambda: first_event(running["eventsUrl"]),
        "stream finished": lambda: first_event(finished["eventsUrl"]),
        "create": create_one,
    }
    stop = asyncio.Event()

    async def hammer(worker: int) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            for what, call in targets.items():
                started, t0 = phase[0], loop.time()
                try:
                    async with asyncio.timeout(10):
                        status: int | str = await call()
                except TimeoutError:
                    status = "timeout"
                except httpx.HTTPError as exc:
                    status = f"error: {type(exc).__name__}: {exc}"
                hits.append(Hit(what, started, phase[0], status, loop.time() - t0))
            await asyncio.sleep(0.02)  # pacing between rounds, so the hammer leaves CPU to the servers

    async def hits_in(wanted: str, count: int, since: float = 0.0, seconds: float = 0.0) -> bool:
        enough = sum(h.started == h.ended == wanted for h in hits) >= count
        return enough and time.monotonic() - since >= seconds

    async with EventSource(client, running["eventsUrl"]) as watcher, EventSource(client, vanishing_url) as lost:
        assert (await watcher.next()).json()["status"] == "pending"
        assert (await lost.next()).json()["prompt"] == "known only to Redis"
        workers = [asyncio.create_task(hammer(n)) for n in range(3)]
        try:
            await until(lambda: hits_in("up", 3 * len(targets)), timeout=15, what="requests before the restart")
            volatile_redis.kill()
            phase[0], went_down = "down", time.monotonic()
            await until(
                lambda: hits_in("down", 3 * len(targets), went_down, 1.5),
                timeout=30,
                what="requests while Redis is down",
            )
            volatile_redis.start()  # no AOF, no snapshot: empty
            # Not dbsize() == 0, nor the other tasks' keys: the hammer may already have
            # written new keys and rebuilt those tasks. Nothing can rebuild this one.
            empty = volatile_redis.client()
            assert not empty.exists(f"relay:task:{vanishing}")
            empty.close()
            phase[0], came_back = "back", time.monotonic()

            async def settled() -> bool:
                # Two full rounds per worker, sent after the restart, without a single 5xx.
                recent = [h for h in hits if h.started == "back"][-6 * len(targets):]
                return (
                    time.monotonic() - came_back >= 2
                    and len(recent) == 6 * len(targets)
                    and all(isinstance(h.status, int) and h.status < 500 for h in recent)
                )

            await until(settled, timeout=30, what="every endpoint to answer without 5xx after the restart")
        finally:
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)

        # The running task's stream never hung: it re-synced, the task was rebuilt from the
        # provider, and the completion arrives on the rebuilt record.
        await deliver(client, sim, running["taskId"], "complete")
        await watcher.until_status("completed", timeout=20)
        await asyncio.wait_for(lost.stopped.wait(), 15)
    assert [c.ended for c in lost.connections] == ["closed", "stopped: 404"], lost.connections

    bad = [h for h in hits if not isinstance(h.status, int) or (h.status >= 500 and h.status != 503)]
    assert not bad, f"5xx other than 503, timeouts or broken requests: {bad[:10]}"
    down = [h for h in hits if h.started == h.ended == "down"]
    assert down and {h.status for h in down} == {503}, {(h.what, h.status) for h in down}
    up = [h for h in hits if h.started == h.ended == "up"]
    assert {h.status for h in up} <= {200, 202}, {(h.what, h.status) for h in up}
    assert max(h.seconds for h in hits) < 10

    # Terminal tasks come back from their metadata in storage, exactly as they were.
    assert (await client.get(finished["statusUrl"])).json() == before_finished
    assert (await client.get(failed["statusUrl"])).json() == before_failed
    # Tasks created before the flush are rebuilt from the provider's copy of the request.
    assert created_up
    for task in created_up:
        rebuilt = await client.get(task["statusUrl"])
        assert rebuilt.status_code == 200, rebuilt.text
        assert rebuilt.json()["prompt"] == task["prompt"] and rebuilt.json()["status"] in ("pending", "processing")
    # What nothing knows any more is a clean 404, never a 500 or a hang.
    missing = await client.get(f"{relay.url}/api/tasks/{ghost}", params={"token": ghost_token})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "task_not_found"
    missing_stream = await client.get(f"{relay.url}/api/tasks/{ghost}/events", params={"token": ghost_token})
    assert missing_stream.status_code == 404


# --------------------------------------------------------------------------- Relay killed behind nginx


@pytest.mark.timeout(90)
async def test_relay_killed_mid_stream_resumes_on_the_other_instance(
    start_relay: StartRelay, shared_url: str, sim: str, client: httpx.AsyncClient,
    load_balancer: LoadBalancer, tmp_path: Path,
) -> None:
    lb = load_balancer
    shared = f"file://{tmp_path}/shared-files"  # both instances serve one folder
    relays = [start_relay(shared_url, RELAY_PUBLIC_URL=lb.url, RELAY_STORAGE_URL=shared) for _ in range(2)]
    lb.start([r.port for r in relays])

    task = await create(client, lb.url, "watched while an instance dies")
    assert task["eventsUrl"].startswith(f"{lb.url}/api/tasks/")
    callback_url = (await sim_task(client, sim, task["taskId"]))["callBackUrl"]
    assert callback_url.startswith(f"{lb.url}/api/callbacks/kie?")

    async with EventSource(client, task["eventsUrl"]) as source:
        assert (await source.next()).json()["version"] == 1

        async def holder() -> AppProcess | None:
            counts = [await open_streams(client, r.url) for r in relays]
            return relays[counts.index(1)] if sorted(counts) == [0, 1] else None

        victim = await until(holder, timeout=10, what="the instance holding the stream")
        assert victim is not None
        survivor = next(r for r in relays if r is not victim)
        victim.stop(signal.SIGKILL)

        # While the browser waits to reconnect, the task moves on (the callback goes
        # through nginx to the survivor).
        moved = await client.post(callback_url, json=progress_payload(task["taskId"], 50))
        assert moved.status_code == 200, moved.text
        resumed = await source.next(timeout=15)
        assert resumed.json()["status"] == "processing" and resumed.json()["version"] == 2
        assert await open_streams(client, survivor.url) == 1

        await deliver(client, sim, task["taskId"], "complete")
        await source.until_status("completed", timeout=20)
        await asyncio.wait_for(source.stopped.wait(), 15)

    first, second, last = source.connections
    assert first.status == 200 and first.ended.startswith("error: "), first.ended
    assert second.last_event_id == "1" and second.status == 200 and second.ended == "closed"
    final = source.all[-1].json()
    assert last.last_event_id == str(final["version"]) and last.ended == "stopped: 204"
    assert_strictly_increasing(versions(source.all))
    statuses = [e.json()["status"] for e in source.all]
    assert statuses[:2] == ["pending", "processing"] and statuses[-1] == "completed", statuses
    assert statuses.count("completed") == 1
    image = await client.get(final["resultUrls"][0])
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


@pytest.mark.timeout(60)
async def test_redis_outage_behind_nginx_stays_a_json_503_and_ends_at_once(
    start_relay: StartRelay, private_redis: RedisServer, sim: str, client: httpx.AsyncClient,
    load_balancer: LoadBalancer, tmp_path: Path,
) -> None:
    """Relay's 503 means "the shared store is down", not "this instance is broken": nginx
    must pass it on, not count it against the instance and answer its own HTML 502 for
    everything (health checks and streams too) until fail_timeout runs out."""
    lb = load_balancer
    shared = f"file://{tmp_path}/shared-files"
    relays = [start_relay(private_redis.url, RELAY_PUBLIC_URL=lb.url, RELAY_STORAGE_URL=shared) for _ in range(2)]
    lb.start([r.port for r in relays])
    task = await create(client, lb.url, "read through an outage")
    callback_url = (await sim_task(client, sim, task["taskId"]))["callBackUrl"]

    private_redis.kill()
    answers = [await client.get(task["statusUrl"]) for _ in range(6)]
    answers.append(await client.get(task["eventsUrl"]))
    answers.append(await client.post(callback_url, json=progress_payload(task["taskId"], 10)))
    answers.append(await client.post(f"{lb.url}/api/tasks", json={"prompt": "created in an outage"}))
    for answer in answers:
        assert answer.status_code == 503, (answer.request.url.path, answer.status_code, answer.text[:80])
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["error"]["code"] == "store_unavailable"
    assert (await client.get(f"{lb.url}/healthz")).status_code == 200, "liveness does not depend on Redis"

    private_redis.start()
    seen: list[int] = []

    async def readable() -> bool:
        status = (await client.get(task["statusUrl"])).status_code
        seen.append(status)
        return status == 200

    await until(readable, timeout=10, what="status reads through nginx once Redis is back")
    assert set(seen) <= {200, 503}, seen
    async with EventSource(client, task["eventsUrl"]) as source:
        assert (await source.next()).json()["version"] == 1


# --------------------------------------------------------------------------- SIGTERM


@dataclass
class GatedOrigin:
    """The provider's file server, holding every download until `gate` is set."""

    server: LocalServer
    gate: asyncio.Event
    hits: dict[str, int]

    @property
    def waiting(self) -> int:
        return sum(self.hits.values())


@pytest.fixture
async def gated_origin() -> AsyncIterator[GatedOrigin]:
    gate = asyncio.Event()
    hits: dict[str, int] = {}

    async def serve(request: Request) -> Response:
        name = request.path_params["name"]
        hits[name] = hits.get(name, 0) + 1
        async with asyncio.timeout(30):
            await gate.wait()
        return Response(gradient_png(name, 32), media_type="image/png")

    server = await LocalServer().start(Starlette(routes=[Route("/r/{name}.png", serve)]))
    origin = GatedOrigin(server, gate, hits)
    try:
        yield origin
    finally:
        gate.set()
        await server.stop()


@pytest.mark.timeout(90)
async def test_sigterm_drains_streams_with_a_retry_hint_and_mirroring_is_not_lost(
    start_relay: StartRelay, shared_url: str, sim: str, client: httpx.AsyncClient,
    load_balancer: LoadBalancer, gated_origin: GatedOrigin, tmp_path: Path,
) -> None:
    lb = load_balancer
    env = {
        "RELAY_PUBLIC_URL": lb.url,
        "RELAY_STORAGE_URL": f"file://{tmp_path}/shared-files",  # both instances serve one folder
        "RELAY_RESULT_HOSTS": gated_origin.server.url,
        "RELAY_RECONCILE_AFTER": "1",
        "RELAY_RECONCILE_INTERVAL": "0.3",
        "RELAY_SSE_PING": "1",
    }
    relays = [start_relay(shared_url, **env) for _ in range(2)]
    lb.start([r.port for r in relays])

    watched = [await create(client, lb.url, f"watched {i}") for i in range(4)]
    # One stream per task, and one stream for two tasks (what relay.js watchTasks opens).
    pair = watched[:2]
    multi_url = f"{lb.url}/api/events?" + "&".join(f"taskId={t['taskId']}&token={t['token']}" for t in pair)
    urls = [t["eventsUrl"] for t in watched] + [multi_url]
    async with contextlib.AsyncExitStack() as stack:
        sources = [await stack.enter_async_context(EventSource(client, url)) for url in urls]
        for source in sources:
            assert (await source.next()).json()["version"] == 1
        assert (await sources[-1].next()).json()["version"] == 1
        resume_ids = ["1"] * len(watched) + [",".join(f"{t['taskId']}:1" for t in pair)]

        async def spread() -> list[int] | None:
            counts = [await open_streams(client, r.url) for r in relays]
            return counts if sum(counts) == len(sources) else None

        counts = await until(spread, timeout=10, what="every stream to be open")
        assert counts is not None
        victim, survivor = (relays[0], relays[1]) if counts[0] >= counts[1] else (relays[1], relays[0])
        held = max(counts)
        assert held >= 1

        # Results reported to the victim just before the signal: its mirror jobs are
        # downloading them (the origin holds every download) when SIGTERM arrives.
        mirrored = [await create(client, lb.url, f"mirrored {i}") for i in range(4)]
        for t in mirrored:
            to_lb = (await sim_task(client, sim, t["taskId"]))["callBackUrl"]
            to_victim = victim.url + to_lb[len(lb.url):]
            result = f"{gated_origin.server.url}/r/{t['taskId']}.png"
            answer = await client.post(to_victim, json=success_payload(t["taskId"], result))
            assert answer.status_code == 200, answer.text

        async def downloading() -> bool:
            return gated_origin.waiting == len(mirrored)

        await until(downloading, timeout=10, what="the victim's mirror jobs to be downloading")

        assert victim.proc is not None
        signalled = time.monotonic()
        victim.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(victim.proc.wait, 15)
        took = time.monotonic() - signalled
        assert took < 12, f"graceful shutdown took {took:.1f}s"
        # 0 is the contract (see test_sigterm_exit_code_is_zero); anything else is a crash.
        assert code in (0, -signal.SIGTERM), code

        # The streams it held ended cleanly, their last bytes a short reconnect hint. The
        # ends reach the browsers through nginx after the process is gone: wait for them.
        async def ended() -> bool:
            return sum(s.connections[0].ended != "open" for s in sources) >= held

        await until(ended, timeout=10, what="the victim's streams to end at the browsers")
        drained = [s for s in sources if s.connections[0].ended == "closed"]
        assert len(drained) == held, [s.connections[0].ended for s in sources]
        for source in drained:
            hint = source.connections[0].events[-1]
            assert hint.retry is not None and 250 <= hint.retry <= 1500 and hint.data == "", hint
        # ... and the browsers came back through nginx, to the other instance, resuming.
        for source in drained:
            await until(partial(_resumed, source), timeout=10, what="the drained stream to reconnect")
            assert source.connections[1].last_event_id == resume_ids[sources.index(source)]
        assert await open_streams(client, survivor.url) == len(sources)

        # The interrupted mirror jobs are left to the survivor: its reconciler finds the
        # tasks still `processing` with the provider's URLs and saves them.
        gated_origin.gate.set()
        for t in mirrored:
            final = await wait_for_status(client, t["statusUrl"], "completed", timeout=20)
            assert final["mirrorError"] is None, final
            assert final["resultUrls"] == [f"{lb.url}/files/generated/{t['taskId']}/0.png"]
            image = await client.get(final["resultUrls"][0])
            assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
        survivor_log = survivor.log_text()
        for t in mirrored:
            assert gated_origin.hits[t["taskId"]] == 2, "downloaded again by the survivor"
            assert re.search(rf'"mirrored 1 result\(s\)","task_id":"{t["taskId"]}"', survivor_log)

        # Every watched task still reaches its browser.
        await asyncio.gather(*(deliver(client, sim, t["taskId"], "complete") for t in watched))
        for source in sources[:-1]:
            await source.until_status("completed", timeout=20)
            assert_strictly_increasing(versions(source.all))
        await asyncio.wait_for(sources[-1].stopped.wait(), 20)
        finished = {e.json()["taskId"]: e.json()["version"] for e in sources[-1].all if e.json()["status"] == "completed"}
        assert set(finished) == {t["taskId"] for t in pair}
        assert sources[-1].connections[-1].ended == "stopped: 204", "the multi-task stream ended for good"


async def _resumed(source: EventSource) -> bool:
    return len(source.connections) >= 2 and source.connections[1].status == 200


@pytest.mark.timeout(60)
async def test_sigterm_exit_code_is_zero(start_relay: StartRelay, sim: str, client: httpx.AsyncClient) -> None:
    relay = start_relay()
    task = await create(client, relay.url)
    async with Stream(client, task["eventsUrl"]) as stream:
        assert (await stream.next()).json()["version"] == 1
        assert relay.proc is not None
        signalled = time.monotonic()
        relay.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(relay.proc.wait, 15)
        assert time.monotonic() - signalled < 12
        await asyncio.wait_for(stream.closed.wait(), 5)
    assert stream.all[-1].retry is not None, "the stream ended with a reconnect hint"
    assert code == 0


# --------------------------------------------------------------------------- a reader that stops reading


@pytest.mark.timeout(90)
async def test_a_reader_that_stops_reading_is_dropped_without_hurting_others(
    start_relay: StartRelay, shared_url: str, sim: str, client: httpx.AsyncClient
) -> None:
    send_timeout = 2.0
    relay = start_relay(
        shared_url, RELAY_SSE_SEND_TIMEOUT=str(send_timeout), RELAY_SSE_PING="0.5", RELAY_MIRROR="off"
    )
    # ~4000 characters; CJK text is three bytes a character in the JSON (~12 KB an event),
    # so the loopback socket buffers fill after a few hundred events.
    prompt = ("一只红色的狐狸在雪地里奔跑 " * 300)[:4000]
    task = await create(client, relay.url, prompt)
    task_id = task["taskId"]
    callback_url = (await sim_task(client, sim, task_id))["callBackUrl"]
    pid = pid_of(relay)
    updates = 400

    async with Stream(client, task["eventsUrl"]) as normal:
        assert (await normal.next()).json()["version"] == 1
        # Warm up the code paths before the baseline.
        for n in range(1, 6):
            assert (await client.post(callback_url, json=progress_payload(task_id, n / 10))).status_code == 200
            assert (await normal.next()).json()["version"] == n + 1
        baseline = rss_kib(pid)

        slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # before connect: a tiny window
        slow.connect((HOST, relay.port))
        path = task["eventsUrl"][len(relay.url):]
        slow.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{relay.port}\r\nAccept: text/event-stream\r\n\r\n".encode())
        try:
            await until(
                lambda: _streams_are(client, relay.url, 2), timeout=10, what="the slow reader's stream to open"
            )
            latencies: list[float] = []
            peak = baseline
            dropped_after: int | None = None
            version = 6
            for n in range(updates):
                percent = 1 + n * (98 / updates)
                sent = time.monotonic()
                answer = await client.post(callback_url, json=progress_payload(task_id, percent))
                assert answer.status_code == 200, answer.text
                version += 1
                event = await normal.next(timeout=5)
                latencies.append(time.monotonic() - sent)
                assert event.json()["version"] == version
                if n % 20 == 0:
                    peak = max(peak, rss_kib(pid))
                    if dropped_after is None and await open_streams(client, relay.url) == 1:
                        dropped_after = n
            # The slow stream is dropped after the send timeout (if the flood was not long enough
            # to see it happen already).
            await until(
                lambda: _streams_are(client, relay.url, 1),
                timeout=send_timeout + 10,
                what="the slow reader's stream to be dropped",
            )
            # The normal reader still gets everything, promptly, to the end.
            await deliver(client, sim, task_id, "complete")
            final = await normal.until_status("completed", timeout=10)
            assert final[-1].json()["version"] == version + 1
            peak = max(peak, rss_kib(pid))
        finally:
            received = await asyncio.to_thread(_drain, slow)
    growth_mib = (peak - baseline) / 1024
    event_bytes = len(final[-1].data.encode())
    assert event_bytes > 10_000
    pushed_mib = updates * event_bytes / 2**20
    # The server closed the slow connection; far from everything reached it.
    assert received.count(b"event: task") < updates, "the slow reader was never held back"
    assert statistics.median(latencies) < 0.25 and max(latencies) < 2, (
        f"normal reader latency: median {statistics.median(latencies):.3f}s, max {max(latencies):.3f}s"
    )
    assert growth_mib < 5, f"RSS grew {growth_mib:.1f} MiB while {pushed_mib:.1f} MiB of events were pushed"


async def _streams_are(client: httpx.AsyncClient, url: str, count: int) -> bool:
    return await open_streams(client, url) == count


def _drain(sock: socket.socket, timeout: float = 10) -> bytes:
    """Read what the server left in the socket until it closes; fails if it never does."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return b"".join(chunks)


# --------------------------------------------------------------------------- a burst


@pytest.mark.timeout(120)
async def test_burst_of_200_tasks_streams_and_callbacks(
    start_relay: StartRelay, shared_url: str, sim: str
) -> None:
    relay = start_relay(
        shared_url,
        RELAY_MIRROR="off",
        RELAY_RATE_CREATE="100000",
        RELAY_RATE_CALLBACK="100000",
        RELAY_MAX_STREAMS_PER_CLIENT="100000",
    )
    count, failing = 200, 20
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        gate = asyncio.Semaphore(20)

        async def create_one(n: int) -> dict[str, Any]:
            async with gate:
                return await create(client, relay.url, f"burst {n}")

        tasks = await asyncio.gather(*(create_one(n) for n in range(count)))
        assert len({t["taskId"] for t in tasks}) == count
        fails = {t["taskId"] for t in tasks[::count // failing]}
        assert len(fails) == failing
        callback_urls = [(await sim_task(client, sim, t["taskId"]))["callBackUrl"] for t in tasks]

        async with contextlib.AsyncExitStack() as stack:
            streams = await asyncio.gather(*(stack.enter_async_context(Stream(client, t["eventsUrl"])) for t in tasks))
            for stream in streams:
                assert (await stream.next()).json()["version"] == 1
            assert await open_streams(client, relay.url) == count

            # Every callback at once, in KIE's exact shapes, each to its task's callback URL.
            bodies = [
                failure_payload(t["taskId"]) if t["taskId"] in fails else success_payload(t["taskId"]) for t in tasks
            ]
            started = time.monotonic()
            answers = await asyncio.gather(
                *(client.post(url, json=body) for url, body in zip(callback_urls, bodies, strict=True))
            )
            window = time.monotonic() - started
            statuses = Counter(a.status_code for a in answers)
            assert statuses == {200: count}, f"callback answers {statuses} within {window:.2f}s"
            await asyncio.wait_for(asyncio.gather(*(s.closed.wait() for s in streams)), 30)

        completed = failed = 0
        for task, stream in zip(tasks, streams, strict=True):
            bodies = [e.json() for e in stream.all if e.event == "task"]
            assert_strictly_increasing([b["version"] for b in bodies])
            terminal = [b for b in bodies if b["status"] in TERMINAL]
            assert len(terminal) == 1, (task["taskId"], [b["status"] for b in bodies])
            expected = "failed" if task["taskId"] in fails else "completed"
            assert terminal[0]["status"] == expected and bodies[-1] is terminal[0]
            completed += expected == "completed"
            failed += expected == "failed"
        assert count == completed + failed and failed == failing
        # Relay never answered a callback with a 5xx (the simulator would have retried it).
        assert await metric(client, relay.url, "relay_http_requests_total", route="/api/callbacks/kie", status="503") == 0
        served = await metric(client, relay.url, "relay_callbacks_total", outcome="applied")
        assert served == count, f"{served} callbacks applied for {count} tasks"
        # The load asked for: 200 callbacks inside ~2 s (generous bound: a shared 2-core machine).
        assert window < 6, f"200 callbacks took {window:.2f}s to be answered"
