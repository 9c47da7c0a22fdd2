"""Every configured provider, and which one serves a model (the catalogue says: each
model's `provider` is the name of the catalogue file it is listed in).

`Providers` is itself a `Provider` for the parts of Relay that act on a task without
caring who serves it (the reconciler, recovery, cancel, the mirror's fresh links): each
call goes to the model's provider, or is asked of each in turn when the model is unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relay.catalogue import Catalogue
from relay.errors import BadRequest, ProviderError
from relay.models import ProviderReport
from relay.providers.base import CreateRequest, Provider, ProviderTask
from relay.providers.kie import KieClient
from relay.providers.replicate import OFFICIAL_BASE_URL, ReplicateClient
from relay.settings import Settings

# Every provider's callback routes, known before any client is opened (the app's routes).
CALLBACK_PATHS = KieClient.callback_paths + ReplicateClient.callback_paths


def open_providers(settings: Settings, catalogue: Catalogue) -> Providers:
    simulated = settings.provider == "sim"
    found: dict[str, Provider] = {
        "kie": KieClient(
            settings.kie_base_url,
            settings.kie_api_key or ("sim-key" if simulated else ""),
            timeout=settings.kie_timeout,
            retry_budget=settings.kie_retry_budget,
            catalogue=catalogue,
            webhook_hmac_key=settings.kie_webhook_hmac_key,
        )
    }
    if settings.replicate_api_token or simulated:
        # The simulator speaks Replicate's API too, on the same port as KIE's.
        base = settings.kie_base_url if simulated and not settings.replicate_api_token else settings.replicate_base_url
        found["replicate"] = ReplicateClient(
            base or OFFICIAL_BASE_URL,
            settings.replicate_api_token or "sim-key",
            catalogue=catalogue,
            webhook_secret=settings.replicate_webhook_secret,
            timeout=settings.kie_timeout,
            retry_budget=settings.kie_retry_budget,
        )
    return Providers(found, catalogue)


class Providers:
    name = "providers"

    def __init__(self, providers: Mapping[str, Provider], catalogue: Catalogue):
        self.by_name = dict(providers)
        self.catalogue = catalogue
        self.callback_paths = tuple(p for provider in self.by_name.values() for p in provider.callback_paths)

    @property
    def primary(self) -> Provider:
        return next(iter(self.by_name.values()))

    def for_model(self, model: str) -> Provider:
        spec = self.catalogue.get(model)
        provider = self.by_name.get(spec.provider)
        if provider is None:
            raise BadRequest(
                f"{model} is served by {spec.provider}, which this service is not configured for",
                code="provider_not_configured",
            )
        return provider

    def for_path(self, path: str) -> Provider:
        return next(p for p in self.by_name.values() if path in p.callback_paths)

    def available(self, provider: str) -> bool:
        return provider in self.by_name

    # --- Provider, routed by model

    def callback_url(self, public_url: str, token: str) -> str:
        return self.primary.callback_url(public_url, token)

    async def verify_callback(self, headers: Mapping[str, str], raw: bytes, payload: dict[str, Any]) -> str | None:
        raise NotImplementedError("callbacks are verified by the provider their route belongs to")

    def read_callback(self, payload: dict[str, Any]) -> ProviderReport:
        raise NotImplementedError("callbacks are read by the provider their route belongs to")

    async def create(self, request: CreateRequest) -> str:
        return await self.for_model(request.model).create(request)

    async def status(self, task_id: str, model: str) -> ProviderReport:
        return await self.for_model(model).status(task_id, model)

    async def cancel(self, task_id: str, model: str) -> bool:
        return await self.for_model(model).cancel(task_id, model)

    async def describe(self, task_id: str) -> ProviderTask | None:
        for provider in self.by_name.values():
            try:
                found = await provider.describe(task_id)
            except ProviderError:
                continue
            if found is not None:
                return found
        return None

    async def credits(self) -> float:
        return await self.primary.credits()

    def result_locations(self) -> tuple[str, ...]:
        return tuple(url for provider in self.by_name.values() for url in provider.result_locations())

    async def fresh_url(self, url: str) -> str | None:
        for provider in self.by_name.values():
            if (fresh := await provider.fresh_url(url)) is not None:
                return fresh
        return None

    async def aclose(self) -> None:
        for provider in self.by_name.values():
            await provider.aclose()
