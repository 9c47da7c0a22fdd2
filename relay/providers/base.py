"""The provider seam. Relay's core speaks only this; `kie.py` is the one implementation
that speaks KIE's HTTP API (pointed at api.kie.ai or at the built-in simulator)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from relay.models import ProviderReport


@dataclass(frozen=True, slots=True)
class CreateRequest:
    model: str
    prompt: str
    callback_url: str
    image_urls: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    parent_task_id: str | None = None  # the task an extend / upscale model works on


@dataclass(frozen=True, slots=True)
class ProviderTask:
    """Everything the provider still knows about a task: enough to rebuild a lost record."""

    model: str
    prompt: str
    image_urls: tuple[str, ...]
    callback_url: str | None
    created_at: datetime | None
    report: ProviderReport


class Provider(Protocol):
    name: str

    async def create(self, request: CreateRequest) -> str:
        """Start a generation; return the provider's task id. Never waits for the result."""
        ...

    async def status(self, task_id: str, model: str) -> ProviderReport:
        """Ask the provider where a task stands (the fallback when callbacks are late)."""
        ...

    async def describe(self, task_id: str) -> ProviderTask | None:
        """The task as the provider has it (None if it knows no such task)."""
        ...

    async def cancel(self, task_id: str, model: str) -> bool:
        """Ask the provider to stop a task; False when it has no way to (Relay then only
        stops waiting for it)."""
        ...

    async def credits(self) -> float: ...

    def result_locations(self) -> tuple[str, ...]:
        """Where this provider serves result files (for `relay check` to probe)."""
        ...

    async def fresh_url(self, url: str) -> str | None:
        """A new link for one of the provider's result URLs whose link has expired (None
        when the provider cannot give one)."""
        ...

    async def aclose(self) -> None: ...
