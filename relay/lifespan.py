"""Every client Relay holds (Redis, the provider's HTTP client, background work) is opened
and closed here, in one place."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from sse_starlette.sse import AppStatus

from relay import gctune
from relay.backends import open_backends, open_storage
from relay.background import Supervisor
from relay.catalogue import builtin
from relay.credits import Accounts
from relay.downloader import Downloader
from relay.errors import RelayError
from relay.idempotency import Settler
from relay.ingest import Ingestor
from relay.limits import RateLimit, StreamCap
from relay.mirror import Mirror
from relay.models import Task
from relay.providers.registry import open_providers
from relay.reconcile import Reconciler
from relay.recovery import Recovery
from relay.services import Services
from relay.settings import Settings
from relay.webhooks.sender import Sender

log = logging.getLogger("relay")




@contextlib.asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    async with contextlib.AsyncExitStack() as stack:
        store, coordination, hub, outbox, shares, ledger = open_backends(settings)
        stack.push_async_callback(store.aclose)
        stack.push_async_callback(hub.aclose)
        await hub.start()
        catalogue = builtin()
        provider = open_providers(settings, catalogue)
        stack.push_async_callback(provider.aclose)
        storage = open_storage(settings)
        await storage.start()
        stack.push_async_callback(storage.aclose)
        downloader = Downloader(settings)
        stack.push_async_callback(downloader.aclose)
        webhooks = Sender(settings, outbox) if settings.webhook_secrets else None
        if webhooks is not None:
            stack.push_async_callback(webhooks.aclose)
        # Closed first (the stack unwinds in reverse): background jobs stop before the
        # clients they use.
        background = Supervisor()
        stack.push_async_callback(background.aclose)
        ingestor = Ingestor(store, mirroring=settings.mirror)
        mirror = Mirror(
            storage=storage,
            downloader=downloader,
            ingestor=ingestor,
            supervisor=background,
            coordination=coordination,
            enabled=settings.mirror,
            fresh_url=provider.fresh_url,
        )
        ingestor.listeners.append(mirror.on_change)
        accounts = Accounts(ledger, store, welcome=settings.welcome_credits) if settings.credits else None
        if accounts is not None:
            ingestor.listeners.append(accounts.on_change)
        services = Services(
            settings=settings,
            catalogue=catalogue,
            store=store,
            coordination=coordination,
            hub=hub,
            provider=provider,
            ingestor=ingestor,
            storage=storage,
            mirror=mirror,
            recovery=Recovery(store, storage, provider, ingestor, catalogue),
            background=background,
            settler=Settler(background),
            draining=asyncio.Event(),
            create_limit=RateLimit(coordination, "create", settings.rate_create),
            callback_limit=RateLimit(coordination, "callback", settings.rate_callback),
            streams=StreamCap(settings.max_streams_per_client),
            outbox=outbox,
            webhooks=webhooks,
            shares=shares,
            accounts=accounts,
        )
        background.spawn(_watch_shutdown(services), name="relay-shutdown-watch")
        reconciler = Reconciler(store, coordination, provider, ingestor, settings, mirror=mirror)
        background.spawn(reconciler.run(), name="relay-reconciler")
        if accounts is not None:
            background.spawn(_sweep_credits(accounts, settings.reconcile_interval), name="relay-credit-sweep")
        if webhooks is not None:
            ingestor.listeners.append(_waker(webhooks))
            background.spawn(webhooks.run(), name="relay-webhook-sender")
        if settings.auth == "none":
            log.warning("RELAY_AUTH=none: every task is readable by anyone who knows its id")
        if settings.demo:
            log.warning("demo mode: using a throwaway RELAY_SECRET; tokens die with this process")
        # Everything built so far lives as long as the process (relay/gctune.py).
        gctune.tune()
        background.spawn(gctune.sweep_young(), name="relay-gc-young")
        yield services


def _waker(sender: Sender) -> Callable[[Task, Task], Awaitable[None]]:
    """This instance's own changes are sent at once, not at the next look at the outbox."""

    async def wake(before: Task, after: Task) -> None:
        sender.wake()

    return wake


async def _sweep_credits(accounts: Accounts, interval: float) -> None:
    """Holds a crash left open are finished as their task ended (relay/credits.py)."""
    while True:
        try:
            await accounts.sweep()
        except RelayError as exc:
            log.warning("credit sweep skipped: %s", exc.message)
        await asyncio.sleep(max(interval, 1.0))


async def _watch_shutdown(services: Services) -> None:
    """uvicorn waits for open connections before running lifespan shutdown, and SSE
    streams never end by themselves; so notice the exit signal (sse-starlette records it)
    and tell every stream to close with a reconnect hint."""
    while not AppStatus.should_exit:  # noqa: ASYNC110 - a plain flag we do not own
        await asyncio.sleep(0.25)
    services.draining.set()
    services.hub.resync_all()
