"""The outbound webhooks in the contract: the routes that show and redo a task's messages,
and (OpenAPI 3.1 `webhooks`) the message Relay sends to the app's backend."""

from __future__ import annotations

from relay.openapi.responses import TASK_ID_PATH, _errors, _ok
from relay.openapi.schemas import Json, _json, _schema

_TS: Json = {"type": "string", "format": "date-time"}

DELIVERY_SCHEMA: Json = {
    "type": "object",
    "description": "One message of the task to one endpoint, and every attempt so far (the last 20).",
    "required": ["id", "type", "endpoint", "state", "createdAt", "nextAttemptAt", "attempts"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "description": "The `webhook-id` header: the same on every attempt."},
        "type": {"enum": ["task.updated", "task.completed", "task.failed", "task.cancelled"]},
        "endpoint": {"type": "string", "description": "scheme://host:port of the receiver (no path)."},
        "state": {"enum": ["pending", "delivered", "failed"]},
        "createdAt": _TS,
        "nextAttemptAt": {"type": ["string", "null"], "format": "date-time"},
        "attempts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["at", "status", "error", "durationMs"],
                "additionalProperties": False,
                "properties": {
                    "at": _TS,
                    "status": {"type": ["integer", "null"], "description": "The receiver's HTTP status."},
                    "error": {"type": ["string", "null"]},
                    "durationMs": {"type": "integer", "minimum": 0},
                },
            },
        },
    },
}

DELIVERIES_SCHEMA: Json = {
    "type": "object",
    "required": ["taskId", "deliveries"],
    "additionalProperties": False,
    "properties": {"taskId": {"type": "string"}, "deliveries": {"type": "array", "items": _schema("Delivery")}},
}

REDELIVERED_SCHEMA: Json = {
    "type": "object",
    "required": ["taskId", "queued"],
    "additionalProperties": False,
    "properties": {"taskId": {"type": "string"}, "queued": {"type": "integer", "minimum": 0}},
}


def webhook_paths(task_security: list[Json]) -> Json:
    return {
        "/api/tasks/{taskId}/deliveries": {
            "get": {
                "operationId": "listDeliveries",
                "summary": "The task's outbound webhook messages and their attempts",
                "tags": ["webhooks"],
                "security": task_security,
                "parameters": [TASK_ID_PATH],
                "responses": {
                    "200": _ok("The messages, oldest first.", DELIVERIES_SCHEMA),
                    **_errors("400", "401", "404", "503"),
                },
            }
        },
        "/api/tasks/{taskId}/deliveries/redeliver": {
            "post": {
                "operationId": "redeliver",
                "summary": "Send every message of the task again (same ids), due now",
                "tags": ["webhooks"],
                "security": task_security,
                "parameters": [TASK_ID_PATH],
                "responses": {
                    "202": _ok("Queued again.", REDELIVERED_SCHEMA),
                    **_errors("400", "401", "404", "503"),
                },
            }
        },
    }


WEBHOOKS: Json = {
    "taskChanged": {
        "post": {
            "summary": "A task changed (RELAY_WEBHOOK_URL, or the task's own webhookUrl)",
            "description": (
                "Signed per Standard Webhooks: `webhook-id` (stable for one task version), "
                "`webhook-timestamp`, `webhook-signature` (`v1,` + base64 HMAC-SHA256 of "
                "`id.timestamp.body` with each RELAY_WEBHOOK_SECRET). Answer 2xx to acknowledge; "
                "anything else is retried on RELAY_WEBHOOK_SCHEDULE; 410 disables the endpoint. "
                "Delivery is at least once: deduplicate on `webhook-id`, order by `data.version`."
            ),
            "parameters": [
                {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
                for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
            ],
            "requestBody": {
                "required": True,
                "content": _json(
                    {
                        "type": "object",
                        "required": ["type", "timestamp", "data"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"enum": ["task.updated", "task.completed", "task.failed", "task.cancelled"]},
                            "timestamp": _TS,
                            "data": _schema("Task"),
                        },
                    }
                ),
            },
            "responses": {"2XX": {"description": "Delivered."}},
        }
    }
}


PREDICTION: Json = {
    "type": "object",
    "description": "A Replicate prediction object, as Replicate POSTs it (no envelope).",
    "required": ["id", "status"],
    "properties": {
        "id": {"type": "string"},
        "status": {"type": "string", "examples": ["starting", "processing", "succeeded", "failed", "canceled"]},
        "output": {"description": "A URL, a list of URLs, or null."},
        "error": {"type": ["string", "null"]},
    },
}


def replicate_callback(operation_id: str) -> Json:
    """Replicate's webhooks, verified per Standard Webhooks with the account's secret."""
    return {
        "post": {
            "operationId": operation_id,
            "summary": "Receive a Replicate webhook",
            "description": (
                "Verify (URL token; `webhook-signature` over `id.timestamp.body` with the account's whsec_ "
                "secret, timestamp within 5 minutes), normalize, ingest. A delivery id seen before changes "
                "nothing (`{\"status\": \"duplicate\"}`); 503 makes Replicate retry."
            ),
            "tags": ["callbacks"],
            "security": [{"callbackToken": []}],
            "parameters": [
                {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
                for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
            ],
            "requestBody": {"required": True, "content": _json(PREDICTION)},
            "responses": {
                "200": _ok("Stored, a duplicate, or nothing to change.", _schema("Received")),
                **_errors("400", "401", "404", "408", "413", "429", "503"),
            },
        }
    }
