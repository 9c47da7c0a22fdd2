"""`create_app(settings)`: routes, error handling and the lifespan, in one place."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from relay import callbacks, events, me, metrics, mine, tasks, uploads
from relay.env import mask_url
from relay.errors import RelayError
from relay.fastlane import FastLane
from relay.files import files_mount
from relay.http import JSONResponse
from relay.legacy import routes as legacy_routes
from relay.legacy.routes import PATHS as LEGACY_PATHS
from relay.legacy.shapes import error as legacy_error
from relay.lifespan import open_services
from relay.logs import configure_logging
from relay.middleware import JSONCORSMiddleware, RequestContext
from relay.openapi import openapi_endpoint
from relay.services import Services
from relay.settings import Settings
from relay.webhooks import routes as webhook_routes

log = logging.getLogger("relay")
STATIC = Path(__file__).parent / "static"


def error_body(code: str, message: str, extra: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    return {"error": {"code": code, "message": message, **(extra or {})}}


def error_response(
    request: Request, status: int, code: str, message: str, headers: Any = None, extra: dict[str, Any] | None = None
) -> Response:
    # The legacy routes' front ends read `success` and a string `error` (relay/legacy/shapes.py).
    settings = getattr(request.app.state, "settings", None)
    legacy = settings is not None and settings.legacy_routes and request.url.path in LEGACY_PATHS
    body = legacy_error(code, message) if legacy else error_body(code, message, extra)
    return JSONResponse(body, status_code=status, headers=headers)


async def relay_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RelayError)
    if exc.status >= 500:
        log.warning("%s %s -> %d %s: %s", request.method, request.url.path, exc.status, exc.code, exc.message)
    return error_response(request, exc.status, exc.code, exc.message, exc.headers, exc.extra)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(request, exc.status_code, code, str(exc.detail), exc.headers)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(request, 500, "internal_error", "something went wrong on our side; it has been logged")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Each dependency, with its latency: an operator sees which link is broken."""
    svc: Services = request.app.state.services
    components: dict[str, dict[str, object]] = {}
    for name, check in (("store", svc.store.ping), ("hub", svc.hub.ping), ("storage", svc.storage.ping)):
        started = time.perf_counter()
        try:
            await check()
            components[name] = {"ok": True}
        except Exception as exc:
            components[name] = {"ok": False, "error": getattr(exc, "message", type(exc).__name__)}
        components[name]["latencyMs"] = round((time.perf_counter() - started) * 1000, 2)
    ready = all(c["ok"] for c in components.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "components": components},
        status_code=200 if ready else 503,
    )


async def metrics_endpoint(request: Request) -> Response:
    svc: Services = request.app.state.services
    metrics.OPEN_STREAMS.set(svc.streams.total)
    metrics.HUB_CHANNELS.set(len(svc.hub.fanout.names()))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


class RelayApp(Starlette):
    """Starlette, with our middleware outside its error layer rather than inside.

    A stream is a request that stays open for minutes, thousands at once, each holding
    every layer's frame: the fast lane then answers its routes (with the same handlers,
    500 included) before Starlette's error layer is entered at all. For other routes the
    order changes nothing they can see: that layer still answers their 500s, and CORS
    headers now reach those answers too."""

    def build_middleware_stack(self) -> ASGIApp:
        ours, self.user_middleware = self.user_middleware, []
        try:
            app = super().build_middleware_stack()
        finally:
            self.user_middleware = ours
        for cls, args, kwargs in reversed(ours):
            app = cls(app, *args, **kwargs)
        return app


def create_app(settings: Settings | None = None) -> Starlette:
    if settings is None:
        settings = Settings.from_env()
    configure_logging(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_services(settings) as services:
            app.state.services = services
            log.info("relay ready (store=%s, provider=%s)", mask_url(settings.redis_url), settings.kie_base_url)
            yield

    handlers = {RelayError: relay_error, HTTPException: http_error, Exception: internal_error}
    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/api/health", readyz),
        Route("/metrics", metrics_endpoint),
        Route("/openapi.json", openapi_endpoint),
        # First, so that with RELAY_LEGACY_ROUTES=on /api/task-status answers their shape.
        *(legacy_routes.routes if settings.legacy_routes else []),
        *tasks.routes,
        *callbacks.routes,
        *events.routes,
        *uploads.routes,
        *webhook_routes.routes,
        *me.routes,
        *mine.routes,
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    if (files := files_mount(settings)) is not None:
        routes.append(files)
    fast = [*callbacks.routes, *events.routes]
    middleware = [Middleware(RequestContext, quiet=[r.path for r in fast])]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                JSONCORSMiddleware,
                allow_origins=list(settings.cors_origins),
                # Bearer tokens, never cookies: so never credentials, and "*" stays safe.
                allow_credentials=False,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID", "X-Request-ID"],
                expose_headers=["Retry-After", "X-Request-ID", "Idempotent-Replayed"],
                max_age=600,
            )
        )
    # Last, so request ids, the log line, metrics and CORS apply to its routes too.
    middleware.append(Middleware(FastLane, routes=fast, handlers=handlers))
    app = RelayApp(routes=routes, middleware=middleware, lifespan=lifespan, exception_handlers=handlers)
    # A wrong trailing slash gets a JSON 404, never a redirect a client might not follow
    # (the callback routes answer with and without one).
    app.router.redirect_slashes = False
    app.state.settings = settings
    return app
