"""`GET /api/me`: the signed-in user (RELAY_AUTH=jwt), their balance and recent ledger
entries (RELAY_CREDITS=on)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from relay.access import identify
from relay.errors import BadRequest, Forbidden
from relay.http import JSONResponse
from relay.parsing import ascii_int
from relay.tasks import services


async def me(request: Request) -> JSONResponse:
    svc = services(request)
    if svc.settings.auth != "jwt":
        raise Forbidden("/api/me needs per-user authentication (RELAY_AUTH=jwt)", code="users_disabled")
    caller = identify(svc.settings, request)
    assert caller.user is not None
    limit = ascii_int(request.query_params.get("limit", "20"), max_digits=3)
    if limit is None or not 1 <= limit <= 100:
        raise BadRequest("limit must be a whole number from 1 to 100")
    body: dict[str, object] = {"user": caller.user, "credits": svc.accounts is not None}
    if svc.accounts is not None:
        await svc.accounts.greet(caller.user)
        body["balance"] = await svc.accounts.ledger.balance(caller.user)
        body["ledger"] = [e.public() for e in await svc.accounts.ledger.entries(caller.user, limit)]
    return JSONResponse(body)


routes = [Route("/api/me", me, methods=["GET"])]
