"""Delivery integrity: lost final / newest states and streams the server did not end, per
target and scenario, in one table that reads "zero lost, zero unclosed" at a glance."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

# (scenario, what the table calls it, the scenario's row label, kind); kind "part" is shown
# but not added to the totals (per-task's final losses are in its "any version lost" too).
CHECKS = [
    ("per-task", "final state lost", "final state lost", "part"),
    ("per-task", "any version lost", "lost (stream never got the version)", "lost"),
    (
        "per-task",
        "unclosed streams",
        "streams not ended by the server after completion",
        "unclosed",
    ),
    ("fanout", "final state lost", "final state lost", "lost"),
    ("fanout", "unclosed streams", "streams not ended by the server after completion", "unclosed"),
    (
        "replay",
        "newest state missing after reconnect",
        "streams missing the newest state after reconnect",
        "lost",
    ),
    (
        "replay",
        "final state lost (sent live after the reconnect)",
        "streams missing the live final event",
        "lost",
    ),
    ("replay", "unclosed streams", "streams not ended by the server after completion", "unclosed"),
    ("leak", "any version lost (all runs)", "lost (stream never got the version)", "lost"),
    (
        "leak",
        "unclosed streams (all runs)",
        "streams not ended by the server after completion",
        "unclosed",
    ),
]


async def await_server_close(env: Any, within: float = 5.0) -> None:
    """For a target that ends its streams after the terminal event: wait (bounded) until the
    load workers hold no open stream, so a close still in flight is not counted as missing."""
    if not env.target.closes_streams:
        return
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if sum(s["open"] for s in await env.pool.stats()) == 0:
            return
        await asyncio.sleep(0.05)


def _find(results: Sequence[Any], scenario: str, target: str) -> Any:
    return next((r for r in results if r.scenario == scenario and r.target == target), None)


def table(results: Sequence[Any], targets: Sequence[str]) -> list[str]:
    """One row per check of a scenario that ran, one column per target; a last row with each
    target's totals."""
    out = ["| scenario | check | " + " | ".join(targets) + " |", "|" + "---|" * (len(targets) + 2)]
    totals = {
        t: {"lost": 0, "unclosed": 0, "checked": 0, "closing": 0, "failed": 0} for t in targets
    }
    for scenario, what, label, kind in CHECKS:
        rows = {t: _find(results, scenario, t) for t in targets}
        if all(r is None for r in rows.values()):
            continue
        cells = []
        for t in targets:
            r = rows[t]
            value = None if r is None or r.failed else r.value(label)
            if r is None:
                cells.append("-")
            elif r.failed:
                cells.append("FAILED")
                totals[t]["failed"] += 1
            elif not isinstance(value, int | float):
                cells.append("n/a")
            else:
                if kind in ("lost", "unclosed"):
                    totals[t][kind] += int(value)
                totals[t]["checked"] += 1
                totals[t]["closing"] += kind == "unclosed"
                cells.append(f"{int(value):,}" if value == 0 else f"**{int(value):,}**")
        out.append(f"| {scenario} | {what} | " + " | ".join(cells) + " |")
    verdicts = []
    for t in targets:
        tot = totals[t]
        if not tot["checked"]:
            verdicts.append("not measured")
            continue
        unclosed = f"{tot['unclosed']:,} unclosed" if tot["closing"] else "unclosed n/a"
        text = f"{tot['lost']:,} lost, {unclosed}"
        ok = tot["lost"] == 0 and tot["unclosed"] == 0 and tot["failed"] == 0
        failed = f", {tot['failed']} check(s) FAILED" if tot["failed"] else ""
        verdicts.append(f"{text}{failed}: " + ("ok" if ok else "**NOT OK**"))
    out.append("| **all** | **total** | " + " | ".join(verdicts) + " |")
    return out
