"""The Redis clients Relay opens, from RELAY_REDIS_URL: `redis://` / `rediss://` (one
server), `redis+sentinel://[:password@]host:port[,host:port...]/service[/db]` (Redis
Sentinel: the clients ask the sentinels for the current master, and after a failover
their connections go to the new one), or `redis+cluster://[:password@]host:port[,...]`
(Redis Cluster: any reachable nodes; the client learns the rest and the slot map).

Two clients per process: the command client (bounded timeouts, a blocking pool) and the
hub's pub/sub listener (no socket timeout; its own health checks). On a cluster the hub
opens one listener per node instead (relay/backends/cluster_hub.py).
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis import asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.exceptions import DataError
from redis.maint_notifications import MaintNotificationsConfig

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"


# How long one Redis operation (a command, a pipeline, a batch of scripts) may take before
# it counts as an outage (503, StoreUnavailable).
COMMAND_TIMEOUT = 5.0


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme == CLUSTER_SCHEME

# What each new connection's handshake skips: `CLIENT SETINFO` (an error reply before Redis
# 7.2, and an importlib.metadata lookup per connection) and `CLIENT MAINT_NOTIFICATIONS`
# (an error reply outside Redis Enterprise/Cloud). redis-py raises an error reply with the
# exception still in the raising frame's locals (asyncio/connection.py, read_response:
# `raise response`), a reference cycle per reply, holding the request's task until the GC.
HANDSHAKE: dict[str, object] = {
    "driver_info": None,
    "maint_notifications_config": MaintNotificationsConfig(enabled=False),
}


class _SentinelBlockingPool(SentinelConnectionPool, BlockingConnectionPool):
    """The sentinel-managed pool with the blocking pool's wait for a free connection."""


class _HiredisPacking:
    """Commands packed by hiredis (C), as redis-py's own sync client does whenever hiredis is
    installed; its asyncio client packs them in Python, an encode and three joins per
    argument: 8.0 us against 1.5 us for a write script's 15 arguments (`python -m
    bench.rediscost`), once per callback. The bytes sent are the same (tests/test_redis_clients.py)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        # As redis-py's: a command name with a space ("CONFIG GET") is several arguments.
        name = args[0]
        if (" " if isinstance(name, str) else b" ") in name:
            args = (*name.split(), *args[1:])
        try:
            return [hiredis.pack_command(cast(Any, args))]  # its stub allows one argument
        except TypeError:
            pass  # a bytearray (hiredis takes bytes and memoryview), or what nothing takes
        try:
            return [hiredis.pack_command(cast(Any, tuple(bytes(a) if isinstance(a, bytearray) else a for a in args)))]
        except TypeError as exc:  # what redis-py's encoder refuses too: None, a bool, a list
            raise DataError(str(exc)) from None


_PACKED: dict[type, type] = {}


def hiredis_packing(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """`base` (plain, TLS, unix socket, sentinel-managed) with hiredis's packing."""
    if base not in _PACKED:
        _PACKED[base] = type(base.__name__, (_HiredisPacking, base), {"__module__": __name__})
    return _PACKED[base]


def _hosts(url: str, what: str) -> list[tuple[str, int]]:
    """The `host:port` list of a sentinel or cluster URL."""
    hosts = []
    for item in urlsplit(url).netloc.rpartition("@")[2].split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"RELAY_REDIS_URL: {item!r} is not host:port of a {what}")
        hosts.append((host.strip("[]"), int(port)))
    return hosts


def password(url: str) -> str | None:
    parts = urlsplit(url)
    return unquote(parts.password) if parts.password else None


def username(url: str) -> str | None:
    """An ACL user (`user:password@`); None for the default user."""
    parts = urlsplit(url)
    return unquote(parts.username) if parts.username else None


def _cluster(url: str, **options: object) -> RedisCluster:
    parts = urlsplit(url)
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError("RELAY_REDIS_URL: a Redis Cluster has only database 0")
    nodes = [ClusterNode(host, port) for host, port in _hosts(url, "cluster node")]
    return RedisCluster(startup_nodes=nodes, username=username(url), password=password(url), **options)  # type: ignore[arg-type]


def _sentinel(url: str) -> tuple[Sentinel, str, int, str | None]:
    """The sentinels, the service (master) name, the db and the password of a
    `redis+sentinel://` URL."""
    parts = urlsplit(url)
    hosts = _hosts(url, "sentinel")
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("RELAY_REDIS_URL: name the Sentinel service, e.g. redis+sentinel://h:26379/mymaster/0")
    db = int(path[1]) if len(path) > 1 and path[1].isdigit() else 0
    secret = password(url)
    sentinel = Sentinel(hosts, socket_timeout=2, socket_connect_timeout=2)  # type: ignore[no-untyped-call]
    return sentinel, path[0], db, secret


def command_client(url: str, *, max_connections: int) -> aioredis.Redis | RedisCluster:
    """An explicit pool size, health checks on idle sockets, deadlines per operation.

    The pool blocks (up to 5 s) when every connection is busy: redis-py's default pool
    raises "Too many connections" at once, which a burst of requests (a few hundred streams
    opening while Redis pauses for a moment) turned into 503s on a healthy store, and
    EventSource does not retry after a 503."""
    options: dict[str, object] = {
        "max_connections": max_connections,
        "timeout": 5,  # waiting for a free connection; then ConnectionError -> StoreUnavailable
        # No socket timeout: every operation has one deadline instead (COMMAND_TIMEOUT, in
        # `relay.backends.redis.call`, the script batcher and the hub's publish). redis-py's
        # per-command timeout wraps each write in `asyncio.wait_for`, a Task per command on
        # Python 3.11, and each read in a timer: 12% of a callback's CPU (ingest bench,
        # alternating runs: 4,640 / 4,644 / 4,846 -> 5,222 / 5,363 / 5,247 callbacks/s).
        "socket_timeout": None,
        "socket_connect_timeout": 2,
        "health_check_interval": 15,
        **HANDSHAKE,
    }
    if is_cluster(url):
        # A pool per node, which does not wait for a free connection; redirects and a
        # node's failover are retried by the cluster client itself.
        del options["timeout"]
        return _cluster(url, **options)
    if urlsplit(url).scheme == SENTINEL_SCHEME:
        sentinel, service, db, password = _sentinel(url)
        client: aioredis.Redis = sentinel.master_for(
            service, connection_pool_class=_SentinelBlockingPool, connection_class=hiredis_packing(SentinelManagedConnection),
            db=db, password=password, **options  # type: ignore[arg-type]
        )
        return client
    pool = BlockingConnectionPool.from_url(url, **options)
    # The class from_url chose for the scheme (TCP, TLS, unix socket), before any connection.
    pool.connection_class = hiredis_packing(pool.connection_class)
    return aioredis.Redis.from_pool(pool)


def listener_client(url: str) -> aioredis.Redis:
    """No socket timeout: it waits for messages indefinitely and relies on its own health
    checks (PING every few seconds) to notice a dead connection."""
    if urlsplit(url).scheme == SENTINEL_SCHEME:
        sentinel, service, db, password = _sentinel(url)
        client: aioredis.Redis = sentinel.master_for(
            service, db=db, password=password, socket_timeout=None, socket_connect_timeout=2, health_check_interval=5,
            **HANDSHAKE,  # type: ignore[arg-type]
        )
        return client
    return aioredis.Redis.from_url(
        url, socket_timeout=None, socket_connect_timeout=2, health_check_interval=5, **HANDSHAKE  # type: ignore[arg-type]
    )
