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
"""

from __future__ import annotations

import gc
import time
from typing import Any

from relay import metrics

THRESHOLDS = (5_000, 4, 20)

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
