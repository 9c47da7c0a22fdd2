"""One `Protocol` per seam. Each has an in-process implementation (`memory://`, `file://`)
and a distributed one (`redis://`, `s3://`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import orjson

from relay.fanout import LocalFanout, Subscription
from relay.models import Task
from relay.webhooks.messages import Attempt, Delivery, State


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Task]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Share:
    """A result made public on purpose (the legacy share routes)."""

    share_id: str
    task_id: str
    index: int
    url: str  # our stored copy of the result
    kind: str  # image, video or audio
    mode: str  # text-to-image or image-to-image
    prompt: str
    style: str | None
    created: float  # unix seconds

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Share:
        return cls(**orjson.loads(raw))

    @property
    def cursor(self) -> str:
        return f"{int(self.created * 1000):015d}:{self.share_id}"



Outcome = Literal["settle", "refund"]


@dataclass(frozen=True, slots=True)
class Entry:
    at: float
    delta: int
    balance: int
    reason: str
    task: str | None = None
    hold: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "at": self.at, "delta": self.delta, "balance": self.balance, "reason": self.reason,
            "taskId": self.task, "hold": self.hold,
        }


@dataclass(frozen=True, slots=True)
class Hold:
    hold_id: str
    user: str
    amount: int
    state: str  # held, settle, refund
    task: str | None
    created: float


@dataclass(frozen=True, slots=True)
class Reserved:
    taken: bool
    balance: int  # after the reservation, or (not taken) what there is


def history_cursor(task: Task) -> str:
    """Where the next history page starts: `<created ms, 15 digits>:<task id>`, so cursors
    sort as their tasks do (newest first means smaller cursors come later)."""
    return f"{int(task.created_at.timestamp() * 1000):015d}:{task.task_id}"


class TaskStore(Protocol):
    """Durable task state. Every write is a compare-and-set on `version`, so the status
    machine can live in Python (`models.transition`) while writes stay atomic."""

    # A successful insert or replace also publishes the change on the store's hub, in the
    # same step (Redis: the same script), so a write can never be stored but unannounced.

    async def get(self, task_id: str) -> Task | None: ...

    async def insert(self, task: Task) -> bool:
        """Store a new task; False if one with that id exists already."""
        ...

    async def replace(self, task: Task, expected_version: int) -> bool:
        """Store `task` only if the stored version is still `expected_version`."""
        ...

    async def history(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        status: str | None = None,
        mode: str | None = None,
        owner: str | None = None,
    ) -> Page: ...

    async def open_tasks(self, updated_before: float, limit: int) -> list[str]:
        """Ids of non-terminal tasks last changed before `updated_before` (unix seconds)."""
        ...

    async def park_callback(self, task_id: str, token: str, body: bytes, ttl: float) -> None:
        """Keep a callback that arrived before its task record (it raced the create)."""
        ...

    async def take_parked(self, task_id: str) -> list[tuple[str, bytes]]: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


class Coordination(Protocol):
    """What instances agree on besides tasks: claims and leases (one holder at a time,
    with an expiry), and counters (rate limits, budgets). The same server as the store
    (Redis, or this process), seen through its own seam."""

    async def claim(self, key: str, ttl: float) -> str | None:
        """Set `key` to "" unless it exists. None means this caller now holds it;
        otherwise the current value ("" while its holder is still working)."""
        ...

    async def settle(self, key: str, value: str, ttl: float) -> None: ...

    async def peek(self, key: str) -> str | None: ...

    async def release(self, key: str) -> None: ...

    async def hit(self, key: str, ttl: float) -> int:
        """Count one more event under `key` (expiring after `ttl`); return the count."""
        ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


class Hub(Protocol):
    """Fan-out of task changes to every instance's open streams."""

    fanout: LocalFanout  # which of this process's streams watch which task or owner

    async def start(self) -> None: ...

    async def publish(self, task: Task) -> None: ...

    def resync_all(self) -> None:
        """Tell every open stream to re-read its snapshots (a reconnect, or draining)."""
        ...

    async def subscribe(self, task_ids: Iterable[str]) -> Subscription:
        """Register interest: anything published after this returns reaches the
        subscription, so a snapshot read afterwards cannot miss a change. Raises
        `StoreUnavailable` when that cannot be promised in time."""
        ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


class Outbox(Protocol):
    """Outbound webhook messages. The store queues them in the same atomic step as the
    change they announce; any instance may send them. `claim` lends a due message to one
    sender for `lease` seconds: if that sender dies, the message is due again after it."""

    async def claim(self, now: float, lease: float, holder: str, limit: int) -> list[Delivery]: ...

    async def finish(
        self, delivery: Delivery, attempt: Attempt, state: State, next_at: float | None, keep: float
    ) -> bool:
        """Record an attempt; False if the lease was lost meanwhile (nothing is written)."""
        ...

    async def for_task(self, task_id: str) -> list[Delivery]: ...

    async def redeliver(self, task_id: str, now: float) -> int:
        """Queue every message of the task again, due now; how many."""
        ...

    async def backlog(self) -> tuple[int, dict[str, float]]:
        """How many messages wait, and the creation time of the oldest per endpoint URL
        (among the next ones due)."""
        ...

    async def disable(self, url: str, why: str) -> None: ...

    async def enable(self, url: str) -> bool: ...

    async def disabled(self) -> dict[str, str]:
        """Endpoint URL -> why it was disabled (a 410 Gone)."""
        ...


class Shares(Protocol):
    """Results made public on purpose (the legacy share routes) and their gallery."""

    async def add(self, share: Share) -> None: ...

    async def get(self, share_id: str) -> Share | None: ...

    async def page(self, *, mode: str | None, limit: int, cursor: str | None) -> tuple[list[Share], str | None]:
        """Newest first, optionally one mode's; the cursor of the next page, if any."""
        ...


class Ledger(Protocol):
    """Users' credits: balances and every move, each move one atomic step
    (relay/backends/ledger.py has both implementations and the rules)."""

    async def balance(self, user: str) -> int: ...

    async def grant(self, user: str, amount: int, reason: str) -> int: ...

    async def welcome(self, user: str, amount: int) -> None:
        """Grant `amount` once per user, ever (RELAY_WELCOME_CREDITS)."""
        ...

    async def reserve(self, user: str, hold_id: str, amount: int) -> Reserved: ...

    async def attach(self, hold_id: str, task_id: str) -> None: ...

    async def finish(self, hold_id: str, outcome: Outcome, reason: str) -> bool:
        """Settle or refund a hold; False when it was finished already (nothing moves)."""
        ...

    async def get_hold(self, hold_id: str) -> Hold | None: ...

    async def open_holds(self, older_than: float, limit: int) -> list[Hold]: ...

    async def entries(self, user: str, limit: int) -> list[Entry]: ...
