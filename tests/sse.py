"""A small, strict SSE client for the tests: parses the wire format (fields, comments,
multi-line data, CRLF/LF) the way a browser's EventSource does."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Self

import httpx


@dataclass
class Event:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


async def iter_events(response: httpx.Response, *, include_comments: bool = False) -> AsyncIterator[Event]:
    current = Event()
    data_lines: list[str] = []
    has_fields = False
    async for line in response.aiter_lines():
        if line == "":
            if has_fields:
                current.data = "\n".join(data_lines)
                yield current
            elif include_comments and current.comments:
                yield current
            current, data_lines, has_fields = Event(), [], False
            continue
        if line.startswith(":"):
            current.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data_lines.append(value)
            has_fields = True
        elif name == "event":
            current.event = value
            has_fields = True
        elif name == "id":
            current.id = value
            has_fields = True
        elif name == "retry" and value.isdigit():
            current.retry = int(value)
            has_fields = True


class TaskEvents:
    """A stream read in the background (by `_run`) into a queue of `task` events."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.all: list[Event] = []
        self.opened = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.opened.wait(), timeout=10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def next(self, timeout: float = 10) -> Event:
        return await asyncio.wait_for(self.events.get(), timeout=timeout)

    async def until_status(self, status: str, timeout: float = 15) -> list[Event]:
        """Every task event up to and including the first with `status`."""
        seen: list[Event] = []
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                seen.append(event)
                if event.json()["status"] == status:
                    return seen


class Stream(TaskEvents):
    """One SSE connection (no reconnects)."""

    def __init__(self, client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None):
        super().__init__()
        self.client = client
        self.url = url
        self.headers = headers or {}
        self.status: int | None = None
        self.response_headers: httpx.Headers | None = None
        self.closed = asyncio.Event()

    async def _run(self) -> None:
        try:
            async with self.client.stream("GET", self.url, headers=self.headers, timeout=httpx.Timeout(30, read=60)) as response:
                self.status = response.status_code
                self.response_headers = response.headers
                self.opened.set()
                async for event in iter_events(response):
                    self.all.append(event)
                    if event.event == "task":
                        await self.events.put(event)
        finally:
            self.opened.set()
            self.closed.set()


@dataclass
class Connection:
    """One HTTP request of an `EventSource`: what it sent, what it got, how it ended."""

    last_event_id: str | None
    status: int | None = None
    events: list[Event] = field(default_factory=list)
    ended: str = "open"  # "closed" (clean end of body), "error: <type>", "stopped: <status>"


class EventSource(TaskEvents):
    """Reconnects the way a browser's EventSource does: when a 200 stream ends, cleanly or
    broken, or the connection fails, it waits the last `retry:` delay and requests the same
    URL again with `Last-Event-ID` set to the last id seen. A 204 (or any other non-200
    answer) stops it for good."""

    def __init__(
        self, client: httpx.AsyncClient, url: str, *, retry_ms: int = 3000, max_connections: int = 10
    ):
        super().__init__()  # .all: every `task` event, across connections
        self.client = client
        self.url = url
        self.retry_ms = retry_ms
        self.max_connections = max_connections
        self.last_event_id: str | None = None
        self.connections: list[Connection] = []
        self.stopped = asyncio.Event()

    async def _run(self) -> None:
        try:
            while len(self.connections) < self.max_connections:
                conn = Connection(self.last_event_id or None)
                self.connections.append(conn)
                headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
                if conn.last_event_id:
                    headers["Last-Event-ID"] = conn.last_event_id
                try:
                    async with self.client.stream(
                        "GET", self.url, headers=headers, timeout=httpx.Timeout(10, read=60)
                    ) as response:
                        conn.status = response.status_code
                        self.opened.set()
                        if response.status_code != 200:
                            conn.ended = f"stopped: {response.status_code}"
                            return
                        async for event in iter_events(response):
                            conn.events.append(event)
                            if event.retry is not None:
                                self.retry_ms = event.retry
                            if event.id is not None:
                                self.last_event_id = event.id
                            if event.event == "task":
                                self.all.append(event)
                                await self.events.put(event)
                    conn.ended = "closed"
                except httpx.HTTPError as exc:
                    conn.ended = f"error: {type(exc).__name__}"
                self.opened.set()
                # The reconnection delay a browser waits: behaviour under test, not synchronisation.
                await asyncio.sleep(self.retry_ms / 1000)
        finally:
            self.opened.set()
            self.stopped.set()
