"""Who may do what. `RELAY_AUTH=token`: a task's signed token grants that task.
`jwt`: callers are bearer JWTs, tasks belong to the `sub` that created them.
`none`: open (trusted networks only)."""

from __future__ import annotations

from dataclasses import dataclass

import jwt
from starlette.requests import Request

from relay import auth
from relay.errors import TaskNotFound, Unauthorized
from relay.http import bearer_token
from relay.models import Task
from relay.settings import Settings


@dataclass(frozen=True, slots=True)
class Caller:
    address: str
    user: str | None = None

    @property
    def key(self) -> str:
        """What limits count against: the user when known, else the client address (which
        uvicorn takes from forwarded headers only when the peer is a trusted proxy)."""
        return f"user:{self.user}" if self.user else f"ip:{self.address}"


def address_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def identify(settings: Settings, request: Request) -> Caller:
    """The caller; in jwt mode a valid bearer JWT is required."""
    address = address_of(request)
    if settings.auth != "jwt":
        return Caller(address)
    return Caller(address, user=_jwt_subject(settings, bearer_token(request)))


def _jwt_subject(settings: Settings, token: str | None) -> str:
    if not token:
        raise Unauthorized("sign in: send your JWT as Authorization: Bearer (or ?token= for streams)", code="token_required")
    key = settings.jwt_public_key or settings.jwt_secret
    algorithm = "RS256" if settings.jwt_public_key else "HS256"
    assert key is not None
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["sub", "exp"], "verify_aud": settings.jwt_audience is not None},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("your JWT has expired; sign in again", code="token_expired") from None
    except (jwt.PyJWTError, ValueError, TypeError):
        raise Unauthorized("the JWT is not valid for this service", code="invalid_token") from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthorized("the JWT has no usable sub claim", code="invalid_token")
    return subject


def authorize_task(settings: Settings, request: Request, task_id: str, token: str | None) -> Caller:
    """Checks that need no store read (so a bad token costs nothing)."""
    if settings.auth == "token":
        auth.check_task_token(settings.secret, task_id, token)
        return Caller(address_of(request))
    if settings.auth == "jwt":
        return Caller(address_of(request), user=_jwt_subject(settings, token))
    return Caller(address_of(request))


def ensure_owner(caller: Caller, task: Task) -> None:
    """In jwt mode another user's task answers exactly like a missing one: 404."""
    if caller.user is not None and task.owner != caller.user:
        raise TaskNotFound(f"no task {task.task_id!r} (it may have expired)")
