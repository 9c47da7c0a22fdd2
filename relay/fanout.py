"""Local fan-out: from one incoming change to every open stream in this process that
watches the task. Both hubs use it; the Redis hub feeds it from its single pub/sub
connection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from relay.deadline import LazyDeadline
from relay.models import Task

OWNER_PREFIX = "@owner:"


def owner_key(owner: str) -> str:
    """What a stream of all of one user's tasks subscribes to (no task id has an '@')."""
    return f"{OWNER_PREFIX}{owner}"


@dataclass(slots=True)
class TaskEvent:
    """What a stream needs of a change: which task, which version, and the bytes to send."""

    task_id: str
    version: int
    terminal: bool
    data: bytes
    owner: str | None = None  # internal: routes the event to its owner's `mine` streams
    # The framed SSE message for one-task streams, built once however many streams send it.
    framed: bytes | None = field(default=None, compare=False)

    @classmethod
    def of(cls, task: Task) -> TaskEvent:
        return cls(task.task_id, task.version, task.terminal, task.public_json, task.owner)

    def encode(self) -> bytes:
        # The owner is percent-encoded (a JWT subject may hold spaces); "-" when none.
        owner = quote(self.owner, safe="").encode() if self.owner else b"-"
        return b"%s %d %d %s %s" % (self.task_id.encode(), self.version, self.terminal, owner, self.data)

    @classmethod
    def decode(cls, raw: bytes) -> TaskEvent:
        task_id, version, terminal, owner, data = raw.split(b" ", 4)
        return cls(
            task_id.decode(), int(version), terminal == b"1", data, None if owner == b"-" else unquote(owner.decode())
        )


class Subscription:
    """One stream's mailbox. It keeps only the newest event per task, so a reader that
    falls behind costs one slot per watched task, never a growing queue.

    An idle stream waits here for minutes, thousands at a time: so no `asyncio.Event` (a
    deque each) and no `asyncio.timeout`, just a future and a deadline (relay/deadline.py,
    one timer serving many waits)."""

    __slots__ = ("_deadline", "_fanout", "_pending", "_ready", "_resync", "_waiter", "closed", "task_ids")

    def __init__(self, fanout: LocalFanout, task_ids: Iterable[str]):
        self._fanout = fanout
        self.task_ids = frozenset(task_ids)
        self._pending: dict[str, TaskEvent] = {}
        self._resync = False
        self._ready = False
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = LazyDeadline()
        self.closed = False

    def _notify(self) -> None:
        self._ready = True
        _release(self._waiter)

    def deliver(self, event: TaskEvent) -> None:
        current = self._pending.get(event.task_id)
        if current is None or event.version > current.version:
            self._pending[event.task_id] = event
            self._notify()

    def request_resync(self) -> None:
        """The hub may have missed messages: the stream must re-read its snapshots."""
        self._resync = True
        self._notify()

    def wake(self) -> None:
        """Make a waiting `next` return (the reader went away, or the server is draining)."""
        self._notify()

    async def next(self, within: float | None = None) -> tuple[list[TaskEvent], bool] | None:
        """Wait for news: the newest pending event per task, and whether to resync.
        None when `within` seconds passed first."""
        if not self._ready:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            if within is not None:
                self._deadline.set(loop, loop.time() + within, self._give_up)
            try:
                await waiter
            finally:
                self._waiter = None
                self._deadline.clear()
            if not self._ready:
                return None
        self._ready = False
        events = list(self._pending.values())
        self._pending.clear()
        resync, self._resync = self._resync, False
        return events, resync

    def _give_up(self) -> None:
        _release(self._waiter)

    @property
    def waiting_timer(self) -> bool:
        return self._deadline.armed

    def close(self) -> None:
        self._deadline.cancel()
        if not self.closed:
            self.closed = True
            self._fanout.remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _release(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _nothing(name: str) -> None:
    return None


class LocalFanout:
    """Which open streams watch which task (or owner). `on_first` and `on_last` hear when
    a name gains its first watcher here and loses its last (the Redis hub subscribes and
    unsubscribes its channel)."""

    def __init__(
        self, on_first: Callable[[str], None] = _nothing, on_last: Callable[[str], None] = _nothing
    ) -> None:
        self._by_task: dict[str, set[Subscription]] = {}
        self._on_first = on_first
        self._on_last = on_last

    def add(self, task_ids: Iterable[str]) -> Subscription:
        sub = Subscription(self, task_ids)
        for task_id in sub.task_ids:
            subs = self._by_task.get(task_id)
            if subs is None:
                self._by_task[task_id] = subs = set()
                self._on_first(task_id)
            subs.add(sub)
        return sub

    def names(self) -> list[str]:
        return list(self._by_task)

    def watches(self, name: str) -> bool:
        return name in self._by_task

    def remove(self, sub: Subscription) -> None:
        for task_id in sub.task_ids:
            subs = self._by_task.get(task_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_task[task_id]
                    self._on_last(task_id)

    def dispatch(self, event: TaskEvent) -> None:
        for sub in self._by_task.get(event.task_id, ()):
            sub.deliver(event)
        if event.owner is not None:
            for sub in self._by_task.get(owner_key(event.owner), ()):
                sub.deliver(event)

    def resync(self, name: str) -> None:
        """Tell the streams watching one name to re-read their snapshots."""
        for sub in self._by_task.get(name, ()):
            sub.request_resync()

    def resync_all(self) -> None:
        for subs in self._by_task.values():
            for sub in subs:
                sub.request_resync()
