"""Callbacks that arrive before their task is stored (KIE can be faster than our write):
kept briefly, within a budget, and applied once the task exists."""

from __future__ import annotations

import dataclasses
import logging

from relay import auth, keys
from relay.backends.base import Coordination, TaskStore
from relay.errors import PayloadTooLarge, RelayError, ServiceUnavailable
from relay.http import parse_json
from relay.ingest import Ingestor
from relay.models import Task
from relay.normalize import normalize_callback

log = logging.getLogger("relay.callbacks")

PARK_TTL = 900.0
# Parking holds bodies for tasks nobody has stored yet, so it is what a holder of one
# valid callback token could fill: a few small bodies per token, a bounded number
# overall (at most PARK_MAX_BODY * PARK_MAX_ALL bytes). Genuine early callbacks are rare
# (a callback beating its own create by milliseconds) and small; a refused one gets a
# 503, and KIE's retry finds the task stored.
PARK_MAX_BODY = 64 * 1024
PARK_MAX_PER_TOKEN = 8
PARK_MAX_ALL = 500


async def park(store: TaskStore, coordination: Coordination, task_id: str, token: str, raw: bytes) -> None:
    """Keep a callback for a task not stored yet, within the budget (else a 413 or 503)."""
    size = len(raw)
    retry = {"Retry-After": "5"}
    if size > PARK_MAX_BODY:
        raise PayloadTooLarge(f"a callback for a task not stored yet may be at most {PARK_MAX_BODY} bytes")
    if await coordination.hit(keys.park_budget(auth.token_hash(token)), PARK_TTL) > PARK_MAX_PER_TOKEN:
        raise ServiceUnavailable("too many callbacks for tasks not stored yet; retry", code="park_full", headers=retry)
    if await coordination.hit(keys.park_budget("all"), PARK_TTL) > PARK_MAX_ALL:
        raise ServiceUnavailable("too many callbacks for tasks not stored yet; retry", code="park_full", headers=retry)
    await store.park_callback(task_id, token, raw, PARK_TTL)


async def apply(store: TaskStore, ingestor: Ingestor, task: Task) -> Task | None:
    """Apply callbacks that arrived before `task` was stored. Returns the newest task."""
    newest: Task | None = None
    for token, raw in await store.take_parked(task.task_id):
        if not auth.token_matches(token, task.callback_hash):
            log.warning("dropped a parked callback with another task's token", extra={"task_id": task.task_id})
            continue
        try:
            report = normalize_callback(parse_json(raw, "callback body"))
            # Parked under this task's id, which a derived task's payload does not carry.
            report = dataclasses.replace(report, task_id=task.task_id)
            newest = await ingestor.report(report) or newest
        except RelayError as exc:
            log.warning("dropped a parked callback: %s", exc.message, extra={"task_id": task.task_id})
    return newest
