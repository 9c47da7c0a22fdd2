"""The outbox in Redis: durable with the tasks (AOF), shared by every instance.

One hash per message, a sorted set of the pending ones by when they are due, one list of
message ids per task (`keys.Keyspace`: on a cluster all of them in the task's shard, so
one due set per shard). Messages are queued by the store's write scripts
(relay/backends/redis.py); here they are claimed, finished and listed. A claim moves the
message's due time past its lease, so a sender that dies holding it only delays it by the
lease.
"""

from __future__ import annotations

from typing import Any

import orjson

from relay import keys
from relay.backends.redis import Client, call
from relay.webhooks.messages import MAX_LOG, Attempt, Delivery, Message, State

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
    def __init__(self, client: Client, keyspace: keys.Keyspace = keys.SINGLE):
        self._r = client
        self._ks = keyspace
        self._turn = 0
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)
        self._redeliver = client.register_script(_REDELIVER)

    async def claim(self, now: float, lease: float, holder: str, limit: int) -> list[Delivery]:
        # Shard by shard until `limit` (the sender's free slots) is reached, starting one
        # shard further each time so that a busy shard cannot starve the others.
        tags = self._ks.tags
        self._turn = (self._turn + 1) % len(tags)
        out: list[Delivery] = []
        for tag in tags[self._turn :] + tags[: self._turn]:
            if len(out) >= limit:
                break
            rows = await call(
                self._claim(
                    keys=[self._ks.outbox_due(tag)],
                    args=[_ms(now), _ms(now + lease), limit - len(out), holder, self._ks.outbox_message(tag, "")],
                )
            )
            out += [_delivery(_pairs(row)) for row in rows]
        return out

    async def finish(
        self, delivery: Delivery, attempt: Attempt, state: State, next_at: float | None, keep: float
    ) -> bool:
        log = [a.to_json() for a in (*delivery.attempts, attempt)[-MAX_LOG:]]
        m = delivery.message
        tag = self._ks.tag(m.task_id)
        done = await call(
            self._finish(
                keys=[self._ks.outbox_due(tag), self._ks.outbox_message(tag, m.delivery_id), self._ks.outbox_failed(tag)],
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
        ids = await call(self._r.lrange(self._ks.task_deliveries(task_id), 0, -1))
        if not ids:
            return []
        tag = self._ks.tag(task_id)
        async with self._r.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(self._ks.outbox_message(tag, i.decode()))
            rows = await call(pipe.execute())
        return [_delivery(row) for row in rows if row]

    async def redeliver(self, task_id: str, now: float) -> int:
        tag = self._ks.tag(task_id)
        n = await call(
            self._redeliver(
                keys=[self._ks.outbox_due(tag), self._ks.outbox_failed(tag), self._ks.task_deliveries(task_id)],
                args=[_ms(now), self._ks.outbox_message(tag, "")],
            )
        )
        return int(n)

    async def backlog(self) -> tuple[int, dict[str, float]]:
        async with self._r.pipeline(transaction=False) as pipe:
            for tag in self._ks.tags:
                pipe.zcard(self._ks.outbox_due(tag))
                pipe.zrange(self._ks.outbox_due(tag), 0, 99)
            replies = await call(pipe.execute())
        count = sum(int(n) for n in replies[0::2])
        messages = [
            self._ks.outbox_message(tag, i.decode()) for tag, ids in zip(self._ks.tags, replies[1::2], strict=True) for i in ids
        ]
        oldest: dict[str, float] = {}
        if messages:
            async with self._r.pipeline(transaction=False) as pipe:
                for key in messages:
                    pipe.hmget(key, "url", "created")
                rows = await call(pipe.execute())
            for url, created in rows:
                if url is None or created is None:
                    continue
                at = int(created) / 1000
                label = url.decode()
                oldest[label] = min(oldest.get(label, at), at)
        return count, oldest

    async def disable(self, url: str, why: str) -> None:
        await call(self._r.hset(keys.WEBHOOKS_DISABLED, url, why))

    async def enable(self, url: str) -> bool:
        return bool(await call(self._r.hdel(keys.WEBHOOKS_DISABLED, url)))

    async def disabled(self) -> dict[str, str]:
        raw = await call(self._r.hgetall(keys.WEBHOOKS_DISABLED))
        return {k.decode(): v.decode() for k, v in raw.items()}
