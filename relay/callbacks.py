"""Provider callbacks: verify, normalize, ingest, answer fast. One route per provider
path; the provider the path belongs to verifies and reads the body.

The answer is 200 only once the change (or the parked callback) is in the store; if the
store is down the answer is 503 and the provider retries, while the reconciler catches up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.routing import Route

from relay import auth, keys, metrics, parked
from relay.access import address_of
from relay.errors import BadRequest, InvalidPayload, NotFound, RelayError, Unauthorized
from relay.http import JSONResponse, parse_json, query_value, read_body
from relay.models import TASK_ID_RE
from relay.providers.base import Provider
from relay.providers.registry import CALLBACK_PATHS

if TYPE_CHECKING:
    from relay.services import Services

log = logging.getLogger("relay.callbacks")

RECEIVED = {"status": "received"}
DUPLICATE = {"status": "duplicate"}
SEEN_FOR = 600.0  # a delivery id is remembered this long (the signatures' window is 5 min)


async def provider_callback(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    address = address_of(request)
    # Only refused callbacks count against the limit: providers send genuine ones from a
    # few addresses in bursts, and they must never meet a 429; a sender of forgeries does.
    svc.callback_limit.refuse_if_blocked(address)
    path = request.scope["path"]
    if path not in svc.provider.callback_paths:
        raise NotFound("no provider configured here sends callbacks to this route")
    try:
        return await _receive(svc, request, svc.provider.for_path(path))
    except (Unauthorized, BadRequest):
        await svc.callback_limit.check(address)
        raise


async def _receive(svc: Services, request: Request, provider: Provider) -> JSONResponse:
    token = query_value(request, "token")
    # Refuse forgeries before reading the body or touching the store.
    if not auth.callback_token_signed(svc.settings.secret, token):
        raise Unauthorized("the callback URL's token is missing or invalid", code="invalid_callback_token")
    assert token is not None
    raw = await read_body(request, svc.settings.max_body, svc.settings.read_timeout)
    payload = parse_json(raw, "callback body")
    if not isinstance(payload, dict):
        raise InvalidPayload(f"the callback body must be a JSON object, not {type(payload).__name__}")
    delivery = await provider.verify_callback(request.headers, raw, payload)
    try:
        report = provider.read_callback(payload)
    except InvalidPayload as exc:
        # Providers retry what they do not get a 200 for; a shape we cannot read will not get
        # readable by retrying. Say what it looked like (field names and types, never
        # values), count it, and let the reconciler finish the task from the status API.
        log.warning("ignored an unreadable callback: %s; its shape: %s", exc.message, shape_of(payload))
        metrics.child(metrics.CALLBACKS, "unknown", "unreadable").inc()
        await svc.callback_limit.check(address_of(request))
        return JSONResponse({"status": "ignored", "reason": exc.message})
    named = query_value(request, "task")
    if named is not None:
        # Work on an earlier task (Veo 1080p/4K) calls back under the parent's id; the
        # URL names the task it is for. The token below must still belong to that task.
        if not TASK_ID_RE.fullmatch(named):
            raise BadRequest("the callback URL's task is not a valid task id", code="invalid_task_id")
        report = dataclasses.replace(report, task_id=named)
    # The callback hash never changes, so this instance's recent copy is good enough.
    task = await svc.ingestor.current(report.task_id)
    if task is None:
        # The callback raced our create response; keep it for `parked.apply`.
        await parked.park(svc.store, svc.coordination, report.task_id, token, raw)
        metrics.child(metrics.CALLBACKS, report.family, "parked").inc()
        log.info("parked an early callback", extra={"task_id": report.task_id})
        # The create may have stored the task and drained the parking lot between our
        # read and our park; look once more so the callback cannot be stranded.
        task = await svc.store.get(report.task_id)
        if task is not None:
            await parked.apply(svc.store, svc.ingestor, task)
        return JSONResponse(RECEIVED)
    if not auth.token_matches(token, task.callback_hash):
        metrics.child(metrics.CALLBACKS, report.family, "rejected").inc()
        raise Unauthorized("the callback URL's token belongs to another task", code="invalid_callback_token")
    seen_key = _seen_key(provider.name, delivery) if delivery else None
    if seen_key is not None and await svc.coordination.claim(seen_key, SEEN_FOR) is not None:
        # The same delivery again (a replay, or a retry after our answer was lost).
        metrics.child(metrics.CALLBACKS, report.family, "duplicate").inc()
        return JSONResponse(DUPLICATE)
    try:
        changed = await svc.ingestor.report(report)
    except BaseException:
        if seen_key is not None:
            with contextlib.suppress(RelayError):
                await svc.coordination.release(seen_key)  # let the provider's retry in
        raise
    metrics.child(metrics.CALLBACKS, report.family, "applied" if changed else "unchanged").inc()
    return JSONResponse(RECEIVED)


def _seen_key(provider: str, delivery: str) -> str:
    return keys.delivery_seen(provider, hashlib.sha256(delivery.encode()).hexdigest()[:32])


def shape_of(value: object, depth: int = 0) -> str:
    """A payload's structure without its values: `{code: int, data: {taskId: str, ...}}`."""
    if isinstance(value, dict):
        if depth >= 3:
            return "{...}"
        items = [f"{str(k)[:40]}: {shape_of(v, depth + 1)}" for k, v in list(value.items())[:20]]
        return "{" + ", ".join(items) + (", ..." if len(value) > 20 else "") + "}"
    if isinstance(value, list):
        return f"[{shape_of(value[0], depth + 1)}, ...]" if value else "[]"
    return "null" if value is None else type(value).__name__


# Every provider's paths, with and without a trailing slash: a redirect counts as a failed
# delivery.
routes = [Route(path, provider_callback, methods=["POST"]) for path in CALLBACK_PATHS]
