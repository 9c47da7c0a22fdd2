"""Finishing tasks and posting their callbacks the way KIE does: a 15 s answer window,
three retries, and (when switched on) the quirks KIE-API.md warns about."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import logging
import time

import httpx
import orjson

from relay.sim import shapes
from relay.sim.media import EXTENSIONS
from relay.sim.replicate_shapes import prediction
from relay.sim.state import Outcome, SimState, SimTask

logger = logging.getLogger("relay.sim")

CALLBACK_TIMEOUT_SECONDS = 15.0  # KIE gives a callback receiver 15 s to answer
RETRY_BACKOFF_SECONDS = (0.25, 0.5, 1.0)  # first attempt + up to 3 retries, like KIE
# Fractions of the generation time at which in-between callbacks go out.
STAGES = (0.35, 0.7)


def now_ms() -> int:
    return int(time.time() * 1000)


def webhook_signature(key: str, task_id: str, timestamp: int) -> str:
    """KIE's X-Webhook-Signature: base64(HMAC-SHA256(key, f"{taskId}.{timestamp}"))."""
    mac = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def result_count(state: SimState, task: SimTask) -> int:
    if task.family == "mj" and task.kind == "image":
        return 4  # Midjourney's grid: mj-callback-success-docs.json
    if task.family == "suno":
        return 2  # two tracks per generation: suno-callback-complete-docs.json
    if task.family in ("jobs", "4o") and task.kind == "image":
        return state.config.images_per_task
    return 1


def finish(state: SimState, task: SimTask, *, success: bool, code: int | None = None, msg: str | None = None) -> bytes:
    """Make the task terminal and return its canonical callback body."""
    now = now_ms()
    if success:
        ext = EXTENSIONS[task.kind]
        count = result_count(state, task)
        task.result_urls = [f"{task.base_url}/files/{task.task_id}/{n}.{ext}" for n in range(count)]
        task.outcome = Outcome(True, 200, "success", now, 1.0)
    else:
        default_code, default_msg = shapes.DEFAULT_FAILURE[task.family]
        task.outcome = Outcome(False, code or default_code, msg or default_msg, now, task.phase()[1])
        if task.family != "replicate":
            # KIE's failure callback reports no credits consumed: a failed task is not charged.
            state.credits += shapes.CREDITS_PER_TASK
    task.last_callback = orjson.dumps(shapes.callback(state, task))
    return task.last_callback


def standard_webhook_headers(secret: str, body: bytes) -> dict[str, str]:
    """Replicate's signature (Standard Webhooks): `v1,` + base64 HMAC-SHA256 of
    `id.timestamp.body` under the whsec_ secret. The id follows the body, so a retry or a
    duplicate of one delivery carries the same id, as Replicate's do."""
    msg_id = "msg_" + hashlib.sha256(body).hexdigest()[:27]
    timestamp = str(int(time.time()))
    key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": "v1," + base64.b64encode(mac).decode()}


def signed_id(task: SimTask, body: bytes) -> str:
    """The id KIE signs: the one in the body (a 4K callback carries its parent's)."""
    payload = orjson.loads(body)
    data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
    return str(data.get("taskId") or data.get("task_id") or payload.get("taskId") or task.task_id)


async def post(state: SimState, task: SimTask, body: bytes, url: str | None = None) -> int | None:
    """POST one callback with KIE's retry policy; return the last HTTP status (None: no answer)."""
    target = url or task.callback_url
    assert target is not None
    task.callbacks_sent += 1  # before any await, so observers see the decision immediately
    status: int | None = None
    for attempt, backoff in enumerate((0.0, *RETRY_BACKOFF_SECONDS), start=1):
        if backoff:
            await asyncio.sleep(backoff)
        headers = {"content-type": "application/json"}
        key = state.config.webhook_hmac_key
        if task.family == "replicate":
            headers.update(standard_webhook_headers(state.config.replicate_webhook_secret, body))
        elif key:
            timestamp = int(time.time())
            headers["X-Webhook-Timestamp"] = str(timestamp)
            headers["X-Webhook-Signature"] = webhook_signature(key, signed_id(task, body), timestamp)
        try:
            response = await state.client().post(target, content=body, headers=headers)
        except httpx.HTTPError as exc:
            status = None
            logger.warning("callback for %s, attempt %d: %r", task.task_id, attempt, exc)
            continue
        status = response.status_code
        if 200 <= status < 300:
            break
        logger.warning("callback for %s, attempt %d: HTTP %d", task.task_id, attempt, status)
    task.last_status = status
    task.callbacks_answered += 1
    return status


async def deliver_with_quirks(state: SimState, task: SimTask, body: bytes) -> None:
    if task.callback_url is None:
        return
    config = state.config
    if state.chance(config.drop_callbacks):
        logger.info("dropping the callback for %s (drop_callbacks quirk)", task.task_id)
        return
    for _ in range(1 + config.duplicate_callbacks):
        await post(state, task, body)
    if config.out_of_order and task.outcome is not None and task.outcome.success:
        code, msg = shapes.DEFAULT_FAILURE[task.family]
        bogus = dataclasses.replace(task, outcome=Outcome(False, code, msg, now_ms(), 0.5), result_urls=[])
        await post(state, task, orjson.dumps(shapes.callback(state, bogus)))


async def _stages(state: SimState, task: SimTask, delay: float) -> None:
    """What KIE sends before the end: Suno's `text` and `first`, Sora's progress."""
    started = time.monotonic()
    for fraction, stage in zip(STAGES, ("text", "first"), strict=True):
        await asyncio.sleep(max(0.0, started + delay * fraction - time.monotonic()))
        if task.outcome is not None:
            return
        if task.family == "suno" and task.callback_url:
            task.stage = stage
            await post(state, task, orjson.dumps(shapes.suno_stage(task, stage)))
        elif task.family == "replicate" and stage == "text" and task.callback_url:
            if "start" in task.request.get("webhook_events_filter", ["start"]):
                await post(state, task, orjson.dumps(prediction(task, task.base_url)))  # `start`
        elif task.progress_url:
            await post(state, task, orjson.dumps(shapes.progress_callback(task)), task.progress_url)


def start(state: SimState, task: SimTask) -> None:
    """Hold a new task, and finish it on its own after `callback_delay` (unless manual)."""
    state.tasks[task.task_id] = task
    delay = state.config.callback_delay
    if delay is not None:
        state.spawn(auto_finish(state, task, delay), f"sim-{task.task_id}")


async def auto_finish(state: SimState, task: SimTask, delay: float) -> None:
    if task.family in ("suno", "replicate") or task.progress_url:
        await _stages(state, task, delay)
        await asyncio.sleep(max(0.0, task.created_mono + delay - time.monotonic()))
    else:
        await asyncio.sleep(delay)
    # Skip tasks finished by the control API meanwhile, or dropped by /sim/reset.
    if task.outcome is not None or state.tasks.get(task.task_id) is not task:
        return
    failed = state.chance(state.config.failure_rate)
    body = finish(state, task, success=not failed)
    await deliver_with_quirks(state, task, body)
