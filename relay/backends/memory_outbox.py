"""The outbox in this process (`memory://`): gone with it, like every memory backend.

Atomicity comes from the event loop: no method awaits between its read and its write.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from relay.webhooks.messages import MAX_LOG, Attempt, Delivery, Message, State


class MemoryOutbox:
    def __init__(self) -> None:
        self._messages: dict[str, Delivery] = {}
        self._by_task: dict[str, list[str]] = {}
        self._disabled: dict[str, str] = {}

    def enqueue(self, messages: Iterable[Message]) -> None:
        """Called by the memory store inside the write that the messages announce."""
        for m in messages:
            self._messages[m.delivery_id] = Delivery(m, "pending", 0, m.created)
            self._by_task.setdefault(m.task_id, []).append(m.delivery_id)

    async def claim(self, now: float, lease: float, holder: str, limit: int) -> list[Delivery]:
        due = sorted(
            (d for d in self._messages.values() if d.state == "pending" and d.next_at is not None and d.next_at <= now),
            key=lambda d: d.next_at or 0.0,
        )[:limit]
        out = []
        for d in due:
            taken = replace(d, next_at=now + lease, lease=holder)
            self._messages[d.message.delivery_id] = taken
            out.append(taken)
        return out

    async def finish(
        self, delivery: Delivery, attempt: Attempt, state: State, next_at: float | None, keep: float
    ) -> bool:
        current = self._messages.get(delivery.message.delivery_id)
        if current is None or current.lease != delivery.lease:
            return False
        self._messages[delivery.message.delivery_id] = replace(
            current,
            state=state,
            tries=current.tries + 1,
            next_at=next_at,
            attempts=(*current.attempts, attempt)[-MAX_LOG:],
            lease="",
        )
        return True

    async def for_task(self, task_id: str) -> list[Delivery]:
        return [self._messages[i] for i in self._by_task.get(task_id, []) if i in self._messages]

    async def redeliver(self, task_id: str, now: float) -> int:
        ids = [i for i in self._by_task.get(task_id, []) if i in self._messages]
        for i in ids:
            self._messages[i] = replace(self._messages[i], state="pending", tries=0, next_at=now, lease="")
        return len(ids)

    async def backlog(self) -> tuple[int, dict[str, float]]:
        pending = [d for d in self._messages.values() if d.state == "pending"]
        oldest: dict[str, float] = {}
        for d in pending:
            url = d.message.url
            oldest[url] = min(oldest.get(url, d.message.created), d.message.created)
        return len(pending), oldest

    async def disable(self, url: str, why: str) -> None:
        self._disabled[url] = why

    async def enable(self, url: str) -> bool:
        return self._disabled.pop(url, None) is not None

    async def disabled(self) -> dict[str, str]:
        return dict(self._disabled)
