"""Cancel and the signed-in user's account in the contract."""

from __future__ import annotations

from relay.openapi.responses import TASK_ID_PATH, _errors, _ok
from relay.openapi.schemas import Json, _schema

ENTRY: Json = {
    "type": "object",
    "required": ["at", "delta", "balance", "reason", "taskId", "hold"],
    "additionalProperties": False,
    "properties": {
        "at": {"type": "number", "description": "Unix seconds."},
        "delta": {"type": "integer", "description": "Negative for a reservation, positive for a refund or grant."},
        "balance": {"type": "integer", "description": "The balance after this entry."},
        "reason": {"type": "string", "examples": ["reserve", "task completed", "task failed", "task cancelled"]},
        "taskId": {"type": ["string", "null"]},
        "hold": {"type": ["string", "null"], "description": "The reservation this entry belongs to."},
    },
}

ME: Json = {
    "type": "object",
    "required": ["user", "credits"],
    "additionalProperties": False,
    "properties": {
        "user": {"type": "string", "description": "The JWT's subject."},
        "credits": {"type": "boolean", "description": "Whether credits are on (RELAY_CREDITS)."},
        "balance": {"type": "integer"},
        "ledger": {"type": "array", "items": ENTRY, "description": "Newest first."},
    },
}


def user_paths(task_security: list[Json], jwt: bool) -> Json:
    return {
        "/api/tasks/{taskId}/cancel": {
            "post": {
                "operationId": "cancelTask",
                "summary": "Cancel an unfinished task",
                "description": (
                    "The provider is asked to stop where it can; the task becomes `cancelled` (terminal), "
                    "its credits come back, later callbacks change nothing. 409 when it finished first."
                ),
                "tags": ["tasks"],
                "security": task_security,
                "parameters": [TASK_ID_PATH],
                "responses": {
                    "200": _ok("The cancelled task.", _schema("Task")),
                    **_errors("400", "401", "404", "409", "503"),
                },
            }
        },
        "/api/me": {
            "get": {
                "operationId": "me",
                "summary": "The signed-in user, their balance and recent ledger entries",
                "tags": ["users"],
                "security": task_security if jwt else [{}],
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}
                ],
                "responses": {
                    "200": _ok("The user.", ME),
                    **_errors("400", "401", "403", "503"),
                },
            }
        },
    }
