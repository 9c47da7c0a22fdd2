"""The simulator's control API under /sim/: look at tasks, finish or fail them now, send
a callback again, change the quirks."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay.sim.delivery import finish, post
from relay.sim.state import SimState, SimTask


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def sim_error(status: int, code: str, message: str) -> Response:
    return _json({"error": {"code": code, "message": message}}, status)


def sim_state(request: Request) -> SimState:
    state: SimState = request.app.state.sim
    return state


async def json_body(request: Request) -> object:
    """The parsed body, or `...` when it is not valid JSON (None is a valid JSON value)."""
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return ...


def task_view(task: SimTask) -> dict[str, Any]:
    task_input = (
        task.request.get("input")
        if task.family == "jobs"
        else {k: v for k, v in task.request.items() if k not in ("callBackUrl", "progressCallBackUrl")}
    )
    return {
        "taskId": task.task_id,
        "family": task.family,
        "model": task.model,
        "kind": task.kind,
        "state": task.state_name(),
        "callBackUrl": task.callback_url,
        "input": task_input,
        "callbacksSent": task.callbacks_sent,
        "statusQueries": task.status_queries,
        "callbacksAnswered": task.callbacks_answered,
        "freshLinks": task.fresh_links,
        "lastCallbackStatus": task.last_status,
        "resultUrls": task.result_urls,
        "createTime": task.created_ms,
    }


def _control_task(request: Request) -> SimTask | Response:
    task_id = request.path_params["task_id"]
    task = sim_state(request).tasks.get(task_id)
    if task is None:
        return sim_error(404, "task_not_found", f"the simulator has no task {task_id!r}")
    return task


async def _control_post(state: SimState, task: SimTask, body: bytes) -> Response:
    # Explicit commands deliver exactly once: the drop/duplicate/out-of-order quirks apply only
    # to automatic completions, so a test driving the sim by hand gets what it asked for.
    if task.callback_url is None:
        return _json({"delivered": False, "status": None})
    status = await post(state, task, body)
    return _json({"delivered": status is not None and 200 <= status < 300, "status": status})


async def _list_tasks(request: Request) -> Response:
    tasks = reversed(list(sim_state(request).tasks.values()))
    return _json({"tasks": [task_view(t) for t in tasks]})


async def _get_task(request: Request) -> Response:
    task = _control_task(request)
    return task if isinstance(task, Response) else _json(task_view(task))


def _already_finished(task: SimTask) -> Response:
    message = (
        f"task {task.task_id} already finished ({task.state_name()}); "
        "use /resend to post its callback again"
    )
    return sim_error(409, "task_finished", message)


async def _complete(request: Request) -> Response:
    task = _control_task(request)
    if isinstance(task, Response):
        return task
    if task.outcome is not None:
        return _already_finished(task)
    state = sim_state(request)
    return await _control_post(state, task, finish(state, task, success=True))


async def _fail(request: Request) -> Response:
    task = _control_task(request)
    if isinstance(task, Response):
        return task
    if task.outcome is not None:
        return _already_finished(task)
    code: int | None = None
    msg: str | None = None
    if await request.body():
        body = await json_body(request)
        if not isinstance(body, dict):
            return sim_error(
                400, "bad_request", 'expected a JSON object {"code": int, "msg": str}'
            )
        code, msg = body.get("code"), body.get("msg")
        if code is not None and (
            isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 999
        ):
            return sim_error(400, "bad_request", "code must be an integer between 100 and 999")
        if msg is not None and not isinstance(msg, str):
            return sim_error(400, "bad_request", "msg must be a string")
    state = sim_state(request)
    return await _control_post(state, task, finish(state, task, success=False, code=code, msg=msg))


async def _resend(request: Request) -> Response:
    task = _control_task(request)
    if isinstance(task, Response):
        return task
    if task.last_callback is None:
        return sim_error(409, "task_not_finished", "the task has not finished: nothing to resend")
    return await _control_post(sim_state(request), task, task.last_callback)


def _config_view(state: SimState) -> dict[str, Any]:
    # `credits` shows the live balance, so GET then PATCH of the same body changes nothing.
    return {**state.config.to_json(), "credits": state.credits}


async def _get_config(request: Request) -> Response:
    return _json(_config_view(sim_state(request)))


async def _patch_config(request: Request) -> Response:
    state = sim_state(request)
    changes = await json_body(request)
    if not isinstance(changes, dict):
        return sim_error(400, "invalid_config", "expected a JSON object of settings")
    try:
        state.config = state.config.updated(changes)
    except (ValueError, TypeError) as exc:
        return sim_error(400, "invalid_config", str(exc))
    if "credits" in changes:
        state.credits = state.config.credits
    if "seed" in changes:
        state.rng.seed(state.config.seed)
    return _json(_config_view(state))


async def _reset(request: Request) -> Response:
    await sim_state(request).reset()
    return _json({"reset": True})


routes = [
    Route("/sim/tasks", _list_tasks, methods=["GET"]),
    Route("/sim/tasks/{task_id}", _get_task, methods=["GET"]),
    Route("/sim/tasks/{task_id}/complete", _complete, methods=["POST"]),
    Route("/sim/tasks/{task_id}/fail", _fail, methods=["POST"]),
    Route("/sim/tasks/{task_id}/resend", _resend, methods=["POST"]),
    Route("/sim/config", _get_config, methods=["GET"]),
    Route("/sim/config", _patch_config, methods=["PATCH"]),
    Route("/sim/reset", _reset, methods=["POST"]),
]
