"""One error tree. Endpoints raise; `app.py` maps every `RelayError` to the contract's JSON
body `{"error": {"code", "message"}}` in one handler."""

from __future__ import annotations

from typing import Any


class RelayError(Exception):
    status = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = headers or {}
        # Facts a client acts on, beside code and message (a 402's balance and price).
        self.extra = extra or {}


class BadRequest(RelayError):
    status = 400
    code = "bad_request"


class InvalidPayload(BadRequest):
    """A provider payload (callback or status answer) that no known shape matches."""

    code = "invalid_payload"


class Unauthorized(RelayError):
    status = 401
    code = "unauthorized"


class Forbidden(RelayError):
    status = 403
    code = "forbidden"


class NotFound(RelayError):
    status = 404
    code = "not_found"


class ResultGone(NotFound):
    """A provider's result link that no longer serves the file (expired or removed)."""

    code = "download_failed"


class TaskNotFound(NotFound):
    code = "task_not_found"


class Conflict(RelayError):
    status = 409
    code = "conflict"


class RequestTimeout(RelayError):
    status = 408
    code = "request_timeout"


class PayloadTooLarge(RelayError):
    status = 413
    code = "payload_too_large"


class RateLimited(RelayError):
    status = 429
    code = "rate_limited"


class ServiceUnavailable(RelayError):
    status = 503
    code = "service_unavailable"


class StoreUnavailable(ServiceUnavailable):
    """The task store cannot be reached: nothing was written, the caller should retry."""

    code = "store_unavailable"


class ProviderError(RelayError):
    """The provider refused or failed a request. `status` and `code` are chosen by the
    provider client from what the provider answered (401 key, 402 credits, ...)."""

    status = 502
    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        status: int = 502,
        code: str = "provider_error",
        provider_code: int | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message, code=code, headers=headers)
        self.status = status
        self.provider_code = provider_code
