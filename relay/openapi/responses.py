"""Responses, headers and security schemes shared by the operations."""

from __future__ import annotations

from relay.openapi.schemas import TASK_ID_PATTERN, Json, _json, _ref, _schema
from relay.settings import Settings


def _event_schema(id_schema: Json) -> Json:
    return {
        "type": "object",
        "description": "One SSE event: a change of one task (`event: task`, `data:` the task object).",
        "required": ["event", "data", "id"],
        "properties": {
            "event": {"const": "task"},
            "id": id_schema,
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": _schema("Task"),
            },
            "retry": {"type": "integer", "minimum": 0},
        },
    }


# --------------------------------------------------------------------------- responses

ERROR_RESPONSES: dict[str, tuple[str, str]] = {
    # status: (component name, description)
    "400": ("BadRequest", "Invalid input (`bad_request`, `invalid_json`, `invalid_task_id`, `invalid_payload`, ...)."),
    "401": (
        "Unauthorized",
        "Missing, malformed, expired or foreign credentials (`token_required`, `invalid_token`, "
        "`token_expired`, `invalid_callback_token`, `invalid_signature`, `stale_signature`).",
    ),
    "402": (
        "PaymentRequired",
        "The user's balance is short (`insufficient_credits`, with `balance` and `price`), or the provider "
        "account is out of credits (`provider_out_of_credits`).",
    ),
    "403": ("Forbidden", "Not allowed in this configuration (`history_disabled`)."),
    "404": ("NotFound", "No such task, or another user's task (`task_not_found`), or no such route (`not_found`)."),
    "409": ("Conflict", "The task is in the wrong state for this (`conflict`, `already_finished`)."),
    "408": ("RequestTimeout", "The request body did not arrive within RELAY_READ_TIMEOUT (`request_timeout`)."),
    "413": ("PayloadTooLarge", "The body is larger than allowed (`payload_too_large`), with or without Content-Length."),
    "429": ("TooManyRequests", "A rate limit or the open-stream cap (`rate_limited`, `too_many_streams`)."),
    "502": (
        "BadGateway",
        "The provider failed or answered something unusable (`provider_error`, `provider_unreachable`, "
        "`provider_bad_response`, `provider_auth_failed`).",
    ),
    "503": (
        "ServiceUnavailable",
        "A dependency is down or busy (`store_unavailable`, `provider_unavailable`, `provider_rate_limited`, "
        "`duplicate_in_progress`, ...): retry, after Retry-After when given.",
    ),
    "504": ("GatewayTimeout", "The provider did not answer in time (`provider_timeout`)."),
}


def _headers(**extra: Json) -> Json:
    return {"X-Request-ID": _ref("headers", "RequestId"), **extra}


def _error_response(status: str) -> Json:
    _, description = ERROR_RESPONSES[status]
    headers = _headers()
    if status == "429":
        headers["Retry-After"] = _ref("headers", "RetryAfter")
    elif status == "503":
        headers["Retry-After"] = _ref("headers", "RetryAfterOptional")
    return {"description": description, "headers": headers, "content": _json(_schema("Error"))}


def _errors(*statuses: str) -> Json:
    return {status: _ref("responses", ERROR_RESPONSES[status][0]) for status in statuses}


def _ok(description: str, schema: Json, **headers: Json) -> Json:
    return {"description": description, "headers": _headers(**headers), "content": _json(schema)}


def _stream_ok(id_schema: Json) -> Json:
    return {
        "description": (
            "The stream: a `retry:` hint, the snapshot, then one event per change, with `: ping` "
            "comments every RELAY_SSE_PING seconds. The server closes it after the terminal event."
        ),
        "headers": _headers(
            **{
                "Cache-Control": {
                    "required": True,
                    "description": "Has `no-cache` (and may add e.g. `no-transform`).",
                    "schema": {"type": "string", "pattern": "(^|,)\\s*no-cache\\s*(,|$)"},
                },
                "X-Accel-Buffering": {"required": True, "schema": {"type": "string", "const": "no"}},
            }
        ),
        "content": {"text/event-stream": {"schema": _event_schema(id_schema)}},
    }


STREAM_DONE: Json = {
    "description": "The client already has every terminal version: nothing more will come (EventSource stops).",
    "headers": _headers(),
}


# --------------------------------------------------------------------------- parameters

TASK_ID_PATH: Json = {
    "name": "taskId",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": TASK_ID_PATTERN},
}

LAST_EVENT_ID_PARAMETERS: list[Json] = [
    {
        "name": "Last-Event-ID",
        "in": "header",
        "required": False,
        "description": "The version the client has (`id:version,...` on a multi-task stream); the snapshot is skipped when current.",
        "schema": {"type": "string"},
    },
    {
        "name": "lastEventId",
        "in": "query",
        "required": False,
        "description": "Same as the Last-Event-ID header, for clients that cannot send headers.",
        "schema": {"type": "string"},
    },
]


# --------------------------------------------------------------------------- document


def _security(settings: Settings) -> tuple[Json, list[Json]]:
    """The security schemes and the requirement for task reads and streams."""
    schemes: Json = {
        "callbackToken": {
            "type": "apiKey",
            "in": "query",
            "name": "token",
            "description": "The unguessable per-task token in the callback URL Relay gave KIE.",
        }
    }
    if settings.auth == "token":
        schemes["taskToken"] = {
            "type": "apiKey",
            "in": "query",
            "name": "token",
            "description": (
                "The task's token from POST /api/tasks (statusUrl and eventsUrl carry it). On "
                "/api/events give one token for all tasks, or one per taskId in the same order."
            ),
        }
        schemes["taskTokenBearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "The task's token as `Authorization: Bearer <token>`.",
        }
        return schemes, [{"taskToken": []}, {"taskTokenBearer": []}]
    if settings.auth == "jwt":
        schemes["userJwt"] = {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": (
                "The user's JWT (HS256 or RS256, with `sub` and `exp`). Users see only their own tasks; "
                "another user's task answers 404."
            ),
        }
        schemes["userJwtQuery"] = {
            "type": "apiKey",
            "in": "query",
            "name": "token",
            "description": "The user's JWT as `?token=`, for EventSource (which cannot send headers).",
        }
        return schemes, [{"userJwt": []}, {"userJwtQuery": []}]
    return schemes, [{}]
