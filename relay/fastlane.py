"""The routes most traffic takes (provider callbacks, a task's event stream), dispatched
without the route table and Starlette's exception layers.

Starlette tries every route's regex in order and wraps each endpoint in two more ASGI
layers; for a provider's burst of callbacks that was a sixth of the CPU per request. Here
a dict (or one prefix/suffix split) finds the route. Everything else stays the same: the
middleware outside this one (request id, log line, metrics, CORS) still runs, and errors
are answered by the app's own handlers (the 500 one too: this lane sits outside Starlette's
error layer, see relay/app.py `RelayApp`), so a response cannot differ from the routed one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

Handler = Callable[[Request, Exception], Awaitable[Response]]


class FastLane:
    def __init__(self, app: ASGIApp, routes: Iterable[Route], handlers: Mapping[Any, Handler]):
        self.app = app
        self.exact: dict[str, Route] = {}
        # Routes with one path parameter as its own segment: (prefix, suffix, name, route).
        self.split: list[tuple[str, str, str, Route]] = []
        for route in routes:
            if "{" not in route.path:
                self.exact[route.path] = route
                continue
            prefix, _, rest = route.path.partition("{")
            name, _, suffix = rest.partition("}")
            if "{" in suffix or ":" in name or not prefix.endswith("/"):
                raise ValueError(f"the fast lane takes one plain path parameter per route, not {route.path}")
            self.split.append((prefix, suffix, name, route))
        # With Exception's: this lane is outside Starlette's error layer.
        self.handlers: dict[type, Handler] = dict(handlers)

    def _match(self, path: str) -> tuple[Route, dict[str, str]] | None:
        route = self.exact.get(path)
        if route is not None:
            return route, {}
        for prefix, suffix, name, route in self.split:
            if path.startswith(prefix) and path.endswith(suffix) and len(path) > len(prefix) + len(suffix):
                value = path[len(prefix) : len(path) - len(suffix)]
                if "/" not in value:
                    return route, {name: value}
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hit = self._match(scope["path"]) if scope["type"] == "http" else None
        if hit is None or scope["method"] not in (hit[0].methods or ()):
            await self.app(scope, receive, send)  # not ours, or a 405 Starlette words
            return
        route, params = hit
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = params
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        # An error while the response is sent (a stream's connection, mid-way) goes on to
        # the server, which closes the connection: the status line is long gone by then.
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Handler | None:
        for kind in type(exc).__mro__:
            if kind in self.handlers:
                return self.handlers[kind]
        return None
