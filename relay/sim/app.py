"""The KIE simulator's HTTP app: KIE's endpoints for every family, result files, and the
control API. Relay reaches it only through its normal KIE client, so demos and tests run
the production code path."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay.catalogue import Catalogue, builtin
from relay.sim import control, replicate, shapes
from relay.sim.config import SimConfig
from relay.sim.delivery import CALLBACK_TIMEOUT_SECONDS, finish, now_ms, start
from relay.sim.media import EXTENSIONS, result_file
from relay.sim.requests import CHECKS, Invalid
from relay.sim.state import MANUAL_NOMINAL_SECONDS, SimState, SimTask

BAD_GATEWAY_HTML = (
    "<!DOCTYPE html>\n<html>\n<head><title>502 Bad Gateway</title></head>\n"
    "<body>\n<center><h1>502 Bad Gateway</h1></center>\n<hr><center>nginx</center>\n"
    "</body>\n</html>\n"
)
DOWNLOAD_LINK_SECONDS = 1200  # KIE's download-url links live 20 minutes

KieHandler = Callable[[Request, SimState], Awaitable[Response]]


def _json(data: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers=headers, media_type="application/json")


def _kie(state: SimState, code: int, msg: str, data: object = None) -> Response:
    """KIE's envelope. KIE sends most body errors with HTTP 200; `http_errors` mirrors the code."""
    status = code if state.config.http_errors and code != 200 else 200
    return _json({"code": code, "msg": msg, "data": data}, status)


def _authorized(request: Request, api_key: str) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


def _kie_route(path: str, handler: KieHandler, method: str) -> Route:
    async def endpoint(request: Request) -> Response:
        state = control.sim_state(request)
        # The gateway answers before KIE's app sees the request, so this comes before auth.
        if state.chance(state.config.html_error_rate):
            return Response(BAD_GATEWAY_HTML, 502, media_type="text/html")
        if not _authorized(request, state.config.api_key):
            return _kie(state, 401, "You do not have access permissions")
        return await handler(request, state)

    return Route(path, endpoint, methods=[method])


def _catalogue(request: Request) -> Catalogue:
    catalogue: Catalogue = request.app.state.catalogue
    return catalogue


def _new_task(request: Request, state: SimState, family: str, body: dict[str, Any], task_id: str) -> SimTask:
    spec = CHECKS[family](state, body, _catalogue(request))
    config = state.config
    now = time.monotonic()
    task = SimTask(
        task_id=task_id,
        family=family,
        model=spec.model,
        kind=spec.kind,
        request=body,
        callback_url=spec.callback_url,
        progress_url=spec.progress_url,
        parent=spec.parent,
        prompt=spec.prompt or (spec.parent.prompt if spec.parent else ""),
        base_url=config.public_url or str(request.base_url).rstrip("/"),
        created_ms=now_ms(),
        created_mono=now,
        nominal_seconds=config.callback_delay or MANUAL_NOMINAL_SECONDS,
    )
    start(state, task)
    return task


def _create_handler(family: str) -> KieHandler:
    async def create(request: Request, state: SimState) -> Response:
        now = time.monotonic()
        if state.rate_limited(now):
            return _kie(state, 429, "Rate limit exceeded")
        body = await control.json_body(request)
        if not isinstance(body, dict):
            return _kie(state, 400, "Invalid JSON body: expected an object")
        if state.credits < shapes.CREDITS_PER_TASK:
            return _kie(state, 402, "insufficient credits")
        try:
            task = _new_task(request, state, family, body, secrets.token_hex(16))
        except Invalid as exc:
            return _kie(state, exc.code, exc.msg)
        state.credits -= shapes.CREDITS_PER_TASK
        if state.config.create_delay > 0:
            # Accepted (and paid for) now, answered later: a caller that dies meanwhile
            # leaves a task it never heard of, as with the real service.
            await asyncio.sleep(state.config.create_delay)
        state.recent_creates.append(now)
        if family == "jobs":  # real createTask answers (jobs-create-real-*.json) carry both
            return _kie(state, 200, "success", {"taskId": task.task_id, "recordId": task.task_id})
        return _kie(state, 200, "success", {"taskId": task.task_id})

    return create


async def _veo_4k(request: Request, state: SimState) -> Response:
    """veo-create-4k-docs.json: the 4K answer names the parent's id, with the links once
    they exist; the 4K callback carries the parent's id too."""
    body = await control.json_body(request)
    if not isinstance(body, dict):
        return _kie(state, 400, "Invalid JSON body: expected an object")
    internal = f"{body.get('taskId')}-4k{body.get('index') or ''}"
    task = state.tasks.get(internal)
    if task is None:
        try:
            task = _new_task(request, state, "veo-4k", body, internal)
        except Invalid as exc:
            return _kie(state, exc.code, exc.msg)
    record = shapes.upscale_record(task)
    record["taskId"] = body.get("taskId")
    return _kie(state, 200, "success", record)


async def _veo_1080p(request: Request, state: SimState) -> Response:
    """veo-status-1080p-docs.json: the 1080p link of a finished Veo video, at once."""
    parent_id = request.query_params.get("taskId", "")
    internal = f"{parent_id}-1080p{request.query_params.get('index', '')}"
    task = state.tasks.get(internal)
    if task is None:
        try:
            task = _new_task(request, state, "veo-1080p", {"taskId": parent_id}, internal)
        except Invalid as exc:
            return _kie(state, exc.code, exc.msg)
    if task.outcome is None:
        finish(state, task, success=True)
    task.status_queries += 1
    return _kie(state, 200, "success", shapes.upscale_record(task))


# The status endpoints whose "no such task" answer is the recorded `data: null` (Suno);
# the others say "recordInfo is null" (KIE-API.md §3, §11).
NULL_WHEN_UNKNOWN = frozenset({"suno"})


def _record_handler(family: str) -> KieHandler:
    shown = shapes.STATUS_FAMILIES.get(family, (family,))

    async def record(request: Request, state: SimState) -> Response:
        task_id = request.query_params.get("taskId", "").strip()
        if not task_id:
            return _kie(state, 400, "taskId parameter is required")
        task = state.tasks.get(task_id)
        if task is not None:
            task.status_queries += 1
        # KIE answers the same body for "not visible yet" and "no such task".
        if (
            task is None
            or task.family not in shown
            or time.monotonic() - task.created_mono < state.config.record_null_seconds
        ):
            if family in NULL_WHEN_UNKNOWN:
                return _kie(state, 200, "success", None)
            return _kie(state, 422, "recordInfo is null")
        return _kie(state, 200, "success", shapes.RECORDS[task.family](task))

    return record


async def _credit(request: Request, state: SimState) -> Response:
    return _kie(state, 200, "success", state.credits)


def _link_signature(state: SimState, path: str, expires: int) -> str:
    key = state.config.api_key.encode()
    return hmac.new(key, f"{path}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]


async def _download_url(request: Request, state: SimState) -> Response:
    """KIE's download-url: a fresh 20-minute link for one of its result URLs; anything
    else is `{"code":422,"msg":"url is wrong"}` with HTTP 200 (KIE-API.md §11)."""
    body = await control.json_body(request)
    url = body.get("url") if isinstance(body, dict) else None
    if not isinstance(url, str):
        return _kie(state, 422, "url is wrong")
    target = httpx.URL(url)
    parts = target.path.split("/")
    task = state.tasks.get(parts[2]) if len(parts) == 4 and parts[1] == "files" else None
    if task is None or url.split("?")[0] not in task.result_urls:
        return _kie(state, 422, "url is wrong")
    task.fresh_links += 1
    expires = int(time.time()) + DOWNLOAD_LINK_SECONDS
    fresh = f"{url.split('?')[0]}?expires={expires}&sig={_link_signature(state, target.path, expires)}"
    return _kie(state, 200, "success", fresh)


def _link_alive(state: SimState, task: SimTask, request: Request) -> bool:
    ttl = state.config.link_ttl
    if ttl <= 0 or task.outcome is None:
        return True
    expires = request.query_params.get("expires", "")
    sig = request.query_params.get("sig", "")
    if expires.isdigit() and int(expires) >= time.time():
        return hmac.compare_digest(sig, _link_signature(state, request.url.path, int(expires)))
    return now_ms() - task.outcome.completed_ms < ttl * 1000


async def _file(request: Request) -> Response:
    state = control.sim_state(request)
    task = state.tasks.get(request.path_params["task_id"])
    name: str = request.path_params["name"]
    if task is None or task.outcome is None or not task.outcome.success:
        return control.sim_error(404, "file_not_found", "no such result file")
    index, _, ext = name.partition(".")
    if not index.isdigit() or int(index) >= len(task.result_urls) or ext != EXTENSIONS[task.kind]:
        return control.sim_error(404, "file_not_found", "no such result file")
    if not _link_alive(state, task, request):
        # What an expired R2 presigned link answers (KIE's result links end after a while).
        return Response(b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                        403, media_type="application/xml")
    if state.config.file_delay > 0:
        await asyncio.sleep(state.config.file_delay)  # a slow result host, on purpose
    data, content_type = result_file(task.kind, f"{task.prompt}#{index}")
    return Response(data, media_type=content_type, headers={"cache-control": "public, max-age=86400"})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        body: object = {"code": exc.status_code, "msg": exc.detail, "data": None}
    else:
        slug = exc.detail.lower().replace(" ", "_")
        body = {"error": {"code": slug, "message": exc.detail}}
    return _json(body, exc.status_code, exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    return control.sim_error(500, "internal_error", "the simulator failed; see its log")


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    state: SimState = app.state.sim
    # trust_env=False: the sim never reads the environment (no proxy variables for callbacks).
    async with httpx.AsyncClient(timeout=CALLBACK_TIMEOUT_SECONDS, trust_env=False) as client:
        state.http = client
        try:
            yield
        finally:
            await state.cancel_background()
            state.http = None


# KIE's endpoints as KIE documents and serves them, written here rather than taken from
# Relay's client (relay/providers/kie_families.py), so a wrong path in Relay fails against
# the simulator instead of being copied into it. Sources: tests/fixtures/kie/MODELS.md and
# the `path` of the recorded fixtures there.
# family -> (create path, status path)
ENDPOINTS: Mapping[str, tuple[str, str]] = {
    "jobs": ("/api/v1/jobs/createTask", "/api/v1/jobs/recordInfo"),
    "4o": ("/api/v1/gpt4o-image/generate", "/api/v1/gpt4o-image/record-info"),
    "flux": ("/api/v1/flux/kontext/generate", "/api/v1/flux/kontext/record-info"),
    "mj": ("/api/v1/mj/generate", "/api/v1/mj/record-info"),
    "veo": ("/api/v1/veo/generate", "/api/v1/veo/record-info"),
    "veo-extend": ("/api/v1/veo/extend", "/api/v1/veo/record-info"),
    "runway": ("/api/v1/runway/generate", "/api/v1/runway/record-detail"),
    "runway-extend": ("/api/v1/runway/extend", "/api/v1/runway/record-detail"),
    "aleph": ("/api/v1/aleph/generate", "/api/v1/aleph/record-info"),
    "suno": ("/api/v1/generate", "/api/v1/generate/record-info"),
}


def _kie_routes() -> list[Route]:
    routes = [_kie_route(create, _create_handler(name), "POST") for name, (create, _) in ENDPOINTS.items()]
    status_paths: dict[str, str] = {}
    for name, (_, status) in ENDPOINTS.items():
        status_paths.setdefault(status, name)
    routes += [_kie_route(path, _record_handler(name), "GET") for path, name in status_paths.items()]
    return [
        *routes,
        _kie_route("/api/v1/veo/get-1080p-video", _veo_1080p, "GET"),
        _kie_route("/api/v1/veo/get-4k-video", _veo_4k, "POST"),
        _kie_route("/api/v1/chat/credit", _credit, "GET"),
        _kie_route("/api/v1/common/download-url", _download_url, "POST"),
    ]


def create_sim_app(config: SimConfig, catalogue: Catalogue | None = None) -> Starlette:
    """The simulator as an ASGI app; serve it with uvicorn (its lifespan must run)."""
    app = Starlette(
        routes=[
            *_kie_routes(),
            *replicate.routes,
            Route("/files/{task_id}/{name}", _file, methods=["GET"]),
            *control.routes,
        ],
        lifespan=_lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    app.state.sim = SimState(config)
    app.state.catalogue = catalogue or builtin()
    return app
