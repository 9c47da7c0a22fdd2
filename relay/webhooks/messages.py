"""What is sent: which task changes become messages, to which endpoints, with what body.

Pure functions of the settings and the task, so the store can call them inside its
atomic write: a change is never stored without its message queued, or queued unstored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from relay.models import Task, rfc3339
from relay.settings import Settings

State = Literal["pending", "delivered", "failed"]
MAX_LOG = 20  # attempts kept per message; the oldest go first

# A status the task machine may grow (cancel) maps by name, so the wire types are fixed here.
_TYPES = {"completed": "task.completed", "failed": "task.failed", "cancelled": "task.cancelled"}


@dataclass(frozen=True, slots=True)
class Message:
    """One task version announced to one endpoint."""

    delivery_id: str  # the outbox's key: the message id and the endpoint
    msg_id: str  # `webhook-id`: the same for every attempt and every endpoint
    task_id: str
    url: str
    type: str
    body: bytes  # fixed when queued, so every retry signs the same bytes
    created: float  # unix seconds


@dataclass(frozen=True, slots=True)
class Attempt:
    at: float
    status: int | None  # the HTTP status, or None when no answer came
    error: str | None
    ms: int

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "status": self.status, "error": self.error, "ms": self.ms}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Attempt:
        return cls(float(d["at"]), d.get("status"), d.get("error"), int(d.get("ms", 0)))


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message and where it stands: its attempts, and (pending) when it is due next."""

    message: Message
    state: State
    tries: int  # attempts since it was queued or last redelivered
    next_at: float | None
    attempts: tuple[Attempt, ...] = ()
    lease: str = field(default="", compare=False)  # who holds it right now, if anyone

    def public(self) -> dict[str, Any]:
        m = self.message
        return {
            "id": m.msg_id,
            "type": m.type,
            "endpoint": endpoint_label(m.url),
            "state": self.state,
            "createdAt": rfc3339_ts(m.created),
            "nextAttemptAt": rfc3339_ts(self.next_at) if self.state == "pending" else None,
            "attempts": [
                {"at": rfc3339_ts(a.at), "status": a.status, "error": a.error, "durationMs": a.ms}
                for a in self.attempts
            ],
        }


def rfc3339_ts(ts: float | None) -> str | None:
    return rfc3339(datetime.fromtimestamp(ts, UTC)) if ts is not None else None


def endpoint_label(url: str) -> str:
    """An endpoint as logs and metrics name it: scheme, host and port only. Hosts are
    bounded by configuration, so this stays a small label set; paths may hold secrets."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0].rpartition('@')[2]}"


def event_type(task: Task) -> str:
    return _TYPES.get(task.status.value, "task.updated")


def body(task: Task) -> bytes:
    """`{"type", "timestamp", "data": <task object>}`, spliced onto the task's cached JSON."""
    head = orjson.dumps({"type": event_type(task), "timestamp": rfc3339(task.updated_at)})
    return head[:-1] + b',"data":' + task.public_json + b"}"


class Announcer:
    """Which changes are announced where: RELAY_WEBHOOK_URL for every task, a task's own
    `webhookUrl` for that task; terminal changes only unless RELAY_WEBHOOK_EVENTS=all."""

    def __init__(self, settings: Settings):
        self.url = settings.webhook_url
        self.every_change = settings.webhook_events == "all"

    def messages(self, task: Task, now: float) -> list[Message]:
        if not (task.terminal or self.every_change):
            return []
        urls = [u for u in (self.url, task.webhook_url) if u]
        if not urls:
            return []
        msg_id = f"msg_{task.task_id}_v{task.version}"
        payload = body(task)
        kind = event_type(task)
        return [
            Message(
                delivery_id=f"{msg_id}.{hashlib.sha256(url.encode()).hexdigest()[:12]}",
                msg_id=msg_id,
                task_id=task.task_id,
                url=url,
                type=kind,
                body=payload,
                created=now,
            )
            for url in dict.fromkeys(urls)
        ]
