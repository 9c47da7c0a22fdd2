"""A real HTTP receiver for Relay's outbound webhooks, in the test's own event loop
(uvicorn on a free loopback port): it records every request and answers as told,
deduplicating on `webhook-id` the way a careful app backend does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.servers import HOST, free_port
from tests.waiting import until


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


# (request, how many times this webhook-id was seen before) -> status to answer
Behaviour = Callable[[Request, int], int]


@dataclass
class Receiver:
    port: int
    answer: Behaviour = lambda request, seen: 200
    requests: list[Received] = field(default_factory=list)
    processed: dict[str, Received] = field(default_factory=dict)  # first 2xx per webhook-id
    duplicates: int = 0  # 2xx-acknowledged again after being processed once
    delay: float = 0.0  # a slow receiver: seconds before each answer

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hook"

    async def _endpoint(self, request: Request) -> Response:
        body = await request.body()
        if self.delay:
            await asyncio.sleep(self.delay)
        msg_id = request.headers.get("webhook-id", "")
        seen = sum(1 for r in self.requests if r.headers.get("webhook-id") == msg_id)
        status = self.answer(request, seen)
        record = Received(request.url.path, dict(request.headers), body, status)
        self.requests.append(record)
        if 200 <= status < 300:
            if msg_id in self.processed:
                self.duplicates += 1
            else:
                self.processed[msg_id] = record
        headers = {"location": f"http://{HOST}:{self.port}/elsewhere"} if 300 <= status < 400 else {}
        return Response(b"", status_code=status, headers=headers)

    def for_task(self, task_id: str) -> list[Received]:
        return [r for r in self.requests if r.id.startswith(f"msg_{task_id}_v")]


@contextlib.asynccontextmanager
async def receiver(answer: Behaviour | None = None) -> AsyncIterator[Receiver]:
    rx = Receiver(free_port())
    if answer is not None:
        rx.answer = answer
    app = Starlette(routes=[Route("/{path:path}", rx._endpoint, methods=["POST", "GET"])])
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=rx.port, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve())

    async def started() -> bool:
        return bool(server.started)

    try:
        await until(started, timeout=10, what="the webhook receiver to start")
        yield rx
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


@contextlib.asynccontextmanager
async def connection_counter() -> AsyncIterator[tuple[int, list[int]]]:
    """A bare TCP listener that counts connections: proof that nothing was contacted."""
    count = [0]

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        count[0] += 1
        writer.close()

    server = await asyncio.start_server(accepted, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, count
    finally:
        server.close()
        await server.wait_closed()
