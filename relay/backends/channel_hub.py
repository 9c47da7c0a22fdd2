"""What the two Redis hubs share (relay/backends/redis_hub.py on one server, cluster_hub.py
on a cluster): each subscribes a channel when the first stream here watches it and drops it
when the last one leaves; a stream's `subscribe` returns once every one of its channels is
confirmed, so the snapshot it reads next can miss no change; messages are decoded and
handed to the local fan-out. They differ in how a channel is subscribed and published."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable

from redis.exceptions import RedisError

from relay.backends.redis import channels
from relay.backends.redis_clients import COMMAND_TIMEOUT
from relay.deadline import within
from relay.errors import StoreUnavailable
from relay.fanout import LocalFanout, Subscription, TaskEvent
from relay.keys import Keyspace
from relay.models import Task

log = logging.getLogger("relay.redis")

SUBSCRIBE_WITHIN = 5.0  # then the stream is refused (503): Redis is not answering


class ChannelHub(ABC):
    def __init__(self, keyspace: Keyspace):
        self._ks = keyspace
        self.fanout = LocalFanout(on_first=self._watch, on_last=self._unwatch)
        # Channels whose subscription is not confirmed yet: every stream waiting on one.
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._drop: set[str] = set()  # nobody watches them any more: unsubscribe soon
        self._dropping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # What each hub does its own way.

    @abstractmethod
    def _channels_of(self, name: str) -> list[str]:
        """The channels a stream watching `name` (a task id or an owner key) needs."""
        ...

    @abstractmethod
    def _want(self, channel: str) -> None:
        """Queue a subscription (sent by `_send`, or by the next reconnect)."""
        ...

    @abstractmethod
    def _subscribed(self, channel: str) -> bool:
        """Whether this channel is subscribed, or queued to be, and not being dropped."""
        ...

    @abstractmethod
    async def _send(self) -> None:
        """Send the subscriptions queued since the last call."""
        ...

    @abstractmethod
    async def _unsubscribe(self, gone: list[str]) -> None:
        """Drop channels nobody here watches any more (best effort: a reconnect subscribes
        only what is watched)."""
        ...

    @abstractmethod
    async def _publish(self, channel: str, data: bytes) -> None:
        ...

    # Shared.

    async def publish(self, task: Task) -> None:
        data = TaskEvent.of(task).encode()
        try:
            async with within(COMMAND_TIMEOUT):
                for channel in channels(task, self._ks):
                    await self._publish(channel, data)
        except TimeoutError as exc:
            raise StoreUnavailable(f"could not publish to Redis: no answer within {COMMAND_TIMEOUT:g} s") from exc
        except RedisError as exc:
            raise StoreUnavailable(f"could not publish to Redis: {exc}") from exc

    def resync_all(self) -> None:
        self.fanout.resync_all()

    async def subscribe(self, task_ids: Iterable[str]) -> Subscription:
        sub = self.fanout.add(task_ids)  # calls _watch for names nobody here watched yet
        try:
            await self._send()
            waits = {
                self._pending[c] for name in sub.task_ids for c in self._channels_of(name) if c in self._pending
            }
            if waits:
                async with within(SUBSCRIBE_WITHIN):
                    await asyncio.gather(*(asyncio.shield(w) for w in waits))
        except TimeoutError:
            sub.close()
            raise StoreUnavailable("Redis did not confirm the stream's subscription in time") from None
        except BaseException:
            sub.close()
            raise
        return sub

    def _watch(self, name: str) -> None:
        for channel in self._channels_of(name):
            self._drop.discard(channel)
            if channel in self._pending or self._subscribed(channel):
                continue
            self._pending[channel] = asyncio.get_running_loop().create_future()
            self._want(channel)

    def _unwatch(self, name: str) -> None:
        for channel in self._channels_of(name):
            # Nobody waits for it any more (the last watcher left, perhaps after giving up
            # on a confirmation while Redis was down): forget it, or the next stream for it
            # would wait on a confirmation that never comes.
            waiting = self._pending.pop(channel, None)
            if waiting is not None:
                waiting.cancel()
            self._drop.add(channel)
        self._dropping.set()

    def _confirm(self, channel: str) -> bool:
        """Redis confirmed a subscription: wake the streams waiting for it. False if nobody
        was waiting (the channel was subscribed again after a reconnect or a move)."""
        waiting = self._pending.pop(channel, None)
        if waiting is None:
            return False
        if not waiting.done():
            waiting.set_result(None)
        return True

    async def _unsubscriber(self) -> None:
        """Drops channels nobody watches any more, in batches (a stream's churn costs one
        unsubscribe for many closes)."""
        while True:
            await self._dropping.wait()
            self._dropping.clear()
            await asyncio.sleep(0.05)
            drop = [c for c in self._drop if c not in self._pending]
            self._drop.difference_update(drop)
            if drop:
                await self._unsubscribe(drop)

    def _dispatch(self, raw: bytes) -> None:
        try:
            event = TaskEvent.decode(raw)
        except ValueError:
            log.error("ignoring malformed hub message (%d bytes)", len(raw))
            return
        self.fanout.dispatch(event)

    async def _stop(self) -> None:
        """Cancel the hub's own tasks and whatever still waits on a confirmation."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for waiting in self._pending.values():
            waiting.cancel()


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
