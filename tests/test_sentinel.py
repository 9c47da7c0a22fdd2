"""Redis Sentinel (issue #18 item 2): `redis+sentinel://` URLs, and a failover under a
running Relay. Real processes on loopback: a master, a replica and three sentinels
(`redis-server --sentinel`); the master is SIGKILLed, a sentinel promotes the replica, and
a task completed across the switch reaches the stream that was open before it."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import StartRelay
from tests.helpers import create, run_cli
from tests.servers import HOST, RedisServer, free_port, stop_process, wait_until
from tests.sse import iter_events
from tests.waiting import until

SERVICE = "mymaster"


class Sentinels:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.master = RedisServer(workdir / "master").start()
        self.replica_port = free_port()
        self.ports = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> Sentinels:
        binary = shutil.which("redis-server")
        assert binary is not None
        replica_dir = self.workdir / "replica"
        replica_dir.mkdir()
        self.procs.append(subprocess.Popen(
            [binary, "--port", str(self.replica_port), "--bind", HOST, "--dir", str(replica_dir), "--save", "",
             "--appendonly", "yes", "--replicaof", HOST, str(self.master.port), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        for port in self.ports:
            conf = self.workdir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind {HOST}\ndir {self.workdir}\n"
                f"sentinel monitor {SERVICE} {HOST} {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 4000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self.procs.append(subprocess.Popen(
                [binary, str(conf), "--sentinel", "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        wait_until(self._ready, 20, "three sentinels that know the master, the replica and each other")
        return self

    def _ask(self, port: int, *command: str) -> Any:
        client = redis.Redis(host=HOST, port=port, socket_timeout=1, decode_responses=True)
        try:
            return client.execute_command(*command)  # type: ignore[no-untyped-call]
        finally:
            client.close()

    def _ready(self) -> bool:
        for port in self.ports:
            try:
                replicas = self._ask(port, "SENTINEL", "REPLICAS", SERVICE)
                others = self._ask(port, "SENTINEL", "SENTINELS", SERVICE)
            except redis.RedisError:
                return False
            if not replicas or len(others) < 2:
                return False
        return True

    def master_port(self) -> int:
        _host, port = self._ask(self.ports[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(port)

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{port}" for port in self.ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc, signal.SIGTERM, 5)
        self.master.stop()


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[Sentinels]:
    group = Sentinels(tmp_path / "sentinel").start()
    yield group
    group.stop()


@pytest.mark.timeout(90)
async def test_a_task_completed_across_a_failover_reaches_its_stream(
    start_relay: StartRelay, sentinels: Sentinels, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay(
        sentinels.url, RELAY_RECONCILE_AFTER="1", RELAY_RECONCILE_INTERVAL="0.5", RELAY_MIRROR="off"
    )
    check = await run_cli(relay.env, "check")
    assert "through Sentinel" in check, check
    task = await create(client, relay.url, "across the switch")
    seen: list[dict[str, Any]] = []
    opened = asyncio.Event()

    async def follow() -> None:
        async with httpx.AsyncClient(timeout=60) as streams, streams.stream("GET", task["eventsUrl"]) as response:
            assert response.status_code == 200
            opened.set()
            async for event in iter_events(response):
                if event.event == "task":
                    seen.append(event.json())

    watcher = asyncio.create_task(follow())
    try:
        await asyncio.wait_for(opened.wait(), 10)
        old = sentinels.master_port()
        sentinels.master.kill(signal.SIGKILL)

        async def promoted() -> bool:
            return await asyncio.to_thread(sentinels.master_port) != old

        await until(promoted, timeout=30, what="a sentinel to promote the replica", interval=0.2)
        (await client.post(f"{sim}/sim/tasks/{task['taskId']}/complete")).raise_for_status()
        await asyncio.wait_for(watcher, 30)  # the stream ends after the terminal event
    finally:
        watcher.cancel()
    assert seen and seen[-1]["status"] == "completed", seen
    # The store is the new master now: a new task goes all the way too.
    after = await create(client, relay.url, "after the switch")
    (await client.post(f"{sim}/sim/tasks/{after['taskId']}/complete")).raise_for_status()

    async def done() -> bool:
        return bool((await client.get(after["statusUrl"])).json()["status"] == "completed")

    await until(done, timeout=15, what="a task after the failover")
