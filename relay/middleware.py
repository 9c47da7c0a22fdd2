"""ASGI middleware: request ids and one log line per request, security headers."""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid

import orjson
from starlette.datastructures import Headers, MutableHeaders
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
    ends — the path without its query string, which can carry tokens — and counts it."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _SANE_ID.fullmatch(incoming) else uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = rid
                headers["x-content-type-options"] = "nosniff"
                headers.setdefault("referrer-policy", "no-referrer")
                if headers.get("content-type", "").startswith("text/html"):
                    for name, value in HTML_HEADERS.items():
                        headers[name] = value
                route = _route_of(scope)
                metrics.HTTP_SECONDS.labels(route).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            route = _route_of(scope)
            metrics.HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
            path = loggable_path(scope["path"])
            log.info(
                "%s %s %d %.1fms",
                scope["method"],
                path,
                status,
                elapsed,
                extra={"method": scope["method"], "path": path, "status": status, "duration_ms": round(elapsed, 2)},
            )
            request_id.reset(token)


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
