"""The simulator's Replicate mode: Replicate's prediction API on the same port as KIE's,
answering and calling back in Replicate's recorded shapes and signing its webhooks the
Standard Webhooks way, as Replicate does (tests/fixtures/replicate/README.md).

POST /v1/models/{owner}/{name}/predictions (official models) and POST /v1/predictions
(`version`) create; GET /v1/predictions/{id} reads; POST /v1/predictions/{id}/cancel
cancels; GET /v1/webhooks/default/secret gives the signing secret. Tasks are the
simulator's own (`family = "replicate"`), so /sim/tasks/{id}/complete and the quirks
(delay, failures, duplicates, drops, out of order) work the same.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay.catalogue import Catalogue
from relay.sim import control
from relay.sim.delivery import deliver_with_quirks, now_ms, start
from relay.sim.replicate_shapes import CANCELED, prediction
from relay.sim.state import MANUAL_NOMINAL_SECONDS, Outcome, SimState, SimTask

EVENTS = {"start", "output", "logs", "completed"}


def _problem(status: int, title: str, detail: str, **extra: Any) -> Response:
    # Replicate's errors are RFC 7807 bodies (error-401.json, error-422-*.json).
    return Response(
        orjson.dumps({"title": title, "detail": detail, "status": status, **extra}),
        status,
        media_type="application/problem+json",
    )


def _authorized(request: Request, state: SimState) -> bool:
    return request.headers.get("authorization", "") == f"Bearer {state.config.api_key}"


def _base(request: Request, state: SimState) -> str:
    return state.config.public_url or str(request.base_url).rstrip("/")


async def _create(request: Request, model: str | None) -> Response:
    state = control.sim_state(request)
    if not _authorized(request, state):
        return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")
    body = await control.json_body(request)
    if not isinstance(body, dict):
        return _problem(400, "Bad request", "the body must be a JSON object")
    catalogue: Catalogue = request.app.state.catalogue
    if model is None:
        version = body.get("version")
        spec = next((s for s in catalogue.models.values() if s.upstream.partition(":")[2] == version), None)
        if spec is None:
            return _problem(422, "Invalid version or not permitted",
                            "The specified version does not exist (or perhaps you don't have permission to use it?)")
    else:
        spec = next((s for s in catalogue.models.values() if s.provider == "replicate" and s.upstream == model), None)
        if spec is None:
            return _problem(404, "Not found", "The requested resource could not be found.")
    inputs = body.get("input")
    if not isinstance(inputs, dict):
        return _problem(422, "Input validation failed", "- input: Invalid type. Expected: object\n")
    if spec.prompt_required and not isinstance(inputs.get("prompt"), str):
        return _problem(422, "Input validation failed", "- input: prompt is required\n",
                        invalid_fields=[{"type": "required", "field": "input", "description": "prompt is required"}])
    events = body.get("webhook_events_filter", ["start", "output", "logs", "completed"])
    if not isinstance(events, list) or not set(events) <= EVENTS:
        return _problem(422, "Input validation failed", "- webhook_events_filter: invalid value\n")
    webhook = body.get("webhook")
    config = state.config
    now = time.monotonic()
    task = SimTask(
        task_id=secrets.token_hex(13)[:26],
        family="replicate",
        model=spec.id,
        kind=spec.kind,
        request={**body, "_model": spec.upstream.partition(":")[0]},
        callback_url=webhook if isinstance(webhook, str) and webhook.startswith(("http://", "https://")) else None,
        prompt=str(inputs.get("prompt") or ""),
        base_url=_base(request, state),
        created_ms=now_ms(),
        created_mono=now,
        nominal_seconds=config.callback_delay or MANUAL_NOMINAL_SECONDS,
    )
    start(state, task)
    return Response(orjson.dumps(prediction(task, task.base_url)), 201, media_type="application/json")


async def _create_official(request: Request) -> Response:
    return await _create(request, f"{request.path_params['owner']}/{request.path_params['name']}")


async def _create_version(request: Request) -> Response:
    return await _create(request, None)


def _found(request: Request) -> SimTask | Response:
    state = control.sim_state(request)
    if not _authorized(request, state):
        return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")
    task = state.tasks.get(request.path_params["pid"])
    if task is None or task.family != "replicate":
        return _problem(404, "Not found", "The requested resource could not be found.")
    return task


async def _get(request: Request) -> Response:
    task = _found(request)
    if isinstance(task, Response):
        return task
    task.status_queries += 1
    return Response(orjson.dumps(prediction(task, task.base_url)), media_type="application/json")


async def _cancel(request: Request) -> Response:
    task = _found(request)
    if isinstance(task, Response):
        return task
    state = control.sim_state(request)
    if task.outcome is None:
        task.outcome = Outcome(False, 0, CANCELED, now_ms(), task.phase()[1])
        body = orjson.dumps(prediction(task, task.base_url))
        task.last_callback = body
        # `completed` fires on cancel too.
        state.spawn(deliver_with_quirks(state, task, body), f"sim-cancel-{task.task_id}")
    return Response(orjson.dumps(prediction(task, task.base_url)), media_type="application/json")


async def _secret(request: Request) -> Response:
    state = control.sim_state(request)
    if not _authorized(request, state):
        return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")
    return Response(orjson.dumps({"key": state.config.replicate_webhook_secret}), media_type="application/json")


routes = [
    Route("/v1/models/{owner}/{name}/predictions", _create_official, methods=["POST"]),
    Route("/v1/predictions", _create_version, methods=["POST"]),
    Route("/v1/predictions/{pid}", _get, methods=["GET"]),
    Route("/v1/predictions/{pid}/cancel", _cancel, methods=["POST"]),
    Route("/v1/webhooks/default/secret", _secret, methods=["GET"]),
]
