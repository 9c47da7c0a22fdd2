"""Creating a task costs money, so creation is idempotent twice over: an `Idempotency-Key`
returns the first task made with it for 24 h, and an identical request from the same
caller within a few seconds (a double click) returns the task the first one made.

The first request claims a key in the store (SET NX); concurrent duplicates wait for the
claim to settle into a task id instead of calling the provider themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

from relay import keys
from relay.backends.base import TaskStore
from relay.errors import ServiceUnavailable

KEY_TTL = 24 * 3600.0
DOUBLE_CLICK_TTL = 5.0
# How long a duplicate waits for the first request's provider call before giving up.
WAIT_FOR_FIRST = 20.0


def claim_key(caller: str, idempotency_key: str | None, fingerprint: bytes) -> tuple[str, float]:
    """The store key and its lifetime for this request."""
    h = hashlib.sha256(caller.encode() + b"\0")
    if idempotency_key is not None:
        h.update(b"key\0" + idempotency_key.encode())
        return keys.idempotency(h.hexdigest()), KEY_TTL
    h.update(b"body\0" + fingerprint)
    return keys.idempotency(h.hexdigest()), DOUBLE_CLICK_TTL


async def once(store: TaskStore, key: str, ttl: float, create: Callable[[], Awaitable[str]]) -> tuple[str, bool]:
    """Run `create` (returning a task id) at most once per key. Returns the task id and
    whether this call created it."""
    holder = await store.claim(key, ttl)
    if holder is None:
        try:
            task_id = await create()
        except BaseException:
            await store.release(key)  # a failed create must not block a retry
            raise
        await store.settle(key, task_id, ttl)
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
