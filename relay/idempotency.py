"""Creating a task costs money, so creation is idempotent twice over: an `Idempotency-Key`
returns the first task made with it for 24 h, and an identical request from the same
caller within a few seconds (a double click) returns the task the first one made.

The first request claims a key in the store (SET NX); concurrent duplicates wait for the
claim to settle into a task id instead of calling the provider themselves. A claim that
is never settled (its request failed, or its instance died) expires within CLAIM_TTL, so
it never blocks a retry for long. Once the provider has accepted a task it is paid for:
if storing it fails (the store went down), a background job keeps storing it and
settling the key until the store is back, so a retry with the same key gets that task
instead of paying for another.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable

from relay import keys
from relay.backends.base import Coordination
from relay.background import Supervisor
from relay.errors import RelayError, ServiceUnavailable
from relay.retry import Backoff, retry

log = logging.getLogger("relay.idempotency")

KEY_TTL = 24 * 3600.0
DOUBLE_CLICK_TTL = 5.0
# An unsettled claim: longer than a provider create takes (its timeout plus retries),
# short enough that a claim whose request died does not hold its key for long.
CLAIM_TTL = 60.0
# How long a duplicate waits for the first request's provider call before giving up.
WAIT_FOR_FIRST = 20.0
# How long a paid-for task whose storing failed is retried in the background.
SETTLE_FOR = 600.0

Step = Callable[[], Awaitable[None]]


def claim_key(caller: str, idempotency_key: str | None, fingerprint: bytes) -> tuple[str, float]:
    """The store key and its lifetime for this request."""
    h = hashlib.sha256(caller.encode() + b"\0")
    if idempotency_key is not None:
        h.update(b"key\0" + idempotency_key.encode())
        return keys.idempotency(h.hexdigest()), KEY_TTL
    h.update(b"body\0" + fingerprint)
    return keys.idempotency(h.hexdigest()), DOUBLE_CLICK_TTL


class Settler:
    """Finishes, in the background, creations the provider accepted but the store did not
    take: retried until the store is back (or SETTLE_FOR passes, which is logged as an
    error: a paid task nobody can see)."""

    def __init__(self, supervisor: Supervisor, *, give_up_after: float = SETTLE_FOR):
        self.supervisor = supervisor
        self.give_up_after = give_up_after

    def defer(self, task_id: str, step: Step) -> None:
        self.supervisor.spawn(self._until_done(task_id, step), name=f"settle-{task_id}")

    async def _until_done(self, task_id: str, step: Step) -> None:
        try:
            await retry(
                step,
                should_retry=lambda exc: isinstance(exc, RelayError),
                backoff=Backoff(0.1, 1.0),
                budget=self.give_up_after,
            )
        except RelayError as exc:
            log.error("gave up storing a task the provider accepted: %s", exc.message, extra={"task_id": task_id})
            return
        log.info("stored a task the provider accepted while the store was away", extra={"task_id": task_id})


async def once(
    store: Coordination,
    key: str,
    ttl: float,
    begin: Callable[[], Awaitable[tuple[str, Step]]],
    settler: Settler,
) -> tuple[str, bool]:
    """Create at most once per key. `begin` pays the provider and returns the new task's
    id and the step that stores it. Returns the task id and whether this call created it."""
    holder = await store.claim(key, CLAIM_TTL)
    if holder is None:
        try:
            task_id, store_task = await begin()
        except BaseException:
            with contextlib.suppress(RelayError):
                await store.release(key)  # a failed create must not block a retry
            raise

        async def finish() -> None:
            await store_task()
            await store.settle(key, task_id, ttl)

        try:
            await finish()
        except RelayError:
            # Paid for, but not stored: never let it be orphaned, and never pay again.
            settler.defer(task_id, finish)
            raise
        return task_id, True
    if holder:
        return holder, False
    try:
        async with asyncio.timeout(WAIT_FOR_FIRST):
            while not (holder := await store.peek(key)):
                if holder is None:
                    # The first request failed and released the key: let the caller retry.
                    raise ServiceUnavailable(
                        "an identical request failed a moment ago; retry",
                        code="duplicate_failed",
                        headers={"Retry-After": "1"},
                    )
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise ServiceUnavailable(
            "an identical request is still being created; retry in a few seconds",
            code="duplicate_in_progress",
            headers={"Retry-After": "2"},
        ) from None
    return holder, False
