"""The one way Relay retries: bounded in attempts and in time, exponential backoff with
jitter (so many instances retrying at once do not stay in step), and the caller's say in
what is worth retrying and how long a particular failure asks to wait."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float  # the first wait, in seconds (before jitter)
    cap: float  # no wait is longer

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1, 2, ...)."""
        return random.uniform(0.5, 1.0) * min(self.cap, self.base * 2.0 ** (attempt - 1))


def _no_hint(exc: Exception) -> float | None:
    return None


async def retry(
    op: Callable[[], Awaitable[T]],
    *,
    should_retry: Callable[[Exception], bool],
    backoff: Backoff,
    attempts: int | None = None,
    budget: float | None = None,
    wait_hint: Callable[[Exception], float | None] = _no_hint,
    on_retry: Callable[[Exception, float], None] | None = None,
) -> T:
    """`await op()`, again after a failure `should_retry` accepts, until it succeeds, the
    attempts run out, or the next wait would pass `budget` seconds from the start; then the
    last failure is raised as it was. `wait_hint` may name a failure's own wait (a
    Retry-After); `on_retry` hears of each retry before its wait."""
    deadline = None if budget is None else time.monotonic() + budget
    attempt = 0
    while True:
        attempt += 1
        try:
            return await op()
        except Exception as exc:
            if not should_retry(exc):
                raise
            hinted = wait_hint(exc)
            wait = backoff.delay(attempt) if hinted is None else hinted
            if attempts is not None and attempt >= attempts:
                raise
            if deadline is not None and time.monotonic() + wait >= deadline:
                raise
            if on_retry is not None:
                on_retry(exc, wait)
            await asyncio.sleep(wait)  # the backoff itself, not synchronisation
