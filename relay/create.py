"""The create path every create route shares: validate the request against its model,
reserve the price (RELAY_CREDITS=on), create at the provider once (Idempotency-Key, double
clicks), and store the new task."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import orjson

from relay import auth, idempotency, parked
from relay.catalogue import Catalogue
from relay.errors import BadRequest, ProviderError, RelayError, TaskNotFound
from relay.models import TASK_ID_RE, Mode, Status, Task, utcnow
from relay.providers.base import CreateRequest
from relay.services import Services
from relay.webhooks.sender import check_task_webhook

DEFAULT_MODELS = {Mode.TEXT_TO_IMAGE: "google/nano-banana", Mode.IMAGE_TO_IMAGE: "google/nano-banana-edit"}
# Outer bounds before the model's own limits (from the catalogue) are checked.
MAX_PROMPT = 10000
MAX_IMAGE_URLS = 16
MAX_URL = 2048
MAX_OPTIONS = 8192


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


async def start_task(svc: Services, new: NewTask, owner: str | None) -> tuple[str, idempotency.Step]:
    """Create the task at the provider; return its id and the step that stores it
    (pending, version 1), which the caller runs (and keeps running if the store is away)."""
    callback_token = auth.callback_token(svc.settings.secret)
    provider = svc.provider.for_model(new.model)
    price: int | None = None
    hold: str | None = None
    if svc.accounts is not None and owner is not None:
        spec = svc.catalogue.get(new.model)
        price = spec.price if spec.price is not None else svc.settings.default_price
        hold = await svc.accounts.reserve(owner, price)  # 402 before the provider is paid
    try:
        provider_task_id = await provider.create(
            CreateRequest(
                model=new.model,
                prompt=new.prompt,
                callback_url=provider.callback_url(svc.settings.public_url, callback_token),
                image_urls=new.image_urls,
                options=new.options,
                parent_task_id=new.parent_task_id,
            )
        )
        if not TASK_ID_RE.fullmatch(provider_task_id):
            raise ProviderError(f"the provider returned an unusable task id {provider_task_id[:40]!r}")
    except BaseException:
        if hold is not None and svc.accounts is not None:
            with contextlib.suppress(RelayError):  # else the sweep refunds it later
                await svc.accounts.refund(hold, "the provider did not take the task")
        raise
    now = utcnow()
    task = Task(
        task_id=provider_task_id,
        provider=provider.name,
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
        cost=price,
        extra={"hold": hold} if hold is not None else {},
    )

    async def store_task() -> None:
        if hold is not None and svc.accounts is not None:
            await svc.accounts.ledger.attach(hold, provider_task_id)
        await svc.ingestor.create(task)  # a no-op when an earlier attempt stored it
        # A callback may have beaten us here (KIE can be faster than our store write).
        await parked.apply(svc.store, svc.ingestor, task)

    return provider_task_id, store_task


