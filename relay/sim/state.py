"""What the simulator holds: its tasks and the background work that finishes them."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import httpx

from relay.sim.config import SimConfig

logger = logging.getLogger("relay.sim")

RATE_WINDOW_SECONDS = 10.0  # KIE: 20 new generation requests per 10 s
# With no automatic finish there is no real schedule; this only paces the displayed states.
MANUAL_NOMINAL_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Outcome:
    success: bool
    code: int  # the callback's body code (jobs failures always say 501; failCode keeps this)
    msg: str
    completed_ms: int
    progress: float


@dataclass(slots=True)
class SimTask:
    task_id: str
    family: str  # the KIE API family that created it (relay.providers.kie_families)
    model: str  # the catalogue id it matches
    kind: str  # image, video or audio: what its result files are
    request: dict[str, Any]  # the create body exactly as received
    callback_url: str | None
    prompt: str
    base_url: str  # result files are served below this
    created_ms: int
    created_mono: float
    nominal_seconds: float  # paces waiting -> queuing -> generating
    progress_url: str | None = None  # jobs `progressCallBackUrl` (Sora 2)
    parent: SimTask | None = None  # the task an extend / 1080p / 4K works on
    outcome: Outcome | None = None
    result_urls: list[str] = dataclasses.field(default_factory=list)
    stage: str | None = None  # Suno: the last of text / first sent
    callbacks_sent: int = 0
    status_queries: int = 0  # lets tests see how often a reconciler polled
    callbacks_answered: int = 0  # deliveries finished (answered or given up)
    fresh_links: int = 0  # download-url answers given for its results
    last_status: int | None = None
    last_callback: bytes | None = None  # the canonical callback body, for /resend

    def phase(self) -> tuple[str, float]:
        """Where an unfinished task stands: waiting, queuing or generating, and how far."""
        fraction = (time.monotonic() - self.created_mono) / self.nominal_seconds
        progress = min(max(fraction, 0.0), 0.95)
        if fraction < 0.1:
            return "waiting", progress
        if fraction < 0.25:
            return "queuing", progress
        return "generating", progress

    def state_name(self) -> str:
        if self.outcome is None:
            return self.phase()[0]
        return "success" if self.outcome.success else "fail"


class SimState:
    """All mutable simulator state; one instance lives on `app.state.sim`."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.credits = config.credits
        self.tasks: dict[str, SimTask] = {}
        self.recent_creates: deque[float] = deque()
        self.background: set[asyncio.Task[None]] = set()
        self.http: httpx.AsyncClient | None = None

    def chance(self, probability: float) -> bool:
        # Draw only when the quirk is on, so switching one quirk on does not reshuffle another's
        # seeded sequence.
        if probability <= 0:
            return False
        return probability >= 1 or self.rng.random() < probability

    def client(self) -> httpx.AsyncClient:
        if self.http is None:
            raise RuntimeError("the simulator's HTTP client is only available inside its lifespan")
        return self.http

    def rate_limited(self, now: float) -> bool:
        while self.recent_creates and now - self.recent_creates[0] >= RATE_WINDOW_SECONDS:
            self.recent_creates.popleft()
        burst = self.config.rate_limit_burst
        return burst > 0 and len(self.recent_creates) >= burst

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self.background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self.background.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.error("simulator background task %s failed", task.get_name(), exc_info=exc)

    async def cancel_background(self) -> None:
        pending = list(self.background)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def reset(self) -> None:
        await self.cancel_background()
        self.tasks.clear()
        self.recent_creates.clear()
        self.credits = self.config.credits
        self.rng.seed(self.config.seed)
