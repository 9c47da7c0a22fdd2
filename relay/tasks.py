"""Task endpoints: create (202 at once), fallback status reads, history."""

from __future__ import annotations

import logging
from urllib.parse import quote

from starlette.requests import Request
from starlette.routing import Route

from relay import auth
from relay.access import authorize_task, ensure_owner, identify
from relay.create import NewTask, parse_new_task, submit
from relay.errors import BadRequest, Conflict, Forbidden, RelayError, TaskNotFound
from relay.http import JSONResponse, bearer_token, parse_json, read_body
from relay.models import TASK_ID_RE, Mode, Status, Task, TaskError, TaskUpdate
from relay.parsing import ascii_int
from relay.services import Services

log = logging.getLogger("relay.tasks")



def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def links(request: Request, svc: Services, task_id: str) -> dict[str, str]:
    """The task's access token and ready-to-use URLs (they carry the token, so a front end
    can hand eventsUrl straight to `new EventSource(...)`)."""
    base = str(request.base_url).rstrip("/")
    out = {
        "statusUrl": f"{base}/api/tasks/{task_id}",
        "eventsUrl": f"{base}/api/tasks/{task_id}/events",
    }
    if svc.settings.auth == "token":
        token = auth.task_token(svc.settings.secret, task_id, svc.settings.token_ttl)
        query = f"?token={quote(token)}"
        out = {name: url + query for name, url in out.items()}
        out["token"] = token
    return out


async def create_task(request: Request) -> JSONResponse:
    svc = services(request)
    caller = identify(svc.settings, request)
    await svc.create_limit.check(caller.key)
    new = parse_new_task(
        parse_json(await read_body(request, svc.settings.max_body, svc.settings.read_timeout)), svc.catalogue
    )
    if new.parent_task_id is not None:
        await _check_parent(svc, request, new)
    task, created = await submit(
        svc, new, owner=caller.user, caller_key=caller.key, idempotency_key=request.headers.get("idempotency-key")
    )
    headers = {} if created else {"Idempotent-Replayed": "true"}
    return JSONResponse({**task.public(), **links(request, svc, task.task_id)}, status_code=202, headers=headers)


async def _check_parent(svc: Services, request: Request, new: NewTask) -> None:
    """An extend or upscale works on a finished task of the same caller."""
    assert new.parent_task_id is not None
    parent = await read_task(svc, request, new.parent_task_id, token=request.headers.get("x-parent-token"))
    if parent.status is not Status.COMPLETED:
        raise Conflict(f"task {parent.task_id!r} is {parent.status.value}; only a completed task can be extended")


async def read_task(svc: Services, request: Request, task_id: str | None, *, token: str | None = None) -> Task:
    if not task_id or not TASK_ID_RE.fullmatch(task_id):
        raise BadRequest(f"taskId must match {TASK_ID_RE.pattern}", code="invalid_task_id")
    caller = authorize_task(svc.settings, request, task_id, token or bearer_token(request))
    task = await svc.recovery.load(task_id)
    if task is None:
        raise TaskNotFound(f"no task {task_id!r} (it may have expired)")
    ensure_owner(caller, task)
    return task


async def get_task(request: Request) -> JSONResponse:
    svc = services(request)
    task = await read_task(svc, request, request.path_params["task_id"])
    return JSONResponse(task.public())


async def task_status(request: Request) -> JSONResponse:
    svc = services(request)
    task = await read_task(svc, request, request.query_params.get("taskId"))
    return JSONResponse(task.public())


async def list_tasks(request: Request) -> JSONResponse:
    svc = services(request)
    if svc.settings.auth == "token" and not svc.settings.demo:
        # A task token grants one task; nothing identifies a caller's other tasks, so a
        # listing would show everyone's prompts and results.
        raise Forbidden(
            "history needs per-user authentication (RELAY_AUTH=jwt) or RELAY_AUTH=none",
            code="history_disabled",
        )
    caller = identify(svc.settings, request)
    q = request.query_params
    status = q.get("status")
    if status is not None and status not in Status.__members__.values():
        raise BadRequest(f"status must be one of: {', '.join(s.value for s in Status)}")
    mode = q.get("mode")
    if mode is not None and mode not in Mode.__members__.values():
        raise BadRequest(f"mode must be one of: {', '.join(m.value for m in Mode)}")
    limit_text = q.get("limit", "20")
    limit = ascii_int(limit_text, max_digits=3)
    if limit is None or not 1 <= limit <= 100:
        raise BadRequest("limit must be a whole number from 1 to 100")
    cursor = q.get("cursor")
    if cursor is not None and (len(cursor) > 160 or ":" not in cursor):
        raise BadRequest("cursor is not one this service returned")
    page = await svc.store.history(
        limit=limit, cursor=cursor, status=status, mode=mode, owner=caller.user
    )
    items = []
    for task in page.items:
        item = task.public()
        if svc.settings.auth == "token":
            item.update(links(request, svc, task.task_id))
        items.append(item)
    return JSONResponse({"items": items, "nextCursor": page.next_cursor})


async def cancel_task(request: Request) -> JSONResponse:
    """Stop a task: the provider is told where it can be (else Relay only stops waiting),
    the task becomes `cancelled`, its credits come back, later callbacks change nothing."""
    svc = services(request)
    task = await read_task(svc, request, request.path_params["task_id"])
    if task.status is Status.CANCELLED:
        return JSONResponse(task.public())
    if task.terminal:
        raise Conflict(f"task {task.task_id!r} is {task.status.value}; it cannot be cancelled", code="already_finished")
    if task.provider_result_urls:
        raise Conflict("the result is generated and being stored; it cannot be cancelled", code="already_finished")
    try:
        stopped = await svc.provider.cancel(task.task_id, task.model)
    except RelayError as exc:
        log.warning("the provider could not cancel (%s); stopped waiting instead", exc.message,
                    extra={"task_id": task.task_id})
        stopped = False
    why = "cancelled by its owner" + ("" if stopped else " (the provider cannot stop it; its result is ignored)")
    await svc.ingestor.apply(TaskUpdate(task.task_id, Status.CANCELLED, error=TaskError("cancelled", why)))
    current = await svc.store.get(task.task_id)
    if current is None or current.status is not Status.CANCELLED:
        state = current.status.value if current else "gone"
        raise Conflict(f"task {task.task_id!r} finished first ({state})", code="already_finished")
    return JSONResponse(current.public())


async def list_models(request: Request) -> JSONResponse:
    svc = services(request)
    # Only models whose provider is configured here; `simulated`: results come from the
    # built-in simulator, which a page should say.
    models = [spec.describe() for spec in svc.catalogue.models.values() if svc.provider.available(spec.provider)]
    return JSONResponse({"models": models, "simulated": svc.settings.provider == "sim"})


async def tasks_collection(request: Request) -> JSONResponse:
    # One route per path, so a 405 lists every method the path allows.
    return await (create_task(request) if request.method == "POST" else list_tasks(request))


routes = [
    Route("/api/tasks", tasks_collection, methods=["GET", "POST"]),
    Route("/api/tasks/{task_id}", get_task, methods=["GET"]),
    Route("/api/tasks/{task_id}/cancel", cancel_task, methods=["POST"]),
    Route("/api/task-status", task_status, methods=["GET"]),
    Route("/api/models", list_models, methods=["GET"]),
]
