"""bench/RESULTS.md: machine, versions, commands, then every scenario's figures for Relay,
the tutorial peer and nchan side by side with Relay's ratio to each; the delivery-integrity
and GC tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench import gcstats, integrity
from bench.stats import ScenarioResult, fmt, ratio

DESCRIPTIONS = {
    "per-task": (
        "N tasks, one SSE stream each. A KIE `generating` callback is posted for every task "
        "(nchan: a publish per channel; peer: a POST of the task object), with {senders} requests in flight; latency is from "
        "just before each callback is written to the arrival of that task's `processing` "
        "event. Then a success callback per task (`completed`)."
    ),
    "fanout": (
        "One task, S streams, U updates (the last one completes the task). Each update is sent "
        "when every stream has the previous one (closed loop); latency is per delivery."
    ),
    "idle": (
        "Streams are opened in steps (one task each) and left idle; at each step: server RSS, "
        "RSS growth per stream, idle CPU over a window, and the latency of a probe (one update "
        "to each of up to {probe} random open streams, {probe_in_flight} in flight)."
    ),
    "ingest": (
        "K senders post updates back to back for T seconds, each on its own tasks; no streams "
        "are open. Acknowledgement latency is per request."
    ),
    "replay": (
        "Each stream sees version 2, disconnects, misses versions 3 and 4, then reconnects "
        "with the Last-Event-ID it last saw; version 5 (final) is then sent live; finally a "
        "reconnect with the final id must receive nothing."
    ),
    "leak": (
        "Relay and the peer (nchan: n/a). Against one server, started once: the per-task workload "
        "({leak_tasks} tasks with one stream each, every callback posted, every stream sees its "
        "events, streams closed) {leak_runs} times back to back. After each run, once the server's "
        "side of every connection is gone and the server has settled (the settle wait, then until "
        "two RSS readings 0.25 s apart differ by under 0.5%), the server's RSS (all its processes) "
        "is read. Target: growth from run 1 to the last run within 10%. The per-run RSS list is in "
        "results.json (`series`)."
    ),
}

HEADLINE = [
    ("per-task", "callback→processing event p50"),
    ("per-task", "callback→processing event p99"),
    ("per-task", "callbacks/s (processing round)"),
    ("per-task", "server peak RSS"),
    ("per-task", "stream open rate"),
    ("fanout", "update→event p50"),
    ("fanout", "update→event p99"),
    ("fanout", "deliveries/s"),
    ("idle", "server memory per stream"),
    ("idle", "server RSS with all streams"),
    ("idle", "server idle CPU with all streams"),
    ("idle", "probe update→event p99"),
    ("ingest", "callbacks/s"),
    ("ingest", "ack p99"),
    ("ingest", "server CPU per callback"),
    ("replay", "streams missing the newest state after reconnect"),
    ("replay", "duplicated deliveries"),
    ("leak", "server RSS after run 1"),
    ("leak", "server RSS max over the runs"),
    ("leak", "server RSS growth, run 1 → last"),
]

# The targets of issue #17 ("within reach of nchan from one Python process"): (scenario,
# metric, kind, bound, what). kind "max": Relay/nchan ≤ bound; "min": Relay/nchan ≥ bound;
# "growth": Relay's own figure (%) ≤ bound.
TARGETS = [
    ("per-task", "callbacks/s (processing round)", "min", 0.6, "per-task callbacks/s ≥ 0.6x nchan"),
    ("per-task", "callback→processing event p99", "max", 2.0, "per-task callback→event p99 ≤ 2x nchan"),
    ("ingest", "callbacks/s", "min", 0.6, "ingest callbacks/s ≥ 0.6x nchan"),
    ("ingest", "ack p99", "max", 2.0, "ingest ack p99 ≤ 2x nchan"),
    ("fanout", "update→event p99", "max", 2.0, "fanout update→event p99 ≤ 2x nchan"),
    ("fanout", "deliveries/s", "min", 0.5, "fanout deliveries/s ≥ 0.5x nchan"),
    ("idle", "server memory per stream", "max", 1.3, "idle memory per stream ≤ 1.3x nchan"),
    ("leak", "server RSS growth, run 1 → last", "growth", 10.0, "RSS growth over the leak runs ≤ 10%"),
]
LEVEL_TARGETS = [
    ("bytes_per_stream", "max", 1.3, "memory per stream ≤ 1.3x nchan", 1 / 1024, "KiB"),
    ("probe_p99_ms", "max", 2.0, "probe p99 ≤ 2x nchan (the per-task latency bound)", 1.0, "ms"),
]


@dataclass
class RunInfo:
    mode: str
    command: str
    started: str
    seconds: float
    machine: dict[str, str]
    versions: dict[str, str]
    sizes: dict[str, Any]
    workers: int
    load_at_start: str
    workdir: str
    relay_workers: int = 1

    @property
    def relay_workers_text(self) -> str:
        if self.relay_workers <= 1:
            return "one uvicorn process"
        return f"`--workers {self.relay_workers}`: {self.relay_workers} uvicorn worker processes; CPU and RSS summed"


def _find(results: Sequence[ScenarioResult], scenario: str, target: str) -> ScenarioResult | None:
    for r in results:
        if r.scenario == scenario and r.target == target:
            return r
    return None


def _arrow(better: str) -> str:
    return " ↓" if better == "low" else " ↑" if better == "high" else ""


def ratio_pairs(targets: Sequence[str]) -> list[tuple[int, int]]:
    """(Relay's column, other column) for every ratio shown: Relay ÷ nchan first, then ÷ the
    other targets; none without Relay."""
    base = next((i for i, t in enumerate(targets) if t.lower() == "relay"), None)
    if base is None:
        return []
    others = [i for i, t in enumerate(targets) if i != base]
    others.sort(key=lambda i: targets[i].lower() != "nchan")
    return [(base, i) for i in others]


def _ratio_head(targets: Sequence[str]) -> str:
    return "".join(f" | {targets[a]}÷{targets[b]}" for a, b in ratio_pairs(targets))


def comparison_table(results: Sequence[ScenarioResult], scenario: str, targets: Sequence[str]) -> list[str]:
    per = {t: _find(results, scenario, t) for t in targets}
    labels: list[tuple[str, str, str]] = []
    for r in per.values():
        if r is None:
            continue
        for row in r.rows:
            if row.label not in [lab for lab, _, _ in labels]:
                labels.append((row.label, row.unit, row.better))
    pairs = ratio_pairs(targets)
    head = "| metric | " + " | ".join(targets) + _ratio_head(targets) + " |"
    out = [head, "|" + "---|" * (len(targets) + 1 + len(pairs))]
    for label, unit, better in labels:
        values = [per[t].value(label) if per[t] is not None else None for t in targets]  # type: ignore[union-attr]
        cells = [fmt(v, unit) for v in values]
        line = f"| {label}{_arrow(better)} | " + " | ".join(cells)
        for a, b in pairs:
            line += f" | {ratio(values[a], values[b]) if better else ''}"
        out.append(line + " |")
    return out


def headline_table(results: Sequence[ScenarioResult], targets: Sequence[str]) -> list[str]:
    pairs = ratio_pairs(targets)
    out = ["| scenario | metric | " + " | ".join(targets) + _ratio_head(targets) + " |",
           "|" + "---|" * (len(targets) + 2 + len(pairs))]
    for scenario, label in HEADLINE:
        rows = [_find(results, scenario, t) for t in targets]
        if all(r is None for r in rows):
            continue
        unit, better = "", ""
        values: list[float | int | str | None] = []
        for r in rows:
            value = None
            if r is not None:
                for row in r.rows:
                    if row.label == label:
                        value, unit, better = row.value, row.unit, row.better
            values.append(value)
        line = f"| {scenario} | {label}{_arrow(better)} | " + " | ".join(fmt(v, unit) for v in values)
        for a, b in pairs:
            line += f" | {ratio(values[a], values[b])}"
        out.append(line + " |")
    return out


def sweep_table(results: Sequence[ScenarioResult], targets: Sequence[str]) -> list[str]:
    per = {t: (_find(results, "idle", t) or ScenarioResult("idle", t)).levels for t in targets}
    streams = sorted({p["streams"] for levels in per.values() for p in levels})
    if not streams:
        return []
    cols = [
        ("server RSS MB", "rss_mb"), ("KiB/stream", "bytes_per_stream"), ("idle CPU %", "idle_cpu_pct"),
        ("probe p50 ms", "probe_p50_ms"), ("probe p99 ms", "probe_p99_ms"), ("probe updates/s", "probe_rate"),
        ("server CPU % in the probe", "probe_cpu_pct"), ("open/s", "open_rate"),
    ]
    header = "| streams | " + " | ".join(f"{t} {c}" for c, _ in cols for t in targets) + " |"
    out = [header, "|" + "---|" * (1 + len(cols) * len(targets))]
    for n in streams:
        cells = []
        for _, key in cols:
            for t in targets:
                point = next((p for p in per[t] if p["streams"] == n), None)
                value = None if point is None else point.get(key)
                if key == "bytes_per_stream" and value is not None:
                    value = value / 1024
                cells.append(fmt(value))
        out.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not math.isnan(value):
        return float(value)
    return None


def _verdict(kind: str, bound: float, relay: Any, nchan: Any) -> tuple[str, str]:
    """(measured ratio or figure, verdict) for one target."""
    a, b = _number(relay), _number(nchan)
    if kind == "growth":
        if a is None:
            return "-", "not measured"
        return f"{a:+.1f}%", "met" if a <= bound else "**MISSED**"
    if a is None or b is None:
        return "-", "not measured"
    if b == 0:
        return ratio(a, b), "met" if (a == 0 or kind == "min") else "**MISSED**"
    r = a / b
    met = r <= bound if kind == "max" else r >= bound
    return f"{r:.2f}x", "met" if met else "**MISSED**"


def targets_table(results: Sequence[ScenarioResult], targets: Sequence[str]) -> list[str]:
    """Every target of the issue with the measured ratio and met / missed."""
    relay_name = next((t for t in targets if t.lower() == "relay"), targets[0] if targets else "Relay")
    nchan_name = next((t for t in targets if t.lower() == "nchan"), "nchan")
    out = ["| target | Relay | nchan | measured (Relay/nchan) | verdict |", "|---|---|---|---|---|"]
    for scenario, label, kind, bound, what in TARGETS:
        relay, nchan = _find(results, scenario, relay_name), _find(results, scenario, nchan_name)
        a = relay.value(label) if relay is not None else None
        b = nchan.value(label) if nchan is not None else None
        unit = next((row.unit for r in (relay, nchan) if r is not None for row in r.rows if row.label == label), "")
        shown, verdict = _verdict(kind, bound, a, None if kind == "growth" else b)
        nchan_cell = "n/a" if kind == "growth" else fmt(b, unit)
        out.append(f"| {what} ({scenario}: {label}) | {fmt(a, unit)} | {nchan_cell} | {shown} | {verdict} |")
    relay_idle, nchan_idle = _find(results, "idle", relay_name), _find(results, "idle", nchan_name)
    levels = sorted({p["streams"] for r in (relay_idle, nchan_idle) if r is not None for p in r.levels})
    for n in levels:
        for key, kind, bound, what, scale, unit in LEVEL_TARGETS:
            points = [next((p for p in r.levels if p["streams"] == n), None) if r is not None else None
                      for r in (relay_idle, nchan_idle)]
            a, b = (_number(p.get(key)) if p is not None else None for p in points)
            a, b = (None if v is None else v * scale for v in (a, b))
            shown, verdict = _verdict(kind, bound, a, b)
            out.append(f"| idle at {n:,} streams: {what} | {fmt(a, unit)} | {fmt(b, unit)} | {shown} | {verdict} |")
    return out


def client_table(results: Sequence[ScenarioResult]) -> list[str]:
    out = [
        "| scenario | target | measured s | server CPU % | redis CPU % | busiest load process CPU % "
        "| load loop lag p99 / max ms | CPU % of processes outside the bench | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c = r.client
        if not c:
            continue
        cpu = c["cpu"]
        out.append(
            f"| {r.scenario} | {r.target} | {c['wall_s']:.1f} | {cpu.get('server', math.nan):.0f} "
            f"| {cpu.get('redis', math.nan):.0f} | {c['busiest_client_pct']:.0f} "
            f"| {c['lag_p99_ms']:.1f} / {c['lag_max_ms']:.1f} | {c.get('others_pct', math.nan):.0f} "
            f"| {'load tool not saturated' if c['ok'] else 'LOAD TOOL MAY BE A BOTTLENECK'} |"
        )
    return out


def render(info: RunInfo, results: Sequence[ScenarioResult], targets: Sequence[str], plot_name: str | None) -> str:
    sizes = info.sizes
    lines = [
        "# Relay vs nchan and a tutorial Python peer: SSE benchmark results",
        "",
        f"Mode: **{info.mode}**, started {info.started}, took {info.seconds / 60:.1f} min. "
        f"Generated by `{info.command}`; see bench/README.md for what each scenario does.",
        "",
        "Arrows: ↓ lower is better, ↑ higher is better. Ratios are Relay ÷ the other target (for ↓ "
        "metrics a ratio above 1 means Relay is slower or bigger; for ↑ metrics below 1 means Relay "
        "does less).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in info.machine.items()]
    lines += [f"| load average at start | {info.load_at_start} |", "", "## Versions", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in info.versions.items()]
    lines += [
        "",
        "## Setup",
        "",
        "- Everything binds to 127.0.0.1; every server runs with RLIMIT_NOFILE raised to the hard limit.",
        f"- Relay: `relay serve` ({info.relay_workers_text}), `RELAY_AUTH=none`, `RELAY_MIRROR=off`, "
        "`RELAY_RECONCILE_AFTER=3600`, `RELAY_LOG_LEVEL=WARNING`, Redis store and hub; the KIE "
        "simulator (`relay kie-sim --callback-delay manual`) only answers task creation.",
        "- nchan: nginx, one worker process (plus its master), `nchan_redis_pass` storage, "
        "`nchan_message_buffer_length 100`, EventSource subscribers, messages shaped like Relay's task object.",
        "- peer: the tutorial-style service in `bench/peer/app.py` (Starlette, sse-starlette "
        "`EventSourceResponse`, redis-py asyncio pub/sub with one subscription per stream, stdlib "
        "json, default GC), one uvicorn worker, no access log; updates are Relay-shaped task objects.",
        "- Each (scenario, target) pair runs on freshly started servers and a fresh redis-server "
        "(`appendonly yes`, `appendfsync everysec`).",
        f"- Load tool: {info.workers} worker processes holding the SSE streams (raw asyncio protocols, "
        "uvloop) plus the orchestrator sending the triggers.",
        "- Sizes: " + ", ".join(f"{k}={v}" for k, v in sizes.items()),
        f"- Server logs and configs: `{info.workdir}`",
        "",
        "## Headline",
        "",
    ]
    lines += headline_table(results, targets)
    lines += ["", "## Targets", "",
              "Issue #17's targets, each as Relay ÷ nchan on this run (the leak target is Relay's own "
              "RSS growth). The idle rows are per sweep level; the full mode's levels are 1k, 5k, 10k "
              "and max. \"not measured\" means a scenario or target was not part of this run.", ""]
    lines += targets_table(results, targets)
    lines += ["", "## Delivery integrity", "",
              "Per target, every loss and every stream the server left open after the terminal event, "
              "over the scenarios where they apply (n/a: nchan never ends a stream; a scenario not run "
              "for a target). Anything but 0 is a bug.", ""]
    lines += integrity.table(results, targets)
    lines += ["", "## Garbage collection pauses", "",
              "Collections and pauses of the server's Python processes over each scenario's measured "
              "phase (the difference of two readings): Relay from its `relay_gc_pause_seconds` "
              "histogram at `/metrics` (summed over the workers), the peer from a `gc.callbacks` hook "
              "in its launcher, with the same buckets; nchan: n/a. Pauses over 5/20/50 ms and the "
              "longest come from the buckets (0.5, 1, 2.5, 5, 10, 20, 50, 100, 250 ms); the peer's "
              "exact longest is in parentheses when it was reached in the phase.", ""]
    lines += gcstats.table(list(results), list(targets))
    for scenario in ("per-task", "fanout", "idle", "ingest", "replay", "leak"):
        if not any(r.scenario == scenario for r in results):
            continue
        lines += ["", f"## {scenario}", "", DESCRIPTIONS[scenario].format(
            senders=sizes.get("senders"), probe=sizes.get("idle_probe"),
            probe_in_flight=sizes.get("probe_in_flight"), leak_tasks=sizes.get("leak_tasks"),
            leak_runs=sizes.get("leak_runs")), ""]
        lines += comparison_table(results, scenario, targets)
        if scenario == "idle":
            table = sweep_table(results, targets)
            if table:
                lines += ["", "Sweep:", "", *table]
            if plot_name:
                lines += ["", f"![latency and memory against open streams]({plot_name})"]
        notes = [(r.target, n) for r in results if r.scenario == scenario for n in r.notes]
        failures = [(r.target, r.failed) for r in results if r.scenario == scenario and r.failed]
        if notes or failures:
            lines += [""]
            lines += [f"- **{t} failed:** {f}" for t, f in failures]
            lines += [f"- {t}: {n}" for t, n in notes]
    lines += ["", "## Is the load tool the bottleneck?", "",
              "CPU is % of one core over each scenario's measured phase. A load process under 80% "
              "of a core, with a small event-loop lag (how late a 50 ms timer fires in the load "
              "workers), was not what limited the figures. The last CPU column is everything else "
              "the machine ran meanwhile (other users' jobs): high values mean noisy figures.", ""]
    lines += client_table(results)
    lines += [""]
    return "\n".join(lines)
