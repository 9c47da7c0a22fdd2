"""A task's outbound webhook messages: what was sent, what each attempt got, what is next;
and sending them all again. Readable by whoever may read the task."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.routing import Route

from relay.http import JSONResponse
from relay.tasks import read_task, services


async def list_deliveries(request: Request) -> JSONResponse:
    svc = services(request)
    task = await read_task(svc, request, request.path_params["task_id"])
    deliveries = await svc.outbox.for_task(task.task_id)
    return JSONResponse({"taskId": task.task_id, "deliveries": [d.public() for d in deliveries]})


async def redeliver(request: Request) -> JSONResponse:
    svc = services(request)
    task = await read_task(svc, request, request.path_params["task_id"])
    queued = await svc.outbox.redeliver(task.task_id, time.time())
    if svc.webhooks is not None:
        svc.webhooks.wake()
    return JSONResponse({"taskId": task.task_id, "queued": queued}, status_code=202)


routes = [
    Route("/api/tasks/{task_id}/deliveries", list_deliveries, methods=["GET"]),
    Route("/api/tasks/{task_id}/deliveries/redeliver", redeliver, methods=["POST"]),
]
