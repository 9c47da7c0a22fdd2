"""The one retry helper, in-process: it stops at its attempts and its budget, never
retries what it is told not to, and honours a failure's own wait."""

from __future__ import annotations

import time

import pytest

from relay.retry import Backoff, retry

pytestmark = pytest.mark.inprocess

QUICK = Backoff(0.001, 0.002)


class Flaky:
    def __init__(self, failures: int, exc: Exception | None = None):
        self.failures = failures
        self.calls = 0
        self.exc = exc or ConnectionError("down")

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "ok"


async def test_retries_until_it_works_and_reports_each_retry() -> None:
    op, heard = Flaky(2), []
    result = await retry(op, should_retry=lambda e: True, backoff=QUICK, attempts=5,
                         on_retry=lambda e, wait: heard.append(wait))
    assert (result, op.calls, len(heard)) == ("ok", 3, 2)


async def test_stops_at_its_attempts_with_the_last_failure() -> None:
    op = Flaky(10)
    with pytest.raises(ConnectionError):
        await retry(op, should_retry=lambda e: True, backoff=QUICK, attempts=3)
    assert op.calls == 3


async def test_never_retries_what_it_is_told_not_to() -> None:
    op = Flaky(1, ValueError("bad input"))
    with pytest.raises(ValueError):
        await retry(op, should_retry=lambda e: isinstance(e, ConnectionError), backoff=QUICK, attempts=5)
    assert op.calls == 1


async def test_a_wait_past_the_budget_is_not_taken() -> None:
    op = Flaky(10)
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        await retry(op, should_retry=lambda e: True, backoff=QUICK, budget=0.5, wait_hint=lambda e: 1.0)
    assert op.calls == 1 and time.monotonic() - started < 0.5


def test_backoff_grows_with_jitter_up_to_its_cap() -> None:
    backoff = Backoff(1.0, 4.0)
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (9, 4.0)):
        waits = [backoff.delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
