"""A task-status push service as the tutorials write it: Starlette, sse-starlette's
`EventSourceResponse`, redis-py asyncio pub/sub, run by uvicorn with one worker.

    REDIS_URL=redis://127.0.0.1:6379/0 uvicorn bench.peer.app:app

- `POST /tasks` {"prompt": ...} creates a task (version 1, "pending"): the JSON is stored under
  `task:{id}` and published on `task:{id}:events`; answers 201 with the task.
- `POST /tasks/{id}/update` takes the whole task object (with its new `version`), stores it and
  publishes it.
- `GET /tasks/{id}/events` is an EventSource stream: each stream subscribes to the task's
  channel, sends the stored task as event `task` with `id: <version>`, then forwards every
  published version as it arrives, and ends after a terminal status. A reconnect with
  `Last-Event-ID` gets the stored task only if it is newer, and 204 (EventSource stops
  reconnecting) when it already has the final version.

Nothing here is tuned: one pub/sub connection per open stream, the stdlib json module, the
garbage collector's defaults.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import redis.asyncio as redis
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# Every open stream holds its own pub/sub connection, so the pool must be at least as large
# as the number of streams (redis-py's default of 100 fails the 101st stream).
REDIS_MAX_CONNECTIONS = int(os.environ.get("REDIS_MAX_CONNECTIONS", "100000"))
TERMINAL = {"completed", "failed"}


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.redis = redis.from_url(
        REDIS_URL, decode_responses=True, max_connections=REDIS_MAX_CONNECTIONS
    )
    yield
    await app.state.redis.aclose()


def task_key(task_id: str) -> str:
    return f"task:{task_id}"


def channel(task_id: str) -> str:
    return f"task:{task_id}:events"


def now() -> str:
    return datetime.now(UTC).isoformat()


async def save_and_publish(r: redis.Redis, task: dict[str, object]) -> None:
    data = json.dumps(task)
    async with r.pipeline(transaction=True) as pipe:
        pipe.set(task_key(str(task["taskId"])), data)
        pipe.publish(channel(str(task["taskId"])), data)
        await pipe.execute()


async def create_task(request: Request) -> Response:
    body = await request.json()
    task = {
        "taskId": uuid.uuid4().hex,
        "status": "pending",
        "prompt": body.get("prompt", ""),
        "resultUrls": [],
        "error": None,
        "progress": None,
        "createdAt": now(),
        "updatedAt": now(),
        "version": 1,
    }
    await save_and_publish(request.app.state.redis, task)
    return JSONResponse(task, status_code=201)


async def update_task(request: Request) -> Response:
    task_id = request.path_params["task_id"]
    task = await request.json()
    if task.get("taskId") != task_id or not isinstance(task.get("version"), int):
        return JSONResponse({"error": "expected the task object with its version"}, status_code=400)
    await save_and_publish(request.app.state.redis, task)
    return JSONResponse({"ok": True})


def last_event_id(request: Request) -> int:
    try:
        return int(request.headers.get("last-event-id", "0"))
    except ValueError:
        return 0


def sse(task: dict[str, object], data: str | bytes) -> dict[str, object]:
    return {"event": "task", "id": str(task["version"]), "data": data}


async def task_stream(
    r: redis.Redis, task_id: str, last_seen: int
) -> AsyncIterator[dict[str, object]]:
    pubsub = r.pubsub()
    try:
        # Subscribe first and wait for Redis to confirm, then read the stored task: an update
        # published in between is then in the channel too, so nothing is lost (a version
        # seen twice is skipped).
        await pubsub.subscribe(channel(task_id))
        confirmation = await pubsub.get_message(timeout=10)
        if confirmation is None or confirmation["type"] != "subscribe":
            raise RuntimeError(f"no subscribe confirmation for {task_id}")
        raw = await r.get(task_key(task_id))
        if raw is None:
            return
        task = json.loads(raw)
        if task["version"] > last_seen:
            yield sse(task, raw)
            last_seen = task["version"]
        if task["status"] in TERMINAL:
            return
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            task = json.loads(message["data"])
            if task["version"] <= last_seen:
                continue
            yield sse(task, message["data"])
            last_seen = task["version"]
            if task["status"] in TERMINAL:
                return
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def task_events(request: Request) -> Response:
    task_id = request.path_params["task_id"]
    r = request.app.state.redis
    raw = await r.get(task_key(task_id))
    if raw is None:
        return JSONResponse({"error": "unknown task"}, status_code=404)
    last_seen = last_event_id(request)
    task = json.loads(raw)
    if task["status"] in TERMINAL and task["version"] <= last_seen:
        return Response(status_code=204)  # the client has the final state: stop reconnecting
    return EventSourceResponse(task_stream(r, task_id, last_seen))


app = Starlette(
    routes=[
        Route("/tasks", create_task, methods=["POST"]),
        Route("/tasks/{task_id}/update", update_task, methods=["POST"]),
        Route("/tasks/{task_id}/events", task_events),
    ],
    lifespan=lifespan,
)
