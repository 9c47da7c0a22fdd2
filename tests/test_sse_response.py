"""The lean SSE response, in-process, driven as an ASGI app with hand-made receive/send:
headers first, events in order, a ping when nothing comes, the end of the stream, a
reader that stops reading dropped, and the source closed whatever happens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest

from relay.sse import PING, EventStreamResponse, frame

pytestmark = pytest.mark.inprocess


class Script:
    """A source that yields the given chunks (b"" = nothing came within the ping interval)."""

    def __init__(self, chunks: list[bytes]):
        self.chunks_to_send = chunks
        self.closed = False
        self.woken = asyncio.Event()

    async def chunks(self, ping_interval: float) -> AsyncIterator[bytes]:
        for chunk in self.chunks_to_send:
            yield chunk

    def wake(self) -> None:
        self.woken.set()

    def close(self) -> None:
        self.closed = True


async def never_disconnects() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def run(source: Script, send_delay: float = 0.0, send_timeout: float = 1.0) -> list[MutableMapping[str, Any]]:
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body" and send_delay:
            await asyncio.sleep(send_delay)  # a reader that does not read
        sent.append(message)

    response = EventStreamResponse(source, ping_interval=0.1, send_timeout=send_timeout)
    await asyncio.wait_for(response({"type": "http"}, never_disconnects, send), timeout=5)
    return sent


async def test_headers_events_pings_and_the_end() -> None:
    first, second = frame(id="1", event="task", data="{}"), frame(id="2", event="task", data="{}")
    source = Script([first, b"", second])
    sent = await run(source)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    headers = dict(sent[0]["headers"])
    assert headers[b"content-type"].startswith(b"text/event-stream")
    assert headers[b"cache-control"] == b"no-cache, no-transform" and headers[b"x-accel-buffering"] == b"no"
    assert [m["body"] for m in sent[1:]] == [first, PING, second, b""]
    assert sent[-1]["more_body"] is False and source.closed
    assert first == b"id: 1\nevent: task\ndata: {}\n\n"


async def test_a_reader_that_stops_reading_is_dropped_and_the_source_closed() -> None:
    source = Script([frame(data="x")] * 5)
    sent = await run(source, send_delay=0.5, send_timeout=0.05)
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert len(bodies) <= 1 and source.closed


async def test_the_send_deadline_is_per_send_not_per_stream() -> None:
    # Each send takes 60% of the deadline, the whole stream many deadlines: none is late,
    # so nothing is dropped (one timer per stream is re-armed for the send in progress).
    chunks = [frame(data=str(n)) for n in range(12)]
    source = Script(chunks)
    sent = await run(source, send_delay=0.03, send_timeout=0.05)
    assert [m["body"] for m in sent[1:-1]] == chunks and sent[-1]["more_body"] is False
    assert source.closed


async def test_the_servers_cancellation_is_not_swallowed() -> None:
    # Only the stream's own deadline ends it quietly; a shutdown cancelling the request
    # mid-send must still cancel it.
    source = Script([frame(data="x")] * 3)
    blocked = asyncio.Event()

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body":
            blocked.set()
            await asyncio.Event().wait()

    response = EventStreamResponse(source, ping_interval=0.1, send_timeout=5)
    serving = asyncio.ensure_future(response({"type": "http"}, never_disconnects, send))
    await asyncio.wait_for(blocked.wait(), 5)
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(serving, 5)
    assert source.closed
