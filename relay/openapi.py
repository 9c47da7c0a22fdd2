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

from relay.catalogue import KINDS, builtin
from relay.http import JSONResponse
from relay.settings import Settings
from relay.tasks import MAX_IMAGE_URLS, MAX_PROMPT

OPENAPI_VERSION = "3.1.0"
API_VERSION = "0.1.0"

Json = dict[str, Any]

TASK_ID_PATTERN = "^[A-Za-z0-9_-]{1,128}$"
MAX_URL = 2048
MAX_MODEL = 100
MAX_IDEMPOTENCY_KEY = 255
FILE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "video/mp4", "video/webm")


def _ref(kind: str, name: str) -> Json:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> Json:
    return _ref("schemas", name)


def _json(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


# --------------------------------------------------------------------------- schemas

ERROR_SCHEMA: Json = {
    "type": "object",
    "description": (
        "Every error Relay answers, whatever the status: never HTML. `code` is stable and "
        "machine-readable; `message` says what went wrong and what to do."
    ),
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$", "examples": ["task_not_found"]},
                "message": {"type": "string"},
            },
        }
    },
}

TASK_ERROR_SCHEMA: Json = {
    "type": ["object", "null"],
    "description": "Why the task failed (`provider_failed`, `timeout`, `content_policy`, ...); null otherwise.",
    "required": ["code", "message"],
    "additionalProperties": False,
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
}

URL_LIST: Json = {"type": "array", "items": {"type": "string"}}

TASK_PROPERTIES: Json = {
    "taskId": {"type": "string", "pattern": TASK_ID_PATTERN, "description": "The provider's task id."},
    "provider": {"type": "string", "examples": ["kie"]},
    "model": {"type": "string", "examples": ["google/nano-banana"]},
    "mode": {"type": "string", "enum": ["text-to-image", "image-to-image"]},
    "kind": {"type": "string", "enum": list(KINDS), "description": "What the model makes."},
    "status": {
        "type": "string",
        "enum": ["pending", "processing", "completed", "failed"],
        "description": "pending -> processing -> completed | failed; terminal states are final.",
    },
    "prompt": {"type": "string"},
    "imageUrls": {**URL_LIST, "description": "The reference images asked for (image-to-image)."},
    "providerResultUrls": {
        **URL_LIST,
        "description": "What the provider returned (set while processing, once it reports success).",
    },
    "resultUrls": {
        **URL_LIST,
        "description": (
            "The final results: our storage's URLs once mirrored; the provider's when mirroring "
            "is off or gave up (then mirrorError says why)."
        ),
    },
    "error": TASK_ERROR_SCHEMA,
    "progress": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
    "mirrorError": {"type": ["string", "null"], "description": "Why the results are the provider's URLs, not ours."},
    "createdAt": {"type": "string", "format": "date-time", "description": "RFC 3339, UTC."},
    "updatedAt": {"type": "string", "format": "date-time", "description": "RFC 3339, UTC."},
    "completedAt": {
        "type": ["string", "null"],
        "format": "date-time",
        "description": "RFC 3339, UTC; null until the task is terminal.",
    },
    "version": {"type": "integer", "minimum": 1, "description": "+1 on every change; never decreases."},
}

LINK_PROPERTIES: Json = {
    "statusUrl": {
        "type": "string",
        "format": "uri",
        "description": "GET it for the task object; carries the task's token when RELAY_AUTH=token.",
    },
    "eventsUrl": {
        "type": "string",
        "format": "uri",
        "description": "Hand it to `new EventSource(...)`; carries the task's token when RELAY_AUTH=token.",
    },
    "token": {
        "type": "string",
        "pattern": "^[0-9]+\\.[A-Za-z0-9_-]+$",
        "description": "The task's access token (RELAY_AUTH=token only): `?token=` or `Authorization: Bearer`.",
    },
}


def _task_schema() -> Json:
    return {
        "type": "object",
        "description": "The task object: the same for the status read, the SSE snapshot and live events.",
        "required": list(TASK_PROPERTIES),
        "additionalProperties": False,
        "properties": copy.deepcopy(TASK_PROPERTIES),
    }


def _task_created_schema(settings: Settings) -> Json:
    required = [*TASK_PROPERTIES, "statusUrl", "eventsUrl"]
    properties = {**copy.deepcopy(TASK_PROPERTIES), **copy.deepcopy(LINK_PROPERTIES)}
    if settings.auth == "token":
        required.append("token")
    else:
        del properties["token"]
    return {
        "type": "object",
        "description": "The new (or replayed) task, with its token and ready-to-use URLs.",
        "required": required,
        "additionalProperties": False,
        "properties": properties,
    }


def _task_list_schema(settings: Settings) -> Json:
    if settings.auth == "token":
        # Only `relay demo` lists in token mode; its items carry their links.
        item: Json = {
            "type": "object",
            "required": [*TASK_PROPERTIES, "statusUrl", "eventsUrl", "token"],
            "additionalProperties": False,
            "properties": {**copy.deepcopy(TASK_PROPERTIES), **copy.deepcopy(LINK_PROPERTIES)},
        }
    else:
        item = _schema("Task")
    return {
        "type": "object",
        "required": ["items", "nextCursor"],
        "additionalProperties": False,
        "properties": {
            "items": {"type": "array", "items": item, "maxItems": 100},
            "nextCursor": {
                "type": ["string", "null"],
                "description": "Pass as `cursor` for the next page; null on the last page.",
            },
        },
    }


CREATE_TASK_SCHEMA: Json = {
    "type": "object",
    "description": (
        "No imageUrls means text-to-image (default model google/nano-banana), otherwise "
        "image-to-image (default google/nano-banana-edit)."
    ),
    "additionalProperties": False,
    "properties": {
        "prompt": {
            "type": "string",
            "maxLength": MAX_PROMPT,
            "description": (
                "What to generate. Required (and not blank) for most models; GET /api/models says "
                "per model, with its own length limit."
            ),
        },
        "imageUrls": {
            "type": "array",
            "maxItems": MAX_IMAGE_URLS,
            "items": {"type": "string", "maxLength": MAX_URL, "pattern": "^https?://"},
            "description": "Reference images (http or https URLs), e.g. from POST /api/uploads.",
        },
        "model": {"type": "string", "minLength": 1, "maxLength": MAX_MODEL, "enum": list(builtin().models)},
        "options": {
            "type": "object",
            "description": (
                "The model's settings, each checked against GET /api/models (an unknown option or "
                "value is a 400 naming it); at most 8192 bytes as JSON."
            ),
        },
        "parentTaskId": {
            "type": "string",
            "pattern": TASK_ID_PATTERN,
            "description": (
                "For extend / upscale models: the completed task to work on (send its token as "
                "X-Parent-Token when RELAY_AUTH=token)."
            ),
        },
    },
}

CALLBACK_SCHEMA: Json = {
    "type": "object",
    "description": (
        "A KIE callback in any of KIE's shapes (jobs, 4o, flux, mj, veo, runway, aleph, suno): the "
        "task id is read from data.taskId, data.task_id, taskId or task_id; resultJson may be a JSON "
        "string. A JSON body that matches no known shape is answered 200 {\"status\": \"ignored\"} "
        "(KIE would only retry it; the reconciler asks KIE instead) and changes nothing."
    ),
    "examples": [
        {
            "code": 200,
            "msg": "Playground task completed successfully.",
            "data": {
                "taskId": "4f0451aec1e110270d88aea0f0a7683d",
                "state": "success",
                "resultJson": "{\"resultUrls\":[\"https://tempfile.aiquickdraw.com/h/abc.png\"]}",
            },
        }
    ],
}

RECEIVED_SCHEMA: Json = {
    "type": "object",
    "required": ["status"],
    "additionalProperties": False,
    "properties": {
        "status": {"enum": ["received", "ignored"]},
        "reason": {"type": "string", "description": "Why an ignored callback could not be read."},
    },
}

UPLOAD_REQUEST_SCHEMA: Json = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {
            "type": "string",
            "contentMediaType": "application/octet-stream",
            "description": "A PNG, JPEG, WebP or GIF image (recognised by its bytes, not its name).",
        }
    },
}

UPLOAD_SCHEMA: Json = {
    "type": "object",
    "required": ["url", "key", "contentType", "size"],
    "additionalProperties": False,
    "properties": {
        "url": {"type": "string", "description": "Pass it in imageUrls of POST /api/tasks."},
        "key": {"type": "string", "pattern": "^uploads/[A-Za-z0-9_-]+\\.[a-z0-9]+$"},
        "contentType": {"type": "string", "enum": ["image/png", "image/jpeg", "image/webp", "image/gif"]},
        "size": {"type": "integer", "minimum": 0},
    },
}

HEALTH_SCHEMA: Json = {
    "type": "object",
    "required": ["status"],
    "additionalProperties": False,
    "properties": {"status": {"const": "ok"}},
}

READINESS_SCHEMA: Json = {
    "type": "object",
    "required": ["status", "components"],
    "additionalProperties": False,
    "properties": {
        "status": {"type": "string", "enum": ["ready", "unavailable"]},
        "components": {
            "type": "object",
            "description": "One entry per dependency (store, hub, storage, ...).",
            "additionalProperties": {
                "type": "object",
                "required": ["ok", "latencyMs"],
                "additionalProperties": False,
                "properties": {
                    "ok": {"type": "boolean"},
                    "latencyMs": {"type": "number", "minimum": 0},
                    "error": {"type": "string", "description": "Why the component is not ok."},
                },
            },
        },
    },
}


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
    "402": ("PaymentRequired", "The provider account is out of credits (`provider_out_of_credits`)."),
    "403": ("Forbidden", "Not allowed in this configuration (`history_disabled`)."),
    "404": ("NotFound", "No such task, or another user's task (`task_not_found`), or no such route (`not_found`)."),
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


def _paths(settings: Settings, task_security: list[Json]) -> Json:
    jwt = settings.auth == "jwt"
    # Who may create and list: in jwt mode a signed-in user; otherwise anyone (rate limited).
    caller_security = task_security if jwt else [{}]
    caller_401 = ("401",) if jwt else ()
    # KIE's optional webhook HMAC: checked (and so documented) only when KIE_WEBHOOK_HMAC_KEY is set.
    webhook_headers: list[Json] = []
    if settings.kie_webhook_hmac_key:
        webhook_headers = [
            {
                "name": "X-Webhook-Timestamp",
                "in": "header",
                "required": True,
                "description": "Unix time in seconds, within 5 minutes of now.",
                "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
            },
            {
                "name": "X-Webhook-Signature",
                "in": "header",
                "required": True,
                "description": "base64(HMAC-SHA256(KIE_WEBHOOK_HMAC_KEY, `taskId.timestamp`)).",
                "schema": {"type": "string"},
            },
        ]
    max_body = f"at most {settings.max_body} bytes (RELAY_MAX_BODY)"

    def callback(operation_id: str) -> Json:
        return {
            "post": {
                "operationId": operation_id,
                "summary": "Receive a KIE callback",
                "description": (
                    "Verify (URL token, then the optional webhook HMAC), normalize, ingest. 200 only once "
                    "the change (or the early callback, parked) is durably stored; 503 makes KIE retry. "
                    "A duplicate changes nothing. Body " + max_body + "."
                ),
                "tags": ["callbacks"],
                "security": [{"callbackToken": []}],
                "parameters": copy.deepcopy(webhook_headers),
                "requestBody": {"required": True, "content": _json(_schema("KieCallback"))},
                "responses": {
                    "200": _ok("Stored (or nothing to change).", _schema("Received")),
                    **_errors("400", "401", "408", "413", "429", "503"),
                },
            }
        }

    single_stream_id = {"type": "string", "pattern": "^[0-9]+$", "description": "The task's version."}
    multi_stream_id = {
        "type": "string",
        "pattern": "^([0-9]+|[A-Za-z0-9_-]{1,128}:[0-9]+(,[A-Za-z0-9_-]{1,128}:[0-9]+)*)$",
        "description": (
            "`taskId:version` for every task of the stream (just the version when the stream has one "
            "task): give it back as Last-Event-ID."
        ),
    }
    paths: Json = {
        "/api/tasks": {
            "post": {
                "operationId": "createTask",
                "summary": "Create a generation task",
                "description": (
                    "Returns at once (202) with the pending task, its token and ready-to-use URLs. An "
                    "Idempotency-Key returns the first task made with it for 24 h; an identical request from "
                    "the same caller within a few seconds returns the existing task (Idempotent-Replayed: true). "
                    "Body " + max_body + "."
                ),
                "tags": ["tasks"],
                "security": caller_security,
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
                    }
                ],
                "requestBody": {"required": True, "content": _json(_schema("CreateTask"))},
                "responses": {
                    "202": _ok(
                        "Accepted: the task is pending at the provider.",
                        _schema("TaskCreated"),
                        **{
                            "Idempotent-Replayed": {
                                "description": "Present when an earlier identical request's task is returned.",
                                "schema": {"type": "string", "const": "true"},
                            }
                        },
                    ),
                    **_errors("400", *caller_401, "402", "404", "408", "413", "429", "502", "503", "504"),
                },
            },
            "get": {
                "operationId": "listTasks",
                "summary": "History / gallery, newest first",
                "description": (
                    "Needs per-user authentication (RELAY_AUTH=jwt: the caller's own tasks) or RELAY_AUTH=none; "
                    "with RELAY_AUTH=token it answers 403 history_disabled."
                ),
                "tags": ["tasks"],
                "security": caller_security,
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["pending", "processing", "completed", "failed"]},
                    },
                    {"name": "mode", "in": "query", "schema": {"type": "string", "enum": ["text-to-image", "image-to-image"]}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
                    {
                        "name": "cursor",
                        "in": "query",
                        "description": "nextCursor from the previous page.",
                        "schema": {"type": "string", "maxLength": 160, "pattern": ":"},
                    },
                ],
                "responses": {
                    "200": _ok("A page of tasks.", _schema("TaskList")),
                    **_errors("400", *caller_401, "403", "503"),
                },
            },
        },
        "/api/tasks/{taskId}": {
            "get": {
                "operationId": "getTask",
                "summary": "Fallback status read",
                "tags": ["tasks"],
                "security": task_security,
                "parameters": [TASK_ID_PATH],
                "responses": {
                    "200": _ok("The task.", _schema("Task")),
                    **_errors("400", "401", "404", "503"),
                },
            }
        },
        "/api/models": {
            "get": {
                "operationId": "listModels",
                "summary": "The model catalogue: every model, its kind, prompt, reference images and options",
                "tags": ["tasks"],
                "responses": {
                    "200": _ok(
                        "The models.",
                        {
                            "type": "object",
                            "required": ["models", "simulated"],
                            "properties": {
                                "models": {"type": "array", "items": {"type": "object"}},
                                "simulated": {
                                    "type": "boolean",
                                    "description": "True when results come from the built-in KIE simulator.",
                                },
                            },
                        },
                    ),
                },
            }
        },
        "/api/task-status": {
            "get": {
                "operationId": "getTaskStatus",
                "summary": "Fallback status read (for existing front ends)",
                "tags": ["tasks"],
                "security": task_security,
                "parameters": [{**TASK_ID_PATH, "in": "query"}],
                "responses": {
                    "200": _ok("The task.", _schema("Task")),
                    **_errors("400", "401", "404", "503"),
                },
            }
        },
        "/api/tasks/{taskId}/events": {
            "get": {
                "operationId": "streamTask",
                "summary": "SSE stream of one task",
                "description": (
                    "Headers go out at once. Subscribe, snapshot, live: `id: <version>`, `event: task`, "
                    "`data: <task object>`. Last-Event-ID (or ?lastEventId=) skips what the client has; "
                    "204 when it already has the terminal version."
                ),
                "tags": ["events"],
                "security": task_security,
                "parameters": [TASK_ID_PATH, *LAST_EVENT_ID_PARAMETERS],
                "responses": {
                    "200": _stream_ok(single_stream_id),
                    "204": STREAM_DONE,
                    **_errors("400", "401", "404", "429", "503"),
                },
            }
        },
        "/api/events": {
            "get": {
                "operationId": "streamTasks",
                "summary": "One SSE stream for several tasks",
                "tags": ["events"],
                "security": task_security,
                "parameters": [
                    {
                        "name": "taskId",
                        "in": "query",
                        "required": True,
                        "style": "form",
                        "explode": True,
                        "description": f"Repeat for each task, at most {settings.max_tasks_per_stream} (RELAY_MAX_TASKS_PER_STREAM).",
                        "schema": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": settings.max_tasks_per_stream,
                            "items": {"type": "string", "pattern": TASK_ID_PATTERN},
                        },
                    },
                    *LAST_EVENT_ID_PARAMETERS,
                ],
                "responses": {
                    "200": _stream_ok(multi_stream_id),
                    "204": STREAM_DONE,
                    **_errors("400", "401", "404", "429", "503"),
                },
            }
        },
        "/api/callbacks/kie": callback("kieCallback"),
        "/api/callback": callback("kieCallbackAlias"),
        # The same with a trailing slash, answered in place: KIE counts a redirect as a failure.
        "/api/callbacks/kie/": callback("kieCallbackSlash"),
        "/api/callback/": callback("kieCallbackAliasSlash"),
        "/api/uploads": {
            "post": {
                "operationId": "uploadImage",
                "summary": "Upload a reference image for image-to-image",
                "description": (
                    "multipart/form-data with a `file` field; the size is capped (RELAY_MAX_UPLOAD) as the "
                    "body streams in, Content-Length or not. The returned url can go into imageUrls."
                ),
                "tags": ["uploads"],
                "security": caller_security,
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": _schema("UploadRequest"),
                            "encoding": {"file": {"contentType": "image/png, image/jpeg, image/webp, image/gif"}},
                        }
                    },
                },
                "responses": {
                    "201": _ok("Stored.", _schema("Upload")),
                    **_errors("400", *caller_401, "413", "429", "502", "503"),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "liveness",
                "summary": "Liveness",
                "tags": ["operations"],
                "responses": {"200": _ok("The process serves requests.", _schema("Health"))},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readiness",
                "summary": "Readiness: each dependency, with its latency",
                "tags": ["operations"],
                "responses": {
                    "200": _ok("Every dependency is reachable.", _schema("Readiness")),
                    "503": {
                        "description": "At least one dependency is not reachable; `components` says which.",
                        "headers": _headers(),
                        "content": _json(_schema("Readiness")),
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "tags": ["operations"],
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format.",
                        "headers": _headers(),
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/": {
            "get": {
                "operationId": "demoPage",
                "summary": "Demo page: create a task, watch it live, see the image",
                "tags": ["operations"],
                "responses": {
                    "200": {
                        "description": "The demo page (with a Content-Security-Policy).",
                        "headers": _headers(
                            **{
                                "Content-Security-Policy": {"required": True, "schema": {"type": "string", "pattern": "frame-ancestors"}},
                                "X-Content-Type-Options": {"required": True, "schema": {"type": "string", "const": "nosniff"}},
                            }
                        ),
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "tags": ["operations"],
                "responses": {"200": _ok("The OpenAPI 3.1 document.", {"type": "object", "required": ["openapi", "paths"]})},
            }
        },
    }
    if any(url and url.startswith("file://") for url in (settings.storage_url, settings.storage_fallback_url)):
        paths["/files/{key}"] = {
            "get": {
                "operationId": "getFile",
                "summary": "A stored result or upload (local-folder storage only)",
                "tags": ["uploads"],
                "parameters": [
                    {
                        "name": "key",
                        "in": "path",
                        "required": True,
                        "description": "The storage key, e.g. uploads/abc.png or generated/<taskId>/0.png.",
                        "schema": {"type": "string", "minLength": 1},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The file, served with nosniff and a sandboxing Content-Security-Policy.",
                        "headers": _headers(
                            **{
                                "Content-Security-Policy": {"required": True, "schema": {"type": "string", "pattern": "sandbox"}},
                                "X-Content-Type-Options": {"required": True, "schema": {"type": "string", "const": "nosniff"}},
                            }
                        ),
                        "content": {media: {} for media in FILE_MEDIA_TYPES},
                    },
                    **_errors("404"),
                },
            }
        }
    paths["/api/health"] = copy.deepcopy(paths["/readyz"])
    paths["/api/health"]["get"]["operationId"] = "readinessAlias"
    return paths


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
        "tags": [{"name": name} for name in ("tasks", "events", "callbacks", "uploads", "operations")],
        "paths": _paths(settings, task_security),
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
