"""A small keep-alive HTTP/1.1 request client on raw asyncio protocols.

The callbacks and publishes the bench sends are what it measures, so the client must cost far
less per request than the server under test: no header objects, no URL parsing, no
per-request coroutine layers beyond one future. httpx is used only for the control plane
(readiness checks, reading the simulator's task list).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import cast

from bench.wire import BodyReader, Head, HeadReader, WireError

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    sent: float  # time.monotonic() just before the request was written
    done: float  # time.monotonic() when the last byte of the response arrived

    @property
    def seconds(self) -> float:
        return self.done - self.sent


class _Conn(asyncio.Protocol):
    __slots__ = ("_body", "_chunks", "_head", "_reader", "_sent", "_waiter", "closed", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._waiter: asyncio.Future[Response] | None = None
        self._reader = HeadReader()
        self._head: Head | None = None
        self._body: BodyReader | None = None
        self._chunks: list[bytes] = []
        self._sent = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def request(self, raw: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self._reader = HeadReader()
        self._head = None
        self._body = None
        self._chunks = []
        self._sent = time.monotonic()
        try:
            self.transport.write(raw)
        except RuntimeError as exc:
            # uvloop raises this (not an OSError) on a transport the server already closed,
            # e.g. a server out of file descriptors at the idle sweep's last level.
            self._waiter = None
            raise ConnectionError(f"the connection was closed: {exc}") from None
        return self._waiter

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            return  # bytes outside a request: ignore (the connection is dropped on reuse)
        try:
            if self._head is None:
                got = self._reader.feed(data)
                if got is None:
                    return
                self._head, data = got
                self._body = BodyReader(self._head)
            assert self._body is not None
            if data:
                self._chunks.append(self._body.feed(data))
            if self._body.done:
                self._finish()
        except WireError as exc:
            self._fail(exc)

    def _finish(self) -> None:
        assert self._head is not None and self._waiter is not None
        waiter, self._waiter = self._waiter, None
        if not waiter.done():
            waiter.set_result(Response(self._head.status, b"".join(self._chunks), self._sent, time.monotonic()))
        if not self._head.keep_alive and self.transport is not None:
            self.transport.close()
            self.closed = True

    def _fail(self, exc: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()
        self.closed = True

    def eof_received(self) -> bool | None:
        if self._waiter is not None and self._body is not None and self._body.until_close:
            self._body.done = True
            self._finish()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None:
            if self._body is not None and self._body.until_close:
                self._body.done = True
                self._finish()
            else:
                self._fail(exc or ConnectionResetError("the server closed the connection"))


def _expire(waiter: asyncio.Future[Response]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("no response in time"))


class Client:
    """Up to `size` keep-alive connections to one host:port; each request takes one."""

    def __init__(self, port: int, *, host: str = HOST, size: int = 32, timeout: float = 30.0):
        self.host = host
        self.port = port
        self.size = size
        self.timeout = timeout
        self._idle: list[_Conn] = []
        self._open = 0
        self._slots = asyncio.Semaphore(size)
        self._host_header = f"{host}:{port}".encode()

    def build(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + self._host_header]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(b"Content-Type: application/json")
            lines.append(b"Content-Length: %d" % len(body))
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}".encode())
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(loop.create_connection(_Conn, self.host, self.port), self.timeout)
        return conn

    async def send(self, raw: bytes) -> Response:
        """Send a request built by `build`; retry once on a keep-alive connection the server
        had already closed (nothing was processed in that case)."""
        async with self._slots:
            for attempt in range(2):
                conn = self._idle.pop() if self._idle else None
                reused = conn is not None
                if conn is None or conn.closed:
                    conn = await self._connect()
                    reused = False
                try:
                    waiter = conn.request(raw)
                except ConnectionError:
                    if reused and attempt == 0:
                        continue  # a kept-alive connection the server had closed
                    raise
                # A timer instead of asyncio.wait_for: no extra task per request.
                timer = asyncio.get_running_loop().call_later(self.timeout, _expire, waiter)
                try:
                    response = await waiter
                except (ConnectionError, WireError):
                    if conn.transport is not None:
                        conn.transport.close()
                    if reused and attempt == 0:
                        continue
                    raise
                except BaseException:
                    if conn.transport is not None:
                        conn.transport.close()
                    raise
                finally:
                    timer.cancel()
                if not conn.closed:
                    self._idle.append(conn)
                return response
        raise ConnectionError("unreachable")

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Response:
        return await self.send(self.build(method, path, body, headers))

    def close(self) -> None:
        for conn in self._idle:
            if conn.transport is not None:
                with contextlib.suppress(Exception):
                    conn.transport.close()
        self._idle.clear()
