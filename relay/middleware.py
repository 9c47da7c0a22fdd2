"""ASGI middleware: request ids and one log line per request, security headers."""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import re
import time
from collections.abc import Iterable

import orjson
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay import metrics

log = logging.getLogger("relay.http")

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# A path segment shaped like one of our tokens (`<expiry|nonce>.<signature>`) or a JWT:
# someone put a secret in the path, and the log must not keep it.
_TOKEN_LIKE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]{16,})+$")


def loggable_path(path: str) -> str:
    """The path for the request log, with anything token-shaped blanked out."""
    if "." not in path:
        return path
    return "/".join("[token]" if _TOKEN_LIKE.match(part) else part for part in path.split("/"))

# The demo page loads only its own scripts and styles; result images, videos and audio
# may come from any https host (the provider's, a CDN) until mirrored.
HTML_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: https: http:; "
        "media-src 'self' blob: https: http:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
}


class RequestContext:
    """Gives every request an id (kept from X-Request-ID when sane), logs one line when it
    ends — the path without its query string, which can carry tokens — and counts it.

    The `quiet` routes (provider callbacks, streams) come by the thousand: their successful
    requests are logged at DEBUG, and INFO gets one line a minute counting them. Their
    failures are still logged one by one."""

    def __init__(self, app: ASGIApp, quiet: Iterable[str] = ()):
        self.app = app
        self.quiet = frozenset(quiet)
        self.summary = _Summary()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        rid = incoming if _SANE_ID.fullmatch(incoming) else _new_id()
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = _with_our_headers(message.get("headers", ()), rid)
                metrics.child(metrics.HTTP_SECONDS, _route_of(scope)).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            route = _route_of(scope)
            metrics.child(metrics.HTTP_REQUESTS, scope["method"], route, str(status)).inc()
            level = logging.INFO
            if status < 400 and route in self.quiet:
                level = logging.DEBUG
                self.summary.count(route)
            if log.isEnabledFor(level):
                path = loggable_path(scope["path"])
                log.log(
                    level,
                    "%s %s %d %.1fms",
                    scope["method"],
                    path,
                    status,
                    elapsed,
                    extra={"method": scope["method"], "path": path, "status": status, "duration_ms": round(elapsed, 2)},
                )
            request_id.reset(token)


class _Summary:
    """Counts of the quiet routes' successful requests, logged at INFO once a minute (when
    a request comes after the minute is up: an idle process logs nothing)."""

    EVERY = 60.0

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.since = time.monotonic()

    def count(self, route: str) -> None:
        self.counts[route] = self.counts.get(route, 0) + 1
        now = time.monotonic()
        if now - self.since >= self.EVERY:
            seconds, counts = now - self.since, self.counts
            self.counts, self.since = {}, now
            text = ", ".join(f"{route} {n}" for route, n in sorted(counts.items()))
            log.info("answered in the last %.0f s without error: %s", seconds, text, extra={"requests": counts})


# Request ids: a random per-process prefix and a counter. As unique as uuid4's first 16
# hex digits for any log anyone reads, without a random draw per request.
_ID_PREFIX = os.urandom(4).hex()
_ids = itertools.count(1)


def _new_id() -> str:
    return f"{_ID_PREFIX}{next(_ids) & 0xFFFFFFFF:08x}"


_OURS = (b"x-request-id", b"x-content-type-options", b"referrer-policy")
_HTML_HEADERS = [(k.encode(), v.encode()) for k, v in HTML_HEADERS.items()]


def _with_our_headers(headers: Iterable[tuple[bytes, bytes]], rid: str) -> list[tuple[bytes, bytes]]:
    """The response's headers with the request id, nosniff, a default referrer policy and,
    on HTML, the page's security headers (ours replace any the endpoint set)."""
    out = []
    referrer = b"no-referrer"
    html = False
    for name, value in headers:
        lower = name.lower()
        if lower == b"referrer-policy":
            referrer = value  # the endpoint's own wins
        elif lower == b"content-type":
            html = value.startswith(b"text/html")
            out.append((name, value))
        elif lower not in _OURS:
            out.append((name, value))
    out += [(b"x-request-id", rid.encode("latin-1")), (b"x-content-type-options", b"nosniff"), (b"referrer-policy", referrer)]
    if html:
        names = {k for k, _ in _HTML_HEADERS}
        out = [h for h in out if h[0].lower() not in names] + _HTML_HEADERS
    return out


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every log record made while serving a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id.get()
        if rid is not None and not hasattr(record, "request_id"):
            record.request_id = rid
        return True


class JSONCORSMiddleware(CORSMiddleware):
    """Starlette's CORS handling, with a refused preflight answered in the contract's JSON
    error shape like every other error."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        what = bytes(response.body).decode(errors="replace")
        body = {"error": {"code": "cors_refused", "message": f"{what}: this origin may not call the API"}}
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-type", "content-length")}
        return Response(orjson.dumps(body), 400, headers=headers, media_type="application/json")
