"""The OpenAPI 3.1 document of Relay's HTTP contract (DESIGN.md, "HTTP contract").

`document(settings)` builds it for one configuration: which security schemes apply
depends on `RELAY_AUTH`, the callback's signature headers on `KIE_WEBHOOK_HMAC_KEY`, and a
few limits (`RELAY_MAX_TASKS_PER_STREAM`, `RELAY_MAX_BODY`) are stated as they are set.
`openapi_endpoint` serves it as JSON (`GET /openapi.json`).

The schemas are exact on purpose: every object lists all of its fields and allows no
others, nullable fields are `type: [..., "null"]`, and every 4xx/5xx a route can answer is
listed with the one error body `{"error": {"code", "message"}}`. A test suite validates
real responses against this document, so a drift between code and contract fails there.
"""

from __future__ import annotations

import copy
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from relay.http import JSONResponse
from relay.openapi.legacy import LEGACY_ERROR, legacy_paths
from relay.openapi.paths import _paths
from relay.openapi.responses import ERROR_RESPONSES, _error_response, _security
from relay.openapi.schemas import (
    API_VERSION,
    CALLBACK_SCHEMA,
    CREATE_TASK_SCHEMA,
    ERROR_SCHEMA,
    HEALTH_SCHEMA,
    OPENAPI_VERSION,
    READINESS_SCHEMA,
    RECEIVED_SCHEMA,
    UPLOAD_REQUEST_SCHEMA,
    UPLOAD_SCHEMA,
    _task_created_schema,
    _task_list_schema,
    _task_schema,
)
from relay.openapi.users import user_paths
from relay.openapi.webhooks import DELIVERY_SCHEMA, WEBHOOKS, replicate_callback, webhook_paths
from relay.settings import Settings


def document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document for this configuration."""
    schemes, task_security = _security(settings)
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Relay",
            "version": API_VERSION,
            "summary": "AI generation tasks: create, receive provider callbacks, stream state to browsers (SSE).",
            "description": (
                f"Authentication: RELAY_AUTH={settings.auth}. Every error is JSON: "
                '`{"error": {"code": "snake_case_code", "message": "..."}}`, never HTML.'
            ),
        },
        "servers": [{"url": settings.public_url}],
        "tags": [
            {"name": name} for name in ("tasks", "events", "callbacks", "uploads", "webhooks", "users", "legacy", "operations")
        ],
        "paths": {
            **_paths(settings, task_security),
            **webhook_paths(task_security),
            "/api/callbacks/replicate": replicate_callback("replicateCallback"),
            "/api/callbacks/replicate/": replicate_callback("replicateCallbackSlash"),
            **user_paths(task_security, settings.auth == "jwt"),
            **(legacy_paths() if settings.legacy_routes else {}),
        },
        "webhooks": copy.deepcopy(WEBHOOKS),
        "components": {
            "schemas": {
                "Error": copy.deepcopy(ERROR_SCHEMA),
                "Task": _task_schema(),
                "TaskCreated": _task_created_schema(settings),
                "TaskList": _task_list_schema(settings),
                "CreateTask": copy.deepcopy(CREATE_TASK_SCHEMA),
                "KieCallback": copy.deepcopy(CALLBACK_SCHEMA),
                "Received": copy.deepcopy(RECEIVED_SCHEMA),
                "UploadRequest": copy.deepcopy(UPLOAD_REQUEST_SCHEMA),
                "Upload": copy.deepcopy(UPLOAD_SCHEMA),
                "Health": copy.deepcopy(HEALTH_SCHEMA),
                "Readiness": copy.deepcopy(READINESS_SCHEMA),
                "Delivery": copy.deepcopy(DELIVERY_SCHEMA),
                "LegacyError": copy.deepcopy(LEGACY_ERROR),
            },
            "responses": {name: _error_response(status) for status, (name, _) in ERROR_RESPONSES.items()},
            "headers": {
                "RequestId": {
                    "description": "The request's id (kept from X-Request-ID when sane); it is on every log line.",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
                },
                "RetryAfter": {
                    "description": "Seconds to wait before retrying.",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                },
                "RetryAfterOptional": {
                    "description": "Seconds to wait before retrying, when the cause is known to pass.",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                },
            },
            "securitySchemes": schemes,
        },
    }
    # A fresh tree: the module's building blocks are shared, and callers may edit the result.
    return copy.deepcopy(doc)


async def openapi_endpoint(request: Request) -> Response:
    """`GET /openapi.json`."""
    settings: Settings = request.app.state.settings
    cached: dict[str, Any] | None = getattr(request.app.state, "openapi_document", None)
    if cached is None:
        cached = document(settings)
        request.app.state.openapi_document = cached
    return JSONResponse(cached)
