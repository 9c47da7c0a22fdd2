"""KIE callbacks: verify, normalize, ingest, answer fast.

The answer is 200 only once the change (or the parked callback) is in the store; if the
store is down the answer is 503 and KIE retries, while the reconciler catches up later.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import logging
import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.routing import Route

from relay import auth, metrics, parked
from relay.access import address_of
from relay.errors import (
    BadRequest,
    InvalidPayload,
    Unauthorized,
)
from relay.http import JSONResponse, parse_json, read_body
from relay.models import TASK_ID_RE
from relay.normalize import callback_task_id, normalize_callback
from relay.parsing import ascii_int

if TYPE_CHECKING:
    from relay.services import Services

log = logging.getLogger("relay.callbacks")

SIGNATURE_WINDOW = 300.0

RECEIVED = {"status": "received"}


def verify_webhook_signature(key: str, task_id: str, timestamp: str | None, signature: str | None, *, now: float | None = None) -> None:
    """KIE's optional HMAC: base64(HMAC-SHA256(key, f"{taskId}.{timestamp}")), timestamp in
    seconds. The body is not signed, so this proves only who sent it, and when."""
    if not timestamp or not signature:
        raise Unauthorized("the callback lacks X-Webhook-Timestamp or X-Webhook-Signature", code="invalid_signature")
    seconds = ascii_int(timestamp, max_digits=12)
    if seconds is None:
        raise Unauthorized("X-Webhook-Timestamp is not a unix time in seconds", code="invalid_signature")
    if abs((now or time.time()) - seconds) > SIGNATURE_WINDOW:
        raise Unauthorized("X-Webhook-Timestamp is more than 5 minutes away from now", code="stale_signature")
    expected = base64.b64encode(
        hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    ).decode()
    if not hmac.compare_digest(expected.encode(), signature.strip().encode("utf-8", "replace")):
        raise Unauthorized("X-Webhook-Signature does not verify", code="invalid_signature")


async def kie_callback(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    address = address_of(request)
    # Only refused callbacks count against the limit: KIE sends genuine ones from a few
    # addresses in bursts, and they must never meet a 429; a sender of forgeries does.
    svc.callback_limit.refuse_if_blocked(address)
    try:
        return await _receive(svc, request)
    except (Unauthorized, BadRequest):
        await svc.callback_limit.check(address)
        raise


async def _receive(svc: Services, request: Request) -> JSONResponse:
    token = request.query_params.get("token")
    # Refuse forgeries before reading the body or touching the store.
    if not auth.callback_token_signed(svc.settings.secret, token):
        raise Unauthorized("the callback URL's token is missing or invalid", code="invalid_callback_token")
    assert token is not None
    raw = await read_body(request, svc.settings.max_body, svc.settings.read_timeout)
    payload = parse_json(raw, "callback body")
    if not isinstance(payload, dict):
        raise InvalidPayload(f"the callback body must be a JSON object, not {type(payload).__name__}")
    if svc.settings.kie_webhook_hmac_key:
        # Only the task id is signed: check the signature before trusting anything else.
        verify_webhook_signature(
            svc.settings.kie_webhook_hmac_key,
            callback_task_id(payload),
            request.headers.get("x-webhook-timestamp"),
            request.headers.get("x-webhook-signature"),
        )
    try:
        report = normalize_callback(payload)
    except InvalidPayload as exc:
        # KIE retries what it does not get a 200 for; a shape we cannot read will not get
        # readable by retrying. Say what it looked like (field names and types, never
        # values), count it, and let the reconciler finish the task from KIE's status API.
        log.warning("ignored an unreadable callback: %s; its shape: %s", exc.message, shape_of(payload))
        metrics.CALLBACKS.labels("unknown", "unreadable").inc()
        await svc.callback_limit.check(address_of(request))
        return JSONResponse({"status": "ignored", "reason": exc.message})
    named = request.query_params.get("task")
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
        metrics.CALLBACKS.labels(report.family, "parked").inc()
        log.info("parked an early callback", extra={"task_id": report.task_id})
        # The create may have stored the task and drained the parking lot between our
        # read and our park; look once more so the callback cannot be stranded.
        task = await svc.store.get(report.task_id)
        if task is not None:
            await parked.apply(svc.store, svc.ingestor, task)
        return JSONResponse(RECEIVED)
    if not auth.token_matches(token, task.callback_hash):
        metrics.CALLBACKS.labels(report.family, "rejected").inc()
        raise Unauthorized("the callback URL's token belongs to another task", code="invalid_callback_token")
    changed = await svc.ingestor.report(report)
    metrics.CALLBACKS.labels(report.family, "applied" if changed else "unchanged").inc()
    return JSONResponse(RECEIVED)


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


# With and without a trailing slash: KIE counts a redirect as a failed delivery.
routes = [
    Route(path, kie_callback, methods=["POST"])
    for path in ("/api/callbacks/kie", "/api/callbacks/kie/", "/api/callback", "/api/callback/")
]
