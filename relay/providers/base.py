"""The provider seam. Relay's core speaks only this: `kie.py` speaks KIE's HTTP API and
`replicate.py` Replicate's (each pointed at the real service or at the built-in
simulator); `registry.py` picks one per model, from the model catalogue."""

from __future__ import annotations

from collections.abc import Mapping
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
    provider: str = "kie"  # who has it (a lost record's provider is not known in advance)


class Provider(Protocol):
    name: str
    # The routes its callbacks arrive on (relay/callbacks.py serves each provider's).
    callback_paths: tuple[str, ...]

    def callback_url(self, public_url: str, token: str) -> str:
        """Where the provider is told to send a task's callbacks (the token in the query)."""
        ...

    async def verify_callback(self, headers: Mapping[str, str], raw: bytes, payload: dict[str, Any]) -> str | None:
        """Raise `Unauthorized` unless the callback is the provider's; return its delivery
        id when the provider gives one (a second delivery of it changes nothing)."""
        ...

    def read_callback(self, payload: dict[str, Any]) -> ProviderReport:
        """The callback body as a report; `InvalidPayload` when no known shape matches."""
        ...

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
