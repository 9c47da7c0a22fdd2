"""The local fan-out, in-process: one change reaches every stream watching its task and no
other; a reader that falls behind holds only the newest state per task; a resync reaches
every stream; a closed subscription is forgotten."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from relay.backends.memory import MemoryHub, MemoryStore
from relay.fanout import LocalFanout, TaskEvent
from relay.models import Mode, Status, Task

pytestmark = pytest.mark.inprocess


def event(task_id: str, version: int, terminal: bool = False) -> TaskEvent:
    return TaskEvent(task_id, version, terminal, b'{"v":%d}' % version)


async def test_a_change_reaches_exactly_the_streams_that_watch_its_task() -> None:
    fanout = LocalFanout()
    with fanout.add(["a"]) as only_a, fanout.add(["a", "b"]) as both, fanout.add(["c"]) as other:
        fanout.dispatch(event("a", 2))
        for sub in (only_a, both):
            news = await sub.next(within=1)
            assert news is not None and [e.version for e in news[0]] == [2] and news[1] is False
        assert await other.next(within=0.05) is None


async def test_a_slow_reader_keeps_only_the_newest_state_per_task() -> None:
    fanout = LocalFanout()
    with fanout.add(["a", "b"]) as sub:
        for version in range(2, 200):
            fanout.dispatch(event("a", version))
        fanout.dispatch(event("b", 5))
        fanout.dispatch(event("a", 3))  # older than what is waiting: never replaces it
        news = await sub.next(within=1)
        assert news is not None
        assert sorted((e.task_id, e.version) for e in news[0]) == [("a", 199), ("b", 5)]
        assert await sub.next(within=0.05) is None, "nothing is delivered twice"


async def test_resync_reaches_every_stream_and_close_forgets() -> None:
    fanout = LocalFanout()
    first, second = fanout.add(["a"]), fanout.add(["b"])
    fanout.resync_all()
    for sub in (first, second):
        news = await sub.next(within=1)
        assert news == ([], True)
    first.close()
    first.close()  # closing twice is harmless
    fanout.dispatch(event("a", 2))
    assert await first.next(within=0.05) is None
    second.close()
    assert not fanout._by_task, "no empty sets left behind"


def test_events_survive_the_wire() -> None:
    original = event("task_1-x", 7, terminal=True)
    assert TaskEvent.decode(original.encode()) == original


async def test_the_memory_store_publishes_through_its_hub_as_redis_does() -> None:
    hub = MemoryHub()
    store = MemoryStore(hub)
    now = datetime.now(UTC)
    task = Task("t1", "kie", "m", Mode.TEXT_TO_IMAGE, Status.PENDING, "p", (), now, now)
    with await hub.subscribe(["t1"]) as sub:
        assert await store.insert(task)
        assert not await store.insert(task), "a refused write publishes nothing"
        news = await sub.next(within=1)
        assert news is not None and [e.version for e in news[0]] == [1]
        assert not await store.replace(replace(task, version=2), expected_version=5)
        assert await sub.next(within=0.05) is None
        assert await store.replace(replace(task, version=2), expected_version=1)
        news = await sub.next(within=1)
        assert news is not None and [e.version for e in news[0]] == [2]


async def test_each_wait_gives_up_at_its_own_deadline() -> None:
    # One timer serves successive waits: a wait that news ended leaves it armed for the
    # next one, which must still give up at its own deadline, neither early nor late.
    loop = asyncio.get_running_loop()
    fanout = LocalFanout()
    with fanout.add(["a"]) as sub:
        loop.call_later(0.15, fanout.dispatch, event("a", 2))
        news = await sub.next(within=0.3)  # arms the timer for t+0.3; news at t+0.15
        assert news is not None and [e.version for e in news[0]] == [2]
        started = loop.time()
        assert await sub.next(within=0.3) is None  # the timer fires at t+0.3: too early
        waited = loop.time() - started
        assert 0.28 <= waited < 1.0, waited
        loop.call_later(0.05, fanout.dispatch, event("a", 3))
        assert await sub.next(within=5) is not None  # arms a timer 5 s out
        started = loop.time()
        assert await sub.next(within=0.1) is None  # a shorter wait than the armed timer
        waited = loop.time() - started
        assert 0.09 <= waited < 1.0, waited
    assert not sub.waiting_timer, "a closed subscription holds no timer"
