"""Garbage-collection pauses of the server under test, per scenario.

Before and after a scenario's measured phase the bench reads each server process's pause
histogram per generation; the result is the difference: collections per generation, pauses
over 5 / 20 / 50 ms (from the cumulative buckets) and the largest bucket a pause reached.

- Relay: its Prometheus histogram `relay_gc_pause_seconds{generation}` at `GET /metrics`.
  With `--workers N` every scrape is answered by whichever worker accepts the connection, so
  the bench scrapes on fresh connections until it has seen every worker (bounded), telling
  them apart by the earliest `*_created` timestamp in the scrape (set when the worker
  imported its metrics).
- peer: `GET /_bench/gc` of the launcher (`bench.peer.run`), a `gc.callbacks` hook with the
  same buckets.
- nchan: n/a (C, no collector).
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.httpclient import Client

THRESHOLDS_MS = (5, 20, 50)
GENERATIONS = ("0", "1", "2")
_SAMPLE = re.compile(r"^relay_gc_pause_seconds_(bucket|count|sum)\{([^}]*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')
_CREATED = re.compile(r"^\w+_created(?:\{[^}]*\})? (\S+)$")
_START = re.compile(r"^process_start_time_seconds (\S+)$")


@dataclass
class Hist:
    """One generation's pauses in one process: count, seconds, cumulative buckets."""

    count: float = 0.0
    total: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound (s) -> cumulative
    longest: float | None = None  # exact, when the source knows it (the peer)

    def minus(self, before: Hist | None) -> Hist:
        if before is None:
            return self
        return Hist(
            self.count - before.count,
            self.total - before.total,
            {b: n - before.buckets.get(b, 0.0) for b, n in self.buckets.items()},
            self.longest if self.longest is not None and self.longest != before.longest else None,
        )

    def add(self, other: Hist) -> None:
        """Accumulate `other` into this one (several processes, or generations)."""
        self.count += other.count
        self.total += other.total
        for b, n in other.buckets.items():
            self.buckets[b] = self.buckets.get(b, 0.0) + n
        if other.longest is not None:
            self.longest = max(self.longest or 0.0, other.longest)


Snapshot = dict[str, dict[str, Hist]]  # process id -> generation -> histogram


def process_identity(text: str) -> str:
    """Which process answered a /metrics scrape: its earliest `*_created` timestamp (set when
    it imported its metrics), else its start time."""
    created = [float(m.group(1)) for line in text.splitlines() if (m := _CREATED.match(line))]
    if created:
        return repr(min(created))
    return next((m.group(1) for line in text.splitlines() if (m := _START.match(line))), "")


def parse_prometheus(text: str) -> tuple[str, dict[str, Hist]]:
    """(process identity, generation -> Hist) from one /metrics answer."""
    if "# TYPE relay_gc_pause_seconds histogram" not in text:
        raise ValueError("no relay_gc_pause_seconds histogram in /metrics")
    out: dict[str, Hist] = {}
    for line in text.splitlines():
        if (m := _SAMPLE.match(line)) is not None:
            kind, labels, raw = m.group(1), dict(_LABEL.findall(m.group(2))), float(m.group(3))
            hist = out.setdefault(labels.get("generation", "?"), Hist())
            if kind == "count":
                hist.count = raw
            elif kind == "sum":
                hist.total = raw
            elif labels.get("le") not in (None, "+Inf"):
                hist.buckets[float(labels["le"])] = raw
    return process_identity(text), out


def parse_peer(body: bytes) -> tuple[str, dict[str, Hist]]:
    data = orjson.loads(body)
    out = {
        gen: Hist(
            float(g["count"]),
            float(g["sum"]),
            {float(b): float(n) for b, n in g["buckets"]},
            float(g["max"]),
        )
        for gen, g in data["generations"].items()
    }
    return str(data["pid"]), out


async def http_get(port: int, path: str, within: float = 10.0) -> bytes:
    """One GET on a fresh connection (so a multi-worker server may answer from any worker)."""
    client = Client(port, size=1, timeout=within)
    try:
        response = await client.request("GET", path, headers={"Connection": "close"})
    finally:
        client.close()
    if response.status != 200:
        raise RuntimeError(f"GET {path} answered {response.status}")
    return response.body


async def scrape(
    fetch: Callable[[], Awaitable[tuple[str, dict[str, Hist]]]], processes: int, attempts: int = 0
) -> Snapshot:
    """Call `fetch` until `processes` distinct processes answered (at most `attempts`)."""
    seen: Snapshot = {}
    for _ in range(attempts or max(4, 16 * processes)):
        identity, hists = await fetch()
        seen[identity] = hists
        if len(seen) >= processes:
            break
    return seen


def _summary(hist: Hist) -> dict[str, Any]:
    count = round(hist.count)
    over = {}
    for ms in THRESHOLDS_MS:
        below = hist.buckets.get(ms / 1000)
        over[f"over_{ms}ms"] = None if below is None else max(0, round(hist.count - below))
    reached = next((b for b in sorted(hist.buckets) if hist.buckets[b] >= hist.count), None)
    if count == 0:
        longest = "-"
    elif reached is None:
        longest = f"> {max(hist.buckets, default=0) * 1000:g} ms"
    else:
        longest = f"≤ {reached * 1000:g} ms"
    return {
        "collections": count,
        "pause_ms": hist.total * 1000,
        **over,
        "longest_bucket_ms": None if count == 0 or reached is None else reached * 1000,
        "longest": longest,
        "longest_exact_ms": None if hist.longest is None or count == 0 else hist.longest * 1000,
    }


def difference(before: Snapshot, after: Snapshot, source: str, expected: int) -> dict[str, Any]:
    """The figures for results.json: per generation and in total, over the processes seen both
    before and after."""
    shared = sorted(before.keys() & after.keys())
    per_gen: dict[str, Hist] = {}
    for proc in shared:
        for gen, hist in after[proc].items():
            delta = hist.minus(before[proc].get(gen))
            per_gen.setdefault(gen, Hist(0.0, 0.0, dict.fromkeys(delta.buckets, 0.0))).add(delta)
    total = Hist(0.0, 0.0, {})
    for hist in per_gen.values():
        total.add(hist)
    return {
        "source": source,
        "processes": len(shared),
        "expected_processes": expected,
        "generations": {gen: _summary(per_gen.get(gen, Hist())) for gen in GENERATIONS},
        "total": _summary(total),
    }


class GcProbe:
    """Reads the target's GC figures around a measured phase (nothing for nchan)."""

    def __init__(self, target: Any):
        self.target = target
        self.before: Snapshot | None = None
        self.error = ""

    async def _read(self) -> Snapshot | None:
        try:
            snap: Snapshot | None = await self.target.gc_snapshot()
            return snap
        except Exception as exc:  # a figure lost, not a failed scenario
            self.error = f"GC figures not read: {type(exc).__name__}: {exc}"
            return None

    async def start(self) -> None:
        self.before = await self._read()

    async def stop(self, result: Any) -> None:
        if self.before is None:
            if self.error:
                result.notes.append(self.error)
            return
        after = await self._read()
        if after is None:
            result.notes.append(self.error)
            return
        result.gc = difference(self.before, after, self.target.gc_source, self.target.processes)
        seen = result.gc["processes"]
        if seen < self.target.processes:
            result.notes.append(
                f"GC figures cover {seen} of {self.target.processes} server processes "
                "(a scrape reaches whichever worker accepts it)"
            )


def table(results: list[Any], targets: list[str]) -> list[str]:
    """The report's GC table: one row per (scenario, target), targets in the report's order."""
    out = [
        "| scenario | target | collections gen 0 / 1 / 2 | pauses > 5 ms | > 20 ms | > 50 ms "
        "| longest (bucket) | total pause |",
        "|---|---|---|---|---|---|---|---|",
    ]
    scenarios = list(dict.fromkeys(r.scenario for r in results))
    rank = {t: i for i, t in enumerate(targets)}
    ordered = sorted(
        results, key=lambda r: (scenarios.index(r.scenario), rank.get(r.target, len(rank)))
    )
    for r in ordered:
        if r.failed or not r.rows:
            continue
        gc = getattr(r, "gc", None)
        if not gc:
            out.append(f"| {r.scenario} | {r.target} | n/a | n/a | n/a | n/a | n/a | n/a |")
            continue
        gens, total = gc["generations"], gc["total"]
        counts = " / ".join(f"{gens[g]['collections']:,}" for g in GENERATIONS)
        cells = [
            ("-" if total[f"over_{ms}ms"] is None else f"{total[f'over_{ms}ms']:,}")
            for ms in THRESHOLDS_MS
        ]
        longest = total["longest"]
        if total["longest_exact_ms"] is not None:
            longest += f" ({total['longest_exact_ms']:.1f} ms)"
        worst = max(
            (g for g in GENERATIONS if gens[g]["collections"]),
            key=lambda g: gens[g]["longest_bucket_ms"] or math.inf,
            default=None,
        )
        if worst is not None and total["collections"]:
            longest += f", gen {worst}"
        out.append(
            f"| {r.scenario} | {r.target} | {counts} | "
            + " | ".join(cells)
            + f" | {longest} | {total['pause_ms']:,.0f} ms |"
        )
    return out


def summary(gc: dict[str, Any]) -> str:
    """A few words for the console line."""
    if not gc:
        return ""
    total = gc["total"]
    gen2 = gc["generations"]["2"]["collections"]
    return (
        f"GC {total['collections']:,} collections ({gen2} gen 2), "
        f">20 ms {total['over_20ms'] if total['over_20ms'] is not None else '-'}, "
        f"longest {total['longest']}"
    )
