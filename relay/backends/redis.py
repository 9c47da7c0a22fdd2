"""The Redis task store (`redis://`, `redis+sentinel://`, `redis+cluster://`).

One hash per task (`v` = version, `d` = record), written only by Lua scripts that compare
the version first, so concurrent writers can never both win. Each write also publishes the
change on the task's channel (and its owner's), where the hubs (relay/backends/redis_hub.py,
cluster_hub.py) pick it up. On a cluster every key a script touches is in the task's shard
(`keys.Keyspace`), the publish is sharded (SPUBLISH), and the indexes are read per shard
and merged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator
from typing import Any

from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    ClusterDownError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay import keys
from relay.backends.base import Page, history_cursor
from relay.backends.redis_batch import ScriptBatcher
from relay.backends.redis_clients import COMMAND_TIMEOUT
from relay.deadline import within
from relay.errors import StoreUnavailable
from relay.fanout import TaskEvent, owner_key
from relay.models import Task
from relay.parsing import ascii_int
from relay.webhooks.messages import Announcer

log = logging.getLogger("relay.redis")

Client = aioredis.Redis | RedisCluster

# Both scripts end by publishing the change, so a write and its event are one atomic step
# and one round trip: no change is stored without being announced, or announced unstored.

# Both scripts also queue the change's outbound webhook messages (relay/webhooks/) in the
# same step: KEYS then go on with the outbox's due set, the task's delivery list and one
# hash per message; ARGV with now (ms) and five values per message. `K` is the number of
# keys before them.
_ENQUEUE = """
local n = #KEYS - K - 2
for i = 1, n do
  local a = 9 + (i - 1) * 5
  redis.call('HSET', KEYS[K + 2 + i], 'id', ARGV[a + 1], 'msg', ARGV[a + 2], 'url', ARGV[a + 3],
    'type', ARGV[a + 4], 'body', ARGV[a + 5], 'task', ARGV[6], 'created', ARGV[9],
    'state', 'pending', 'tries', 0, 'next', ARGV[9], 'lease', '', 'log', '[]')
  redis.call('ZADD', KEYS[K + 1], ARGV[9], ARGV[a + 1])
  redis.call('RPUSH', KEYS[K + 2], ARGV[a + 1])
end
if n > 0 then redis.call('PEXPIRE', KEYS[K + 2], ARGV[3]) end
"""

# KEYS: task, index, open, channel, owner channel (the task's again if none; every KEY
# must be in the task's slot on a cluster) (+ outbox). ARGV: version,
# record, ttl_ms, created_ms, updated_ms, task_id, terminal, event (+ now_ms, messages)
_INSERT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[4]) - tonumber(ARGV[3]))
if ARGV[7] == '1' then redis.call('ZREM', KEYS[3], ARGV[6])
else redis.call('ZADD', KEYS[3], ARGV[5], ARGV[6]) end
redis.call('$PUBLISH', KEYS[4], ARGV[8])
if KEYS[5] ~= KEYS[4] then redis.call('$PUBLISH', KEYS[5], ARGV[8]) end
local K = 5
""" + _ENQUEUE + "return 1"

# KEYS: task, open, channel, owner channel or the task's again (+ outbox). ARGV:
# expected_version, version, record, ttl_ms, updated_ms, task_id, terminal, event (+ now_ms,
# messages)
_REPLACE = """
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if ARGV[7] == '1' then redis.call('ZREM', KEYS[2], ARGV[6])
else redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6]) end
redis.call('$PUBLISH', KEYS[3], ARGV[8])
if KEYS[4] ~= KEYS[3] then redis.call('$PUBLISH', KEYS[4], ARGV[8]) end
local K = 4
""" + _ENQUEUE + "return 1"


def publish_command(keyspace: keys.Keyspace) -> str:
    """Sharded pub/sub on a cluster: the message goes to the nodes of the channel's shard
    only, not over the cluster bus to every node."""
    return "SPUBLISH" if keyspace.cluster else "PUBLISH"


def channels(task: Task, keyspace: keys.Keyspace) -> tuple[str, ...]:
    """Where a change of `task` is published: its channel, and its owner's if it has one."""
    if task.owner:
        return keyspace.channel(task.task_id), keyspace.channel(task.task_id, owner_key(task.owner))
    return (keyspace.channel(task.task_id),)


def _script_channels(task: Task, keyspace: keys.Keyspace) -> tuple[str, str]:
    """Two channel KEYS for the write scripts: the second repeats the first when the task
    has no owner (an empty key would hash to another slot)."""
    found = channels(task, keyspace)
    return found[0], found[-1]


def _ms(ts: float) -> int:
    return int(ts * 1000)


async def call(coro: Any) -> Any:
    """Await one Redis operation within COMMAND_TIMEOUT, its connection failures and a
    missed deadline as `StoreUnavailable`. Redis-py is cancellation-safe here: a command cut
    off mid-reply closes its connection rather than return it to the pool."""
    try:
        async with within(COMMAND_TIMEOUT):
            return await coro
    except TimeoutError as exc:
        raise StoreUnavailable(f"the task store (Redis) did not answer within {COMMAND_TIMEOUT:g} s") from exc
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise StoreUnavailable(f"the task store (Redis) is unreachable: {exc}") from exc
    except (ClusterDownError, TryAgainError, SlotNotCoveredError) as exc:  # a node failing over or resharding
        raise StoreUnavailable(f"the task store (Redis Cluster) cannot serve this key now: {exc}") from exc
    except RedisClusterException as exc:
        if "cannot be connected" not in str(exc):
            raise  # a bug (keys of one call in several slots), not an outage
        raise StoreUnavailable(f"the task store (Redis Cluster) is unreachable: {exc}") from exc
    except RuntimeError as exc:
        # uvloop's answer to a write on a connection the cluster client closed a moment ago
        # (it closes them all when a node reports the cluster down).
        if "handler is closed" not in str(exc):
            raise
        raise StoreUnavailable(f"the task store (Redis) connection closed: {exc}") from exc


class RedisStore:

    def __init__(
        self,
        client: Client,
        *,
        ttl: float,
        announcer: Announcer | None = None,
        keyspace: keys.Keyspace = keys.SINGLE,
    ):
        self._r = client
        self._ks = keyspace
        self._ttl_ms = _ms(ttl)
        self._announcer = announcer
        publish = publish_command(keyspace)
        self._insert = client.register_script(_INSERT.replace("$PUBLISH", publish))
        self._replace = client.register_script(_REPLACE.replace("$PUBLISH", publish))
        self._batch = ScriptBatcher(client)

    async def _call(self, coro: Any) -> Any:
        return await call(coro)

    def _outbox(self, task: Task) -> tuple[list[str], list[Any]]:
        """The extra KEYS and ARGV that queue this change's webhook messages."""
        now = time.time()
        messages = self._announcer.messages(task, now) if self._announcer is not None else []
        if not messages:
            return [], []  # the script's loop then runs zero times
        tag = self._ks.tag(task.task_id)
        extra_keys = [self._ks.outbox_due(tag), self._ks.task_deliveries(task.task_id)]
        extra_keys += [self._ks.outbox_message(tag, m.delivery_id) for m in messages]
        extra_args: list[Any] = [_ms(now)]
        for m in messages:
            extra_args += [m.delivery_id, m.msg_id, m.url, m.type, m.body]
        return extra_keys, extra_args

    async def get(self, task_id: str) -> Task | None:
        raw = await self._call(self._r.hget(self._ks.task(task_id), "d"))
        return Task.from_record(raw) if raw is not None else None

    async def insert(self, task: Task) -> bool:
        extra_keys, extra_args = self._outbox(task)
        result = await self._call(
            self._batch.run(
                self._insert,
                [
                    self._ks.task(task.task_id),
                    self._ks.task_index(tag := self._ks.tag(task.task_id)),
                    self._ks.open_tasks(tag),
                    *_script_channels(task, self._ks),
                    *extra_keys,
                ],
                [
                    task.version,
                    task.to_record(),
                    self._ttl_ms,
                    _ms(task.created_at.timestamp()),
                    _ms(task.updated_at.timestamp()),
                    task.task_id,
                    int(task.terminal),
                    TaskEvent.of(task).encode(),
                    *extra_args,
                ],
            )
        )
        return bool(result)

    async def replace(self, task: Task, expected_version: int) -> bool:
        extra_keys, extra_args = self._outbox(task)
        result = await self._call(
            self._batch.run(
                self._replace,
                [
                    self._ks.task(task.task_id),
                    self._ks.open_tasks(self._ks.tag(task.task_id)),
                    *_script_channels(task, self._ks),
                    *extra_keys,
                ],
                [
                    expected_version,
                    task.version,
                    task.to_record(),
                    self._ttl_ms,
                    _ms(task.updated_at.timestamp()),
                    task.task_id,
                    int(task.terminal),
                    TaskEvent.of(task).encode(),
                    *extra_args,
                ],
            )
        )
        return bool(result)

    async def history(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        status: str | None = None,
        mode: str | None = None,
        owner: str | None = None,
    ) -> Page:
        # Walk the index newest first (every shard's, merged), filtering as we go; bounded
        # so a rare filter cannot turn one request into a scan of the whole history.
        max_score: str | int = "+inf"
        after_id: str | None = None
        if cursor:
            score_text, _, after_id = cursor.partition(":")
            score = ascii_int(score_text)
            max_score = score if score is not None else "+inf"
        items: list[Task] = []
        batch = max(limit * 2, 50)
        rows = self._newest_first(max_score, batch, most=2000)
        try:
            while len(items) <= limit:
                chunk: list[tuple[str, int]] = []
                async for row in rows:
                    chunk.append(row)
                    if len(chunk) == batch:
                        break
                if not chunk:
                    break
                async with self._r.pipeline(transaction=False) as pipe:
                    for task_id, _ in chunk:
                        pipe.hget(self._ks.task(task_id), "d")
                    raws = await self._call(pipe.execute())
                for (task_id, created), raw in zip(chunk, raws, strict=True):
                    if after_id is not None:
                        if created == max_score and task_id >= after_id:
                            continue
                    if raw is None:
                        continue
                    task = Task.from_record(raw)
                    if (status and task.status != status) or (mode and task.mode != mode):
                        continue
                    if owner is not None and task.owner != owner:
                        continue
                    items.append(task)
                    if len(items) > limit:
                        break
        finally:
            await rows.aclose()
        page = items[:limit]
        next_cursor = None
        if len(items) > limit and page:
            last = page[-1]
            next_cursor = history_cursor(last)
        return Page(page, next_cursor)

    async def _newest_first(self, max_score: str | int, batch: int, *, most: int) -> AsyncGenerator[tuple[str, int], None]:
        """(task id, created ms) from every shard's index at or below `max_score`, newest
        first (ties by id, descending, as Redis orders one index), at most `most` rows."""
        shards = [_Shard(self._ks.task_index(tag)) for tag in self._ks.tags]
        for _ in range(most):
            empty = [s for s in shards if not s.rows and not s.done]
            if empty:
                await asyncio.gather(*(s.fill(self, max_score, batch) for s in empty))
            live = [s for s in shards if s.rows]
            if not live:
                return
            newest = max(live, key=lambda s: (s.rows[0][1], s.rows[0][0]))
            yield newest.rows.popleft()

    async def open_tasks(self, updated_before: float, limit: int) -> list[str]:
        found = await asyncio.gather(*(
            self._call(
                self._r.zrangebyscore(
                    self._ks.open_tasks(tag), "-inf", _ms(updated_before), start=0, num=limit, withscores=True
                )
            )
            for tag in self._ks.tags
        ))
        oldest = sorted((score, i.decode()) for rows in found for i, score in rows)
        return [task_id for _, task_id in oldest[:limit]]

    async def park_callback(self, task_id: str, token: str, body: bytes, ttl: float) -> None:
        key = keys.early_callbacks(task_id)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.rpush(key, token.encode() + b"\n" + body)
            pipe.ltrim(key, -20, -1)
            pipe.pexpire(key, _ms(ttl))
            await self._call(pipe.execute())

    async def take_parked(self, task_id: str) -> list[tuple[str, bytes]]:
        key = keys.early_callbacks(task_id)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.lrange(key, 0, -1)
            pipe.delete(key)
            raw, _ = await self._call(pipe.execute())
        out = []
        for item in raw:
            token, _, body = item.partition(b"\n")
            out.append((token.decode(), body))
        return out

    async def claim(self, key: str, ttl: float) -> str | None:
        # SET NX GET: one round trip that either takes the key or returns its value.
        old = await self._call(self._r.set(key, "", nx=True, px=_ms(ttl), get=True))
        return old.decode() if old is not None else None

    async def settle(self, key: str, value: str, ttl: float) -> None:
        await self._call(self._r.set(key, value, px=_ms(ttl)))

    async def peek(self, key: str) -> str | None:
        value = await self._call(self._r.get(key))
        return value.decode() if value is not None else None

    async def release(self, key: str) -> None:
        await self._call(self._r.delete(key))

    async def hit(self, key: str, ttl: float) -> int:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.pexpire(key, _ms(ttl), nx=True)
            count, _ = await self._call(pipe.execute())
        return int(count)

    async def ping(self) -> None:
        await self._call(self._r.ping())

    async def aclose(self) -> None:
        await self._r.aclose()


class _Shard:
    """One shard's index while `_newest_first` merges them: the rows read and not yet
    taken, and where the next read starts."""

    __slots__ = ("done", "index", "offset", "rows")

    def __init__(self, index: str):
        self.index = index
        self.rows: deque[tuple[str, int]] = deque()
        self.offset = 0
        self.done = False

    async def fill(self, store: RedisStore, max_score: str | int, batch: int) -> None:
        rows = await store._call(
            store._r.zrevrangebyscore(self.index, max_score, "-inf", start=self.offset, num=batch, withscores=True)
        )
        self.offset += len(rows)
        self.done = len(rows) < batch
        self.rows.extend((r[0].decode(), int(r[1])) for r in rows)
