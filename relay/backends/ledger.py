"""Credits: each user's balance and the ledger of every move, in this process
(`memory://`) or in Redis (`redis://`), one atomic step per move.

A create *reserves* the price under a hold id before the provider is called; the hold
later *settles* (the task completed: the reservation becomes the charge) or is
*refunded* (failed, timed out, cancelled, or never created). A hold finishes once: the
second settle or refund of the same hold changes nothing, so duplicate callbacks, racing
instances and retries after a crash can never charge or refund twice. Every entry names
its hold, its task (once known) and its reason; the entries sum to the balance.
"""

from __future__ import annotations

import time

import orjson

from relay import keys
from relay.backends.base import Entry, Hold, Outcome, Reserved
from relay.backends.redis import Client, call

MAX_ENTRIES = 10_000  # per user; older entries leave the list (the balance stays exact)


class MemoryLedger:
    def __init__(self) -> None:
        self._balances: dict[str, int] = {}
        self._entries: dict[str, list[Entry]] = {}
        self._holds: dict[str, Hold] = {}
        self._welcomed: set[str] = set()

    def _log(self, user: str, entry: Entry) -> None:
        entries = self._entries.setdefault(user, [])
        entries.insert(0, entry)
        del entries[MAX_ENTRIES:]

    async def balance(self, user: str) -> int:
        return self._balances.get(user, 0)

    async def grant(self, user: str, amount: int, reason: str) -> int:
        balance = self._balances[user] = self._balances.get(user, 0) + amount
        self._log(user, Entry(time.time(), amount, balance, reason))
        return balance

    async def welcome(self, user: str, amount: int) -> None:
        if user not in self._welcomed:
            self._welcomed.add(user)
            await self.grant(user, amount, "welcome credits")

    async def reserve(self, user: str, hold_id: str, amount: int) -> Reserved:
        balance = self._balances.get(user, 0)
        if hold_id in self._holds:
            return Reserved(True, balance)
        if balance < amount:
            return Reserved(False, balance)
        balance = self._balances[user] = balance - amount
        now = time.time()
        self._holds[hold_id] = Hold(hold_id, user, amount, "held", None, now)
        self._log(user, Entry(now, -amount, balance, "reserve", None, hold_id))
        return Reserved(True, balance)

    async def attach(self, hold_id: str, task_id: str) -> None:
        hold = self._holds.get(hold_id)
        if hold is not None:
            self._holds[hold_id] = Hold(hold.hold_id, hold.user, hold.amount, hold.state, task_id, hold.created)

    async def finish(self, hold_id: str, outcome: Outcome, reason: str) -> bool:
        hold = self._holds.get(hold_id)
        if hold is None or hold.state != "held":
            return False
        delta = hold.amount if outcome == "refund" else 0
        balance = self._balances[hold.user] = self._balances.get(hold.user, 0) + delta
        self._holds[hold_id] = Hold(hold.hold_id, hold.user, hold.amount, outcome, hold.task, hold.created)
        self._log(hold.user, Entry(time.time(), delta, balance, reason, hold.task, hold_id))
        return True

    async def get_hold(self, hold_id: str) -> Hold | None:
        return self._holds.get(hold_id)

    async def open_holds(self, older_than: float, limit: int) -> list[Hold]:
        held = [h for h in self._holds.values() if h.state == "held" and h.created < older_than]
        return sorted(held, key=lambda h: h.created)[:limit]

    async def entries(self, user: str, limit: int) -> list[Entry]:
        return self._entries.get(user, [])[:limit]


# KEYS: balance, hold, ledger, open holds. ARGV: amount, hold id, user, now (s), max entries
_RESERVE = """
local balance = tonumber(redis.call('GET', KEYS[1]) or '0')
if redis.call('EXISTS', KEYS[2]) == 1 then return {2, balance} end
local amount = tonumber(ARGV[1])
if balance < amount then return {0, balance} end
balance = redis.call('DECRBY', KEYS[1], amount)
redis.call('HSET', KEYS[2], 'user', ARGV[3], 'amount', amount, 'state', 'held', 'task', '', 'created', ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
redis.call('LPUSH', KEYS[3], cjson.encode({at = tonumber(ARGV[4]), delta = -amount, balance = balance,
  reason = 'reserve', hold = ARGV[2]}))
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
return {1, balance}
"""

# KEYS: balance, hold, ledger, open holds. ARGV: outcome, reason, now (s), max entries, user,
# hold id, keep (ms)
_FINISH = """
if redis.call('HGET', KEYS[2], 'state') ~= 'held' then return {0, 0} end
if redis.call('HGET', KEYS[2], 'user') ~= ARGV[5] then return {0, 0} end
local amount = tonumber(redis.call('HGET', KEYS[2], 'amount'))
local delta = 0
if ARGV[1] == 'refund' then delta = amount end
local balance = redis.call('INCRBY', KEYS[1], delta)
redis.call('HSET', KEYS[2], 'state', ARGV[1], 'finished', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
redis.call('ZREM', KEYS[4], ARGV[6])
local task = redis.call('HGET', KEYS[2], 'task')
local entry = {at = tonumber(ARGV[3]), delta = delta, balance = balance, reason = ARGV[2], hold = ARGV[6]}
if task ~= '' then entry.task = task end
redis.call('LPUSH', KEYS[3], cjson.encode(entry))
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[4]) - 1)
return {1, balance}
"""

# KEYS: balance, ledger. ARGV: amount, reason, now (s), max entries
_GRANT = """
local balance = redis.call('INCRBY', KEYS[1], tonumber(ARGV[1]))
redis.call('LPUSH', KEYS[2], cjson.encode({at = tonumber(ARGV[3]), delta = tonumber(ARGV[1]),
  balance = balance, reason = ARGV[2]}))
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
return balance
"""

# KEYS: balance, ledger, welcomed flag. ARGV: amount, now (s), max entries
_WELCOME = """
if redis.call('SET', KEYS[3], '1', 'NX') == false then return 0 end
local balance = redis.call('INCRBY', KEYS[1], tonumber(ARGV[1]))
redis.call('LPUSH', KEYS[2], cjson.encode({at = tonumber(ARGV[2]), delta = tonumber(ARGV[1]),
  balance = balance, reason = 'welcome credits'}))
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
return 1
"""

HOLD_KEEP_MS = 30 * 24 * 3600 * 1000


def _hold(hold_id: str, fields: dict[bytes, bytes]) -> Hold | None:
    if not fields:
        return None
    task = fields.get(b"task", b"").decode()
    return Hold(
        hold_id, fields[b"user"].decode(), int(fields[b"amount"]), fields[b"state"].decode(),
        task or None, float(fields[b"created"]),
    )


class RedisLedger:
    def __init__(self, client: Client, keyspace: keys.Keyspace = keys.SINGLE):
        self._r = client
        self._k = keyspace
        self._reserve = client.register_script(_RESERVE)
        self._finish = client.register_script(_FINISH)
        self._grant = client.register_script(_GRANT)
        self._welcome = client.register_script(_WELCOME)

    async def balance(self, user: str) -> int:
        raw = await call(self._r.get(self._k.credits(user)))
        return int(raw) if raw is not None else 0

    async def grant(self, user: str, amount: int, reason: str) -> int:
        result = await call(
            self._grant(keys=[self._k.credits(user), self._k.ledger(user)], args=[amount, reason, time.time(), MAX_ENTRIES])
        )
        return int(result)

    async def welcome(self, user: str, amount: int) -> None:
        await call(
            self._welcome(
                keys=[self._k.credits(user), self._k.ledger(user), self._k.welcomed(user)], args=[amount, time.time(), MAX_ENTRIES]
            )
        )

    async def reserve(self, user: str, hold_id: str, amount: int) -> Reserved:
        taken, balance = await call(
            self._reserve(
                keys=[self._k.credits(user), self._k.hold(hold_id), self._k.ledger(user), self._k.open_holds],
                args=[amount, hold_id, user, time.time(), MAX_ENTRIES],
            )
        )
        return Reserved(int(taken) != 0, int(balance))

    async def attach(self, hold_id: str, task_id: str) -> None:
        await call(self._r.hset(self._k.hold(hold_id), "task", task_id))

    async def finish(self, hold_id: str, outcome: Outcome, reason: str) -> bool:
        hold = await self.get_hold(hold_id)
        if hold is None or hold.state != "held":
            return False
        done, _ = await call(
            self._finish(
                keys=[self._k.credits(hold.user), self._k.hold(hold_id), self._k.ledger(hold.user), self._k.open_holds],
                args=[outcome, reason, time.time(), MAX_ENTRIES, hold.user, hold_id, HOLD_KEEP_MS],
            )
        )
        return int(done) == 1

    async def get_hold(self, hold_id: str) -> Hold | None:
        return _hold(hold_id, await call(self._r.hgetall(self._k.hold(hold_id))))

    async def open_holds(self, older_than: float, limit: int) -> list[Hold]:
        ids = await call(self._r.zrangebyscore(self._k.open_holds, "-inf", older_than, start=0, num=limit))
        holds = [await self.get_hold(i.decode()) for i in ids]
        return [h for h in holds if h is not None and h.state == "held"]

    async def entries(self, user: str, limit: int) -> list[Entry]:
        rows = await call(self._r.lrange(self._k.ledger(user), 0, limit - 1))
        out = []
        for row in rows:
            d = orjson.loads(row)
            out.append(Entry(float(d["at"]), int(d["delta"]), int(d["balance"]), str(d["reason"]), d.get("task"), d.get("hold")))
        return out
