"""`within`, the request path's `asyncio.timeout`: the same outcomes on a shared coarse
timer. Each case is checked against asyncio.timeout's own behaviour where it has one."""

from __future__ import annotations

import asyncio

import pytest

from relay import deadline
from relay.deadline import TICK, within
from tests.waiting import until

pytestmark = pytest.mark.timeout(20)


async def test_a_late_block_raises_timeout_error_soon_after_its_deadline() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with within(0.2):
            await asyncio.sleep(5)
    took = loop.time() - started
    assert 0.2 <= took < 0.2 + TICK + 0.5


async def test_a_block_in_time_leaves_nothing_behind() -> None:
    for _ in range(100):
        async with within(5):
            await asyncio.sleep(0)
    dog = deadline._watchdog
    assert dog is not None and dog.loop is asyncio.get_running_loop()
    assert not dog.live
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    # With nothing in flight the timer lapses instead of ticking forever.
    async def lapsed() -> bool:
        return dog.timer is None

    await until(lapsed, timeout=5, what="the watchdog's timer to lapse", interval=TICK / 2)


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    entered = asyncio.Event()

    async def work() -> None:
        async with within(5):
            entered.set()
            await asyncio.sleep(5)

    task = asyncio.create_task(work())
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_inner_deadline_is_caught_inside_and_the_outer_block_carries_on() -> None:
    async with within(5):
        with pytest.raises(TimeoutError):
            async with within(0.1):
                await asyncio.sleep(5)
        await asyncio.sleep(TICK * 2)  # no leftover cancellation lands here
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_the_outer_deadline_passes_through_the_inner_block() -> None:
    inner_saw: list[type[BaseException]] = []
    with pytest.raises(TimeoutError):
        async with within(0.1):
            try:
                async with within(5):
                    await asyncio.sleep(5)
            except BaseException as exc:
                inner_saw.append(type(exc))
                raise
    assert inner_saw == [asyncio.CancelledError]


async def test_a_deadline_and_an_outside_cancellation_together_stay_a_cancellation() -> None:
    # asyncio.timeout's rule: when someone else cancelled too, the task is being cancelled,
    # and a TimeoutError would hide that.
    started = asyncio.Event()

    async def work() -> None:
        async with within(0.1):
            started.set()
            try:
                await asyncio.sleep(5)
            finally:
                await asyncio.sleep(5)  # cut short by the outside cancellation below

    task = asyncio.create_task(work())
    await asyncio.wait_for(started.wait(), 5)

    async def fired() -> bool:
        return task.cancelling() > 0

    await until(fired, timeout=5, what="the deadline to fire", interval=0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_many_blocks_at_once_each_get_their_own_outcome() -> None:
    async def one(i: int) -> str:
        try:
            async with within(0.2 if i % 2 else 5):
                await asyncio.sleep(5 if i % 2 else 0.05)
            return "done"
        except TimeoutError:
            return "late"

    outcomes = await asyncio.gather(*(one(i) for i in range(200)))
    assert outcomes == ["late" if i % 2 else "done" for i in range(200)]
