"""The outbox in Redis (`redis://`): durable with the tasks (AOF), shared by every instance.

One hash per message (keys.outbox_message), a sorted set of the pending ones by when they
are due (keys.OUTBOX_DUE), one list of message ids per task. Messages are queued by the
store's write scripts (relay/backends/redis.py); here they are claimed, finished and
listed. A claim moves the message's due time past its lease, so a sender that dies
holding it only delays it by the lease.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis import asyncio as aioredis

from relay import keys
from relay.backends.redis import call
from relay.webhooks.messages import MAX_LOG, Attempt, Delivery, Message, State

_MSG_PREFIX = keys.outbox_message("")

# KEYS: due. ARGV: now_ms, until_ms, limit, holder, message key prefix
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local key = ARGV[5] .. id
  if redis.call('EXISTS', key) == 1 then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    redis.call('HSET', key, 'lease', ARGV[4])
    out[#out + 1] = redis.call('HGETALL', key)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""

# KEYS: due, message, failed. ARGV: holder, state, next_ms, log, tries, keep_ms, now_ms, id
_FINISH = """
if redis.call('HGET', KEYS[2], 'lease') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'lease', '', 'state', ARGV[2], 'log', ARGV[4], 'tries', ARGV[5], 'next', ARGV[3])
if ARGV[2] == 'pending' then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[8])
else
  redis.call('ZREM', KEYS[1], ARGV[8])
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
  if ARGV[2] == 'failed' then redis.call('ZADD', KEYS[3], ARGV[7], ARGV[8]) end
end
return 1
"""

# KEYS: due, failed, the task's delivery list. ARGV: now_ms, message key prefix
_REDELIVER = """
local n = 0
for _, id in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  local key = ARGV[2] .. id
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, 'state', 'pending', 'tries', 0, 'next', ARGV[1], 'lease', '')
    redis.call('PERSIST', key)
    redis.call('ZADD', KEYS[1], ARGV[1], id)
    redis.call('ZREM', KEYS[2], id)
    n = n + 1
  end
end
return n
"""


def _ms(ts: float) -> int:
    return int(ts * 1000)


def _text(value: bytes | None) -> str:
    return value.decode() if value is not None else ""


def _delivery(fields: dict[bytes, bytes]) -> Delivery:
    created = int(fields.get(b"created", b"0")) / 1000
    message = Message(
        delivery_id=_text(fields.get(b"id")),
        msg_id=_text(fields.get(b"msg")),
        task_id=_text(fields.get(b"task")),
        url=_text(fields.get(b"url")),
        type=_text(fields.get(b"type")),
        body=fields.get(b"body", b""),
        created=created,
    )
    state = _text(fields.get(b"state")) or "pending"
    next_raw = fields.get(b"next", b"")
    return Delivery(
        message=message,
        state=state if state in ("pending", "delivered", "failed") else "pending",  # type: ignore[arg-type]
        tries=int(fields.get(b"tries", b"0")),
        next_at=int(next_raw) / 1000 if next_raw else None,
        attempts=tuple(Attempt.from_json(a) for a in orjson.loads(fields.get(b"log", b"[]"))),
        lease=_text(fields.get(b"lease")),
    )


def _pairs(flat: list[Any]) -> dict[bytes, bytes]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


class RedisOutbox:
    def __init__(self, client: aioredis.Redis):
        self._r = client
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)
        self._redeliver = client.register_script(_REDELIVER)

    async def claim(self, now: float, lease: float, holder: str, limit: int) -> list[Delivery]:
        rows = await call(
            self._claim(keys=[keys.OUTBOX_DUE], args=[_ms(now), _ms(now + lease), limit, holder, _MSG_PREFIX])
        )
        return [_delivery(_pairs(row)) for row in rows]

    async def finish(
        self, delivery: Delivery, attempt: Attempt, state: State, next_at: float | None, keep: float
    ) -> bool:
        log = [a.to_json() for a in (*delivery.attempts, attempt)[-MAX_LOG:]]
        m = delivery.message
        done = await call(
            self._finish(
                keys=[keys.OUTBOX_DUE, keys.outbox_message(m.delivery_id), keys.OUTBOX_FAILED],
                args=[
                    delivery.lease,
                    state,
                    _ms(next_at) if next_at is not None else "",
                    orjson.dumps(log),
                    delivery.tries + 1,
                    _ms(keep),
                    _ms(attempt.at),
                    m.delivery_id,
                ],
            )
        )
        return bool(done)

    async def for_task(self, task_id: str) -> list[Delivery]:
        ids = await call(self._r.lrange(keys.task_deliveries(task_id), 0, -1))
        if not ids:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(keys.outbox_message(i.decode()))
            rows = await call(pipe.execute())
        return [_delivery(row) for row in rows if row]

    async def redeliver(self, task_id: str, now: float) -> int:
        n = await call(
            self._redeliver(
                keys=[keys.OUTBOX_DUE, keys.OUTBOX_FAILED, keys.task_deliveries(task_id)],
                args=[_ms(now), _MSG_PREFIX],
            )
        )
        return int(n)

    async def backlog(self) -> tuple[int, dict[str, float]]:
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.OUTBOX_DUE)
            pipe.zrange(keys.OUTBOX_DUE, 0, 99)
            count, ids = await call(pipe.execute())
        oldest: dict[str, float] = {}
        if ids:
            async with self._r.pipeline(transaction=False) as pipe:
                for i in ids:
                    pipe.hmget(keys.outbox_message(i.decode()), "url", "created")
                rows = await call(pipe.execute())
            for url, created in rows:
                if url is None or created is None:
                    continue
                at = int(created) / 1000
                label = url.decode()
                oldest[label] = min(oldest.get(label, at), at)
        return int(count), oldest

    async def disable(self, url: str, why: str) -> None:
        await call(self._r.hset(keys.WEBHOOKS_DISABLED, url, why))

    async def enable(self, url: str) -> bool:
        return bool(await call(self._r.hdel(keys.WEBHOOKS_DISABLED, url)))

    async def disabled(self) -> dict[str, str]:
        raw = await call(self._r.hgetall(keys.WEBHOOKS_DISABLED))
        return {k.decode(): v.decode() for k, v in raw.items()}
