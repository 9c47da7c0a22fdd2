"""`relay check`: print the configuration (secrets masked) and test every link of the
chain, so an operator can tell exactly which one is broken."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TextIO
from urllib.parse import urlsplit

import httpx

from relay import keys
from relay.backends import open_backends, open_storage
from relay.catalogue import builtin
from relay.downloader import Downloader
from relay.env import mask_url
from relay.errors import RelayError, ServiceUnavailable
from relay.models import Mode, Status, Task, utcnow
from relay.providers.registry import open_providers
from relay.settings import Settings
from relay.storage_keys import check_probe_key
from relay.webhooks.messages import endpoint_label

LinkCheck = Callable[[], Awaitable[str]]


@dataclass
class Verdict:
    link: str
    ok: bool
    detail: str
    seconds: float


def topology(settings: Settings) -> str:
    scheme = urlsplit(settings.redis_url).scheme
    if scheme == "memory":
        return "one process, embedded store and hub (memory://): fine for a demo, not for several instances"
    if scheme == "redis+sentinel":
        return f"instances sharing Redis through Sentinel, following failovers ({mask_url(settings.redis_url)})"
    if scheme == "redis+cluster":
        return (
            f"instances sharing a Redis Cluster: {keys.SHARDS} key shards over its nodes, sharded pub/sub "
            f"({mask_url(settings.redis_url)})"
        )
    return f"instances sharing one Redis ({mask_url(settings.redis_url)})"


async def run_checks(settings: Settings, out: TextIO, problems: Sequence[str] = ()) -> bool:
    if problems:
        print(f"Settings: {len(problems)} problem{'s' if len(problems) > 1 else ''} "
              "(defaults used for the checks below):", file=out)
        for line in problems:
            print(f"  - {line}", file=out)
        print(file=out)
    print("Configuration:", file=out)
    for name, value in settings.masked().items():
        print(f"  {name:<30} {value}", file=out)
    catalogue = builtin()
    kinds = Counter(spec.kind for spec in catalogue.models.values())
    print(f"\nTopology:  {topology(settings)}", file=out)
    print(
        f"Providers: kie at {settings.kie_base_url}"
        f"{' (the built-in simulator)' if settings.provider == 'sim' else ''}; "
        f"{len(catalogue.models)} models ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})",
        file=out,
    )
    print("\nLinks:", file=out)
    store, coordination, hub, outbox, _, _ = open_backends(settings)
    provider = open_providers(settings, catalogue)
    storage = open_storage(settings)
    downloader = Downloader(settings)
    verdicts: list[Verdict] = []
    try:

        async def check_store() -> str:
            key = f"relay:check:{secrets.token_hex(6)}"
            if await coordination.claim(key, 30) is not None:
                raise RuntimeError("a fresh key already existed")
            await coordination.settle(key, "ok", 30)
            if await coordination.peek(key) != "ok":
                raise RuntimeError("wrote a key but read back something else")
            await coordination.release(key)
            return f"read/write round trip on {mask_url(settings.redis_url)}"

        async def check_hub() -> str:
            await hub.start()
            probe = f"check-{secrets.token_hex(6)}"
            with await hub.subscribe([probe]) as sub:
                now = utcnow()
                await hub.publish(
                    Task(probe, "check", "check", Mode.TEXT_TO_IMAGE, Status.PENDING, "", (), now, now)
                )
                news = await sub.next(within=5)
            if news is None or not any(e.task_id == probe for e in news[0]):
                raise RuntimeError("published a probe event but it never came back")
            return "published a probe event and received it"

        async def check_storage() -> str:
            await storage.start()
            key = check_probe_key()
            payload = secrets.token_bytes(16)
            await storage.put(key, payload, "application/octet-stream")
            try:
                if await storage.get(key) != payload:
                    raise RuntimeError("wrote an object but read back different bytes")
            finally:
                await storage.delete(key)
            return f"write/read/delete round trip on {storage.label}"

        async def check_provider() -> str:
            try:
                credits = await provider.credits()
            except RelayError as exc:
                if exc.code == "provider_unreachable":
                    raise RuntimeError(f"{exc.message}: check KIE_BASE_URL={settings.kie_base_url}") from None
                raise
            return f"API key accepted at {settings.kie_base_url}; {credits:g} credits left"

        async def check_results() -> str:
            # Mirroring downloads the provider's result files through the SSRF-safe
            # downloader: its host must be allowed, and reachable by the same rules.
            hosts = []
            for url in provider.result_locations():
                try:
                    downloader.policy.check(httpx.URL(url))
                except RelayError:
                    raise RuntimeError(
                        f"results from {url} would be refused: add its host to RELAY_RESULT_HOSTS "
                        f"(now {','.join(settings.result_hosts)})"
                    ) from None
                try:
                    await downloader.fetch(url)
                except ServiceUnavailable as exc:
                    raise RuntimeError(f"{url} is allowed but unreachable: {exc.message}") from None
                except RelayError:
                    pass  # it answered (a directory is no result file): reachable
                hosts.append(str(httpx.URL(url).host))
            return f"result files from {', '.join(hosts)} are allowed and reachable"

        async def check_public_url() -> str:
            if not settings.public_url:
                raise RuntimeError("RELAY_PUBLIC_URL is not set, so KIE has nowhere to send callbacks")
            url = f"{settings.public_url}/api/callbacks/kie"
            try:
                async with httpx.AsyncClient(timeout=5, follow_redirects=False) as client:
                    response = await client.post(url, json={})
            except httpx.HTTPError as exc:
                raise RuntimeError(
                    f"RELAY_PUBLIC_URL={settings.public_url}: {url} could not be reached "
                    f"({type(exc).__name__}: {exc}); set it to the URL at which KIE reaches this service"
                ) from None
            try:
                code = response.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                raise RuntimeError(f"{url} answered HTTP {response.status_code}, not Relay's callback route") from None
            if code != "invalid_callback_token":
                raise RuntimeError(f"{url} answered {response.status_code} {code}, not Relay's callback route")
            return f"{url} reaches a Relay callback route (it refused a tokenless callback, as it should)"

        async def check_webhooks() -> str:
            # The outbox lives with the store; a 410 Gone from an endpoint disabled it.
            pending, oldest = await outbox.backlog()
            disabled = await outbox.disabled()
            age = f", the oldest {time.time() - min(oldest.values()):.0f} s old" if oldest else ""
            backlog = f"{pending} message{'' if pending == 1 else 's'} waiting{age}"
            if disabled:
                shown = "; ".join(f"{endpoint_label(url)} ({why})" for url, why in disabled.items())
                raise RuntimeError(
                    f"disabled endpoint(s): {shown}; nothing is sent there until "
                    f"`relay webhooks enable URL` ({backlog})"
                )
            if not settings.webhook_secrets:
                return f"off (RELAY_WEBHOOK_URL and RELAY_WEBHOOK_SECRET not set); {backlog}"
            target = mask_url(settings.webhook_url) if settings.webhook_url else "per-task webhookUrl only"
            return f"sending {settings.webhook_events} changes to {target}; {backlog}"

        links: list[tuple[str, LinkCheck]] = [
            ("store", check_store),
            ("hub", check_hub),
            ("storage", check_storage),
            ("provider", check_provider),
            ("results", check_results),
            ("public url", check_public_url),
            ("webhooks", check_webhooks),
        ]
        for name, check in links:
            verdicts.append(await _run(name, check))
            v = verdicts[-1]
            mark = "ok    " if v.ok else "FAILED"
            print(f"  {mark} {name:<11} {v.detail} ({v.seconds * 1000:.0f} ms)", file=out)
    finally:
        for close in (hub.aclose, store.aclose, provider.aclose, storage.aclose, downloader.aclose):
            with contextlib.suppress(Exception):  # closing a link that failed may fail too
                await close()
    failed = [v.link for v in verdicts if not v.ok]
    print(f"\nVerdict: {'all links ok' if not failed else 'broken: ' + ', '.join(failed)}", file=out)
    return not failed


async def _run(name: str, check: LinkCheck) -> Verdict:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(check(), timeout=15)
        ok = True
    except RelayError as exc:
        detail, ok = exc.message, False
    except TimeoutError:
        detail, ok = "no answer within 15 s", False
    except RuntimeError as exc:  # the checks' own words
        detail, ok = str(exc), False
    except Exception as exc:
        detail, ok = f"{type(exc).__name__}: {exc}", False
    return Verdict(name, ok, detail, time.perf_counter() - started)
