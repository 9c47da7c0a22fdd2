"""A deadline that moves with every operation but costs a timer only when it could be due.

A stream sets a deadline for each event it sends and each wait for news, thousands a
second across many streams; scheduling and cancelling a timer each time (what
`asyncio.timeout` or `call_later` + `cancel` do) was a fifth of the CPU of delivering an
event to many streams. Here the timer outlives the operation that armed it and serves the
ones after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# A timer may fire this much before its time (the loop's clock resolution); within it, the
# deadline counts as reached rather than re-armed.
SLACK = 0.001


class LazyDeadline:
    """Calls `on_due` when the deadline given to `set` passes before `clear`.

    `set` arms a timer only when none is armed or the armed one is later than the new
    deadline. When the timer fires it calls `on_due` if a deadline is set and reached,
    re-arms for a later deadline set since, and lapses when none is set: an idle owner
    holds no timer.

    `on_due` (usually the owner's bound method) is held by the armed timer only, never by
    the deadline itself: the owner holds its deadline, so that would be a reference cycle
    per stream, left for the cyclic collector (tests/test_garbage.py)."""

    __slots__ = ("_due", "_timer")

    def __init__(self) -> None:
        self._due: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def set(self, loop: asyncio.AbstractEventLoop, due: float, on_due: Callable[[], None]) -> None:
        self._due = due
        timer = self._timer
        if timer is None or timer.when() > due:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(due, self._fire, loop, on_due)

    def clear(self) -> None:
        self._due = None

    def cancel(self) -> None:
        self._due = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self, loop: asyncio.AbstractEventLoop, on_due: Callable[[], None]) -> None:
        self._timer = None
        due = self._due
        if due is None:
            return
        if loop.time() < due - SLACK:
            self._timer = loop.call_at(due, self._fire, loop, on_due)
            return
        self._due = None
        on_due()
