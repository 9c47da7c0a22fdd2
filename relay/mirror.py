"""Copy finished results into our storage, then complete the task with our URLs.

Hangs off `Ingestor.listeners`: when a task newly holds the provider's result URLs while
still `processing`, a background job downloads each one (through the SSRF-safe
downloader) and stores it under `generated/{taskId}/{n}.{ext}`, then ingests `completed`
with our URLs. Every terminal state is also written as `kie-tasks/{taskId}.json`.

Keys are deterministic, so a retry or a re-run after a crash overwrites instead of
duplicating. A successful generation is never lost to a storage hiccup: transient failures
retry with backoff, and when the job gives up the task completes with the provider's URLs
and a `mirrorError`; `retry(task_id)` (the reconciler's later pass) tries again and, on
success, swaps in our URLs (`TaskUpdate.mirrored`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from relay import keys, metrics
from relay.backends.base import Coordination
from relay.backends.objects import ObjectStorage
from relay.background import Supervisor
from relay.downloader import Download, Downloader
from relay.errors import RelayError, ResultGone
from relay.ingest import Ingestor
from relay.models import Status, Task, TaskUpdate
from relay.retry import Backoff, retry
from relay.storage_keys import metadata_key, result_key

log = logging.getLogger("relay.mirror")

T = TypeVar("T")

# A running copy renews its task's lease every third of this: an instance that dies
# frees its copies for another instance within this many seconds.
COPY_LEASE = 15.0

# Ids kept for the reconciler's later pass; beyond this the oldest are dropped (and
# logged), so a long storage outage cannot grow memory without bound.
MAX_PENDING = 10_000
# Metadata copies in flight at once. On S3 each is a PUT (about this many per round
# trip); on local files the waiting ones share one thread hop (relay/backends/files.py),
# so more in flight means fewer hops: per-task bench, completed event p50 11.4 / 11.5 ms
# with 4, 9.7 / 8.9 with 8, 8.6 / 8.4 with 16.
METADATA_WRITERS = 16
COPY, METADATA = "copy", "metadata"

# KIE's download links live 20 minutes; one older than this is renewed before use.
STALE_LINK = 300.0


@dataclass(frozen=True, slots=True)
class _Results:
    urls: tuple[str, ...]
    kind: str  # image, video or audio: what the files must be
    reported_at: float  # when the provider handed out these links (unix time)


def _reason(exc: BaseException) -> str:
    return exc.message if isinstance(exc, RelayError) else f"{type(exc).__name__}: {exc}"


def _retryable(exc: Exception) -> bool:
    # Policy and content refusals (4xx-class errors) will fail the same way next time.
    return not (isinstance(exc, RelayError) and exc.status < 500)


class Mirror:
    def __init__(
        self,
        *,
        storage: ObjectStorage,
        downloader: Downloader,
        ingestor: Ingestor,
        supervisor: Supervisor,
        coordination: Coordination,
        enabled: bool = True,
        fresh_url: Callable[[str], Awaitable[str | None]] | None = None,
        attempts: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        concurrency: int = 8,
    ):
        self.storage = storage
        self.downloader = downloader
        self.ingestor = ingestor
        self.supervisor = supervisor
        self.coordination = coordination  # the task's lease while its copy runs
        self.enabled = enabled
        # The provider's "give me a new link" (KIE's download-url), when it has one.
        self.fresh_url = fresh_url
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        # Each download is held in memory (up to RELAY_MAX_DOWNLOAD) until stored.
        self._slots = asyncio.Semaphore(concurrency)
        self._jobs: dict[str, asyncio.Task[bool]] = {}
        # Task id -> what it still needs ("copy", "metadata"); insertion-ordered.
        self._pending: dict[str, set[str]] = {}
        # Metadata copies are bookkeeping for recovery: a few writers take them from a queue,
        # so that a burst of completions is not slowed by its own copies (a writer task per
        # completion, 2,000 at once, took the completed event's p50 from ~11 to ~21 ms in
        # the per-task bench); the copies catch up after the burst.
        self._meta_queue: asyncio.Queue[str] = asyncio.Queue()
        self._meta_dirty: set[str] = set()  # newest version not written yet
        self._meta_writing: set[str] = set()
        self._meta_writers: list[asyncio.Task[None]] = []
        # The newest terminal version this instance wrote, so the writer need not read it
        # back from the store (a round trip per finished task).
        self._meta_latest: dict[str, Task] = {}

    # ------------------------------------------------------------------ hooks

    async def on_change(self, before: Task, after: Task) -> None:
        """The `Ingestor` listener. Runs inside the write path, so it only schedules work
        and never raises."""
        if (
            self.enabled
            and after.status is Status.PROCESSING
            and after.provider_result_urls
            and after.provider_result_urls != before.provider_result_urls
        ):
            self._start_job(after, self.attempts)
        if after.terminal:
            self._request_metadata(after)

    def pending_retries(self) -> list[str]:
        """Ids of tasks that still need a mirror pass (completed with the provider's URLs
        and a `mirrorError`, or whose metadata could not be written), oldest first."""
        return list(self._pending)

    async def retry(self, task_id: str) -> bool:
        """Do whatever mirroring `task_id` still needs, once, now: copy its results if it is
        `processing` with provider URLs (a job lost to a crash or restart) or completed
        with a `mirrorError`; rewrite its metadata if that failed. True when this pass
        succeeded or there was nothing to do; False when it failed again or a job for the
        task is already running. Safe to call for any task id."""
        if task_id in self._jobs:
            return False
        task = await self.ingestor.store.get(task_id)
        if task is None:
            self._pending.pop(task_id, None)
            return True
        if self._needs_copy(task):
            # Registered as the task's job, so a concurrent callback cannot start another;
            # shielded, so a cancelled caller does not abandon a half-done copy.
            try:
                return await asyncio.shield(self._start_job(task, 1))
            except Exception as exc:
                log.warning("mirror retry failed: %s", _reason(exc), extra={"task_id": task_id})
                return False
        self._resolve(task_id, COPY)  # nothing to copy (any more): another pass did it
        if task.terminal and METADATA in self._pending.get(task_id, ()):
            return await self._write_metadata(task_id, attempts=1)
        return True

    async def on_stuck(self, task: Task) -> None:
        """`Reconciler(on_stuck_mirror=...)`: a task the provider finished long ago is still
        `processing` (the job was lost with its process); one pass now."""
        await self.retry(task.task_id)

    def _needs_copy(self, task: Task) -> bool:
        return self.enabled and bool(task.provider_result_urls) and (
            task.status is Status.PROCESSING
            or (task.status is Status.COMPLETED and task.mirror_error is not None)
        )

    # ------------------------------------------------------------------ copy job

    def _start_job(self, task: Task, attempts: int) -> asyncio.Task[bool]:
        task_id = task.task_id
        running = self._jobs.get(task_id)
        if running is not None:
            return running
        # The provider's links date from its report, which is this version of the task.
        results = _Results(task.provider_result_urls, task.kind, task.updated_at.timestamp())
        job = self.supervisor.spawn(self._mirror(task_id, results, attempts), name=f"mirror-{task_id}")
        self._jobs[task_id] = job
        job.add_done_callback(lambda done: self._jobs.pop(task_id, None) if self._jobs.get(task_id) is done else None)
        return job

    async def _mirror(self, task_id: str, results: _Results, attempts: int) -> bool:
        # One copy slot per task (its files are held in memory one at a time). The task's
        # reconcile lease is taken only once the copy starts, and kept short and renewed
        # while it runs: another instance's reconciler then knows this copy is alive, and
        # takes over within COPY_LEASE seconds of this instance dying.
        async with self._slots:
            lease = keys.lease(task_id)
            with contextlib.suppress(RelayError):
                await self.coordination.settle(lease, "mirroring", COPY_LEASE)
            heartbeat = asyncio.create_task(self._renew(lease), name=f"mirror-lease-{task_id}")
            try:
                current = await self.ingestor.store.get(task_id)
                if current is None or not self._needs_copy(current):
                    # Another instance copied it while this job waited for a slot.
                    self._resolve(task_id, COPY)
                    return True
                return await self._mirror_holding_lease(task_id, results, attempts)
            finally:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
                with contextlib.suppress(RelayError):
                    await self.coordination.release(lease)

    async def _renew(self, lease: str) -> None:
        while True:
            await asyncio.sleep(COPY_LEASE / 3)
            try:
                await self.coordination.settle(lease, "mirroring", COPY_LEASE)
            except RelayError as exc:
                log.warning("could not renew a mirror lease: %s", exc.message)

    async def _mirror_holding_lease(self, task_id: str, results: _Results, attempts: int) -> bool:
        urls = results.urls
        try:
            ours = await self._copy(task_id, results, attempts)
        except Exception as exc:
            reason = _reason(exc)
            log.warning("mirroring gave up, keeping the provider's URLs: %s", reason, extra={"task_id": task_id})
            metrics.MIRROR.labels("gave_up").inc()
            # Remembered before the write: if the store is down too, the reconciler's pass
            # still finds this task instead of leaving it `processing`.
            self._remember(task_id, COPY)
            current = await self.ingestor.store.get(task_id)
            if current is not None and not current.terminal:
                await self.ingestor.apply(
                    TaskUpdate(task_id, Status.COMPLETED, result_urls=urls, mirror_error=reason)
                )
            return False
        try:
            current = await self.ingestor.store.get(task_id)
            if current is None:
                self._resolve(task_id, COPY)
                return True  # expired or deleted meanwhile: nothing to complete
            # A task that already completed with the provider's URLs takes ours only
            # through the `mirrored` path of the status machine.
            update = TaskUpdate(task_id, Status.COMPLETED, result_urls=ours, mirrored=current.terminal)
            await self.ingestor.apply(update)
        except Exception:
            self._remember(task_id, COPY)
            raise
        self._resolve(task_id, COPY)
        metrics.MIRROR.labels("mirrored").inc()
        log.info("mirrored %d result(s)", len(ours), extra={"task_id": task_id})
        return True

    async def _copy(self, task_id: str, results: _Results, attempts: int) -> tuple[str, ...]:
        ours: list[str] = []
        urls = results.urls
        stale = time.time() - results.reported_at > STALE_LINK
        for n, url in enumerate(urls):
            where = f"result {n + 1} of {len(urls)}"
            try:
                download = await self._download(url, results.kind, attempts, refresh_first=stale)
            except Exception as exc:
                raise RelayError(f"could not download {where}: {_reason(exc)}") from exc
            key = result_key(task_id, n, download.media.ext)
            store = partial(self.storage.put, key, download.data, download.media.content_type)
            try:
                ours.append(await self._attempt(store, attempts))
            except Exception as exc:
                raise RelayError(f"could not store {where} as {key}: {_reason(exc)}") from exc
        return tuple(ours)

    async def _download(self, url: str, kind: str, attempts: int, *, refresh_first: bool) -> Download:
        """One result, through a fresh link when the provider's may have expired: first if
        it is old, and again if the host says it is gone (403/404/410)."""
        if refresh_first and self.fresh_url is not None:
            url = await self.fresh_url(url) or url
        try:
            return await self._attempt(partial(self.downloader.fetch, url, kind), attempts)
        except ResultGone:
            fresh = await self.fresh_url(url) if self.fresh_url is not None else None
            if fresh is None or fresh == url:
                raise
            log.info("the provider's link had expired; mirroring through a fresh one")
            metrics.MIRROR.labels("fresh_link").inc()
            return await self._attempt(partial(self.downloader.fetch, fresh, kind), attempts)

    async def _attempt(self, op: Callable[[], Awaitable[T]], attempts: int) -> T:
        """`op()`, retried with jittered exponential backoff while the failure is transient."""

        def note(exc: Exception, wait: float) -> None:
            log.info("mirror step failed (%s); retrying in %.2fs", _reason(exc), wait)

        return await retry(
            op,
            should_retry=_retryable,
            backoff=Backoff(self.backoff, self.max_backoff),
            attempts=attempts,
            on_retry=note,
        )

    # ------------------------------------------------------------------ metadata

    def _request_metadata(self, task: Task) -> None:
        # Coalesced: a task is queued once however often it changes, and written by one
        # writer at a time, always its newest version, so writes can never leave an older
        # version behind.
        task_id = task.task_id
        known = self._meta_latest.get(task_id)
        if known is None or task.version > known.version:
            self._meta_latest[task_id] = task
        if task_id in self._meta_dirty:
            return
        self._meta_dirty.add(task_id)
        if task_id not in self._meta_writing:  # else its writer queues it again when done
            self._meta_queue.put_nowait(task_id)
        if not self._meta_writers:
            self._meta_writers = [
                self.supervisor.spawn(self._metadata_writer(), name=f"metadata-writer-{n}")
                for n in range(METADATA_WRITERS)
            ]

    async def _metadata_writer(self) -> None:
        while True:
            task_id = await self._meta_queue.get()
            self._meta_dirty.discard(task_id)
            self._meta_writing.add(task_id)
            try:
                await self._write_metadata(task_id, attempts=self.attempts)
            finally:
                self._meta_writing.discard(task_id)
                if task_id in self._meta_dirty:
                    self._meta_queue.put_nowait(task_id)  # changed while it was written
                else:
                    self._meta_latest.pop(task_id, None)

    async def _write_metadata(self, task_id: str, *, attempts: int) -> bool:
        async def write() -> None:
            task = self._meta_latest.get(task_id) or await self.ingestor.store.get(task_id)
            if task is not None and task.terminal:
                await self.storage.put(metadata_key(task_id), task.public_json, "application/json")

        try:
            await self._attempt(write, attempts)
        except Exception as exc:
            log.warning("could not write task metadata: %s", _reason(exc), extra={"task_id": task_id})
            self._remember(task_id, METADATA)
            return False
        self._resolve(task_id, METADATA)
        return True

    # ------------------------------------------------------------------ bookkeeping

    def _remember(self, task_id: str, what: str) -> None:
        needs = self._pending.pop(task_id, set())
        needs.add(what)
        self._pending[task_id] = needs  # re-inserted: newest last
        while len(self._pending) > MAX_PENDING:
            dropped = next(iter(self._pending))
            del self._pending[dropped]
            log.warning("too many tasks await a mirror retry; dropped the oldest", extra={"task_id": dropped})

    def _resolve(self, task_id: str, what: str) -> None:
        needs = self._pending.get(task_id)
        if needs is not None:
            needs.discard(what)
            if not needs:
                del self._pending[task_id]
