"""`GET /api/events?mine=1`: every task of the signed-in user on one stream, including
tasks created after it opened (a gallery and several tabs stay current).

The stream subscribes to the user's owner key (every change carries its owner), then
sends a snapshot of the user's most recent tasks, then every change; the newest-state
mailbox and the send timeout are the other streams' own. It never ends by itself: a user
can always create another task. A reconnect gets the snapshot again; clients keep the
newest version per task (relay.js `watchMyTasks` does).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay import metrics, sse
from relay.access import identify
from relay.errors import BadRequest, Forbidden
from relay.events import Stream, multi_events
from relay.fanout import Subscription, TaskEvent, owner_key
from relay.services import Services
from relay.sse import EventStreamResponse

SNAPSHOT = 50  # the most recent tasks sent first


class OwnerStream(Stream):
    def __init__(self, svc: Services, user: str, sub: Subscription, finish: Callable[[], None]):
        super().__init__(svc, sub, [owner_key(user)], {}, finish)
        self.user = user

    def frame(self, event: TaskEvent) -> bytes | None:
        # Any task of the user may appear (new ones too): unknown tasks are news.
        if event.version <= self.sent.get(event.task_id, 0):
            return None
        self.sent[event.task_id] = event.version
        metrics.EVENTS_SENT.inc()
        return sse.frame(id=f"{event.task_id}:{event.version}", event="task", data=event.data.decode())

    async def snapshots(self) -> list[TaskEvent]:
        page = await self.svc.store.history(limit=SNAPSHOT, owner=self.user)
        return [TaskEvent.of(task) for task in reversed(page.items)]  # oldest first


async def mine_stream(request: Request) -> EventStreamResponse:
    svc: Services = request.app.state.services
    if svc.settings.auth != "jwt":
        raise Forbidden("a stream of all my tasks needs per-user authentication (RELAY_AUTH=jwt)", code="users_disabled")
    caller = identify(svc.settings, request)  # the JWT: Authorization: Bearer or ?token=
    assert caller.user is not None
    svc.streams.acquire(caller.key)
    try:
        sub = await svc.hub.subscribe([owner_key(caller.user)])  # before the snapshot
    except BaseException:
        svc.streams.release(caller.key)
        raise

    def finish() -> None:
        if not sub.closed:
            sub.close()
            svc.streams.release(caller.key)

    try:
        stream = OwnerStream(svc, caller.user, sub, finish)
        stream.first.extend(await stream.snapshots())
    except BaseException:
        finish()
        raise
    return EventStreamResponse(stream, ping_interval=svc.settings.sse_ping, send_timeout=svc.settings.sse_send_timeout)


async def all_events(request: Request) -> Response | EventStreamResponse:
    """`/api/events`: `?mine=1` for the user's stream, else the listed tasks' stream."""
    mine = request.query_params.get("mine")
    if mine is not None:
        if mine != "1":
            raise BadRequest("mine must be 1 (every task of the signed-in user)")
        if "taskId" in request.query_params:
            raise BadRequest("use either mine=1 or taskId, not both")
        return await mine_stream(request)
    return await multi_events(request)


routes = [Route("/api/events", all_events, methods=["GET"])]
