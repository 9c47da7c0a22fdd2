"""The garbage collector, tuned for a heap dominated by long-lived streams.

Each open stream holds ~130 tracked objects; with CPython's collector every full
collection scans all of them (119-134 ms with 2,000 streams open) and frees nothing. So:
the start-up heap is frozen, and so is whatever survives a middle-generation collection,
which leaves the collector scanning only young objects: no pause grows with the number of
open streams. The cost: a frozen object that later becomes part of a reference cycle is
never freed, so the hot paths must not make cycles (tests/test_garbage.py); objects freed
by reference counting, which is all the others, are freed as before.

Measured with `python -m bench all --targets relay --scenarios per-task --per-task 2000`
(medians of three runs): CPython's defaults (700, 10, 10) put the callback->processing
event p99 at 220 ms; freezing only the start-up heap, with thresholds (10000, 20, 20),
at 36.5 ms. Freezing survivors too, with the thresholds below: the per-task run has no
full collection and no pause over 10 ms, and opening 2,000 streams (`--quick --scenarios
idle`) no pause over 20 ms, where the earlier tuning reached 100 ms. Pauses are in
`relay_gc_pause_seconds{generation}`, and the bench reports them.

A middle-generation collection scans everything not yet frozen, about 1 us an object on a
slow machine: with (5000, 4, 20) that was ~22,000 objects while streams were opening, a
20-25 ms pause every few seconds (33 over 20 ms in `bench all --targets relay --scenarios
idle --idle-levels 1000,19000`, counted by a temporary hook on every collection). With
(3000, 1, 20) survivors are frozen after two smaller collections: 3 over 20 ms in the
same run, and per-task p99 46.5 / 42.5 ms against 49.3 / 54.7 ms (two runs each, this
machine). `sweep_young` below adds a collection by time, for the churn the count misses.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from relay import metrics

THRESHOLDS = (3_000, 1, 20)

_started: dict[int, float] = {}
_watching = False


def _observe(phase: str, info: dict[str, Any]) -> None:
    generation = int(info.get("generation", 0))
    if phase == "start":
        _started[generation] = time.perf_counter()
        return
    if (began := _started.pop(generation, None)) is not None:
        metrics.child(metrics.GC_PAUSES, str(generation)).observe(time.perf_counter() - began)
    if generation >= 1:
        # What survived two collections is long-lived (a stream, a client): freeze it, so
        # no later collection scans it again. The oldest generation then stays nearly
        # empty, and no pause grows with the number of open streams.
        gc.freeze()


def tune() -> None:
    """Freeze what start-up built (modules, the catalogue, clients: never garbage) so no
    collection scans it again, raise the thresholds, and time every collection."""
    global _watching
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    if not _watching:
        gc.callbacks.append(_observe)
        _watching = True


# Every this many seconds the young generations are collected whatever their count (their
# survivors are then frozen, as after any such collection).
YOUNG_EVERY = 1.0


async def sweep_young(every: float = YOUNG_EVERY) -> None:
    """Collect the young generations by time as well as by count. The count that triggers a
    collection is allocations minus deallocations, and an idle stream's churn nets to zero:
    its next wait and its re-armed timer are new, long-lived objects, and the ones they
    replace were frozen. So with 19,000 idle streams the youngest generation grew to
    96,000-184,000 objects with its count still under the threshold, and the collection
    that finally came paused the process for 77-235 ms (`bench all --targets relay
    --scenarios idle --idle-levels 1000,19000`, a temporary hook printing each collection
    over 20 ms with the generations' sizes). Collected every second, it holds about a
    second of that churn."""
    while True:
        await asyncio.sleep(every)
        gc.collect(1)
