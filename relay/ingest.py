"""The single write path. Callbacks, the reconciler and the mirror change a task only here.

`apply` reads the task, lets `models.transition` decide, and writes with a compare-and-set
on `version`; on a lost race it reads again and decides again. So a duplicate changes
nothing and publishes nothing, and N identical concurrent callbacks make one change.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from relay import metrics
from relay.backends.base import TaskStore
from relay.errors import ServiceUnavailable, TaskNotFound
from relay.models import ProviderReport, ProviderState, Status, Task, TaskUpdate, transition, utcnow

log = logging.getLogger("relay.ingest")

# Enough for dozens of writers racing on one task; each lost race means another writer
# made progress, so running out means something is badly wrong.
MAX_ATTEMPTS = 64

Listener = Callable[[Task, Task], Awaitable[None]]


def update_from_report(report: ProviderReport, *, mirroring: bool) -> TaskUpdate:
    """What a provider report asks of the task. With mirroring on, provider success
    leaves the task `processing` until our own copies exist."""
    tid = report.task_id
    if report.state is ProviderState.SUCCEEDED:
        if mirroring:
            return TaskUpdate(tid, Status.PROCESSING, provider_result_urls=report.result_urls, progress=1.0)
        return TaskUpdate(
            tid, Status.COMPLETED, provider_result_urls=report.result_urls, result_urls=report.result_urls
        )
    if report.state is ProviderState.FAILED:
        return TaskUpdate(tid, Status.FAILED, error=report.error)
    if report.state is ProviderState.RUNNING:
        return TaskUpdate(tid, Status.PROCESSING, progress=report.progress)
    return TaskUpdate(tid, Status.PENDING, progress=report.progress)


class Ingestor:
    def __init__(self, store: TaskStore, *, mirroring: bool = False, cache_size: int = 2_000):
        self.store = store
        self.mirroring = mirroring
        # Called after every stored change with (before, after): the mirror and metrics
        # hang off this instead of being called from every writer.
        self.listeners: list[Listener] = []
        # The last version of each unfinished task this instance read or wrote. It is only
        # ever a guess for the compare-and-set (a stale guess costs one extra read), so most
        # callbacks need a single store round trip. Finished tasks leave it: their late
        # duplicates are judged against the store anyway, and memory stays proportional to
        # the work in flight.
        self._recent: OrderedDict[str, Task] = OrderedDict()
        self._cache_size = cache_size

    async def current(self, task_id: str) -> Task | None:
        """The task, from this instance's recent memory when it has it. Only for fields
        that never change (callback hash, owner, model) or as a compare-and-set guess."""
        task = self._recent.get(task_id)
        if task is None:
            task = await self.store.get(task_id)
            if task is not None:
                self._remember(task)
        return task

    def _remember(self, task: Task) -> None:
        if task.terminal:
            self._recent.pop(task.task_id, None)
            return
        self._recent[task.task_id] = task
        self._recent.move_to_end(task.task_id)
        if len(self._recent) > self._cache_size:
            self._recent.popitem(last=False)

    async def create(self, task: Task) -> bool:
        if not await self.store.insert(task):
            return False
        self._remember(task)
        log.info("task created", extra={"task_id": task.task_id, "status": task.status.value})
        return True

    async def report(self, report: ProviderReport) -> Task | None:
        return await self.apply(update_from_report(report, mirroring=self.mirroring))

    async def apply(self, update: TaskUpdate) -> Task | None:
        """Apply `update`; return the new task, or None if nothing changed."""
        with metrics.INGEST_SECONDS.time():
            return await self._apply(update)

    async def _apply(self, update: TaskUpdate) -> Task | None:
        current = self._recent.get(update.task_id)
        fresh = current is None
        for _ in range(MAX_ATTEMPTS):
            if current is None:
                current = await self.store.get(update.task_id)
                fresh = True
                if current is None:
                    raise TaskNotFound(f"no task {update.task_id!r}")
            new = transition(current, update, utcnow())
            if new is None:
                if not fresh:
                    current = None  # judged against a guess: judge again against the store
                    continue
                self._remember(current)
                if current.terminal and update.status is not current.status:
                    log.warning(
                        "ignored %s update for a %s task",
                        update.status.value,
                        current.status.value,
                        extra={"task_id": update.task_id},
                    )
                return None
            if not await self.store.replace(new, current.version):
                current = None  # someone else wrote first: read, decide again
                continue
            self._remember(new)
            # Status changes at INFO (a few per task); progress alone at DEBUG.
            log.log(
                logging.INFO if new.status is not current.status else logging.DEBUG,
                "task %s -> %s (v%d)",
                current.status.value,
                new.status.value,
                new.version,
                extra={"task_id": new.task_id, "status": new.status.value, "version": new.version},
            )
            metrics.child(metrics.TRANSITIONS, new.status.value).inc()
            for listener in self.listeners:
                await listener(current, new)
            return new
        raise ServiceUnavailable(f"could not apply an update to {update.task_id!r}: too much contention")
