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
from collections.abc import Iterable

from redis import asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from relay import keys, metrics
from relay.backends.redis import channels
from relay.backends.redis_clients import listener_client
from relay.errors import StoreUnavailable
from relay.fanout import LocalFanout, Subscription, TaskEvent
from relay.models import Task

log = logging.getLogger("relay.redis")

SUBSCRIBE_WITHIN = 5.0  # then the stream is refused (503): Redis is not answering
_PREFIX = keys.events_channel("")


class RedisHub:
    def __init__(self, url: str, publisher: aioredis.Redis):
        self._publisher = publisher
        self._listener = listener_client(url)
        self.fanout = LocalFanout(on_first=self._watch, on_last=self._unwatch)
        self.connected = asyncio.Event()
        self._pubsub: PubSub | None = None
        # Channels whose SUBSCRIBE is not confirmed yet: every stream waiting on one.
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._unsent: list[str] = []  # pending, SUBSCRIBE not sent yet (`subscribe` sends)
        self._live: set[str] = set()  # confirmed, and not being dropped
        self._drop: set[str] = set()  # nobody watches them any more: UNSUBSCRIBE soon
        self._dropping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="relay-hub-listener"),
            asyncio.create_task(self._unsubscriber(), name="relay-hub-unsubscriber"),
        ]
        # Streams opened before the connection is up would wait; start-up waits briefly
        # here instead, without blocking on a dead Redis.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), timeout=5)

    async def publish(self, task: Task) -> None:
        data = TaskEvent.of(task).encode()
        try:
            for channel in channels(task, keys.SINGLE):
                await self._publisher.publish(channel, data)
        except RedisError as exc:
            raise StoreUnavailable(f"could not publish to Redis: {exc}") from exc

    def resync_all(self) -> None:
        self.fanout.resync_all()

    async def subscribe(self, task_ids: Iterable[str]) -> Subscription:
        sub = self.fanout.add(task_ids)  # calls _watch for names nobody here watched yet
        try:
            unsent, self._unsent = self._unsent, []
            pubsub = self._pubsub
            if unsent and pubsub is not None and self.connected.is_set():
                try:
                    await pubsub.subscribe(*unsent)
                except RedisError as exc:
                    # The listener notices the broken connection; its reconnect subscribes
                    # every watched channel, which confirms these too.
                    log.debug("SUBSCRIBE not sent (%s); the reconnect will", exc)
            waits = {self._pending[c] for c in map(keys.events_channel, sub.task_ids) if c in self._pending}
            if waits:
                async with asyncio.timeout(SUBSCRIBE_WITHIN):
                    await asyncio.gather(*(asyncio.shield(w) for w in waits))
        except TimeoutError:
            sub.close()
            raise StoreUnavailable("Redis did not confirm the stream's subscription in time") from None
        except BaseException:
            sub.close()
            raise
        return sub

    def _watch(self, name: str) -> None:
        channel = keys.events_channel(name)
        self._drop.discard(channel)
        if channel in self._live or channel in self._pending:
            return
        self._pending[channel] = asyncio.get_running_loop().create_future()
        self._unsent.append(channel)

    def _unwatch(self, name: str) -> None:
        channel = keys.events_channel(name)
        # Nobody waits for it any more (the last watcher left, perhaps after giving up on a
        # confirmation while Redis was down): forget it, or the next stream for this task
        # would wait on a confirmation that never comes.
        waiting = self._pending.pop(channel, None)
        if waiting is not None:
            waiting.cancel()
        self._drop.add(channel)
        self._dropping.set()

    async def _unsubscriber(self) -> None:
        """Drops channels nobody watches any more, in batches (a stream's churn costs one
        UNSUBSCRIBE for many closes)."""
        while True:
            await self._dropping.wait()
            self._dropping.clear()
            await asyncio.sleep(0.05)
            drop = [c for c in self._drop if c not in self._pending]
            self._drop.difference_update(drop)
            self._live.difference_update(drop)
            pubsub = self._pubsub
            if drop and pubsub is not None:
                try:
                    await pubsub.unsubscribe(*drop)
                except Exception as exc:  # a reconnect subscribes only what is watched
                    log.debug("UNSUBSCRIBE not sent (%s)", exc)

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
        waiting = self._pending.pop(channel, None)
        if channel.startswith(_PREFIX) and self.fanout.watches(channel[len(_PREFIX) :]):
            self._live.add(channel)
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    def _dispatch(self, raw: bytes) -> None:
        try:
            event = TaskEvent.decode(raw)
        except ValueError:
            log.error("ignoring malformed hub message (%d bytes)", len(raw))
            return
        self.fanout.dispatch(event)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for waiting in self._pending.values():
            waiting.cancel()
        await self._listener.aclose()


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
