"""Every seam opened by its URL's scheme, in one place: the task store, coordination and
hub from RELAY_REDIS_URL (`memory://`, `redis://`, `rediss://`, `redis+sentinel://`,
`redis+cluster://`), object storage from
RELAY_STORAGE_URL and RELAY_STORAGE_FALLBACK_URL (`file://`, `s3://`). Nothing above
the seams asks which implementation it got."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from redis.asyncio.cluster import RedisCluster

from relay.backends.base import Coordination, Hub, Ledger, Outbox, Shares, TaskStore
from relay.backends.fallback import FallbackStorage
from relay.backends.ledger import MemoryLedger, RedisLedger
from relay.backends.memory import MemoryHub, MemoryStore
from relay.backends.memory_outbox import MemoryOutbox
from relay.backends.objects import ObjectStorage
from relay.backends.shares import MemoryShares, RedisShares
from relay.settings import Settings
from relay.webhooks.messages import Announcer


class Backends(NamedTuple):
    store: TaskStore
    coordination: Coordination
    hub: Hub
    outbox: Outbox
    shares: Shares
    ledger: Ledger


def open_backends(settings: Settings) -> Backends:
    """The store, coordination, hub and outbox for RELAY_REDIS_URL, picked by its scheme.
    They always share one server: the store's writes publish each change on the hub's
    channel and queue its webhook messages in the outbox, in the same atomic step."""
    scheme = urlsplit(settings.redis_url).scheme
    announcer = Announcer(settings)
    if scheme == "memory":
        hub = MemoryHub()
        outbox = MemoryOutbox()
        memory = MemoryStore(hub, outbox=outbox, announcer=announcer)
        return Backends(memory, memory, hub, outbox, MemoryShares(), MemoryLedger())
    from relay import keys
    from relay.backends import redis as redis_backend
    from relay.backends.redis_clients import command_client, is_cluster, password, username
    from relay.backends.redis_outbox import RedisOutbox

    client = command_client(settings.redis_url, max_connections=settings.redis_max_connections)
    keyspace = keys.Keyspace(cluster=is_cluster(settings.redis_url))
    store = redis_backend.RedisStore(client, ttl=settings.task_ttl, announcer=announcer, keyspace=keyspace)
    redis_hub: Hub
    if isinstance(client, RedisCluster):
        from relay.backends.cluster_hub import ClusterHub

        redis_hub = ClusterHub(
            client, keyspace, username=username(settings.redis_url), password=password(settings.redis_url)
        )
    else:
        from relay.backends.redis_hub import RedisHub

        redis_hub = RedisHub(settings.redis_url, client)
    return Backends(
        store,
        store,
        redis_hub,
        RedisOutbox(client, keyspace),
        RedisShares(client, ttl=settings.task_ttl, keyspace=keyspace),
        RedisLedger(client, keyspace),
    )


def _open_one(url: str, settings: Settings, *, public_url: str | None) -> ObjectStorage:
    parts = urlsplit(url)
    if parts.scheme == "file":
        from relay.backends.files import FileStorage

        base = public_url or f"{settings.public_url.rstrip('/')}/files"
        return FileStorage(file_path(url), base_url=base)
    if parts.scheme == "s3":
        from relay.backends.s3 import S3Storage

        if not parts.netloc:
            raise ValueError(f"storage URL {url!r} names no bucket: use s3://bucket/prefix")
        return S3Storage(
            bucket=parts.netloc,
            prefix=parts.path.strip("/"),
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            public_url=public_url,
        )
    raise ValueError(f"unsupported storage URL scheme {parts.scheme!r}: use file:// or s3://")


def open_storage(settings: Settings) -> ObjectStorage:
    """The storage RELAY_STORAGE_URL names, wrapped with the fallback when one is set.
    Call `await storage.start()` before use and `await storage.aclose()` at shutdown."""
    # RELAY_STORAGE_PUBLIC_URL describes the primary (an R2 public domain, a CDN in front
    # of it); the fallback serves its own URLs.
    primary = _open_one(settings.storage_url, settings, public_url=settings.storage_public_url)
    if not settings.storage_fallback_url:
        return primary
    fallback = _open_one(settings.storage_fallback_url, settings, public_url=None)
    return FallbackStorage(primary, fallback)


def file_path(url: str) -> Path:
    """The folder of a `file://` URL: `file://./data` is relative, `file:///srv/x` absolute."""
    return Path(url[len("file://") :] or ".")


def local_folders(settings: Settings) -> list[Path]:
    """The folders of every `file://` storage configured (primary, then fallback)."""
    return [
        file_path(url)
        for url in (settings.storage_url, settings.storage_fallback_url)
        if url and urlsplit(url).scheme == "file"
    ]
