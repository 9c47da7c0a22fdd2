"""Deadlines that cost no timer per operation.

`LazyDeadline`: a deadline that moves with every operation but costs a timer only when it
could be due. A stream sets a deadline for each event it sends and each wait for news,
thousands a second across many streams; scheduling and cancelling a timer each time (what
`asyncio.timeout` or `call_later` + `cancel` do) was a fifth of the CPU of delivering an
event to many streams. Here the timer outlives the operation that armed it and serves the
ones after it.

`within`: `asyncio.timeout` for the short waits of the request path, all of one loop's
under one coarse timer.
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


class _Watchdog:
    """One event loop's coarse timer over the operations in flight: it looks every `TICK`
    seconds while any are, and cancels the task of each one past its deadline."""

    __slots__ = ("live", "loop", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.live: set[Within] = set()
        self.timer: asyncio.TimerHandle | None = None

    def watch(self, op: Within) -> None:
        self.live.add(op)
        if self.timer is None:
            self.timer = self.loop.call_later(TICK, self._look)

    def _look(self) -> None:
        self.timer = None
        now = self.loop.time()
        for op in [op for op in self.live if op.due <= now]:
            self.live.discard(op)
            op.expire()
        if self.live:
            self.timer = self.loop.call_later(TICK, self._look)


# How late a `within` deadline may be noticed. Its users wait seconds (a request body, a
# Redis reply), so a tenth of a second either way changes nothing.
TICK = 0.1

_watchdog: _Watchdog | None = None


class Within:
    """`async with within(seconds):` is `asyncio.timeout(seconds)` for the request path:
    TimeoutError when the block takes longer (up to `TICK` late), the same cancellation
    rules, but no timer of its own. A callback passes three of these (its body, its Redis
    write, the write's batch); asyncio's scheduled and cancelled a timer each time, through
    a pure-Python context manager: 8-10 us each where this costs under 2 (uvloop, this
    machine, a loop of 200,000)."""

    __slots__ = ("_cancelling", "_dog", "_task", "due", "expired")

    def __init__(self, seconds: float):
        self.due = seconds
        self.expired = False

    async def __aenter__(self) -> Within:
        global _watchdog
        loop = asyncio.get_running_loop()
        dog = _watchdog
        if dog is None or dog.loop is not loop:
            _watchdog = dog = _Watchdog(loop)
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("within() must be used inside a task")
        self._dog, self._task = dog, task
        self._cancelling = task.cancelling()
        self.due += loop.time()
        dog.watch(self)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._dog.live.discard(self)
        # As asyncio.timeout: only our own cancellation becomes TimeoutError; one that came
        # from outside as well is left standing.
        if self.expired and self._task.uncancel() <= self._cancelling and kind is asyncio.CancelledError:
            raise TimeoutError from exc

    def expire(self) -> None:
        self.expired = True
        self._task.cancel()


def within(seconds: float) -> Within:
    return Within(seconds)
