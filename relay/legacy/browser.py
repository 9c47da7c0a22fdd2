"""A browser without tokens still sees only its own tasks: the legacy create route gives
it a random id in a signed HttpOnly cookie, and tasks it creates belong to that id.

The cookie is `<id>.<HMAC under RELAY_SECRET>`, so it cannot be forged or guessed, and
scripts on the page cannot read it. Same-origin pages send it without changes; a
cross-origin front end needs `credentials: "include"` (and `withCredentials` for
EventSource), RELAY_CORS_ORIGINS listing its origin, and Relay on https (the cookie is
then `SameSite=None; Secure`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from starlette.requests import Request

from relay.settings import Settings

COOKIE = "relay_browser"
MAX_AGE = 365 * 24 * 3600
OWNER_PREFIX = "browser:"


def _sign(secret: str, browser_id: str) -> str:
    digest = hmac.new(secret.encode(), f"browser:{browser_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def browser_of(settings: Settings, request: Request) -> str | None:
    """The browser id this request's cookie proves, or None."""
    raw = request.cookies.get(COOKIE, "")
    browser_id, _, signature = raw.partition(".")
    if not browser_id or len(browser_id) > 64 or not signature:
        return None
    if not hmac.compare_digest(_sign(settings.secret, browser_id), signature):
        return None
    return browser_id


def owner_of(browser_id: str) -> str:
    """The task owner recorded for a browser's tasks (never a JWT subject's form)."""
    return OWNER_PREFIX + browser_id


def new_cookie(settings: Settings) -> tuple[str, str]:
    """A fresh browser id and the Set-Cookie header value that carries it."""
    browser_id = secrets.token_urlsafe(18)
    value = f"{browser_id}.{_sign(settings.secret, browser_id)}"
    secure = settings.public_url.startswith("https://")
    attributes = f"Path=/; Max-Age={MAX_AGE}; HttpOnly; " + ("SameSite=None; Secure" if secure else "SameSite=Lax")
    return browser_id, f"{COOKIE}={value}; {attributes}"
