"""Deliver the outbox: every instance runs one `Sender`; a claim lends each due message to
one of them at a time.

An attempt is a POST of the queued body, signed the Standard Webhooks way, with no
redirects followed, through the same network guard as result downloads. 2xx is delivered;
410 Gone disables the endpoint; anything else (another status, a timeout, a refused
connection) is tried again on RELAY_WEBHOOK_SCHEDULE, then the message is failed and
stays listable and redeliverable. A refusal by policy (a host not allowed, an address
that resolves to loopback) fails at once: retrying cannot change it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from relay import metrics
from relay.backends.base import Outbox
from relay.errors import BadRequest, Forbidden, RelayError
from relay.httpclient import AsyncClient
from relay.netguard import (
    GuardedNetworkBackend,
    GuardedTransport,
    HostPolicy,
    Resolver,
    system_resolver,
)
from relay.settings import Settings
from relay.webhooks.messages import Attempt, Delivery, State, endpoint_label

log = logging.getLogger("relay.webhooks")

# A claim outlives one attempt (RELAY_WEBHOOK_TIMEOUT) by this much, so a live sender
# never loses its message mid-attempt and a dead one delays it by seconds, not minutes.
LEASE_MARGIN = 5.0
SLOTS = 16  # attempts in flight per instance
IDLE = 1.0  # how often an idle sender looks for work other instances queued
GAUGES_EVERY = 5.0


class Signer:
    """Standard Webhooks signatures: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`,
    one per secret, the first first, so receivers on either side of a rotation verify."""

    def __init__(self, whsecrets: tuple[str, ...]):
        self._hooks = [Webhook(s) for s in whsecrets]

    def headers(self, msg_id: str, at: datetime, body: bytes) -> dict[str, str]:
        text = body.decode()
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": " ".join(h.sign(msg_id, at, text) for h in self._hooks),
            "content-type": "application/json",
        }


def target_policy(settings: Settings, *, pin_global: bool) -> HostPolicy:
    return HostPolicy.parse(
        settings.webhook_hosts,
        setting="RELAY_WEBHOOK_HOSTS",
        purpose="webhooks are sent",
        code="webhook_refused",
        pinned=(settings.webhook_url,) if pin_global and settings.webhook_url else (),
    )


def check_task_webhook(settings: Settings, url: str) -> None:
    """A per-task `webhookUrl` at create: refused (400) unless webhooks are configured and
    its host is in RELAY_WEBHOOK_HOSTS. Its address is checked again on every attempt."""
    if not settings.webhook_secrets or not settings.webhook_hosts:
        raise BadRequest(
            "webhookUrl is not accepted here: the operator has not set RELAY_WEBHOOK_HOSTS and "
            "RELAY_WEBHOOK_SECRET",
            code="webhook_refused",
        )
    try:
        target_policy(settings, pin_global=False).check(httpx.URL(url))
    except httpx.InvalidURL as exc:
        raise BadRequest(f"webhookUrl is not a valid URL: {exc}", code="webhook_refused") from None
    except Forbidden as exc:
        raise BadRequest(f"webhookUrl {exc.message}", code="webhook_refused") from None


def next_delay(schedule: tuple[float, ...], done: int) -> float | None:
    """Seconds until the next attempt after `done` attempts, jittered by up to 10% so a
    burst of failures does not come back as a burst; None when the schedule is used up."""
    if done >= len(schedule):
        return None
    delay = schedule[done]
    return delay * random.uniform(0.9, 1.1)


class Sender:
    def __init__(self, settings: Settings, outbox: Outbox, *, resolver: Resolver | None = None):
        self.outbox = outbox
        self.schedule = settings.webhook_schedule
        self.lease = settings.webhook_timeout + LEASE_MARGIN
        self.keep = settings.task_ttl  # how long delivered and failed messages stay listable
        self.signer = Signer(settings.webhook_secrets)
        self.holder = secrets.token_hex(8)
        policy = target_policy(settings, pin_global=True)
        self.policy = policy
        transport = GuardedTransport(
            GuardedNetworkBackend(policy, resolver or system_resolver),
            httpx.Limits(max_connections=SLOTS, max_keepalive_connections=SLOTS),
        )
        self._client = AsyncClient(
            transport=transport,
            timeout=settings.webhook_timeout,
            follow_redirects=False,  # a redirect is an answer, not a delivery
            trust_env=False,
            headers={"user-agent": "relay-webhooks/1"},
        )
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._labels: set[str] = set()
        self._disabled_labels: set[str] = set()

    def wake(self) -> None:
        """Look at the outbox now (this instance just queued or requeued something)."""
        self._wake.set()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def run(self) -> None:
        last_gauges = 0.0
        try:
            while True:
                free = SLOTS - len(self._inflight)
                batch: list[Delivery] = []
                if free > 0:
                    try:
                        batch = await self.outbox.claim(time.time(), self.lease, self.holder, free)
                    except RelayError as exc:
                        log.warning("webhook outbox unreachable (%s); trying again", exc.message)
                for delivery in batch:
                    task = asyncio.create_task(self._attempt(delivery), name="relay-webhook-attempt")
                    self._inflight.add(task)
                    task.add_done_callback(self._done)
                if time.monotonic() - last_gauges >= GAUGES_EVERY:
                    last_gauges = time.monotonic()
                    await self._gauges()
                if batch and len(batch) == free:
                    continue  # there may be more due right now
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE)
        finally:
            for task in list(self._inflight):
                task.cancel()
            for task in list(self._inflight):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()  # a slot is free
        if not task.cancelled() and task.exception() is not None:
            log.error("a webhook attempt failed unexpectedly", exc_info=task.exception())

    async def _attempt(self, delivery: Delivery) -> None:
        m = delivery.message
        label = endpoint_label(m.url)
        started = time.time()
        clock = time.monotonic()
        status: int | None = None
        error: str | None = None
        final = False
        # Read on every attempt (a small hash): an operator's `relay webhooks enable` and a
        # 410 seen by another instance both count at once.
        disabled = (await self.outbox.disabled()).get(m.url)
        if disabled is not None:
            error, final = f"endpoint disabled: {disabled}", True
        else:
            try:
                self.policy.check(httpx.URL(m.url))
                headers = self.signer.headers(m.msg_id, datetime.now(UTC), m.body)
                # Streamed and never read: the receiver's answer body is not ours to store.
                async with self._client.stream("POST", m.url, content=m.body, headers=headers) as answer:
                    status = answer.status_code
            except Forbidden as exc:
                error, final = exc.message, True
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        attempt = Attempt(started, status, error, int((time.monotonic() - clock) * 1000))
        state: State
        next_at: float | None = None
        if status is not None and 200 <= status < 300:
            state, outcome = "delivered", "delivered"
        elif status == 410:
            state, outcome = "failed", "failed"
            why = f"answered 410 Gone at {datetime.now(UTC).isoformat(timespec='seconds')}"
            await self.outbox.disable(m.url, why)
            log.warning("webhook endpoint %s answered 410 Gone: disabled until re-enabled", label)
        else:
            delay = None if final else next_delay(self.schedule, delivery.tries + 1)
            if delay is None:
                state, outcome = "failed", "failed"
            else:
                state, outcome, next_at = "pending", "retried", time.time() + delay
        if status is not None and status >= 300:
            error = error or f"answered HTTP {status}"
        if not await self.outbox.finish(delivery, attempt, state, next_at, self.keep):
            return  # redelivered or taken over meanwhile: that one records its own attempt
        metrics.WEBHOOK_DELIVERIES.labels(label, outcome).inc()
        extra: dict[str, Any] = {"task_id": m.task_id, "webhook_id": m.msg_id, "endpoint": label}
        if outcome == "delivered":
            log.info("webhook %s delivered (HTTP %s)", m.type, status, extra=extra)
        elif outcome == "retried":
            log.info("webhook %s not delivered (%s); next try in %.0fs", m.type, error, (next_at or 0) - time.time(), extra=extra)
        else:
            log.warning("webhook %s failed for good after %d attempts: %s", m.type, delivery.tries + 1, error, extra=extra)

    async def _gauges(self) -> None:
        try:
            count, oldest = await self.outbox.backlog()
            disabled = await self.outbox.disabled()
        except RelayError:
            return
        metrics.WEBHOOK_PENDING.set(count)
        now = time.time()
        ages: dict[str, float] = {}
        for url, created in oldest.items():
            label = endpoint_label(url)
            ages[label] = max(ages.get(label, 0.0), now - created)
        for label in self._labels - set(ages):
            metrics.WEBHOOK_OLDEST.labels(label).set(0)
        for label, age in ages.items():
            metrics.WEBHOOK_OLDEST.labels(label).set(age)
        self._labels |= set(ages)
        now_disabled = {endpoint_label(url) for url in disabled}
        for label in self._disabled_labels - now_disabled:
            metrics.WEBHOOK_DISABLED.labels(label).set(0)
        for label in now_disabled:
            metrics.WEBHOOK_DISABLED.labels(label).set(1)
        self._disabled_labels = now_disabled
