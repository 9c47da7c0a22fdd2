"""Every route of the contract, with its parameters and answers."""

from __future__ import annotations

import copy

from relay.openapi.responses import (
    LAST_EVENT_ID_PARAMETERS,
    STREAM_DONE,
    TASK_ID_PATH,
    _errors,
    _headers,
    _ok,
    _stream_ok,
)
from relay.openapi.schemas import (
    FILE_MEDIA_TYPES,
    MAX_IDEMPOTENCY_KEY,
    TASK_ID_PATTERN,
    Json,
    _json,
    _schema,
)
from relay.settings import Settings


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
                        "schema": {"type": "string", "enum": ["pending", "processing", "completed", "failed", "cancelled"]},
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
                "summary": "One SSE stream for several tasks, or (mine=1) for all of the user's tasks",
                "description": (
                    "`?taskId=a&taskId=b` (with one token, or one per task) follows those tasks and ends when "
                    "all are terminal. `?mine=1` (RELAY_AUTH=jwt; the JWT as Bearer or ?token=) follows every "
                    "task of the user, including tasks created later: the most recent 50 first, then every "
                    "change (`id: taskId:version`); it does not end by itself."
                ),
                "tags": ["events"],
                "security": task_security,
                "parameters": [
                    {
                        "name": "mine",
                        "in": "query",
                        "description": "1: every task of the signed-in user (RELAY_AUTH=jwt; else 403).",
                        "schema": {"type": "string", "enum": ["1"]},
                    },
                    {
                        "name": "taskId",
                        "in": "query",
                        "required": False,
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
                    **_errors("400", "401", "403", "404", "429", "503"),
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
