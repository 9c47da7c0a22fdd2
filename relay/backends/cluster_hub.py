"""The hub on a Redis Cluster (`redis+cluster://`): sharded pub/sub.

The write scripts publish each change with SPUBLISH on a channel in the task's own hash
slot (`keys.Keyspace`), which Redis delivers only to subscribers connected to the node
serving that slot; nothing crosses the cluster bus. So this hub keeps one pub/sub
connection per node (a `_Link`) and SSUBSCRIBEs each channel on the node that serves
it, one command per slot (Redis refuses a SSUBSCRIBE that spans slots). A task's stream
watches its task's channel; an owner's stream watches the owner's channel in every shard.

The guarantees are the single-server hub's (relay/backends/redis_hub.py): a stream's
`subscribe` returns once every one of its channels is confirmed, so its snapshot can miss
no change; a channel confirmed again without a stream asking (the link reconnected, or it
moved to another node) means changes may have been missed, and its streams re-read their
snapshots. When a node fails or slots move (Redis ends a shard subscription with an
unasked SUNSUBSCRIBE), the slot map is read again and channels go to their new nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable

from redis import asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.crc import key_slot
from redis.exceptions import RedisError

from relay import keys, metrics
from relay.backends.channel_hub import ChannelHub, text
from relay.backends.redis_clients import HANDSHAKE
from relay.errors import StoreUnavailable
from relay.fanout import OWNER_PREFIX

log = logging.getLogger("relay.redis")


def by_slot(channel_names: Iterable[str]) -> list[list[str]]:
    """Channels grouped by hash slot: one SSUBSCRIBE or SUNSUBSCRIBE each."""
    groups: defaultdict[int, list[str]] = defaultdict(list)
    for channel in channel_names:
        groups[key_slot(channel.encode())].append(channel)
    return list(groups.values())


class _ShardPubSub(PubSub):
    """A link's pub/sub connection. redis-py re-subscribes a connection by itself when it
    reconnects, from its own record of the channels (which an unsubscribe crossing a
    re-subscribe of the same channel leaves wrong) and in one SSUBSCRIBE, which Redis
    refuses once the channels span slots. Here it subscribes what the link wants, one
    command per slot."""

    def __init__(self, link: _Link):
        super().__init__(connection_pool=link.client.connection_pool)
        self.link = link

    @property
    def subscribed(self) -> bool:
        # Always, to redis-py: a command sent on a pub/sub with no subscriptions left first
        # reads a health-check reply itself, racing the link's listener for the bytes (the
        # next SSUBSCRIBE's confirmation was lost that way once a link's last channel went).
        return True

    async def on_connect(self, connection: Connection) -> None:
        # Called on a reconnect (not the first connect: `_Link._run` subscribes then).
        self.pending_unsubscribe_shard_channels.clear()
        self.link.leaving.clear()  # a new connection: no unsubscribe of ours is pending
        for group in by_slot(self.link.channels):
            await self.ssubscribe(*group)


class _Link:
    """One node's pub/sub connection and the channels of the slots that node serves."""

    def __init__(self, hub: ClusterHub, name: str, host: str, port: int, credentials: tuple[str | None, str | None]):
        self.hub = hub
        self.name = name
        self.client = aioredis.Redis(
            host=host, port=port, username=credentials[0], password=credentials[1], socket_timeout=None,
            socket_connect_timeout=2,
            health_check_interval=5, **HANDSHAKE,  # type: ignore[arg-type]
        )
        self.channels: set[str] = set()  # what should be subscribed here
        self.unsent: set[str] = set()  # of those, not sent yet on the current connection
        # SUNSUBSCRIBEs sent on this connection and not confirmed yet, by channel: any other
        # SUNSUBSCRIBE Redis sends is its own (the slot moved away).
        self.leaving: Counter[str] = Counter()
        self.pubsub: PubSub | None = None
        self.up = True  # no connection failure since the last successful subscribe
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"relay-hub-link-{name}")

    def want(self, channel: str) -> None:
        self.channels.add(channel)
        self.unsent.add(channel)
        self.wake.set()

    async def send(self) -> None:
        """SSUBSCRIBE what was added since the last call (a down link subscribes
        everything when it reconnects)."""
        pubsub = self.pubsub
        if not self.unsent or pubsub is None:
            return
        unsent, self.unsent = self.unsent, set()
        try:
            for group in by_slot(unsent):
                await pubsub.ssubscribe(*group)
        except RedisError as exc:
            log.debug("SSUBSCRIBE on %s not sent (%s); the reconnect will", self.name, exc)

    async def drop(self, gone: Iterable[str]) -> None:
        gone = [c for c in gone if c in self.channels]
        self.channels.difference_update(gone)
        self.unsent.difference_update(gone)
        pubsub = self.pubsub
        if gone and pubsub is not None:
            try:
                for group in by_slot(gone):
                    self.leaving.update(group)
                    await pubsub.sunsubscribe(*group)
            except Exception as exc:  # a reconnect subscribes only what is wanted
                log.debug("SUNSUBSCRIBE on %s not sent (%s)", self.name, exc)

    async def _run(self) -> None:
        delay = 0.1
        while True:
            while not self.channels:
                await self.wake.wait()
                self.wake.clear()
            pubsub = _ShardPubSub(self)
            try:
                self.unsent.clear()
                self.leaving.clear()
                for group in by_slot(self.channels):
                    await pubsub.ssubscribe(*group)
                self.pubsub = pubsub
                await self.send()  # whatever was added while this connection was set up
                if not self.up:
                    # Its channels' confirmations (no stream asked) re-sync their streams.
                    metrics.REDIS_RECONNECTS.inc()
                    log.warning("redis pub/sub link to %s back; re-syncing its streams", self.name)
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is None:
                        continue
                    self.up = True
                    delay = 0.1
                    kind = text(message["type"])
                    if kind == "smessage":
                        metrics.HUB_MESSAGES.inc()
                        self.hub.dispatch(message["data"])
                    elif kind == "ssubscribe":
                        self.hub.confirmed(text(message["channel"]))
                    elif kind == "sunsubscribe":
                        self._left(text(message["channel"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.up = False
                log.warning("redis pub/sub link to %s lost (%s); retrying in %.1fs", self.name, exc, delay)
                self.hub.topology_changed()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                self.pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _left(self, channel: str) -> None:
        if self.leaving[channel] > 0:
            self.leaving[channel] -= 1  # ours
            if not self.leaving[channel]:
                del self.leaving[channel]
        elif channel in self.channels:
            # Not asked for: Redis moved the channel's slot to another node.
            self.hub.moved(self, channel)

    async def aclose(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.client.aclose()


class ClusterHub(ChannelHub):
    def __init__(
        self, cluster: RedisCluster, keyspace: keys.Keyspace, *, username: str | None = None, password: str | None = None
    ):
        super().__init__(keyspace)
        self._cluster = cluster
        self._credentials = (username, password)
        self._links: dict[str, _Link] = {}
        self._where: dict[str, _Link] = {}  # each watched channel's link
        self._names: dict[str, str] = {}  # each watched channel's fanout name
        self._remap = asyncio.Event()

    async def start(self) -> None:
        # The slot map, so that channels can be placed; a cluster that is down now is read
        # again when the first stream needs it.
        with contextlib.suppress(RedisError, OSError):
            await asyncio.wait_for(self._cluster.initialize(), timeout=5)
        self._tasks = [
            asyncio.create_task(self._unsubscriber(), name="relay-hub-unsubscriber"),
            asyncio.create_task(self._remapper(), name="relay-hub-remapper"),
        ]

    def _channels_of(self, name: str) -> list[str]:
        return self._ks.watch_channels(name, owner=name.startswith(OWNER_PREFIX))

    def _watch(self, name: str) -> None:
        for channel in self._channels_of(name):
            self._names[channel] = name
        super()._watch(name)

    def _want(self, channel: str) -> None:
        link = self._link_for(channel)
        if link is None:
            self._remap.set()  # placed once the slot map is known
            return
        self._where[channel] = link
        link.want(channel)

    def _subscribed(self, channel: str) -> bool:
        return channel in self._where

    async def _send(self) -> None:
        for link in list(self._links.values()):
            await link.send()

    async def _unsubscribe(self, gone: list[str]) -> None:
        per_link: defaultdict[_Link, list[str]] = defaultdict(list)
        for channel in gone:
            self._names.pop(channel, None)
            link = self._where.pop(channel, None)
            if link is not None:
                per_link[link].append(channel)
        for link, channels_gone in per_link.items():
            await link.drop(channels_gone)

    async def _publish(self, channel: str, data: bytes) -> None:
        await self._cluster.spublish(channel, data)

    def _link_for(self, channel: str) -> _Link | None:
        try:
            node = self._cluster.get_node_from_key(channel)
        except Exception:  # no slot map yet, or the slot is not served right now
            return None
        if node is None:
            return None
        link = self._links.get(node.name)
        if link is None:
            link = self._links[node.name] = _Link(self, node.name, node.host, int(node.port), self._credentials)
        return link

    def topology_changed(self) -> None:
        self._remap.set()

    def moved(self, link: _Link, channel: str) -> None:
        link.channels.discard(channel)
        if self._where.get(channel) is link:
            del self._where[channel]
        self._remap.set()

    async def _remapper(self) -> None:
        """After a link failure or a moved slot: read the slot map again and move every
        channel whose slot another node now serves (or that had no node yet)."""
        delay = 0.1
        while True:
            await self._remap.wait()
            self._remap.clear()
            try:
                await asyncio.wait_for(self._cluster.nodes_manager.initialize(), timeout=5)
            except Exception as exc:
                log.debug("cluster slot map not read (%s); trying again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                self._remap.set()
                continue
            delay = 0.1
            for channel, name in list(self._names.items()):
                if channel in self._drop:
                    continue
                current = self._where.get(channel)
                target = self._link_for(channel)
                if target is None:
                    self._remap.set()
                elif target is not current:
                    if current is not None:
                        await current.drop([channel])
                    self._where[channel] = target
                    target.want(channel)
                    log.info("channel of %s now on %s", name, target.name)
            await self._send()
            await asyncio.sleep(0.2)  # a failing node would otherwise re-read the map in a loop

    def confirmed(self, channel: str) -> None:
        if self._confirm(channel):
            return
        # Confirmed again with nobody asking: changes published while this channel was
        # not subscribed are lost, so its streams re-read their snapshots.
        name = self._names.get(channel)
        if name is not None:
            self.fanout.resync(name)

    def dispatch(self, raw: bytes) -> None:
        self._dispatch(raw)

    async def ping(self) -> None:
        # The nodes themselves are the store's to check (its ping); here only the links.
        down = [link.name for link in self._links.values() if link.channels and not link.up]
        if down:
            raise StoreUnavailable(f"the Redis pub/sub link to {', '.join(down)} is down")

    async def aclose(self) -> None:
        await self._stop()
        for link in self._links.values():
            await link.aclose()
