"""The wire-format types: the task object, its status machine, and the updates that move it.

Everything that reads a task (status GET, SSE snapshot, live events) sees the same
`Task`; everything that changes one goes through `transition` (called by `ingest`).
"""

from __future__ import annotations

import enum
import re
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import orjson

TASK_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class Status(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"  # by its owner: the provider was told to stop where it can be

    # Plain attributes of each member (set below), read several times per callback: as
    # properties over a tuple and a dict they took 1-2% of a callback's CPU (enum members
    # hash in Python).
    terminal: bool
    rank: int


for _status, _rank in (
    (Status.PENDING, 0),
    (Status.PROCESSING, 1),
    (Status.COMPLETED, 2),
    (Status.FAILED, 2),
    (Status.CANCELLED, 2),
):
    _status.terminal = _rank == 2
    _status.rank = _rank


class Mode(enum.StrEnum):
    TEXT_TO_IMAGE = "text-to-image"
    IMAGE_TO_IMAGE = "image-to-image"


class ProviderState(enum.StrEnum):
    """What the provider says about a task, before Relay decides what it means for the task."""

    PENDING = "pending"  # accepted, queued, or not yet visible ("recordInfo is null")
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class TaskError:
    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class ProviderReport:
    """One provider payload (callback or status query), normalized.

    `family` names the payload shape it came from (jobs, 4o, flux, veo, runway, mj, suno),
    for logs and metrics only.
    """

    task_id: str
    state: ProviderState
    family: str
    result_urls: tuple[str, ...] = ()
    error: TaskError | None = None
    progress: float | None = None


@dataclass(frozen=True, slots=True)
class TaskUpdate:
    """A requested change to one task. `transition` decides whether it applies."""

    task_id: str
    status: Status
    provider_result_urls: tuple[str, ...] | None = None
    result_urls: tuple[str, ...] | None = None
    error: TaskError | None = None
    progress: float | None = None
    mirror_error: str | None = None
    # Set by a mirror pass that finally succeeded for a task that had completed with the
    # provider's URLs: the one change a terminal task still accepts.
    mirrored: bool = False


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    """Now, to the millisecond: what RFC 3339 on the wire keeps, so a stored task reads
    back equal to the one written. (Whole milliseconds since the epoch, added exactly.)"""
    return _EPOCH + timedelta(milliseconds=time.time_ns() // 1_000_000)


def rfc3339(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    if ts.tzinfo is UTC:  # every time Relay makes or reads
        # %-formatting: 2.4 us here, where format specs in an f-string take 4.2.
        return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031
            ts.year, ts.month, ts.day, ts.hour, ts.minute, ts.second, ts.microsecond // 1000,
        )
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_ts(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Task:
    task_id: str
    provider: str
    model: str
    mode: Mode
    status: Status
    prompt: str
    image_urls: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    version: int = 1
    kind: str = "image"  # what the model makes: image, video or audio
    provider_result_urls: tuple[str, ...] = ()
    result_urls: tuple[str, ...] = ()
    error: TaskError | None = None
    progress: float | None = None
    completed_at: datetime | None = None
    mirror_error: str | None = None
    cost: int | None = None  # credits reserved for it (RELAY_CREDITS=on), else None
    # Internal, never sent to browsers: the hash of the callback URL token, the owner
    # (a JWT subject) when users are authenticated, and the creator's own webhook URL.
    callback_hash: str = ""
    owner: str | None = None
    webhook_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    def public(self) -> dict[str, Any]:
        """The task object of the HTTP contract."""
        return {
            "taskId": self.task_id,
            "provider": self.provider,
            "model": self.model,
            "mode": self.mode.value,
            "kind": self.kind,
            "status": self.status.value,
            "prompt": self.prompt,
            "imageUrls": list(self.image_urls),
            "providerResultUrls": list(self.provider_result_urls),
            "resultUrls": list(self.result_urls),
            "error": self.error.to_json() if self.error else None,
            "progress": self.progress,
            "mirrorError": self.mirror_error,
            "cost": self.cost,
            "createdAt": rfc3339(self.created_at),
            "updatedAt": rfc3339(self.updated_at),
            "completedAt": rfc3339(self.completed_at),
            "version": self.version,
        }

    @cached_property
    def public_json(self) -> bytes:
        # Serialized once per version however many streams send it (cached_property writes
        # straight into __dict__, which a frozen dataclass allows).
        return orjson.dumps(self.public())

    def to_record(self) -> bytes:
        """The stored form: the public object plus the internal fields. Spliced onto the
        cached public JSON, since every write needs both."""
        internal: dict[str, Any] = {"callbackHash": self.callback_hash, "owner": self.owner}
        if self.webhook_url:
            internal["webhookUrl"] = self.webhook_url
        if self.extra:
            internal["extra"] = self.extra
        return self.public_json[:-1] + b"," + orjson.dumps(internal)[1:]

    @classmethod
    def from_record(cls, raw: bytes | str) -> Task:
        d = orjson.loads(raw)
        err = d.get("error")
        created = _parse_ts(d["createdAt"])
        updated = _parse_ts(d["updatedAt"])
        assert created is not None and updated is not None
        return cls(
            task_id=d["taskId"],
            provider=d["provider"],
            model=d["model"],
            mode=Mode(d["mode"]),
            kind=d.get("kind", "image"),
            status=Status(d["status"]),
            prompt=d["prompt"],
            image_urls=tuple(d["imageUrls"]),
            provider_result_urls=tuple(d["providerResultUrls"]),
            result_urls=tuple(d["resultUrls"]),
            error=TaskError(err["code"], err["message"]) if err else None,
            progress=d["progress"],
            mirror_error=d.get("mirrorError"),
            cost=d.get("cost"),
            created_at=created,
            updated_at=updated,
            completed_at=_parse_ts(d["completedAt"]),
            version=d["version"],
            callback_hash=d.get("callbackHash", ""),
            owner=d.get("owner"),
            webhook_url=d.get("webhookUrl"),
            extra=d.get("extra") or {},
        )


def transition(task: Task, update: TaskUpdate, now: datetime) -> Task | None:
    """The status machine. Returns the next version of `task`, or None when `update`
    changes nothing (a duplicate) or is not allowed (late, backwards, after terminal).

    pending -> processing -> completed | failed. Terminal states are final, except that a
    task completed with the provider's URLs (mirroring gave up) takes our own URLs once a
    later mirror pass succeeds. Once the
    provider has reported success (providerResultUrls set), the task can only complete:
    a late failure report must not throw away a paid-for result.
    """
    if task.terminal:
        if (
            update.mirrored
            and task.status is Status.COMPLETED
            and task.mirror_error
            and update.result_urls
            and update.result_urls != task.result_urls
        ):
            return replace(
                task, result_urls=update.result_urls, mirror_error=None, version=task.version + 1, updated_at=now
            )
        return None
    if update.status.rank < task.status.rank:
        return None
    if update.status in (Status.FAILED, Status.CANCELLED) and task.provider_result_urls:
        return None

    changes: dict[str, Any] = {}
    if update.status is not task.status:
        changes["status"] = update.status
    if update.provider_result_urls and update.provider_result_urls != task.provider_result_urls:
        changes["provider_result_urls"] = update.provider_result_urls
    if update.result_urls is not None and update.result_urls != task.result_urls:
        changes["result_urls"] = update.result_urls
    if update.error is not None and update.error != task.error:
        changes["error"] = update.error
    if update.mirror_error is not None and update.mirror_error != task.mirror_error:
        changes["mirror_error"] = update.mirror_error
    if update.progress is not None and (task.progress is None or update.progress > task.progress):
        changes["progress"] = update.progress
    if not changes:
        return None

    if update.status is Status.COMPLETED:
        changes["progress"] = 1.0
    if update.status.terminal:
        changes["completed_at"] = now
    return _evolve(task, version=task.version + 1, updated_at=now, **changes)


def _evolve(task: Task, **changes: Any) -> Task:
    """`dataclasses.replace` without running `__init__` again (it was a twentieth of a
    callback's CPU): the fields are copied and changed, the cached JSON is not copied."""
    new = object.__new__(Task)
    fields = dict(task.__dict__)
    fields.pop("public_json", None)
    fields.update(changes)
    new.__dict__.update(fields)
    return new
