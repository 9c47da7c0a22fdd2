"""Starting and stopping the servers under test, each on a free loopback port.

Every child gets the hard RLIMIT_NOFILE as its soft limit, its own session (so a Ctrl-C in
the terminal reaches only the bench, which then stops the children in order) and a parent
death signal (so nothing outlives a bench that was killed outright). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import functools
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError

HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1
NGINX_MODULE_DIRS = ("/usr/lib/nginx/modules", "/usr/share/nginx/modules")
TEMPLATE = Path(__file__).with_name("nchan.conf.template")

_live: list[Managed] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _child_setup() -> None:
    """Runs in the child between fork and exec."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Managed:
    """One child process with a log file."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Managed:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, preexec_fn=_child_setup, start_new_session=True,
            )
        _live.append(self)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop_sync(self, timeout: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self in _live:
            _live.remove(self)

    async def stop(self, within: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            for _ in range(int(within / 0.05)):
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=5)
        if self in _live:
            _live.remove(self)

    async def wait_ready(self, probe: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        for _ in range(int(within / 0.1) + 1):
            if time.monotonic() >= deadline:
                break
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early; log {self.log_path}:\n{self.log_tail()}")
            with contextlib.suppress(Exception):
                if await probe():
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} was not ready within {within:.0f}s; log {self.log_path}")


@atexit.register
def stop_everything() -> None:
    """Last resort (normal exit paths stop their servers themselves)."""
    for proc in list(reversed(_live)):
        with contextlib.suppress(Exception):
            proc.stop_sync(timeout=10)


async def tcp_ready(port: int) -> bool:
    _, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 1.0)
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True


async def http_ok(port: int, path: str) -> bool:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 1.0)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), 2.0)
        return line.split(b" ")[1:2] == [b"200"]
    finally:
        writer.close()


def redis_server(workdir: Path) -> tuple[Managed, int]:
    """A private redis-server with AOF on (what Relay's production notes require); the same
    configuration serves every target."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    args = [
        binary, "--port", str(port), "--bind", HOST, "--dir", str(workdir), "--save", "",
        "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning",
        "--appendonly", "yes", "--appendfsync", "everysec", "--maxclients", "10000",
    ]
    return Managed("redis-server", args, workdir / "redis.log"), port


def relay_process(name: str, args: list[str], env: dict[str, str], log: Path) -> Managed:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "KIE_"))}
    base.update(env)
    return Managed(name, [sys.executable, "-m", "relay.cli", *args], log, base)


def peer_process(log: Path, redis_port: int) -> tuple[Managed, int]:
    """The tutorial peer (bench/peer/app.py) under its launcher, one uvicorn worker."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "KIE_", "REDIS_"))}
    env["REDIS_URL"] = f"redis://{HOST}:{redis_port}/0"
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    args = [sys.executable, "-m", "bench.peer.run", "--host", HOST, "--port", str(port)]
    return Managed("peer (uvicorn)", args, log, env), port


def nchan_module() -> str:
    for folder in NGINX_MODULE_DIRS:
        path = Path(folder) / "ngx_nchan_module.so"
        if path.exists():
            return str(path)
    raise RuntimeError(
        "ngx_nchan_module.so not found under /usr/lib/nginx/modules: install libnginx-mod-nchan"
    )


def nginx_server(workdir: Path, redis_port: int, nofile: int) -> tuple[Managed, int]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise RuntimeError("nginx is not installed")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tmp").mkdir(exist_ok=True)
    values = {
        "MODULE": nchan_module(),
        "DIR": str(workdir),
        "PORT": str(port),
        "REDIS_PORT": str(redis_port),
        "NOFILE": str(nofile),
        "CONNECTIONS": str(max(1024, nofile - 64)),
    }
    text = TEMPLATE.read_text()
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    conf = workdir / "nginx.conf"
    conf.write_text(text)
    args = [binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]
    return Managed("nginx", args, workdir / "nginx.out"), port


def command_version(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr).strip() else "?"


# --- Redis Cluster -------------------------------------------------------------------------

CLUSTER_CONF = Path(__file__).resolve().parent.parent / "deploy" / "redis-cluster.conf"
CLUSTER_SLOTS = 16384


async def redis_command(port: int, *args: str, within: float = 5.0) -> Any:
    """One command to the Redis on `port`, its reply as Redis sent it (strings, not
    redis-py's parsed forms), bounded in time. An error reply raises ResponseError."""
    client = aioredis.Redis(host=HOST, port=port, socket_timeout=within, socket_connect_timeout=within,
                            decode_responses=True)
    try:
        async def run() -> Any:
            connection = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                await connection.send_command(*args)
                return await connection.read_response()
            finally:
                await client.connection_pool.release(connection)

        return await asyncio.wait_for(run(), within)
    finally:
        await client.aclose()


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (bounded attempts)."""
    ports: list[int] = []
    for _ in range(count * 20):
        port = free_port()
        if port not in ports:
            ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"could not find {count} distinct free ports")


def info_fields(text: str) -> dict[str, str]:
    """`name:value` lines of INFO / CLUSTER INFO."""
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


def cluster_url(ports: list[int]) -> str:
    return "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in ports)


async def start_redis_cluster(workdir: Path, started: list[Managed], masters: int = 3,
                              within: float = 60.0) -> list[int]:
    """A Redis Cluster of `masters` masters on loopback, no replicas (as tests/cluster.py
    starts one): each node is `redis-server deploy/redis-cluster.conf` plus loopback
    overrides, in its own directory with its own bus port; then `redis-cli --cluster create`
    and a bounded wait for cluster_state:ok on every node. Each node is appended to `started`
    as soon as it runs, so the caller's stop path stops it whatever fails later. Returns the
    nodes' ports."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        raise RuntimeError("redis-server and redis-cli are needed for --redis cluster")
    if not CLUSTER_CONF.exists():
        raise RuntimeError(f"{CLUSTER_CONF} is missing")
    ports = free_ports(2 * masters)
    # The bus normally listens on port + 10000, which may be taken: a free one each.
    ports, bus_ports = ports[:masters], ports[masters:]
    for i, (port, bus) in enumerate(zip(ports, bus_ports, strict=True)):
        folder = workdir / f"node{i}"
        folder.mkdir(parents=True, exist_ok=True)
        args = [
            binary, str(CLUSTER_CONF), "--port", str(port), "--bind", HOST, "--dir", str(folder),
            "--cluster-port", str(bus), "--save", "", "--daemonize", "no", "--loglevel", "warning",
            "--logfile", str(folder / "redis.log"),
        ]
        # Its own log is the logfile; anything before it opens (a bad argument) lands there too.
        node = Managed(f"redis cluster node {i}", args, folder / "redis.log")
        started.append(node.start())
    for node, port in zip(started[-masters:], ports, strict=True):
        await node.wait_ready(functools.partial(_redis_pong, port), within=15)
    create = await asyncio.create_subprocess_exec(
        cli, "--cluster", "create", *(f"{HOST}:{p}" for p in ports), "--cluster-replicas", "0",
        "--cluster-yes", stdin=subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(create.communicate(), within)
    except TimeoutError:
        create.kill()
        await create.wait()
        raise RuntimeError(f"redis-cli --cluster create did not finish within {within:.0f}s") from None
    (workdir / "cluster-create.log").write_bytes(output)
    if create.returncode != 0:
        raise RuntimeError(f"redis-cli --cluster create failed ({create.returncode}): "
                           f"{output.decode(errors='replace')[-500:]}")
    await wait_cluster_ok(ports, within)
    return ports


async def cluster_ok(ports: list[int]) -> bool:
    """Every node: cluster_state:ok, every slot assigned and ok, every node known."""
    for port in ports:
        info = info_fields(await redis_command(port, "CLUSTER", "INFO", within=2))
        if (info.get("cluster_state") != "ok"
                or info.get("cluster_slots_assigned") != str(CLUSTER_SLOTS)
                or info.get("cluster_slots_ok") != str(CLUSTER_SLOTS)
                or info.get("cluster_known_nodes") != str(len(ports))):
            return False
    return True


async def wait_cluster_ok(ports: list[int], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    for _ in range(int(within / 0.1) + 1):
        with contextlib.suppress(OSError, TimeoutError, RedisError):
            if await cluster_ok(ports):
                return
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the Redis Cluster on ports {ports} was not ok within {within:.0f}s")


async def _redis_pong(port: int) -> bool:
    return bool(await redis_command(port, "PING", within=1) == "PONG")
