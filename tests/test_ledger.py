"""The ledger's rules, in this process (memory) and on a real Redis: a hold finishes once,
whatever calls it how often; a crash between any two steps is finished by the sweep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from relay import keys
from relay.backends.base import Ledger
from relay.backends.ledger import MemoryLedger, RedisLedger
from relay.backends.memory import MemoryStore
from relay.backends.redis_clients import command_client
from relay.credits import ORPHAN_AFTER, Accounts
from relay.models import Mode, Status, Task, utcnow


@pytest.fixture(params=["memory", "redis", "cluster"])
async def ledger(request: pytest.FixtureRequest) -> AsyncIterator[Ledger]:
    if request.param == "memory":
        yield MemoryLedger()
        return
    url: str = request.getfixturevalue("cluster_url" if request.param == "cluster" else "redis_url")
    client = command_client(url, max_connections=20)
    try:
        yield RedisLedger(client, keys.Keyspace(cluster=request.param == "cluster"))
    finally:
        await client.aclose()


def task(task_id: str, status: Status, hold: str) -> Task:
    now = utcnow()
    return Task(task_id, "kie", "m", Mode.TEXT_TO_IMAGE, status, "p", (), now, now, cost=5, extra={"hold": hold})


async def test_a_hold_finishes_once_under_racing_calls(ledger: Ledger) -> None:
    await ledger.grant("u", 20, "test")
    reserved = await ledger.reserve("u", "h1", 5)
    assert reserved.taken and reserved.balance == 15
    again = await ledger.reserve("u", "h1", 5)
    assert again.taken and await ledger.balance("u") == 15, "the same hold is reserved once"
    # Twenty racing refunds and settles of one hold: exactly one moves anything.
    results = await asyncio.gather(*(ledger.finish("h1", "refund" if n % 2 else "settle", "race") for n in range(20)))
    assert results.count(True) == 1
    balance = await ledger.balance("u")
    assert balance in (15, 20)
    entries = await ledger.entries("u", 100)
    assert sum(e.delta for e in entries) == balance and len(entries) == 3
    short = await ledger.reserve("u", "h2", 1000)
    assert not short.taken and short.balance == balance


async def test_the_sweep_finishes_what_a_crash_left(ledger: Ledger) -> None:
    store = MemoryStore()
    accounts = Accounts(ledger, store, welcome=30)
    await accounts.greet("u")
    await accounts.greet("u")
    assert await ledger.balance("u") == 30, "welcome credits come once"
    done, failed, running, _never_stored = [await accounts.reserve("u", 5) for _ in range(4)]
    for hold, task_id in ((done, "t-done"), (failed, "t-failed"), (running, "t-running")):
        await ledger.attach(hold, task_id)
    # The terminal changes were stored but their listener never ran (the instance died).
    await store.insert(task("t-done", Status.COMPLETED, done))
    await store.insert(task("t-failed", Status.FAILED, failed))
    await store.insert(task("t-running", Status.PROCESSING, running))
    now = time.time() + 120
    assert await accounts.sweep(now) == 2
    assert await ledger.balance("u") == 30 - 5 * 4 + 5, "the failed task's reservation came back"
    assert await accounts.sweep(now + ORPHAN_AFTER) == 1, "a hold whose task was never stored is refunded"
    assert await ledger.balance("u") == 30 - 5 * 2
    assert [h.hold_id for h in await ledger.open_holds(now + ORPHAN_AFTER, 10)] == [running]
    assert await accounts.sweep(now + ORPHAN_AFTER) == 0, "a running task's hold waits for its end"
