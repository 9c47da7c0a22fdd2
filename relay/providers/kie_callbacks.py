"""KIE's side of a callback: its optional HMAC, and reading the body in any of KIE's shapes
(relay/normalize/). The route that receives it is every provider's (relay/callbacks.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

from relay.errors import Unauthorized
from relay.models import ProviderReport
from relay.normalize import callback_task_id, normalize_callback
from relay.parsing import ascii_int

SIGNATURE_WINDOW = 300.0


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


def verify(hmac_key: str | None, headers: Mapping[str, str], payload: dict[str, Any]) -> None:
    if hmac_key:
        # Only the task id is signed: check the signature before trusting anything else.
        verify_webhook_signature(
            hmac_key, callback_task_id(payload), headers.get("x-webhook-timestamp"), headers.get("x-webhook-signature")
        )


def read(payload: dict[str, Any]) -> ProviderReport:
    return normalize_callback(payload)
