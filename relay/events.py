"""Server-Sent Events: subscribe -> snapshot -> live.

The subscription is registered before the snapshot is read, so no change can fall between
them; every event carries the task's version, so a reconnect with `Last-Event-ID` resumes
exactly where the browser stopped.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay import metrics, sse
from relay.access import authorize_task, ensure_owner
from relay.errors import BadRequest, RelayError, TaskNotFound
from relay.fanout import Subscription, TaskEvent
from relay.http import bearer_token
from relay.models import TASK_ID_RE, Task
from relay.parsing import ascii_int
from relay.services import Services
from relay.sse import EventStreamResponse

log = logging.getLogger("relay.events")

# More pairs than any stream may watch: the rest of an oversized id is not even split.
MAX_TASKS_IN_ID = 1000


def parse_last_event_id(text: str | None, task_ids: list[str]) -> dict[str, int]:
    """`Last-Event-ID` is the version for a one-task stream, `id:version,...` for a
    multi-task one. Anything unreadable means "send everything", never an error."""
    if not text:
        return {}
    if len(task_ids) == 1 and (version := ascii_int(text)) is not None:
        return {task_ids[0]: version}
    seen: dict[str, int] = {}
    for part in text.split(",", MAX_TASKS_IN_ID):
        task_id, _, version_text = part.partition(":")
        if task_id in task_ids and (version := ascii_int(version_text)) is not None:
            seen[task_id] = version
    return seen


class Stream:
    """One open stream: which versions the browser has, and what to send next."""

    def __init__(
        self,
        svc: Services,
        sub: Subscription,
        task_ids: list[str],
        sent: dict[str, int],
        finish: Callable[[], None],
        render: Callable[[TaskEvent], bytes] | None = None,
    ):
        self.svc = svc
        self.sub = sub
        self.finish = finish
        self.task_ids = task_ids
        self.multi = len(task_ids) > 1
        self.sent = {task_id: sent.get(task_id, 0) for task_id in task_ids}
        self.done: set[str] = set()
        self.first: list[TaskEvent] = []
        self.render = render  # another wire shape for each event (the legacy poll stream)

    def frame(self, event: TaskEvent) -> bytes | None:
        if event.version <= self.sent.get(event.task_id, event.version):
            return None
        self.sent[event.task_id] = event.version
        if event.terminal:
            self.done.add(event.task_id)
        metrics.EVENTS_SENT.inc()
        if self.render is not None:
            return self.render(event)
        if self.multi:
            # The id names every task's version, so Last-Event-ID resumes all of them.
            ids = ",".join(f"{t}:{v}" for t, v in self.sent.items())
            return sse.frame(id=ids, event="task", data=event.data.decode())
        if event.framed is None:
            event.framed = sse.frame(id=str(event.version), event="task", data=event.data.decode())
        return event.framed

    def note_snapshot(self, task: Task) -> TaskEvent:
        if task.terminal and self.sent[task.task_id] >= task.version:
            self.done.add(task.task_id)
        event = TaskEvent.of(task)
        self.first.append(event)
        return event

    async def snapshots(self) -> list[TaskEvent]:
        events = []
        for task_id in self.task_ids:
            task = await self.svc.recovery.load(task_id)
            if task is not None:
                events.append(TaskEvent.of(task))
            elif task_id not in self.done:
                # Lost for good (its record and every copy are gone): end this task's part
                # of the stream; a reconnect gets 404 instead of waiting forever.
                log.warning("watched task vanished", extra={"task_id": task_id})
                self.done.add(task_id)
        return events

    async def chunks(self, ping_interval: float) -> AsyncIterator[bytes]:
        """The retry hint and the snapshot first, then every change; b"" asks for a ping."""
        yield sse.frame(retry=self.svc.settings.sse_retry_ms)
        # Sent once, then let go: an idle stream should not keep its snapshot's bytes.
        first, self.first = self.first, []
        while first:
            if (chunk := self.frame(first.pop(0))) is not None:
                yield chunk
                del chunk
        while len(self.done) < len(self.task_ids):
            news = await self.sub.next(within=ping_interval)
            if news is None or news == ([], False):
                yield b""  # a ping; also lets the response notice a reader that left
                continue
            if self.svc.draining.is_set():
                # Shutting down: tell the browser to come back soon (to another instance).
                yield sse.frame(retry=random.randint(250, 1500))
                return
            events, resync = news
            if resync:
                events = events + await self._resync()
            for event in sorted(events, key=lambda e: e.version):
                if (chunk := self.frame(event)) is not None:
                    yield chunk

    def wake(self) -> None:
        self.sub.wake()

    def close(self) -> None:
        self.finish()

    async def _resync(self) -> list[TaskEvent]:
        try:
            return await self.snapshots()
        except RelayError as exc:
            # The store is not back yet: try again shortly rather than lose the resync.
            log.warning("stream resync failed (%s); retrying", exc.message)
            asyncio.get_running_loop().call_later(0.5, self.sub.request_resync)
            return []


async def open_stream(
    request: Request, task_ids: list[str], tokens: list[str | None]
) -> Response | EventStreamResponse:
    """A stream of tasks the caller shows a token (or JWT) for, one per task."""
    svc: Services = request.app.state.services
    callers = {}
    for task_id, token in zip(task_ids, tokens, strict=True):
        if not TASK_ID_RE.fullmatch(task_id):
            raise BadRequest(f"taskId must match {TASK_ID_RE.pattern}", code="invalid_task_id")
        callers[task_id] = authorize_task(svc.settings, request, task_id, token)
    return await stream_tasks(
        request,
        task_ids,
        client=callers[task_ids[0]].key,
        check=lambda task: ensure_owner(callers[task.task_id], task),
    )


async def stream_tasks(
    request: Request,
    task_ids: list[str],
    *,
    client: str,
    check: Callable[[Task], None],
    render: Callable[[TaskEvent], bytes] | None = None,
) -> Response | EventStreamResponse:
    """Subscribe, then snapshot (each snapshot passed to `check`, which raises to refuse),
    then stream. `client` is what the per-client stream cap counts against."""
    svc: Services = request.app.state.services
    last = request.headers.get("last-event-id") or request.query_params.get("lastEventId")
    svc.streams.acquire(client)
    try:
        sub = await svc.hub.subscribe(task_ids)  # before the snapshot: nothing can fall in between
    except BaseException:
        svc.streams.release(client)
        raise

    def finish() -> None:
        if not sub.closed:
            sub.close()
            svc.streams.release(client)

    try:
        stream = Stream(svc, sub, task_ids, parse_last_event_id(last, task_ids), finish, render)
        for task_id in task_ids:
            task = await svc.recovery.load(task_id)
            if task is None:
                raise TaskNotFound(f"no task {task_id!r} (it may have expired)")
            check(task)
            stream.note_snapshot(task)
    except BaseException:
        finish()
        raise
    if len(stream.done) == len(task_ids):
        # The browser has every terminal state already: 204 tells EventSource to stop.
        finish()
        return Response(status_code=204)
    return EventStreamResponse(
        stream, ping_interval=svc.settings.sse_ping, send_timeout=svc.settings.sse_send_timeout
    )


async def task_events(request: Request) -> Response | EventStreamResponse:
    task_id = request.path_params["task_id"]
    return await open_stream(request, [task_id], [bearer_token(request)])


async def multi_events(request: Request) -> Response | EventStreamResponse:
    task_ids = list(dict.fromkeys(request.query_params.getlist("taskId")))
    if not task_ids:
        raise BadRequest("give at least one taskId: /api/events?taskId=a&taskId=b")
    limit = request.app.state.services.settings.max_tasks_per_stream
    if len(task_ids) > limit:
        raise BadRequest(f"at most {limit} taskId values per stream; open another stream for the rest")
    tokens: list[str | None] = list(request.query_params.getlist("token"))
    if len(tokens) <= 1:
        tokens = [tokens[0] if tokens else bearer_token(request)] * len(task_ids)
    elif len(tokens) != len(task_ids):
        raise BadRequest("give one token per taskId, in the same order")
    return await open_stream(request, task_ids, tokens)


routes = [
    Route("/api/tasks/{task_id}/events", task_events, methods=["GET"]),
]
