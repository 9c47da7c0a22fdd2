"""The Redis hub: one pub/sub connection per process, subscribed to exactly the channels its
open streams watch (a task's, or an owner's), fanned out to those streams locally.

So an instance receives nothing for tasks nobody watches on it, and each added instance
costs the others nothing. A stream's `subscribe` returns only once Redis has confirmed the
subscription: the snapshot it reads next can then miss no change.

redis-py reconnects a pub/sub connection on its own and re-subscribes without a word;
whatever was published meanwhile is gone. The control channel (`keys.EVENTS_CHANNEL`,
always subscribed, first in every SUBSCRIBE after a reconnect) turns that into a signal:
each confirmation of it after the first means "we were away", and every open stream
re-reads its snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis import asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from relay import keys, metrics
from relay.backends.channel_hub import ChannelHub, text
from relay.backends.redis_clients import listener_client
from relay.errors import StoreUnavailable

log = logging.getLogger("relay.redis")

_PREFIX = keys.events_channel("")


class RedisHub(ChannelHub):
    def __init__(self, url: str, publisher: aioredis.Redis):
        super().__init__(keys.SINGLE)
        self._publisher = publisher
        self._listener = listener_client(url)
        self.connected = asyncio.Event()
        self._pubsub: PubSub | None = None
        self._unsent: list[str] = []  # pending, SUBSCRIBE not sent yet (`subscribe` sends)
        self._live: set[str] = set()  # confirmed, and not being dropped

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="relay-hub-listener"),
            asyncio.create_task(self._unsubscriber(), name="relay-hub-unsubscriber"),
        ]
        # Streams opened before the connection is up would wait; start-up waits briefly
        # here instead, without blocking on a dead Redis.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), timeout=5)

    def _channels_of(self, name: str) -> list[str]:
        return [keys.events_channel(name)]

    def _want(self, channel: str) -> None:
        self._unsent.append(channel)

    def _subscribed(self, channel: str) -> bool:
        return channel in self._live

    async def _send(self) -> None:
        unsent, self._unsent = self._unsent, []
        pubsub = self._pubsub
        if unsent and pubsub is not None and self.connected.is_set():
            try:
                await pubsub.subscribe(*unsent)
            except RedisError as exc:
                # The listener notices the broken connection; its reconnect subscribes
                # every watched channel, which confirms these too.
                log.debug("SUBSCRIBE not sent (%s); the reconnect will", exc)

    async def _unsubscribe(self, gone: list[str]) -> None:
        self._live.difference_update(gone)
        pubsub = self._pubsub
        if pubsub is not None:
            try:
                await pubsub.unsubscribe(*gone)
            except Exception as exc:  # a reconnect subscribes only what is watched
                log.debug("UNSUBSCRIBE not sent (%s)", exc)

    async def _publish(self, channel: str, data: bytes) -> None:
        await self._publisher.publish(channel, data)

    def watched(self) -> list[str]:
        return [keys.events_channel(name) for name in self.fanout.names()]

    async def ping(self) -> None:
        if not self.connected.is_set():
            raise StoreUnavailable("the Redis pub/sub connection is down")

    async def _listen(self) -> None:
        delay = 0.1
        subscribed_before = False
        while True:
            pubsub = self._listener.pubsub()
            try:
                # One command: Redis applies it whole before any later PUBLISH, so the
                # streams' re-read after the control channel's confirmation misses nothing.
                await pubsub.subscribe(keys.EVENTS_CHANNEL, *self.watched())
                self._pubsub = pubsub
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is None:
                        continue
                    kind = message["type"]
                    if kind == b"message" or kind == "message":
                        metrics.HUB_MESSAGES.inc()
                        self._dispatch(message["data"])
                    elif kind in (b"subscribe", "subscribe"):
                        channel = text(message["channel"])
                        if channel != keys.EVENTS_CHANNEL:
                            self._confirmed(channel)
                            continue
                        delay = 0.1
                        self.connected.set()
                        if subscribed_before:
                            metrics.REDIS_RECONNECTS.inc()
                            log.warning("redis pub/sub reconnected; re-syncing open streams")
                            self.fanout.resync_all()
                        subscribed_before = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                self._pubsub = None
                self._live.clear()
                log.warning("redis pub/sub connection lost (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _confirmed(self, channel: str) -> None:
        self._confirm(channel)
        if channel.startswith(_PREFIX) and self.fanout.watches(channel[len(_PREFIX) :]):
            self._live.add(channel)

    async def aclose(self) -> None:
        await self._stop()
        await self._listener.aclose()
