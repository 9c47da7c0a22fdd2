"""Tokens: the per-task access token browsers use, and the callback-URL token KIE echoes.

Both are HMACs under `RELAY_SECRET`, so checking one needs no store read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

from relay.errors import Unauthorized
from relay.parsing import ascii_int


def _sign(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")


def task_token(secret: str, task_id: str, ttl: float, *, now: float | None = None) -> str:
    """`<expiry>.<signature>`: grants reading one task until the expiry (unix seconds)."""
    expires = int((now or time.time()) + ttl)
    return f"{expires}.{_sign(secret, f'task:{task_id}:{expires}')}"


def check_task_token(secret: str, task_id: str, token: str | None, *, now: float | None = None) -> None:
    if not token:
        raise Unauthorized("this task needs its token: pass ?token= or Authorization: Bearer", code="token_required")
    expires_text, _, signature = token.partition(".")
    expires = ascii_int(expires_text, max_digits=12)
    if expires is None or not signature:
        raise Unauthorized("the task token is malformed", code="invalid_token")
    expected = _sign(secret, f"task:{task_id}:{expires_text}")
    if not _same(expected, signature):
        raise Unauthorized("the task token is not valid for this task", code="invalid_token")
    if expires < (now or time.time()):
        raise Unauthorized("the task token has expired", code="token_expired")


def callback_token(secret: str) -> str:
    """A fresh token for one task's callback URL: `<nonce>.<signature>`.

    The signature lets a forged callback be refused before any store read; the nonce's
    hash, kept with the task, binds the token to that one task.
    """
    nonce = secrets.token_urlsafe(18)
    return f"{nonce}.{_sign(secret, f'callback:{nonce}')}"


def callback_token_signed(secret: str, token: str | None) -> bool:
    if not token:
        return False
    if (secret, token) in _SIGNED:
        return True
    nonce, _, signature = token.partition(".")
    if not (nonce and _same(_sign(secret, f"callback:{nonce}"), signature)):
        return False
    # A task's callbacks all carry its one token: remember the good ones (never a refusal,
    # so forgeries cannot fill this) instead of computing the HMAC again for each.
    if len(_SIGNED) >= _SIGNED_MAX:
        _SIGNED.pop(next(iter(_SIGNED)))
    _SIGNED[(secret, token)] = None
    return True


_SIGNED: dict[tuple[str, str], None] = {}
_SIGNED_MAX = 4096


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, expected_hash: str) -> bool:
    return _same(token_hash(token), expected_hash)


def _same(expected: str, given: str) -> bool:
    """Constant-time comparison of untrusted text (as bytes: `compare_digest` refuses
    non-ASCII str)."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))
