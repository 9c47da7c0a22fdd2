"""In-process store and hub (`memory://`): one process, nothing to install.

Atomicity comes from the event loop: no method awaits between its read and its write.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from relay.backends.base import Page, history_cursor
from relay.backends.memory_outbox import MemoryOutbox
from relay.fanout import LocalFanout, Subscription, TaskEvent
from relay.models import Task
from relay.webhooks.messages import Announcer


class MemoryStore:
    """Tasks and coordination in this process. Like the Redis store, a successful write
    publishes the change on its hub in the same step, so nothing above the seam needs to
    know which store it has."""

    def __init__(
        self,
        hub: MemoryHub | None = None,
        *,
        outbox: MemoryOutbox | None = None,
        announcer: Announcer | None = None,
    ) -> None:
        self._hub = hub
        self._outbox = outbox
        self._announcer = announcer
        self._tasks: dict[str, Task] = {}
        self._parked: dict[str, list[tuple[float, str, bytes]]] = {}
        self._claims: dict[str, tuple[float, str]] = {}
        self._counters: dict[str, tuple[float, int]] = {}

    async def get(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    async def insert(self, task: Task) -> bool:
        if task.task_id in self._tasks:
            return False
        self._tasks[task.task_id] = task
        self._published(task)
        return True

    async def replace(self, task: Task, expected_version: int) -> bool:
        current = self._tasks.get(task.task_id)
        if current is None or current.version != expected_version:
            return False
        self._tasks[task.task_id] = task
        self._published(task)
        return True

    def _published(self, task: Task) -> None:
        if self._outbox is not None and self._announcer is not None:
            self._outbox.enqueue(self._announcer.messages(task, time.time()))
        if self._hub is not None:
            self._hub.deliver(task)

    async def history(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        status: str | None = None,
        mode: str | None = None,
        owner: str | None = None,
    ) -> Page:
        ordered = sorted(self._tasks.values(), key=_sort_key, reverse=True)
        if cursor is not None:
            ordered = [t for t in ordered if history_cursor(t) < cursor]
        items = [
            t
            for t in ordered
            if (status is None or t.status == status)
            and (mode is None or t.mode == mode)
            and (owner is None or t.owner == owner)
        ]
        page = items[:limit]
        more = len(items) > limit
        return Page(page, history_cursor(page[-1]) if more and page else None)

    async def open_tasks(self, updated_before: float, limit: int) -> list[str]:
        due = [
            t for t in self._tasks.values() if not t.terminal and t.updated_at.timestamp() < updated_before
        ]
        due.sort(key=lambda t: t.updated_at)
        return [t.task_id for t in due[:limit]]

    async def park_callback(self, task_id: str, token: str, body: bytes, ttl: float) -> None:
        now = time.time()
        kept = [p for p in self._parked.get(task_id, []) if p[0] > now]
        kept.append((now + ttl, token, body))
        self._parked[task_id] = kept[-20:]

    async def take_parked(self, task_id: str) -> list[tuple[str, bytes]]:
        now = time.time()
        return [(token, body) for exp, token, body in self._parked.pop(task_id, []) if exp > now]

    async def claim(self, key: str, ttl: float) -> str | None:
        current = await self.peek(key)
        if current is None:
            self._claims[key] = (time.monotonic() + ttl, "")
        return current

    async def settle(self, key: str, value: str, ttl: float) -> None:
        self._claims[key] = (time.monotonic() + ttl, value)

    async def peek(self, key: str) -> str | None:
        entry = self._claims.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._claims[key]
            return None
        return entry[1]

    async def release(self, key: str) -> None:
        self._claims.pop(key, None)

    async def hit(self, key: str, ttl: float) -> int:
        now = time.monotonic()
        if len(self._counters) > 10_000:
            self._counters = {k: v for k, v in self._counters.items() if v[0] > now}
        expires, count = self._counters.get(key, (now + ttl, 0))
        if expires <= now:
            expires, count = now + ttl, 0
        self._counters[key] = (expires, count + 1)
        return count + 1

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def _sort_key(task: Task) -> tuple[float, str]:
    return (task.created_at.timestamp(), task.task_id)


class MemoryHub:
    def __init__(self) -> None:
        self.fanout = LocalFanout()

    async def start(self) -> None:
        return None

    async def publish(self, task: Task) -> None:
        self.deliver(task)

    def deliver(self, task: Task) -> None:
        self.fanout.dispatch(TaskEvent.of(task))

    async def subscribe(self, task_ids: Iterable[str]) -> Subscription:
        return self.fanout.add(task_ids)

    def resync_all(self) -> None:
        self.fanout.resync_all()

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
