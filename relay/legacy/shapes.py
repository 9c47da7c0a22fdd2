"""The answers legacy front ends read, built from the task object (`Task.public()` or an
event's JSON, which are the same dict). Their field names and status spellings are kept
exactly: the front ends compare strings."""

from __future__ import annotations

from typing import Any

# These front ends know four states: a cancelled task is a failed one to them.
_POLL_STATUS = {
    "pending": "PENDING", "processing": "PROCESSING", "completed": "SUCCESS", "failed": "FAILED", "cancelled": "FAILED",
}
_STATUS = {"cancelled": "failed"}


def _error_text(task: dict[str, Any]) -> str | None:
    error = task.get("error")
    return str(error["message"]) if error else None


def poll(task: dict[str, Any]) -> dict[str, Any]:
    """`GET /api/poll-task`, `/api/image-details` and each poll-task stream event."""
    status = _POLL_STATUS.get(task["status"], "FAILED")
    out: dict[str, Any] = {
        "status": status,
        "urls": list(task["resultUrls"]) if status == "SUCCESS" else [],
        "error": _error_text(task) if status == "FAILED" else None,
    }
    if task.get("progress") is not None:
        out["progress"] = task["progress"]
    return out


def status(task: dict[str, Any], *, credits: float | None = None, cost_time: float | None = None) -> dict[str, Any]:
    """`GET /api/task-status`: lower-case statuses, `imageUrl` the first source image."""
    created, updated = task["createdAt"], task["updatedAt"]
    out: dict[str, Any] = {
        "success": True,
        "taskId": task["taskId"],
        "status": _STATUS.get(task["status"], task["status"]),
        "prompt": task["prompt"],
        "imageUrl": task["imageUrls"][0] if task["imageUrls"] else None,
        "resultUrls": list(task["resultUrls"]),
        "createdAt": created,
        "updatedAt": updated,
        "consumeCredits": credits,
        "costTime": cost_time,
    }
    if out["status"] == "failed":
        out["error"] = _error_text(task)
    return out


def error(code: str, message: str) -> dict[str, Any]:
    """Errors on legacy routes: those front ends read `success` and a string `error`;
    `code` and `message` keep Relay's error body's two fields beside them."""
    return {"success": False, "error": message, "code": code, "message": message}
