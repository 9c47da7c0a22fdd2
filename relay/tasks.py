"""Task endpoints: create (202 at once), fallback status reads, history."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.routing import Route

from relay import auth, idempotency, parked
from relay.access import authorize_task, ensure_owner, identify
from relay.catalogue import Catalogue
from relay.errors import BadRequest, Conflict, Forbidden, ProviderError, TaskNotFound
from relay.http import JSONResponse, bearer_token, parse_json, read_body
from relay.models import TASK_ID_RE, Mode, Status, Task, utcnow
from relay.parsing import ascii_int
from relay.providers.base import CreateRequest
from relay.services import Services
from relay.webhooks.sender import check_task_webhook

log = logging.getLogger("relay.tasks")

DEFAULT_MODELS = {Mode.TEXT_TO_IMAGE: "google/nano-banana", Mode.IMAGE_TO_IMAGE: "google/nano-banana-edit"}
# Outer bounds before the model's own limits (from the catalogue) are checked.
MAX_PROMPT = 10000
MAX_IMAGE_URLS = 16
MAX_URL = 2048
MAX_OPTIONS = 8192


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


@dataclass(frozen=True, slots=True)
class NewTask:
    prompt: str
    model: str
    mode: Mode
    image_urls: tuple[str, ...]
    options: dict[str, Any]
    parent_task_id: str | None = None
    kind: str = "image"  # what the model makes, from its catalogue entry
    webhook_url: str | None = None  # where this task's own changes are announced

    def fingerprint(self) -> bytes:
        return orjson.dumps(
            [self.prompt, self.model, self.image_urls, self.options, self.parent_task_id, self.webhook_url],
            option=orjson.OPT_SORT_KEYS,
        )


def parse_new_task(body: Any, catalogue: Catalogue) -> NewTask:
    """Strict validation of `POST /api/tasks`: every refusal says what to fix."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object like {\"prompt\": \"...\"}")
    unknown = set(body) - {"prompt", "imageUrls", "model", "options", "parentTaskId", "webhookUrl"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string")
    if len(prompt) > MAX_PROMPT:
        raise BadRequest(f"prompt is longer than {MAX_PROMPT} characters")
    urls = body.get("imageUrls", [])
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise BadRequest("imageUrls must be a list of URLs")
    if len(urls) > MAX_IMAGE_URLS:
        raise BadRequest(f"imageUrls has {len(urls)} entries; at most {MAX_IMAGE_URLS} are allowed")
    for url in urls:
        if len(url) > MAX_URL or not url.startswith(("https://", "http://")):
            raise BadRequest(f"imageUrls entry {url[:80]!r} must be an http(s) URL of at most {MAX_URL} characters")
    mode = Mode.IMAGE_TO_IMAGE if urls else Mode.TEXT_TO_IMAGE
    model = body.get("model", DEFAULT_MODELS[mode])
    if not isinstance(model, str) or not 0 < len(model.strip()) <= 100:
        raise BadRequest("model must be a non-empty string of at most 100 characters")
    options = body.get("options", {})
    if not isinstance(options, dict):
        raise BadRequest("options must be a JSON object of provider settings, e.g. {\"aspect_ratio\": \"16:9\"}")
    parent = body.get("parentTaskId")
    if parent is not None and (not isinstance(parent, str) or not TASK_ID_RE.fullmatch(parent)):
        raise BadRequest(f"parentTaskId must match {TASK_ID_RE.pattern}", code="invalid_task_id")
    try:
        # Also what the de-duplication fingerprint serializes: refuse what it cannot.
        if len(orjson.dumps(options)) > MAX_OPTIONS:
            raise BadRequest(f"options is larger than {MAX_OPTIONS} bytes")
    except orjson.JSONEncodeError:
        raise BadRequest("options is nested too deeply") from None
    webhook = body.get("webhookUrl")
    if webhook is not None and (not isinstance(webhook, str) or not 0 < len(webhook) <= MAX_URL):
        raise BadRequest(f"webhookUrl must be an http(s) URL of at most {MAX_URL} characters", code="webhook_refused")
    model = model.strip()
    # The model's own rules (prompt, reference images, options), before anyone is paid.
    spec = catalogue.get(model)
    options = spec.check(prompt.strip(), tuple(urls), options, parent)
    return NewTask(prompt.strip(), model, mode, tuple(urls), options, parent, spec.kind, webhook)


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


async def submit(
    svc: Services, new: NewTask, *, owner: str | None, caller_key: str, idempotency_key: str | None
) -> tuple[Task, bool]:
    """Create `new` once: per Idempotency-Key for 24 h, per identical request of the same
    caller for a few seconds. Every create route comes through here. Returns the task and
    whether this call created it."""
    if new.webhook_url is not None:
        check_task_webhook(svc.settings, new.webhook_url)
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 255:
        raise BadRequest("Idempotency-Key must be 1 to 255 characters")
    key, ttl = idempotency.claim_key(caller_key, idempotency_key, new.fingerprint())
    task_id, created = await idempotency.once(
        svc.coordination, key, ttl, lambda: start_task(svc, new, owner), svc.settler
    )
    task = await svc.store.get(task_id)
    if task is None:
        raise TaskNotFound(f"task {task_id!r} from an earlier identical request has expired")
    return task, created


async def _check_parent(svc: Services, request: Request, new: NewTask) -> None:
    """An extend or upscale works on a finished task of the same caller."""
    assert new.parent_task_id is not None
    parent = await read_task(svc, request, new.parent_task_id, token=request.headers.get("x-parent-token"))
    if parent.status is not Status.COMPLETED:
        raise Conflict(f"task {parent.task_id!r} is {parent.status.value}; only a completed task can be extended")


async def start_task(svc: Services, new: NewTask, owner: str | None) -> tuple[str, idempotency.Step]:
    """Create the task at the provider; return its id and the step that stores it
    (pending, version 1), which the caller runs (and keeps running if the store is away)."""
    callback_token = auth.callback_token(svc.settings.secret)
    provider_task_id = await svc.provider.create(
        CreateRequest(
            model=new.model,
            prompt=new.prompt,
            callback_url=f"{svc.settings.public_url}/api/callbacks/kie?token={callback_token}",
            image_urls=new.image_urls,
            options=new.options,
            parent_task_id=new.parent_task_id,
        )
    )
    if not TASK_ID_RE.fullmatch(provider_task_id):
        raise ProviderError(f"the provider returned an unusable task id {provider_task_id[:40]!r}")
    now = utcnow()
    task = Task(
        task_id=provider_task_id,
        provider=svc.provider.name,
        model=new.model,
        mode=new.mode,
        kind=new.kind,
        status=Status.PENDING,
        prompt=new.prompt,
        image_urls=new.image_urls,
        created_at=now,
        updated_at=now,
        callback_hash=auth.token_hash(callback_token),
        owner=owner,
        webhook_url=new.webhook_url,
    )

    async def store_task() -> None:
        await svc.ingestor.create(task)  # a no-op when an earlier attempt stored it
        # A callback may have beaten us here (KIE can be faster than our store write).
        await parked.apply(svc.store, svc.ingestor, task)

    return provider_task_id, store_task


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


async def list_models(request: Request) -> JSONResponse:
    svc = services(request)
    # `simulated`: results come from the built-in simulator, which a page should say.
    return JSONResponse({"models": svc.catalogue.describe(), "simulated": svc.settings.provider == "sim"})


async def tasks_collection(request: Request) -> JSONResponse:
    # One route per path, so a 405 lists every method the path allows.
    return await (create_task(request) if request.method == "POST" else list_tasks(request))


routes = [
    Route("/api/tasks", tasks_collection, methods=["GET", "POST"]),
    Route("/api/tasks/{task_id}", get_task, methods=["GET"]),
    Route("/api/task-status", task_status, methods=["GET"]),
    Route("/api/models", list_models, methods=["GET"]),
]
