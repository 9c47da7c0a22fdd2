"""The reconciler: no task stays pending forever.

Every instance runs one. Each pass takes the open tasks that have not changed for
`RELAY_RECONCILE_AFTER` seconds, and for each one it wins a lease on, asks the provider
where the task stands and feeds the answer through the same `ingest` as a callback.
The lease lives as long as the task's poll interval and is never released early, so
across all instances a task is polled at most once per interval; the interval grows
with the task's age (KIE asks for gentle polling). Past `RELAY_TASK_DEADLINE` the task
fails with `timeout`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from relay import keys, metrics
from relay.backends.base import Coordination, TaskStore
from relay.errors import ProviderError, RelayError
from relay.ingest import Ingestor
from relay.mirror import Mirror
from relay.models import Status, Task, TaskError, TaskUpdate
from relay.providers.base import Provider
from relay.settings import Settings

log = logging.getLogger("relay.reconcile")

BATCH = 100
MAX_POLL_INTERVAL = 30.0

class RateLimiter:
    """Spaces calls at least 1/rate seconds apart: status queries stay gentle however many
    tasks are due at once."""

    def __init__(self, rate: float):
        self._gap = 1.0 / rate
        self._next = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        delay = self._next - now
        self._next = max(now, self._next) + self._gap
        if delay > 0:
            await asyncio.sleep(delay)


class Reconciler:
    def __init__(
        self,
        store: TaskStore,
        coordination: Coordination,
        provider: Provider,
        ingestor: Ingestor,
        settings: Settings,
        *,
        mirror: Mirror | None = None,
    ):
        self.store = store
        self.coordination = coordination
        self.provider = provider
        self.ingestor = ingestor
        self.settings = settings
        self.mirror = mirror
        self.limiter = RateLimiter(settings.reconcile_rate)

    def poll_interval(self, age: float) -> float:
        """Short at first, then longer: about a tenth of the task's age, within bounds."""
        return min(max(self.settings.reconcile_interval, age * 0.1), MAX_POLL_INTERVAL)

    async def run(self) -> None:
        while True:
            try:
                await self.pass_once()
            except RelayError as exc:
                log.warning("reconcile pass failed: %s", exc.message)
            except Exception:
                log.exception("reconcile pass crashed; continuing")
            # Jitter keeps many instances from waking in lockstep.
            await asyncio.sleep(self.settings.reconcile_interval * random.uniform(0.8, 1.2))

    async def pass_once(self) -> int:
        """One sweep over due tasks; returns how many this instance checked."""
        now = time.time()
        if self.mirror is not None:
            # Tasks that completed with the provider's URLs because saving failed: try
            # again, as gently as status polls (the same lease keeps instances apart).
            for task_id in self.mirror.pending_retries()[:BATCH]:
                task = await self.store.get(task_id)
                age = now - task.created_at.timestamp() if task else 0.0
                if await self.coordination.claim(keys.lease(task_id), self.poll_interval(age)) is None:
                    await self.mirror.retry(task_id)
        due = await self.store.open_tasks(now - self.settings.reconcile_after, BATCH)
        checked = 0
        for task_id in due:
            task = await self.store.get(task_id)
            if task is None or task.terminal:
                continue
            age = now - task.created_at.timestamp()
            held = await self.coordination.claim(keys.lease(task_id), self.poll_interval(age)) is not None
            if held and age <= self.settings.task_deadline:
                continue  # another instance (or an earlier pass) polled it this interval
            # Past the deadline no lease holds the task back: it ends now, one way or the other.
            checked += 1
            try:
                await self.check(task, age)
            except RelayError as exc:
                log.warning("could not reconcile: %s", exc.message, extra={"task_id": task_id})
        return checked

    async def check(self, task: Task, age: float) -> None:
        if task.provider_result_urls:
            # The provider succeeded; only saving the results is outstanding.
            if age > self.settings.task_deadline or self.mirror is None:
                await self.ingestor.apply(
                    TaskUpdate(
                        task.task_id,
                        Status.COMPLETED,
                        result_urls=task.provider_result_urls,
                        mirror_error="saving the results did not finish in time; these are the provider's URLs",
                    )
                )
            else:
                # The instance that was saving them may have died: save them here.
                await self.mirror.on_stuck(task)
            return
        # Even at the deadline, ask once more: the result may exist and only its callback
        # was lost.
        await self.limiter.wait()
        try:
            changed = await self.ingestor.report(await self.provider.status(task.task_id, task.model))
            metrics.RECONCILER_POLLS.labels("changed" if changed else "unchanged").inc()
        except ProviderError as exc:
            metrics.RECONCILER_POLLS.labels("error").inc()
            log.warning("status query failed: %s", exc.message, extra={"task_id": task.task_id})
        if age > self.settings.task_deadline:
            await self._time_out(task)  # a no-op if the poll just finished it

    async def _time_out(self, task: Task) -> None:
        minutes = self.settings.task_deadline / 60
        await self.ingestor.apply(
            TaskUpdate(
                task.task_id,
                Status.FAILED,
                error=TaskError("timeout", f"the provider did not finish the task within {minutes:g} minutes"),
            )
        )
        log.warning("task timed out", extra={"task_id": task.task_id})
