"""Who may see a task on the legacy routes, and which of its results are our stored copies."""

from __future__ import annotations

from starlette.requests import Request

from relay.errors import BadRequest, Conflict, NotFound, TaskNotFound
from relay.http import bearer_token
from relay.legacy.browser import browser_of, owner_of
from relay.models import TASK_ID_RE, Status, Task
from relay.parsing import ascii_int
from relay.services import Services
from relay.storage_keys import result_key
from relay.tasks import read_task


async def owned_task(svc: Services, request: Request, task_id: str | None) -> Task:
    """The task, if this request may see it: its browser's cookie, or what /api/tasks
    accepts (a token, a JWT, or RELAY_AUTH=none)."""
    if not task_id or not TASK_ID_RE.fullmatch(task_id):
        raise BadRequest(f"taskId must match {TASK_ID_RE.pattern}", code="invalid_task_id")
    if bearer_token(request) is None and svc.settings.auth != "none":
        browser = browser_of(svc.settings, request)
        task = await svc.recovery.load(task_id) if browser is not None else None
        if task is None or browser is None or task.owner != owner_of(browser):
            raise TaskNotFound(f"no task {task_id!r} for this browser (it may have expired)")
        return task
    return await read_task(svc, request, task_id)


def stored_key(task: Task, index: int) -> str | None:
    """The storage key of result `index` when it is our stored copy, else None."""
    if task.mirror_error or index >= len(task.result_urls):
        return None
    path = task.result_urls[index].split("?", 1)[0]
    ext = path.rpartition(".")[2].lower()
    key = result_key(task.task_id, index, ext)
    return key if path.endswith("/" + key) else None


def result_index(task: Task, text: str | None) -> int:
    index = ascii_int(text or "0", max_digits=3)
    if index is None:
        raise BadRequest("index must be a whole number from 0")
    if task.status is not Status.COMPLETED:
        raise Conflict(f"task {task.task_id!r} is {task.status.value}; only a completed task has results")
    if index >= len(task.result_urls):
        raise NotFound(f"task {task.task_id!r} has {len(task.result_urls)} result(s); index {index} is not one")
    return index
