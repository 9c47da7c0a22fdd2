"""Users' credits (RELAY_CREDITS=on, with RELAY_AUTH=jwt): what a create reserves, and when
a reservation settles or comes back. The moves themselves are atomic in the ledger
(relay/backends/ledger.py); this module decides which move a task's life calls for.

- A create reserves the model's price before the provider is called (402 when short).
- The task's terminal change settles it (completed) or refunds it (failed, cancelled,
  timed out): an ingest listener, so every writer (callbacks, reconciler, cancel) counts.
- A sweep finishes what a crash left held: a hold whose task is terminal is finished as
  its status says; a hold whose task never got stored is refunded.
"""

from __future__ import annotations

import logging
import secrets
import time

from relay.backends.base import Hold, Ledger, Outcome, TaskStore
from relay.errors import RelayError
from relay.models import Status, Task

log = logging.getLogger("relay.credits")

# A hold with no stored task after this long was never created (the create failed, or
# its instance died between the provider and the store): it is refunded.
ORPHAN_AFTER = 900.0
SWEEP_BATCH = 200


class InsufficientCredits(RelayError):
    status = 402
    code = "insufficient_credits"

    def __init__(self, balance: int, price: int):
        super().__init__(
            f"this generation costs {price} credit{'s' if price != 1 else ''}; the balance is {balance}",
            extra={"balance": balance, "price": price},
        )


def outcome_of(task: Task) -> tuple[Outcome, str]:
    if task.status is Status.COMPLETED:
        return "settle", "task completed"
    return "refund", f"task {task.status.value}"


class Accounts:
    def __init__(self, ledger: Ledger, store: TaskStore, *, welcome: int = 0):
        self.ledger = ledger
        self.store = store
        self.welcome = welcome

    async def greet(self, user: str) -> None:
        """A user's first sight grants RELAY_WELCOME_CREDITS (once, atomically)."""
        if self.welcome > 0:
            await self.ledger.welcome(user, self.welcome)

    async def reserve(self, user: str, price: int) -> str:
        """Take `price` from `user` under a new hold id, or raise 402."""
        await self.greet(user)
        hold_id = secrets.token_urlsafe(12)
        reserved = await self.ledger.reserve(user, hold_id, price)
        if not reserved.taken:
            raise InsufficientCredits(reserved.balance, price)
        return hold_id

    async def refund(self, hold_id: str, reason: str) -> None:
        await self.ledger.finish(hold_id, "refund", reason)

    async def on_change(self, before: Task, after: Task) -> None:
        """The ingest listener: a terminal change finishes the task's hold."""
        hold = after.extra.get("hold")
        if not hold or not after.terminal or before.terminal:
            return
        outcome, reason = outcome_of(after)
        if await self.ledger.finish(str(hold), outcome, reason):
            log.info("credits %s: %s", "settled" if outcome == "settle" else "refunded", reason,
                     extra={"task_id": after.task_id})

    async def sweep(self, now: float | None = None) -> int:
        """Finish holds a crash left open; how many were finished."""
        now = time.time() if now is None else now
        finished = 0
        for hold in await self.ledger.open_holds(now - 60, SWEEP_BATCH):
            if await self._settle_left(hold, now):
                finished += 1
        return finished

    async def _settle_left(self, hold: Hold, now: float) -> bool:
        task = await self.store.get(hold.task) if hold.task else None
        if task is None:
            if now - hold.created < ORPHAN_AFTER:
                return False  # its create may still be storing it
            return await self.ledger.finish(hold.hold_id, "refund", "task never created")
        if not task.terminal:
            return False  # the deadline will end it
        outcome, reason = outcome_of(task)
        return await self.ledger.finish(hold.hold_id, outcome, reason)
