"""A lean Server-Sent Events response: one extra task per open stream.

sse-starlette frames the events (its `ServerSentEvent` does the wire format), and its
uvicorn hook tells us when the server is shutting down. Its `EventSourceResponse`,
though, runs a task group of four tasks per stream (sender, pinger, disconnect listener,
exit listener); with thousands of idle streams those tasks are most of the memory. Here
one coroutine sends events and pings, and one small task waits for the disconnect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Protocol

from sse_starlette import ServerSentEvent
from starlette.types import Receive, Scope, Send

from relay.deadline import LazyDeadline

log = logging.getLogger("relay.sse")

PING = ServerSentEvent(comment="ping", sep="\n").encode()

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    # no-transform: proxies and CDNs must not compress (and so buffer) the stream.
    (b"cache-control", b"no-cache, no-transform"),
    # nginx (and proxies that honour it) must pass events through, not buffer them.
    (b"x-accel-buffering", b"no"),
]


def frame(**fields: object) -> bytes:
    """One SSE message, framed by sse-starlette (LF line endings)."""
    return ServerSentEvent(sep="\n", **fields).encode()  # type: ignore[arg-type]


class Source(Protocol):
    """What a stream sends: `chunks()` yields framed bytes, waiting at most `ping_interval`
    seconds for the next one (yielding b"" when nothing came, so a ping can go out)."""

    def chunks(self, ping_interval: float) -> AsyncIterator[bytes]: ...

    def wake(self) -> None:
        """Interrupt a wait (the client went away)."""
        ...

    def close(self) -> None: ...


class EventStreamResponse:
    def __init__(self, source: Source, *, ping_interval: float, send_timeout: float):
        self.source = source
        self.ping_interval = ping_interval
        self.send_timeout = send_timeout
        self.disconnected = False
        # One deadline per send, on a timer that serves many sends (relay/deadline.py); when
        # one is late the stream cancels its own task, as `asyncio.timeout` would.
        self._task: asyncio.Task[object] | None = None
        self._deadline = LazyDeadline()
        self._stalled = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = asyncio.ensure_future(self._watch_disconnect(receive))
        self._task = asyncio.current_task()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            async for chunk in self.source.chunks(self.ping_interval):
                if self.disconnected:
                    return
                sent = await self._send(send, chunk or PING)
                del chunk  # not kept while the stream waits
                if not sent:
                    return  # a reader that stopped reading: drop it, keep the server's memory
            if not self.disconnected:
                await self._send(send, b"", more_body=False)
        finally:
            watcher.cancel()
            self._deadline.cancel()
            self.source.close()

    async def _send(self, send: Send, body: bytes, *, more_body: bool = True) -> bool:
        loop = asyncio.get_running_loop()
        self._deadline.set(loop, loop.time() + self.send_timeout, self._stall)
        try:
            await send({"type": "http.response.body", "body": body, "more_body": more_body})
        except asyncio.CancelledError:
            if not self._stalled:
                raise
            # Our own cancellation (below), not the server's: the stream ends quietly.
            assert self._task is not None
            self._task.uncancel()
            log.warning("dropped a stream whose reader stopped reading (send timeout %.0fs)", self.send_timeout)
            return False
        finally:
            self._deadline.clear()
        return True

    def _stall(self) -> None:
        # A send is late. The task is suspended inside it (a timer runs between task
        # steps), so the cancellation lands there.
        self._stalled = True
        assert self._task is not None
        self._task.cancel()

    async def _watch_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.disconnected = True
        self.source.wake()
