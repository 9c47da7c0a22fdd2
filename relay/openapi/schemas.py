"""The contract's building blocks: limits, patterns and the component schemas."""

from __future__ import annotations

import copy
from typing import Any

from relay.catalogue import KINDS, builtin
from relay.create import MAX_IMAGE_URLS, MAX_PROMPT, MAX_URL
from relay.media import RESULTS
from relay.models import TASK_ID_RE
from relay.settings import Settings

OPENAPI_VERSION = "3.1.0"
API_VERSION = "0.1.0"

Json = dict[str, Any]

TASK_ID_PATTERN = TASK_ID_RE.pattern  # the one definition, in relay/models.py
MAX_MODEL = 100
MAX_IDEMPOTENCY_KEY = 255
FILE_MEDIA_TYPES = tuple(sorted({media.content_type for media in RESULTS}))  # what we can have stored


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
                "balance": {"type": "integer", "description": "402 insufficient_credits: the user's balance."},
                "price": {"type": "integer", "description": "402 insufficient_credits: what the model costs."},
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
        "enum": ["pending", "processing", "completed", "failed", "cancelled"],
        "description": "pending -> processing -> completed | failed | cancelled; terminal states are final.",
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
    "cost": {
        "type": ["integer", "null"],
        "description": "Credits reserved for the task (RELAY_CREDITS=on): charged when it completes, refunded otherwise.",
    },
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
        "webhookUrl": {
            "type": "string",
            "maxLength": MAX_URL,
            "description": (
                "Where this task's changes are also announced (signed webhooks). Its host must be "
                "in RELAY_WEBHOOK_HOSTS, else 400 webhook_refused."
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
        "status": {"enum": ["received", "ignored", "duplicate"]},
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
