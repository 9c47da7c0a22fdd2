"""Rebuilding a task whose record is gone (Redis restarted without persistence, or the
record expired) from what outlives it: the task metadata in object storage (terminal
tasks) or the provider's own copy of the create request and the task's state."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlsplit

from relay import auth, parked
from relay.backends.base import TaskStore
from relay.backends.objects import ObjectStorage
from relay.catalogue import Catalogue
from relay.errors import NotFound, RelayError
from relay.ingest import Ingestor
from relay.models import Mode, ProviderReport, Status, Task, utcnow
from relay.providers.base import Provider
from relay.storage_keys import metadata_key

log = logging.getLogger("relay.recovery")


class Recovery:
    def __init__(
        self, store: TaskStore, storage: ObjectStorage, provider: Provider, ingestor: Ingestor, catalogue: Catalogue
    ):
        self.catalogue = catalogue
        self.store = store
        self.storage = storage
        self.provider = provider
        self.ingestor = ingestor

    async def load(self, task_id: str) -> Task | None:
        """The stored task, or a rebuilt one, or None when nothing knows it any more."""
        task = await self.store.get(task_id)
        if task is not None:
            return task
        report = None
        rebuilt = await self._from_metadata(task_id)
        if rebuilt is None:
            found = await self._from_provider(task_id)
            if found is None:
                return None
            rebuilt, report = found
        if await self.store.insert(rebuilt):
            log.warning("rebuilt a lost task record", extra={"task_id": task_id, "status": rebuilt.status.value})
            if report is not None:
                await self.ingestor.report(report)
        # Callbacks that arrived while the record was missing were parked.
        await parked.apply(self.store, self.ingestor, rebuilt)
        return await self.store.get(task_id)

    async def _from_metadata(self, task_id: str) -> Task | None:
        try:
            raw = await self.storage.get(metadata_key(task_id))
        except NotFound:
            return None
        except RelayError as exc:
            log.warning("task metadata unavailable: %s", exc.message, extra={"task_id": task_id})
            return None
        try:
            return Task.from_record(raw)
        except (ValueError, KeyError, TypeError):
            log.warning("task metadata is unreadable", extra={"task_id": task_id})
            return None

    async def _from_provider(self, task_id: str) -> tuple[Task, ProviderReport] | None:
        try:
            info = await self.provider.describe(task_id)
        except RelayError as exc:
            log.warning("could not ask the provider about a lost task: %s", exc.message, extra={"task_id": task_id})
            return None
        if info is None:
            return None
        token = None
        if info.callback_url:
            token = parse_qs(urlsplit(info.callback_url).query).get("token", [None])[0]
        now = utcnow()
        task = Task(
            task_id=task_id,
            provider=info.provider,
            model=info.model,
            mode=Mode.IMAGE_TO_IMAGE if info.image_urls else Mode.TEXT_TO_IMAGE,
            kind=spec.kind if (spec := self.catalogue.models.get(info.model)) else "image",
            status=Status.PENDING,
            prompt=info.prompt,
            image_urls=info.image_urls,
            created_at=info.created_at or now,
            updated_at=now,
            callback_hash=auth.token_hash(token) if token else "",
        )
        # Stored as pending; the provider's report then moves it the usual way.
        return task, info.report
