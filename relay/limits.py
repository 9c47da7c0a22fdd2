"""Per-client limits: request rates (shared across instances through the coordination seam) and open
streams (per instance, where the connections are)."""

from __future__ import annotations

import time
from collections import Counter

from relay import keys
from relay.backends.base import Coordination
from relay.errors import RateLimited


class RateLimit:
    """Fixed windows: cheap (one INCR per request) and good enough to stop floods."""

    def __init__(self, coordination: Coordination, scope: str, limit: int, window: float = 60.0):
        self.coordination = coordination
        self.scope = scope
        self.limit = limit
        self.window = window
        # Clients seen over the limit, until their window ends: refused without a store trip.
        self._blocked: dict[str, float] = {}

    async def check(self, client: str) -> None:
        """Count one request; 429 once the client's window is full."""
        self.refuse_if_blocked(client)
        now = time.time()
        index = int(now // self.window)
        count = await self.coordination.hit(keys.rate(self.scope, client, index), self.window)
        if count > self.limit:
            if len(self._blocked) > 10_000:
                self._blocked = {c: t for c, t in self._blocked.items() if t > now}
            self._blocked[client] = (index + 1) * self.window
            self.refuse_if_blocked(client)

    def refuse_if_blocked(self, client: str) -> None:
        until = self._blocked.get(client)
        if until is None:
            return
        now = time.time()
        if until <= now:
            del self._blocked[client]
            return
        retry_after = max(1, int(until - now) + 1)
        raise RateLimited(
            f"too many {self.scope} requests: at most {self.limit} per {self.window:g} s; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


class StreamCap:
    def __init__(self, limit: int):
        self.limit = limit
        self._open: Counter[str] = Counter()

    def acquire(self, client: str) -> None:
        if self._open[client] >= self.limit:
            raise RateLimited(
                f"too many open streams: at most {self.limit} per client; close some, or use one "
                "/api/events stream for several tasks",
                code="too_many_streams",
                headers={"Retry-After": "5"},
            )
        self._open[client] += 1

    def release(self, client: str) -> None:
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]

    @property
    def total(self) -> int:
        return sum(self._open.values())
