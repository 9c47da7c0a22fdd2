"""The legacy front-end routes (RELAY_LEGACY_ROUTES=on) in the contract: their request and
answer shapes exactly as those front ends use them, and their error body
`{"success": false, "error": "<message>", "code", "message"}`."""

from __future__ import annotations

from relay.openapi.responses import _errors as core_errors
from relay.openapi.responses import _headers
from relay.openapi.schemas import TASK_ID_PATTERN, Json, _json, _schema

_NULLABLE_TEXT: Json = {"type": ["string", "null"]}
_URLS: Json = {"type": "array", "items": {"type": "string"}}

LEGACY_ERROR: Json = {
    "type": "object",
    "required": ["success", "error", "code", "message"],
    "additionalProperties": False,
    "properties": {
        "success": {"const": False},
        "error": {"type": "string", "description": "What went wrong, for people."},
        "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "message": {"type": "string"},
    },
}

POLL: Json = {
    "type": "object",
    "required": ["status", "urls", "error"],
    "additionalProperties": False,
    "properties": {
        "status": {"enum": ["PENDING", "PROCESSING", "SUCCESS", "FAILED"]},
        "urls": _URLS,
        "error": _NULLABLE_TEXT,
        "progress": {"type": "number", "minimum": 0, "maximum": 1},
    },
}

STATUS: Json = {
    "type": "object",
    "required": [
        "success",
        "taskId",
        "status",
        "prompt",
        "imageUrl",
        "resultUrls",
        "createdAt",
        "updatedAt",
        "consumeCredits",
        "costTime",
    ],
    "additionalProperties": False,
    "properties": {
        "success": {"const": True},
        "taskId": {"type": "string"},
        "status": {"enum": ["pending", "processing", "completed", "failed"]},
        "prompt": {"type": "string"},
        "imageUrl": _NULLABLE_TEXT,
        "resultUrls": _URLS,
        "createdAt": {"type": "string", "format": "date-time"},
        "updatedAt": {"type": "string", "format": "date-time"},
        "consumeCredits": {"type": ["number", "null"]},
        "costTime": {"type": ["number", "null"]},
        "error": _NULLABLE_TEXT,
    },
}

_CREATED: Json = {
    "type": "object",
    "required": ["taskId", "status", "statusUrl", "eventsUrl"],
    "properties": {
        "taskId": {"type": "string"},
        "status": {"const": "pending"},
        "statusUrl": {"type": "string"},
        "eventsUrl": {"type": "string"},
        "token": {"type": "string"},
    },
    "additionalProperties": False,
}

_BATCH: Json = {
    "type": "object",
    "required": ["success", "taskIds", "tasks", "failures"],
    "additionalProperties": False,
    "properties": {
        "success": {"type": "boolean"},
        "taskIds": {"type": "array", "items": {"type": "string"}},
        "tasks": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["taskId", "sourceKey"],
                "additionalProperties": False,
                "properties": {"taskId": {"type": "string"}, "sourceKey": {"type": "string"}},
            },
        },
        "failures": {"type": "array", "items": {"type": "object"}},
    },
}

_UPLOADED: Json = {
    "type": "object",
    "required": ["success", "url", "key", "contentType", "size"],
    "additionalProperties": False,
    "properties": {
        "success": {"const": True},
        "url": {"type": "string"},
        "key": {"type": "string"},
        "contentType": {"type": "string"},
        "size": {"type": "integer"},
    },
}

_SHARED: Json = {
    "type": "object",
    "required": ["success", "shareId", "shareUrl"],
    "additionalProperties": False,
    "properties": {
        "success": {"const": True},
        "shareId": {"type": "string"},
        "shareUrl": {"type": "string"},
    },
}

_SHARE_ITEM: Json = {
    "type": "object",
    "required": ["shareId", "shareUrl", "url", "kind", "mode", "prompt", "style", "createdAt"],
    "additionalProperties": False,
    "properties": {
        "shareId": {"type": "string"},
        "shareUrl": {"type": "string"},
        "url": {"type": "string"},
        "kind": {"enum": ["image", "video", "audio"]},
        "mode": {"enum": ["text-to-image", "image-to-image"]},
        "prompt": {"type": "string"},
        "style": _NULLABLE_TEXT,
        "createdAt": {"type": "string", "format": "date-time"},
    },
}

_SHARE_LIST: Json = {
    "type": "object",
    "required": ["success", "items", "nextCursor"],
    "additionalProperties": False,
    "properties": {
        "success": {"const": True},
        "items": {"type": "array", "items": _SHARE_ITEM},
        "nextCursor": _NULLABLE_TEXT,
    },
}

_TASK_ID_QUERY: Json = {
    "name": "taskId",
    "in": "query",
    "required": True,
    "schema": {"type": "string", "pattern": TASK_ID_PATTERN},
}
_ACCESS = (
    "The task is visible to the browser that created it (its `relay_browser` cookie), or to a caller "
    "showing the task's token (`?token=`) or, with RELAY_AUTH=jwt, the user's JWT."
)


def _ok(description: str, schema: Json) -> Json:
    return {"description": description, "headers": _headers(), "content": _json(schema)}


def _errors(*statuses: str) -> Json:
    return {
        status: {
            "description": "An error, in the legacy shape.",
            "headers": _headers(),
            "content": _json(_schema("LegacyError")),
        }
        for status in statuses
    }


def _op(
    op_id: str,
    summary: str,
    responses: Json,
    *,
    params: list[Json] | None = None,
    body: Json | None = None,
    description: str = _ACCESS,
) -> Json:
    op: Json = {
        "operationId": op_id,
        "summary": summary,
        "description": description,
        "tags": ["legacy"],
    }
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    op["responses"] = responses
    return op


_GENERATE_IMAGE: Json = {
    "type": "object",
    "properties": {
        "prompt": {"type": "string"},
        "mode": {"enum": ["text-to-image", "image-to-image"]},
        "imageUrl": {"type": "string"},
        "imageUrls": {"type": "array", "items": {"type": "string"}},
        "style": {"type": "string", "maxLength": 100},
        "model": {"type": "string"},
    },
}

_UPLOAD_BODY: Json = {"multipart/form-data": {"schema": _schema("UploadRequest")}}


def legacy_paths() -> Json:
    creates = ("400", "401", "402", "408", "413", "429", "502", "503")
    reads = ("400", "401", "404", "503")
    return {
        "/api/generate-image": {
            "post": _op(
                "legacyGenerateImage",
                "Create one task (sets the browser cookie on first use)",
                {
                    "200": _ok("Created (or a double click's first task).", _CREATED),
                    **_errors(*creates),
                },
                body=_json(_GENERATE_IMAGE),
                description="The core create, with `style` appended to the prompt.",
            )
        },
        "/api/generate": {
            "post": _op(
                "legacyGenerateBatch",
                "One task per source image",
                {"200": _ok("What was created and what failed.", _BATCH), **_errors(*creates)},
                body=_json(
                    {
                        "type": "object",
                        "required": ["imageUrls"],
                        "properties": {
                            "prompt": {"type": "string"},
                            "imageUrls": {"type": "array", "items": {"type": "string"}},
                        },
                    }
                ),
                description="Each image its own task; a failure for one image is listed, not fatal.",
            )
        },
        "/api/poll-task": {
            "get": _op(
                "legacyPollTask",
                "Status in the poll shape; with Accept: text/event-stream, a stream of it",
                {
                    "200": {
                        "description": "The poll object, or (EventSource) unnamed `message` events of it, "
                        "closed after SUCCESS/FAILED.",
                        "headers": _headers(),
                        "content": {
                            **_json(POLL),
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    "204": {"description": "The stream's client already has the final state."},
                    **_errors(*reads, "429"),
                },
                params=[_TASK_ID_QUERY],
            )
        },
        "/api/image-details": {
            "get": _op(
                "legacyImageDetails",
                "The same as poll-task",
                {"200": _ok("The poll object.", POLL), **_errors(*reads)},
                params=[_TASK_ID_QUERY],
            )
        },
        "/api/task-status": {
            "get": _op(
                "getTaskStatus",
                "Fallback status read, in the shape existing front ends read",
                {"200": _ok("The task.", STATUS), **_errors(*reads)},
                params=[_TASK_ID_QUERY],
            )
        },
        "/api/upload-image": {
            "post": _op(
                "legacyUploadImage",
                "Upload a reference image",
                {"200": _ok("Stored.", _UPLOADED), **_errors("400", "408", "413", "429", "503")},
                body=_UPLOAD_BODY,
                description="multipart `file`; the fallback storage takes it when the first fails.",
            )
        },
        "/api/upload": {
            "post": _op(
                "legacyUpload",
                "Upload a reference image (the same)",
                {"200": _ok("Stored.", _UPLOADED), **_errors("400", "408", "413", "429", "503")},
                body=_UPLOAD_BODY,
                description="multipart `file`.",
            )
        },
        "/api/download-url": {
            "get": _op(
                "legacyDownloadUrl",
                "A link that downloads a result as an attachment",
                {
                    "200": _ok(
                        "The link.",
                        {
                            "type": "object",
                            "required": ["url"],
                            "additionalProperties": False,
                            "properties": {"url": {"type": "string"}},
                        },
                    ),
                    **_errors(*reads, "409"),
                },
                params=[
                    _TASK_ID_QUERY,
                    {"name": "index", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                ],
            )
        },
        "/api/share": {
            "post": _op(
                "legacyShare",
                "Share a completed result (our stored copy only)",
                {
                    "200": _ok("The share (the first one, for a repeat within 5 s).", _SHARED),
                    **_errors(*reads, "408", "409", "413"),
                },
                body=_json(
                    {
                        "type": "object",
                        "properties": {
                            "taskId": {"type": "string"},
                            "generatedUrl": {"type": "string"},
                            "index": {"type": "integer"},
                            "prompt": {"type": "string"},
                            "style": {"type": "string"},
                        },
                    }
                ),
            )
        },
        "/api/share/list": {
            "get": _op(
                "legacyShareList",
                "The public gallery, newest first",
                {"200": _ok("A page.", _SHARE_LIST), **_errors("400", "503")},
                params=[
                    {
                        "name": "mode",
                        "in": "query",
                        "schema": {"enum": ["text-to-image", "image-to-image"]},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                    },
                    {"name": "cursor", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{15}:[A-Za-z0-9_-]{8,32}$"}},
                ],
                description="Public by intent: only what was shared.",
            )
        },
        "/share/{shareId}": {
            "get": _op(
                "sharePage",
                "The share page (HTML, with Open Graph and Twitter card tags)",
                {
                    "200": {
                        "description": "The page.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    **core_errors("404", "503"),
                },
                params=[
                    {
                        "name": "shareId",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                description="Public by intent.",
            )
        },
    }
