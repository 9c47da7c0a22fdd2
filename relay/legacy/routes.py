"""The legacy routes (README, "Existing front ends"): each one a translation onto the core
paths in relay/create.py, relay/tasks.py, relay/events.py, relay/uploads.py and the storage seam.

Access: a task created here belongs to the browser's signed cookie (browser.py); a
request may also show a task's token (`?token=` or `Authorization: Bearer`) or, with
RELAY_AUTH=jwt, the user's JWT, exactly as on /api/tasks. Without either, another
browser's task answers like a missing one.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay import sse
from relay.access import address_of, identify
from relay.create import NewTask, parse_new_task, submit
from relay.errors import BadRequest, RelayError
from relay.events import stream_tasks
from relay.fanout import TaskEvent
from relay.http import JSONResponse, parse_json, read_body
from relay.legacy import shapes
from relay.legacy.access import owned_task, result_index, stored_key
from relay.legacy.browser import browser_of, new_cookie, owner_of
from relay.legacy.shares import create_share, list_shares, share_page
from relay.models import Task
from relay.parsing import optional_text
from relay.services import Services
from relay.sse import EventStreamResponse
from relay.tasks import links, services
from relay.uploads import receive_upload

MAX_BATCH = 10
MAX_STYLE = 100
_UPLOAD_KEY = re.compile(r"/(uploads/[A-Za-z0-9._/-]{1,400})$")
_SLUG = re.compile(r"[^a-z0-9]+")


async def _json_object(svc: Services, request: Request) -> dict[str, Any]:
    body = parse_json(await read_body(request, svc.settings.max_body, svc.settings.read_timeout))
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


class _Creator:
    """Who creates: the JWT user (RELAY_AUTH=jwt), else this browser (a cookie is issued
    on its first create). Creations count against the client address's rate limit."""

    def __init__(self, svc: Services, request: Request):
        self.svc = svc
        self.request = request
        self.cookie: str | None = None
        if svc.settings.auth == "jwt":
            caller = identify(svc.settings, request)
            self.owner: str | None = caller.user
            self.limit_key = caller.key
            return
        browser = browser_of(svc.settings, request)
        if browser is None:
            browser, self.cookie = new_cookie(svc.settings)
        self.owner = owner_of(browser)
        self.limit_key = f"ip:{address_of(request)}"

    async def create(self, new: NewTask) -> Task:
        await self.svc.create_limit.check(self.limit_key)
        task, _ = await submit(
            self.svc, new, owner=self.owner, caller_key=self.owner or self.limit_key,
            idempotency_key=self.request.headers.get("idempotency-key"),
        )
        return task

    def respond(self, body: dict[str, Any], status_code: int = 200) -> JSONResponse:
        headers = {"set-cookie": self.cookie} if self.cookie else None
        return JSONResponse(body, status_code=status_code, headers=headers)


async def generate_image(request: Request) -> JSONResponse:
    svc = services(request)
    creator = _Creator(svc, request)
    body = await _json_object(svc, request)
    mode = body.get("mode", "text-to-image")
    if mode not in ("text-to-image", "image-to-image"):
        raise BadRequest("mode must be text-to-image or image-to-image")
    urls = body.get("imageUrls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise BadRequest("imageUrls must be a list of URLs")
    if (single := body.get("imageUrl")) is not None:
        if not isinstance(single, str):
            raise BadRequest("imageUrl must be a URL")
        urls = [single, *urls]
    if mode == "image-to-image" and not urls:
        raise BadRequest("image-to-image needs imageUrl or imageUrls: upload the picture first")
    core: dict[str, Any] = {"prompt": _styled(body), "imageUrls": list(dict.fromkeys(urls)) if mode == "image-to-image" else []}
    if body.get("model") is not None:
        core["model"] = body["model"]
    task = await creator.create(parse_new_task(core, svc.catalogue))
    return creator.respond({"taskId": task.task_id, "status": "pending", **links(request, svc, task.task_id)})


def _styled(body: dict[str, Any]) -> Any:
    prompt = body.get("prompt", "")
    style = optional_text(body, "style", MAX_STYLE)
    return f"{prompt}, {style} style" if style and isinstance(prompt, str) and prompt.strip() else prompt


async def generate_batch(request: Request) -> JSONResponse:
    """One task per source image; each failure is reported, not fatal to the others."""
    svc = services(request)
    creator = _Creator(svc, request)
    body = await _json_object(svc, request)
    urls = body.get("imageUrls")
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise BadRequest("imageUrls must be a non-empty list of image URLs (one task per image)")
    if len(urls) > MAX_BATCH:
        raise BadRequest(f"at most {MAX_BATCH} images per request")
    made: list[dict[str, str]] = []
    failures: list[dict[str, str]] = []
    for url in urls:
        core: dict[str, Any] = {"prompt": _styled(body), "imageUrls": [url]}
        if body.get("model") is not None:
            core["model"] = body["model"]
        try:
            task = await creator.create(parse_new_task(core, svc.catalogue))
        except RelayError as exc:
            failures.append({"sourceKey": _source_key(url), "imageUrl": url, "error": exc.message, "code": exc.code})
            continue
        made.append({"taskId": task.task_id, "sourceKey": _source_key(url)})
    return creator.respond(
        {"success": bool(made), "taskIds": [t["taskId"] for t in made], "tasks": made, "failures": failures}
    )


def _source_key(url: str) -> str:
    """An upload of ours is named by its storage key, anything else by its URL."""
    match = _UPLOAD_KEY.search(url.split("?", 1)[0])
    return match.group(1) if match else url


def _poll_frame(event: TaskEvent) -> bytes:
    # Unnamed events: a front end's `source.onmessage` receives them.
    data = orjson.dumps(shapes.poll(orjson.loads(event.data))).decode()
    return sse.frame(id=str(event.version), data=data)


async def poll_task(request: Request) -> Response | EventStreamResponse:
    svc = services(request)
    task = await owned_task(svc, request, request.query_params.get("taskId"))
    if "text/event-stream" in request.headers.get("accept", ""):
        return await stream_tasks(
            request, [task.task_id], client=f"ip:{address_of(request)}", check=lambda t: None, render=_poll_frame
        )
    return JSONResponse(shapes.poll(task.public()))


async def image_details(request: Request) -> JSONResponse:
    svc = services(request)
    task = await owned_task(svc, request, request.query_params.get("taskId"))
    return JSONResponse(shapes.poll(task.public()))


async def task_status(request: Request) -> JSONResponse:
    svc = services(request)
    task = await owned_task(svc, request, request.query_params.get("taskId"))
    return JSONResponse(shapes.status(task.public()))


async def upload(request: Request) -> JSONResponse:
    stored = await receive_upload(request)
    return JSONResponse({"success": True, **stored})


def download_name(task: Task, index: int, ext: str) -> str:
    slug = _SLUG.sub("-", task.prompt.lower()).strip("-")[:40].strip("-") or task.kind
    return f"{slug}-{task.task_id[:12]}-{index + 1}.{ext}"


async def download_url(request: Request) -> JSONResponse:
    svc = services(request)
    task = await owned_task(svc, request, request.query_params.get("taskId"))
    index = result_index(task, request.query_params.get("index"))
    key = stored_key(task, index)
    if key is None:
        # Not mirrored (RELAY_MIRROR=off or it failed): only the provider's link exists.
        return JSONResponse({"url": task.result_urls[index]})
    name = download_name(task, index, key.rpartition(".")[2])
    return JSONResponse({"url": await svc.storage.download_url(key, name, current_url=task.result_urls[index])})


async def share(request: Request) -> JSONResponse:
    svc = services(request)
    body = await _json_object(svc, request)
    return JSONResponse(await create_share(svc, request, body))


routes = [
    Route("/api/generate-image", generate_image, methods=["POST"]),
    Route("/api/generate", generate_batch, methods=["POST"]),
    Route("/api/poll-task", poll_task, methods=["GET"]),
    Route("/api/image-details", image_details, methods=["GET"]),
    Route("/api/task-status", task_status, methods=["GET"]),
    Route("/api/upload-image", upload, methods=["POST"]),
    Route("/api/upload", upload, methods=["POST"]),
    Route("/api/download-url", download_url, methods=["GET"]),
    Route("/api/share", share, methods=["POST"]),
    Route("/api/share/list", list_shares, methods=["GET"]),
    Route("/share/{share_id}", share_page, methods=["GET"]),
]
PATHS = frozenset(r.path for r in routes if not r.path.startswith("/share/"))
