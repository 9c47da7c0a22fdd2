"""The systems under test, behind one small interface.

- Relay: redis-server + `relay kie-sim` (manual mode: it never finishes a task by itself) +
  `relay serve`. A task is created with `POST /api/tasks`; its stream is
  `/api/tasks/{id}/events`; an update is a KIE callback POSTed to the `callBackUrl` the
  simulator was given (read from `GET /sim/tasks`).
- nchan: redis-server + nginx with nchan (Redis storage). A "task" is a channel whose first
  message (version 1) is published at creation; its stream is `/sub/{key}` (EventSource); an
  update is a publish to `/pub/{key}`.
- peer: redis-server + the tutorial-style Starlette/sse-starlette service in bench/peer/
  (one uvicorn worker). A task is created with `POST /tasks`; its stream is
  `/tasks/{id}/events`; an update is the whole task object POSTed to `/tasks/{id}/update`.

In all three, version 1 exists before any stream opens, and every update adds exactly one version.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson

from bench import gcstats
from bench.httpclient import Client
from bench.payloads import update_body, update_headers
from bench.servers import (
    HOST,
    Managed,
    cluster_url,
    free_port,
    http_ok,
    nginx_server,
    peer_process,
    redis_server,
    relay_process,
    start_redis_cluster,
)

SECRET = "bench-secret-0123456789-abcdefghijklmnopqrstuv"
CREATE_ATTEMPTS = 6
REDIS_MODES = ("single", "cluster")
_run_ids = itertools.count(1)


class Target:
    name = ""
    kind = ""
    closes_streams = True  # ends a stream after the terminal event (nchan never does)
    gc_source = ""  # where GC pauses come from; "" = not measurable (nchan)

    def __init__(self, workdir: Path, nofile: int, create_concurrency: int = 32):
        self.workdir = workdir
        self.nofile = nofile
        self.create_concurrency = create_concurrency
        self.port = 0
        self.redis: Managed | None = None
        self.server: Managed | None = None
        self.helpers: dict[str, Managed] = {}
        self.update_paths: dict[str, str] = {}
        self.processes = 1  # server processes whose GC figures are expected

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        for proc in [self.server, *self.helpers.values(), self.redis]:
            if proc is not None:
                await proc.stop()

    def groups(self) -> dict[str, list[int]]:
        """Process groups whose CPU and memory the report shows."""
        out: dict[str, list[int]] = {}
        if self.server is not None and self.server.alive():
            out["server"] = [self.server.pid]
        if self.redis is not None and self.redis.alive():
            out["redis"] = [self.redis.pid]
        for name, proc in self.helpers.items():
            if proc.alive():
                out[name] = [proc.pid]
        return out

    def check_alive(self) -> None:
        for proc in [self.server, self.redis, *self.helpers.values()]:
            if proc is not None and not proc.alive():
                raise RuntimeError(f"{proc.name} died; log {proc.log_path}:\n{proc.log_tail()}")

    # --- the contract the scenarios use -------------------------------------------------

    async def create(self, n: int) -> list[str]:
        """Create `n` tasks (version 1 stored); return their keys."""
        raise NotImplementedError

    def stream_path(self, key: str) -> str:
        raise NotImplementedError

    def update_request(self, client: Client, key: str, version: int, *, final: bool) -> bytes:
        """The raw request that makes `version` of `key`."""
        body = update_body(self.kind, key, version, final=final)
        return client.build("POST", self.update_paths[key], body, update_headers(self.kind))

    def ingest_items(self, keys: list[str], versions: dict[str, int]) -> list[list[object]]:
        return [[key, self.update_paths[key], versions[key]] for key in keys]

    async def gc_snapshot(self) -> gcstats.Snapshot | None:
        """Every server process's GC pause histograms, or None where there are none."""
        return None


async def _bounded_gather(n: int, limit: int, job: object) -> list[object]:
    sem = asyncio.Semaphore(limit)

    async def one(i: int) -> object:
        async with sem:
            return await job(i)  # type: ignore[operator]

    return list(await asyncio.gather(*(one(i) for i in range(n))))


class RelayTarget(Target):
    name = "Relay"
    kind = "relay"
    gc_source = "relay_gc_pause_seconds at /metrics"

    def __init__(self, workdir: Path, nofile: int, create_concurrency: int = 32,
                 extra_env: dict[str, str] | None = None, workers: int = 1, redis: str = "single"):
        super().__init__(workdir, nofile, create_concurrency)
        if redis not in REDIS_MODES:
            raise ValueError(f"redis must be one of {REDIS_MODES}, not {redis!r}")
        self.extra_env = extra_env or {}
        self.sim_port = 0
        self.redis_port = 0
        # "single": one redis-server (self.redis); "cluster": a three-master Redis Cluster
        # (bench/servers.py start_redis_cluster), self.redis None. Either way every node is
        # in redis_nodes, its port at the same index in redis_ports.
        self.redis_mode = redis
        self.redis_nodes: list[Managed] = []
        self.redis_ports: list[int] = []
        self.instances: list[Managed] = []  # add_instance(): more `relay serve`s on one Redis
        self.workers = max(1, workers)
        self.processes = self.workers

    async def start(self) -> None:
        await self.start_backends(wait_sim=False)
        self.port = free_port()
        self.server = self.serve_process(self.port, workers=self.workers).start()
        await self.helpers["sim"].wait_ready(lambda: http_ok(self.sim_port, "/sim/config"))
        await self.server.wait_ready(lambda: http_ok(self.port, "/healthz"))
        if self.workers > 1:  # every worker up (each answers /metrics once it serves)
            await self.server.wait_ready(self._all_workers_up, within=60)

    async def start_backends(self, *, wait_sim: bool = True) -> None:
        """Redis (one redis-server, or a Redis Cluster) and `relay kie-sim`, without any
        `relay serve` (start() adds one; bench/scaleout.py adds several with add_instance())."""
        if self.redis_mode == "cluster":
            self.redis_ports = await start_redis_cluster(self.workdir / "redis-cluster", self.redis_nodes)
        else:
            self.redis, self.redis_port = redis_server(self.workdir / "redis")
            self.redis_nodes.append(self.redis.start())
            self.redis_ports = [self.redis_port]
            await self.redis.wait_ready(lambda: _redis_ping(self.redis_port))
        self.sim_port = free_port()
        sim = relay_process(
            "relay kie-sim",
            # A balance no run exhausts (the default, 10,000, pays for 2,500 tasks only).
            ["kie-sim", "--host", HOST, "--port", str(self.sim_port), "--callback-delay", "manual",
             "--credits", "1000000000"],
            {"RELAY_LOG_LEVEL": "WARNING"},
            self.workdir / "sim.log",
        )
        self.helpers["sim"] = sim.start()
        if wait_sim:
            await sim.wait_ready(lambda: http_ok(self.sim_port, "/sim/config"))

    @property
    def redis_url(self) -> str:
        """RELAY_REDIS_URL of every `relay serve`: the redis-server or the cluster's nodes."""
        if self.redis_mode == "cluster":
            return cluster_url(self.redis_ports)
        return f"redis://{HOST}:{self.redis_port}/0"

    def serve_env(self, port: int) -> dict[str, str]:
        """The environment of a `relay serve` listening on `port`."""
        return {
            "RELAY_REDIS_URL": self.redis_url,
            "RELAY_PROVIDER": "sim",
            "KIE_BASE_URL": f"http://{HOST}:{self.sim_port}",
            "KIE_API_KEY": "sim-key",
            "RELAY_PUBLIC_URL": f"http://{HOST}:{port}",
            "RELAY_SECRET": SECRET,
            "RELAY_AUTH": "none",
            "RELAY_MIRROR": "off",
            "RELAY_STORAGE_URL": f"file://{self.workdir / 'files'}",
            "RELAY_LOG_LEVEL": "WARNING",
            "RELAY_LOG_FORMAT": "json",
            "RELAY_RECONCILE_AFTER": "3600",
            "RELAY_TASK_DEADLINE": "7200",
            "RELAY_SSE_PING": "15",
            # All load comes from one address (127.0.0.1): lift the per-client limits that
            # exist to stop one abusive browser, or they would be all the bench measures.
            "RELAY_RATE_CREATE": "100000000",
            "RELAY_RATE_CALLBACK": "100000000",
            "RELAY_MAX_STREAMS_PER_CLIENT": "1000000",
            **self.extra_env,
        }

    def serve_process(self, port: int, *, workers: int = 1, name: str = "relay serve",
                      log: str = "relay.log") -> Managed:
        """One `relay serve` on `port` (not started), on this target's Redis and simulator."""
        args = ["serve", "--host", HOST, "--port", str(port)]
        if workers > 1:
            args += ["--workers", str(workers)]
        return relay_process(name, args, self.serve_env(port), self.workdir / log)

    async def add_instance(self, label: str) -> tuple[Managed, int]:
        """Another `relay serve` (one process, same environment, same Redis and simulator),
        ready; stop() stops it with the rest (or stop_instance() on its own)."""
        port = free_port()
        proc = self.serve_process(port, name=f"relay serve {label}", log=f"relay-{label}.log")
        self.instances.append(proc.start())
        await proc.wait_ready(lambda: http_ok(port, "/healthz"))
        return proc, port

    async def stop_instance(self, proc: Managed) -> None:
        await proc.stop()
        if proc in self.instances:
            self.instances.remove(proc)

    async def stop(self) -> None:
        for proc in list(self.instances):
            await self.stop_instance(proc)
        await super().stop()
        for node in self.redis_nodes:  # the cluster's (the single server is stopped already)
            await node.stop()

    def check_alive(self) -> None:
        super().check_alive()
        for node in self.redis_nodes:
            if not node.alive():
                raise RuntimeError(f"{node.name} died; log {node.log_path}:\n{node.log_tail()}")

    async def _all_workers_up(self) -> bool:
        async def who() -> tuple[str, dict[str, gcstats.Hist]]:
            text = (await gcstats.http_get(self.port, "/metrics")).decode()
            return gcstats.process_identity(text), {}

        return len(await gcstats.scrape(who, self.workers, attempts=8)) >= self.workers

    async def _metrics(self) -> tuple[str, dict[str, gcstats.Hist]]:
        return gcstats.parse_prometheus((await gcstats.http_get(self.port, "/metrics")).decode())

    async def gc_snapshot(self) -> gcstats.Snapshot | None:
        return await gcstats.scrape(self._metrics, self.workers)

    def groups(self) -> dict[str, list[int]]:
        out = super().groups()
        if self.redis is None and self.redis_nodes:  # a cluster: its nodes together
            out["redis"] = [node.pid for node in self.redis_nodes if node.alive()]
        if "sim" in out:
            out["KIE sim"] = out.pop("sim")
        return out

    async def create(self, n: int, port: int = 0) -> list[str]:
        """`port`: the `relay serve` to create them on (default: this target's server)."""
        run = next(_run_ids)
        client = Client(port or self.port, size=self.create_concurrency, timeout=30)

        async def one(i: int) -> str:
            body = orjson.dumps({"prompt": f"bench run {run} task {i}"})
            for attempt in range(CREATE_ATTEMPTS):
                response = await client.request("POST", "/api/tasks", body)
                if response.status == 202:
                    task_id: str = orjson.loads(response.body)["taskId"]
                    return task_id
                if response.status in (429, 503) and attempt + 1 < CREATE_ATTEMPTS:
                    await asyncio.sleep(0.2 * 2**attempt)
                    continue
                raise RuntimeError(f"POST /api/tasks answered {response.status}: {response.body[:200]!r}")
            raise RuntimeError("unreachable")

        try:
            keys = [str(k) for k in await _bounded_gather(n, self.create_concurrency, one)]
        finally:
            client.close()
        await self._learn_callback_urls(set(keys))
        return keys

    async def _learn_callback_urls(self, wanted: set[str]) -> None:
        async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
            answer = await http.get(f"http://{HOST}:{self.sim_port}/sim/tasks")
            answer.raise_for_status()
        for task in answer.json()["tasks"]:
            if task["taskId"] in wanted and task.get("callBackUrl"):
                url = urlsplit(task["callBackUrl"])
                self.update_paths[task["taskId"]] = f"{url.path}?{url.query}"
        missing = wanted - self.update_paths.keys()
        if missing:
            raise RuntimeError(f"the simulator has no callBackUrl for {len(missing)} task(s)")

    def stream_path(self, key: str) -> str:
        return f"/api/tasks/{key}/events"


class NchanTarget(Target):
    name = "nchan"
    kind = "nchan"
    closes_streams = False

    async def start(self) -> None:
        self.redis, redis_port = redis_server(self.workdir / "redis")
        self.redis.start()
        await self.redis.wait_ready(lambda: _redis_ping(redis_port))
        self.server, self.port = nginx_server(self.workdir / "nginx", redis_port, self.nofile)
        self.server.start()
        # nchan answers 503 to publishes until its Redis connection is up: probe with one.
        await self.server.wait_ready(self._publish_works)

    async def _publish_works(self) -> bool:
        client = Client(self.port, size=1, timeout=2)
        try:
            response = await client.request("POST", "/pub/bench-ready", b"{}")
            return 200 <= response.status < 300
        finally:
            client.close()

    async def create(self, n: int) -> list[str]:
        run = next(_run_ids)
        keys = [f"r{run}t{i}" for i in range(n)]
        for key in keys:
            self.update_paths[key] = f"/pub/{key}"
        client = Client(self.port, size=self.create_concurrency, timeout=30)

        async def one(i: int) -> None:
            response = await client.send(self.update_request(client, keys[i], 1, final=False))
            if not 200 <= response.status < 300:
                raise RuntimeError(f"publish answered {response.status}: {response.body[:200]!r}")

        try:
            await _bounded_gather(n, self.create_concurrency, one)
        finally:
            client.close()
        return keys

    def stream_path(self, key: str) -> str:
        return f"/sub/{key}"


class PeerTarget(Target):
    """The tutorial-style Python service (bench/peer/app.py), started by bench/peer/run.py."""

    name = "peer"
    kind = "peer"
    gc_source = "gc.callbacks hook of bench/peer/run.py"

    async def start(self) -> None:
        self.redis, redis_port = redis_server(self.workdir / "redis")
        self.redis.start()
        await self.redis.wait_ready(lambda: _redis_ping(redis_port))
        self.server, self.port = peer_process(self.workdir / "peer.log", redis_port)
        self.server.start()
        await self.server.wait_ready(self._ready)

    async def _ready(self) -> bool:
        client = Client(self.port, size=1, timeout=2)
        try:  # the app is up and reaches Redis: an unknown task is a 404
            return (await client.request("GET", "/tasks/bench-ready/events")).status == 404
        finally:
            client.close()

    async def create(self, n: int) -> list[str]:
        run = next(_run_ids)
        client = Client(self.port, size=self.create_concurrency, timeout=30)

        async def one(i: int) -> str:
            body = orjson.dumps({"prompt": f"bench run {run} task {i}"})
            response = await client.request("POST", "/tasks", body)
            if response.status != 201:
                raise RuntimeError(f"POST /tasks answered {response.status}: {response.body[:200]!r}")
            task_id: str = orjson.loads(response.body)["taskId"]
            return task_id

        try:
            keys = [str(k) for k in await _bounded_gather(n, self.create_concurrency, one)]
        finally:
            client.close()
        for key in keys:
            self.update_paths[key] = f"/tasks/{key}/update"
        return keys

    def stream_path(self, key: str) -> str:
        return f"/tasks/{key}/events"

    async def gc_snapshot(self) -> gcstats.Snapshot | None:
        identity, hists = gcstats.parse_peer(await gcstats.http_get(self.port, "/_bench/gc"))
        return {identity: hists}


async def _redis_ping(port: int) -> bool:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 1.0)
    try:
        writer.write(b"PING\r\n")
        return (await asyncio.wait_for(reader.readline(), 1.0)).startswith(b"+PONG")
    finally:
        writer.close()


TARGETS: dict[str, type[Target]] = {"relay": RelayTarget, "peer": PeerTarget, "nchan": NchanTarget}
