"""Real servers for the storage, mirror, downloader and upload tests, all on 127.0.0.1:

- `MotoServer`: the `moto_server` S3 API in a subprocess (so a test can stop and restart it
  like a storage outage);
- `LocalServer`: a Starlette app on uvicorn inside the test's event loop;
- `eventually`: wait for a condition, with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from aiobotocore.session import get_session
from starlette.types import ASGIApp

from tests.servers import HOST, free_port, stop_process, wait_until

T = TypeVar("T")

ACCESS_KEY = "testing-key"
SECRET_KEY = "testing-secret"
REGION = "us-east-1"


class MotoServer:
    def __init__(self, log_path: Path | None = None):
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> MotoServer:
        binary = Path(sys.executable).parent / "moto_server"
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [str(binary), "-H", HOST, "-p", str(self.port)], stdout=out, stderr=subprocess.STDOUT
            )
        finally:
            if not isinstance(out, int):
                out.close()  # the child has its own copy of the descriptor
        wait_until(self._ready, 30, f"moto_server on port {self.port}")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"moto_server exited early with {self.proc.returncode}")
        return httpx.get(f"{self.url}/moto-api/", timeout=1).status_code < 500

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port (moto keeps nothing: buckets are gone)."""
        self.stop()
        self.start()

    @contextlib.asynccontextmanager
    async def client(self) -> Any:
        async with get_session().create_client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        ) as client:
            yield client

    async def create_bucket(self, name: str | None = None) -> str:
        name = name or f"relay-{uuid.uuid4().hex[:12]}"
        async with self.client() as client:
            await client.create_bucket(Bucket=name)
        return name

    async def keys(self, bucket: str) -> list[str]:
        async with self.client() as client:
            listed = await client.list_objects_v2(Bucket=bucket)
        return sorted(obj["Key"] for obj in listed.get("Contents", []))


@contextlib.contextmanager
def moto_server(log_dir: Path) -> Iterator[MotoServer]:
    server = MotoServer(log_dir / "moto.log").start()
    try:
        yield server
    finally:
        server.stop()


class LocalServer:
    """A uvicorn server bound before it starts, so its URL is known up front (settings
    that must name it can be built first)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}"
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self, app: ASGIApp) -> LocalServer:
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1, access_log=False
        )
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        server = self.server
        await eventually(lambda: _started(server, self.task), 10, f"uvicorn on {self.url}")
        return self

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            await asyncio.wait_for(self.task, 10)
        self.sock.close()


async def _started(server: uvicorn.Server, task: asyncio.Task[None] | None) -> bool:
    if task is not None and task.done():
        task.result()  # surface a failed start instead of timing out
    return server.started


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    """The first truthy result of `check()`, polled until `timeout` seconds have passed."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = await check()
                if result:
                    return result
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None
