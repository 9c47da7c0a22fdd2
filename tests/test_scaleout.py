"""Scale-out: Debian's nginx running deploy/nginx.conf in front of three Relay instances on
loopback, one Redis, one S3 API (moto_server) that every instance shares. Browsers create,
stream and read through nginx; the simulator calls back through nginx (RELAY_PUBLIC_URL is
the load balancer's URL). No task may be handled twice: the provider is polled at most once
per lease, each result object is written once (the bucket is versioned, so an overwrite
would show), and each task's versions never repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.sim.png import gradient_png
from tests.cluster import RedisCluster
from tests.deploy_nginx import LoadBalancer
from tests.helpers import (
    TERMINAL,
    assert_strictly_increasing,
    create,
    open_streams,
    sim_task,
    success_payload,
    versions,
)
from tests.s3server import ACCESS_KEY, REGION, SECRET_KEY, MotoServer
from tests.servers import HOST, AppProcess, RedisServer, relay_env
from tests.sse import EventSource
from tests.waiting import until

INSTANCES = 3
RECONCILE_AFTER = 1.5
RECONCILE_INTERVAL = 0.5  # the shortest lease a poll takes (Reconciler.poll_interval)
PREFIX = "relay"


class HeldOrigin:
    """The provider's file server (a thread of the test process), able to hold downloads:
    while `gate` is clear every request waits (up to 30 s) before it gets its PNG."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.hits: Counter[str] = Counter()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1].removesuffix(".png")
                origin.hits[name] += 1
                origin.gate.wait(30)
                body = gradient_png(name, 32)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{HOST}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="held-origin", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Cluster:
    lb: LoadBalancer
    relays: list[AppProcess]
    moto: MotoServer
    bucket: str
    origin: HeldOrigin

    async def object_versions(self, folder: str) -> Counter[str]:
        """How many times each key under `folder` was written (the bucket keeps versions)."""
        written: Counter[str] = Counter()
        async with self.moto.client() as s3:
            paginator = s3.get_paginator("list_object_versions")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{PREFIX}/{folder}/"):
                for version in page.get("Versions", []):
                    written[version["Key"]] += 1
        return written


async def _versioned_bucket(moto: MotoServer) -> str:
    bucket = f"relay-{uuid.uuid4().hex[:12]}"
    async with moto.client() as s3:
        await s3.create_bucket(Bucket=bucket)
        await s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


@pytest.fixture(scope="module", params=["redis", "redis-cluster"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sim_process: AppProcess
) -> Iterator[Cluster]:
    """The instances share one Redis, or (#18) a three-master Redis Cluster."""
    root = tmp_path_factory.mktemp("scaleout")
    with contextlib.ExitStack() as stack:
        moto = MotoServer(root / "moto.log")
        stack.callback(moto.stop)
        redis: RedisServer | RedisCluster = (
            RedisCluster(root / "cluster") if request.param == "redis-cluster" else RedisServer(root / "redis")
        )
        stack.callback(redis.stop)
        with ThreadPoolExecutor(2) as pool:  # the slow starts overlap
            moto_started, redis_started = pool.submit(moto.start), pool.submit(redis.start)
            moto_started.result()
            redis_started.result()
        bucket = asyncio.run(_versioned_bucket(moto))
        origin = HeldOrigin()
        stack.callback(origin.stop)

        lb = LoadBalancer(root / "nginx")  # first: its URL is every instance's public URL
        stack.callback(lb.stop)
        relays = []
        for n in range(INSTANCES):
            relay = AppProcess(["serve"], {}, ready_path="/healthz", log_path=root / f"relay-{n}.log")
            relay.env = relay_env(
                redis_url=redis.url, sim_url=sim_process.url, public_url=lb.url,
                RELAY_STORAGE_URL=f"s3://{bucket}/{PREFIX}",
                RELAY_S3_ENDPOINT_URL=moto.url,
                RELAY_S3_REGION=REGION,
                RELAY_S3_ACCESS_KEY_ID=ACCESS_KEY,
                RELAY_S3_SECRET_ACCESS_KEY=SECRET_KEY,
                RELAY_RECONCILE_AFTER=str(RECONCILE_AFTER),
                RELAY_RECONCILE_INTERVAL=str(RECONCILE_INTERVAL),
                RELAY_RATE_CREATE="100000",
                RELAY_MAX_STREAMS_PER_CLIENT="100000",
                RELAY_RESULT_HOSTS=f"{sim_process.url},{origin.url}",
            )
            stack.callback(relay.stop)
            relays.append(relay)
        with ThreadPoolExecutor(INSTANCES) as pool:
            for future in [pool.submit(r.start) for r in relays]:
                future.result()
        lb.start([r.port for r in relays])
        yield Cluster(lb, relays, moto, bucket, origin)


@dataclass
class Watched:
    task: dict[str, Any]
    created: float  # monotonic, taken before the create request
    source: EventSource
    terminal_seen: float = math.inf

    @property
    def task_id(self) -> str:
        tid: str = self.task["taskId"]
        return tid


async def watch(stack: contextlib.AsyncExitStack, client: httpx.AsyncClient, lb: LoadBalancer, prompt: str) -> Watched:
    created = time.monotonic()
    task = await create(client, lb.url, prompt)
    source = await stack.enter_async_context(EventSource(client, task["eventsUrl"]))
    return Watched(task, created, source)


async def until_terminal(w: Watched, timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            body: dict[str, Any] = (await w.source.next(timeout=timeout)).json()
            if body["status"] in TERMINAL:
                w.terminal_seen = time.monotonic()
                return body


def lease_bound(w: Watched) -> int:
    """The most status queries the reconcilers of all instances together may make for a
    task: none before it is due (unchanged for RELAY_RECONCILE_AFTER), then at most one per
    lease (no shorter than RELAY_RECONCILE_INTERVAL) until it was seen terminal."""
    open_for = w.terminal_seen - w.created - RECONCILE_AFTER
    return 0 if open_for < 0 else 1 + math.floor(open_for / RECONCILE_INTERVAL)


async def check_handled_once(cluster: Cluster, client: httpx.AsyncClient, sim: str, watched: list[Watched]) -> None:
    """Versions never repeat, the terminal state is seen once, status queries stay within
    the lease bound, and each result object was written once."""
    results = await cluster.object_versions("generated")
    for w in watched:
        bodies = [e.json() for e in w.source.all]
        assert_strictly_increasing(versions(w.source.all))
        assert sum(b["status"] in TERMINAL for b in bodies) == 1, [b["status"] for b in bodies]
        at_sim = await sim_task(client, sim, w.task_id)
        assert at_sim["statusQueries"] <= lease_bound(w), (w.task_id, at_sim["statusQueries"], lease_bound(w))
        mine = {key: n for key, n in results.items() if key.startswith(f"{PREFIX}/generated/{w.task_id}/")}
        if bodies[-1]["status"] == "completed":
            assert mine == {f"{PREFIX}/generated/{w.task_id}/0.png": 1}, mine
        else:
            assert mine == {}, mine

    async def metadata_written() -> bool:
        meta = await cluster.object_versions("kie-tasks")
        return all(meta[f"{PREFIX}/kie-tasks/{w.task_id}.json"] >= 1 for w in watched)

    await until(metadata_written, timeout=10, what="every terminal task's metadata in the bucket")


async def check_result(client: httpx.AsyncClient, cluster: Cluster, final: dict[str, Any]) -> None:
    assert final["mirrorError"] is None and final["providerResultUrls"], final
    [url] = final["resultUrls"]
    assert url.startswith(f"{cluster.moto.url}/{cluster.bucket}/{PREFIX}/generated/{final['taskId']}/0.png")
    image = await client.get(url)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


@pytest.mark.timeout(120)
async def test_core_flows_through_nginx(cluster: Cluster, sim: str, client: httpx.AsyncClient) -> None:
    lb = cluster.lb
    count, failing = 12, 2
    async with contextlib.AsyncExitStack() as stack:
        watched = list(await asyncio.gather(*(watch(stack, client, lb, f"through nginx {n}") for n in range(count))))
        for w in watched:
            assert w.task["statusUrl"].startswith(f"{lb.url}/api/tasks/{w.task_id}?token=")
            assert w.task["eventsUrl"].startswith(f"{lb.url}/api/tasks/{w.task_id}/events?token=")
            at_sim = await sim_task(client, sim, w.task_id)
            assert at_sim["callBackUrl"].startswith(f"{lb.url}/api/callbacks/kie?token=")
            assert (await w.source.next()).json()["version"] == 1

        # Every instance holds some of the streams (least_conn spreads long-lived ones).
        async def spread() -> list[int] | None:
            counts = [await open_streams(client, r.url) for r in cluster.relays]
            return counts if sum(counts) == count else None

        counts = await until(spread, timeout=10, what="every stream to be open")
        assert counts is not None and all(counts), f"streams per instance: {counts}"

        fails = {w.task_id for w in watched[:failing]}
        answers = await asyncio.gather(
            *(
                client.post(f"{sim}/sim/tasks/{w.task_id}/{'fail' if w.task_id in fails else 'complete'}")
                for w in watched
            )
        )
        assert [a.json()["status"] for a in answers] == [200] * count, "callbacks through nginx were accepted"
        finals = await asyncio.gather(*(until_terminal(w, 20) for w in watched))
        await asyncio.wait_for(asyncio.gather(*(w.source.stopped.wait() for w in watched)), 15)

    for w, streamed in zip(watched, finals, strict=True):
        assert streamed["status"] == ("failed" if w.task_id in fails else "completed")
        # The stream closed after the terminal event and the reconnect got 204 (via nginx).
        assert [c.ended for c in w.source.connections] == ["closed", "stopped: 204"]
        read = (await client.get(w.task["statusUrl"])).json()
        assert read == streamed, "the status read and the stream see the same task object"
        if streamed["status"] == "completed":
            await check_result(client, cluster, streamed)
        else:
            assert streamed["error"]["code"] == "provider_failed" and streamed["resultUrls"] == []
    await check_handled_once(cluster, client, sim, watched)


@pytest.mark.timeout(120)
async def test_reconciler_through_nginx_when_every_callback_is_dropped(
    cluster: Cluster, sim: str, client: httpx.AsyncClient
) -> None:
    lb = cluster.lb
    count = 9
    config = {"callback_delay": 0.2, "drop_callbacks": 1.0, "failure_rate": 0.3, "seed": 7}
    (await client.patch(f"{sim}/sim/config", json=config)).raise_for_status()
    async with contextlib.AsyncExitStack() as stack:
        watched = list(await asyncio.gather(*(watch(stack, client, lb, f"dropped {n}") for n in range(count))))
        finals = await asyncio.gather(*(until_terminal(w, 30) for w in watched))

    outcomes = []
    for w, final in zip(watched, finals, strict=True):
        at_sim = await sim_task(client, sim, w.task_id)
        assert at_sim["callbacksSent"] == 0, "the simulator dropped every callback"
        assert at_sim["statusQueries"] >= 1, "the reconciler asked the provider"
        assert final["status"] == {"success": "completed", "fail": "failed"}[at_sim["state"]]
        outcomes.append(final["status"])
        if final["status"] == "completed":
            await check_result(client, cluster, final)
    assert set(outcomes) == {"completed", "failed"}, outcomes
    await check_handled_once(cluster, client, sim, watched)


@pytest.mark.timeout(60)
async def test_a_slow_mirror_copy_is_not_started_twice(cluster: Cluster, sim: str, client: httpx.AsyncClient) -> None:
    lb, origin = cluster.lb, cluster.origin
    task = await create(client, lb.url, "a large result on a slow link")
    task_id = task["taskId"]
    callback_url = (await sim_task(client, sim, task_id))["callBackUrl"]
    origin.gate.clear()  # the download takes longer than RELAY_RECONCILE_AFTER
    try:
        answer = await client.post(callback_url, json=success_payload(task_id, f"{origin.url}/r/{task_id}.png"))
        assert answer.status_code == 200, answer.text

        async def downloads(n: int) -> bool:
            return origin.hits[task_id] >= n

        await until(lambda: downloads(1), timeout=10, what="the mirror copy to start")
        # Give every instance's reconciler several chances to look at the task.
        with contextlib.suppress(TimeoutError):
            await until(lambda: downloads(2), timeout=4 * RECONCILE_AFTER, what="a second copy")
    finally:
        origin.gate.set()
    final = await until(
        lambda: _completed(client, task["statusUrl"]), timeout=20, what="the task to complete with our copy"
    )
    assert final is not None and final["mirrorError"] is None
    written = await cluster.object_versions("generated")
    assert origin.hits[task_id] == 1, f"the result was downloaded {origin.hits[task_id]} times"
    assert written[f"{PREFIX}/generated/{task_id}/0.png"] == 1, written


async def _completed(client: httpx.AsyncClient, status_url: str) -> dict[str, Any] | None:
    body: dict[str, Any] = (await client.get(status_url)).json()
    return body if body["status"] == "completed" else None


def test_the_cluster_runs_the_operators_nginx_conf(cluster: Cluster) -> None:
    rendered = cluster.lb.conf.read_text()
    template = (Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf").read_text()
    # Everything but the placeholders and the sandbox lines is the operators' file.
    for line in template.splitlines():
        if "{{" not in line and line.strip() and "worker_processes" not in line:
            assert line in rendered, line
    assert all(f"127.0.0.1:{r.port}" in rendered for r in cluster.relays)
