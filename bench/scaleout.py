"""`python -m bench.scaleout`: several `relay serve` instances on one redis-server and one
`relay kie-sim` (issue #18 item 4).

Relay publishes each task change on the task's own Redis channel, and an instance subscribes
only to the tasks its open streams watch. This measures what that buys, in three phases, each
with freshly started `relay serve` processes (same environment as `python -m bench`'s Relay,
bench/targets.py RelayTarget) and fresh tasks:

- single: instance A alone. N tasks created on A, one stream each open on A, K senders post
  KIE `generating` callbacks (strictly increasing progress) to A for T seconds, then a
  `success` callback per task.
- bystander: the same load on A while B (and C with `--instances 3`) runs with no open
  stream on the same Redis. B's CPU over the callback phase and B's
  `relay_hub_messages_total` (pub/sub messages it received) are the figures: both should be 0.
- spread: the same load split evenly: stream i is on instance i mod n, the callbacks of task
  i go to instance (i div n) mod n (so half of them, with two instances, change a task whose
  stream is on the other instance); total callbacks/s with n instances vs single's.

Every phase checks that every stream received its task's final state (the version Relay
stored, read back with GET /api/tasks/{id}) and was ended by the server.

CPU is utime + stime from /proc (bench/procstats.py) over the callback phase, as % of one
core. The kernel counts it in ticks (1/CLK_TCK s, 10 ms): a reading of 0 ticks is "no
measurable CPU". Load comes from `--workers` load processes (bench/worker.py); each holds
streams and runs senders (its `ingest` command), all on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import procstats
from bench.gcstats import http_get
from bench.httpclient import Client
from bench.payloads import update_body, update_headers
from bench.pool import Pool
from bench.servers import Managed
from bench.stats import latency_ms
from bench.targets import RelayTarget
from bench.worker import run_loop

PHASES = ("single", "bystander", "spread")
LABELS = "ABCDEFGH"
TICK = 1 / procstats.CLK_TCK
_METRIC = re.compile(r"^(relay_hub_messages_total|relay_hub_channels|relay_open_streams) (\S+)$", re.M)


@dataclass
class Config:
    streams: int = 200
    senders: int = 16
    seconds: float = 8.0
    instances: int = 2
    runs: int = 1
    workers: int = 2
    phases: tuple[str, ...] = PHASES
    settle: float = 1.0
    baseline: float = 8.0  # bystander: an idle window (no load at all) before the callbacks
    phase_budget: float = 180.0
    relay_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Instance:
    label: str
    proc: Managed
    port: int


def hub_metrics(text: str) -> dict[str, float]:
    """relay_hub_messages_total, relay_hub_channels and relay_open_streams from /metrics."""
    return {name: float(value) for name, value in _METRIC.findall(text)}


async def scrape(inst: Instance) -> dict[str, float]:
    figures = hub_metrics((await http_get(inst.port, "/metrics")).decode())
    if "relay_hub_messages_total" not in figures:
        raise RuntimeError(f"instance {inst.label}: no relay_hub_messages_total at /metrics")
    return figures


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def placement(phase: str, i: int, n: int) -> tuple[int, int]:
    """(instance of task i's stream, instance its callbacks go to)."""
    if phase != "spread":
        return 0, 0
    return i % n, (i // n) % n


class CpuWindow:
    """CPU seconds of named process groups between start() and stop()."""

    def __init__(self, groups: dict[str, list[int]]):
        self.groups = groups
        self.cpu0: dict[str, float] = {}
        self.t0 = self.self0 = self.machine0 = 0.0

    def start(self) -> None:
        self.cpu0 = {name: procstats.cpu_seconds(pids) for name, pids in self.groups.items()}
        self.self0 = procstats.self_cpu_seconds()
        self.machine0 = procstats.machine_busy_seconds()
        self.t0 = time.monotonic()

    def stop(self) -> dict[str, Any]:
        wall = max(1e-6, time.monotonic() - self.t0)
        seconds = {name: procstats.cpu_seconds(pids) - self.cpu0[name] for name, pids in self.groups.items()}
        seconds["bench orchestrator"] = procstats.self_cpu_seconds() - self.self0
        busy = (procstats.machine_busy_seconds() - self.machine0) / wall * 100
        ours = sum(seconds.values()) / wall * 100
        return {
            "wall_s": wall,
            "cpu_s": seconds,
            "cpu_pct": {name: s / wall * 100 for name, s in seconds.items()},
            "machine_busy_pct": busy,
            "others_pct": max(0.0, busy - ours),  # processes this bench did not start
        }


async def run_phase(phase: str, target: RelayTarget, pool: Pool, cfg: Config) -> dict[str, Any]:
    n = 1 if phase == "single" else cfg.instances
    instances: list[Instance] = []
    try:
        for j in range(n):
            proc, port = await target.add_instance(LABELS[j])
            instances.append(Instance(LABELS[j], proc, port))
        return await _measure(phase, target, pool, cfg, instances)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), 30)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.collect(forget=True), 30)
        for inst in instances:
            await target.stop_instance(inst.proc)


async def _measure(phase: str, target: RelayTarget, pool: Pool, cfg: Config,
                   instances: list[Instance]) -> dict[str, Any]:
    n = len(instances)
    a = instances[0]
    s = cfg.streams
    keys = await target.create(s, a.port)
    where = [placement(phase, i, n) for i in range(s)]

    # Streams: task i's on instance where[i][0]; ready once its snapshot event arrived (so
    # its subscription is confirmed).
    sid_key: dict[int, str] = {}
    opened = failed = 0
    open_errors: Counter[str] = Counter()
    for j, inst in enumerate(instances):
        mine = [keys[i] for i in range(s) if where[i][0] == j]
        if not mine:
            continue
        result = await pool.open(inst.port, [(k, target.stream_path(k), None) for k in mine],
                                 within=max(30.0, len(mine) / 100))
        sid_key.update(zip(result.sids, mine, strict=True))
        opened += result.opened
        failed += result.failed
        open_errors.update(result.errors)
    if failed:
        raise RuntimeError(f"{failed} of {s} streams failed to open: {dict(open_errors)}")
    await asyncio.sleep(cfg.settle)
    for inst in instances:
        if not inst.proc.alive():
            raise RuntimeError(f"instance {inst.label} died; log {inst.proc.log_path}:\n{inst.proc.log_tail()}")
    groups = {f"relay {inst.label}": [inst.proc.pid] for inst in instances}
    idle: dict[str, Any] | None = None
    if phase == "bystander" and cfg.baseline > 0:
        # The same instances with no load at all: what they use on their own (timers,
        # housekeeping), to tell apart from what the callbacks on A cost them.
        quiet = CpuWindow(groups)
        quiet.start()
        await asyncio.sleep(cfg.baseline)
        idle = quiet.stop()
    before = [await scrape(inst) for inst in instances]

    # Callbacks: the instances that take them (A only, or all when spread); load worker w
    # sends to load instance w mod m, the senders split evenly over instances, then workers.
    takers = list(range(n)) if phase == "spread" else [0]
    m = len(takers)
    worker_to: list[int] = [takers[w % m] for w in range(len(pool.workers))]
    messages: list[dict[str, Any] | None] = [None] * len(pool.workers)
    for slot, j in enumerate(takers):
        items: list[list[Any]] = [
            [keys[i], target.update_paths[keys[i]], 1] for i in range(s) if where[i][1] == j
        ]
        workers = [w for w in range(len(pool.workers)) if worker_to[w] == j]
        for k, (w, senders) in enumerate(zip(workers, split(split(cfg.senders, m)[slot], len(workers)),
                                             strict=True)):
            share = items[k::len(workers)]
            if senders and share:
                messages[w] = {"cmd": "ingest", "kind": "relay", "port": instances[j].port,
                               "items": share, "senders": senders, "duration": cfg.seconds}
    assert target.redis is not None
    groups["redis"] = [target.redis.pid]
    groups["KIE sim"] = [target.helpers["sim"].pid]
    for w, pid in enumerate(pool.pids):
        groups[f"load worker {w}"] = [pid]
    window = CpuWindow(groups)
    window.start()
    replies = await pool.each(messages, cfg.seconds + 90)
    cpu = window.stop()
    during = [await scrape(inst) for inst in instances]

    acks: list[float] = []
    per_acks = [0] * n
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    wall = 1e-6
    replied = iter(replies)
    for w, msg in enumerate(messages):
        if msg is None:
            continue
        reply = next(replied)
        acks.extend(reply["latencies"])
        per_acks[worker_to[w]] += len(reply["latencies"])
        statuses.update(reply["statuses"])
        errors.update(reply["errors"])
        wall = max(wall, reply["seconds"])
    bad = sum(v for k, v in statuses.items() if not k.startswith("2")) + sum(errors.values())

    # The final state: a success callback per task, to the instance its callbacks went to.
    final_fail = await send_finals(target, instances, keys, where, cfg.senders)
    stored = await stored_versions(a.port, keys)
    want = {sid: stored[key][0] for sid, key in sid_key.items()}
    reach = await pool.await_versions(want, within=30)
    for _ in range(200):  # Relay ends a stream after its terminal event: wait for the closes
        if sum(st["open"] for st in await pool.stats()) == 0:
            break
        await asyncio.sleep(0.05)
    after = [await scrape(inst) for inst in instances]
    reports = await pool.collect(forget=True)
    final_lost = not_ended = duplicates = 0
    # Changes each instance's hub should have received: from the snapshot each of its
    # streams opened with (the subscription was confirmed before it) to the final version.
    changes = [0] * n
    stream_on = {keys[i]: where[i][0] for i in range(s)}
    for sid, key in sid_key.items():
        report = reports.get(sid)
        versions = [v for v, _ in report["events"]] if report else []
        duplicates += len(versions) - len(set(versions))
        if max(versions, default=0) < want[sid]:
            final_lost += 1
        if report is None or not report["ended"]:
            not_ended += 1
        if versions:
            changes[stream_on[key]] += want[sid] - versions[0]
    not_completed = sum(1 for _, status in stored.values() if status != "completed")

    per_instance = {}
    for j, inst in enumerate(instances):
        name = f"relay {inst.label}"
        per_instance[inst.label] = {
            "streams": sum(1 for i in range(s) if where[i][0] == j),
            "callbacks_per_s": per_acks[j] / wall,
            "cpu_pct": cpu["cpu_pct"][name],
            "cpu_s": cpu["cpu_s"][name],
            "cpu_ticks": round(cpu["cpu_s"][name] / TICK),
            "idle_cpu_s": idle["cpu_s"][name] if idle else None,
            "idle_cpu_ticks": round(idle["cpu_s"][name] / TICK) if idle else None,
            "idle_seconds": idle["wall_s"] if idle else None,
            "hub_channels": before[j].get("relay_hub_channels", math.nan),
            "hub_messages_before": before[j]["relay_hub_messages_total"],
            "hub_messages_after": after[j]["relay_hub_messages_total"],
            "hub_messages_delta": after[j]["relay_hub_messages_total"] - before[j]["relay_hub_messages_total"],
            "hub_messages_callback_phase": during[j]["relay_hub_messages_total"]
            - before[j]["relay_hub_messages_total"],
            "changes_watched": changes[j],
        }
    ack = latency_ms(acks)
    load_cpu = [v for k, v in cpu["cpu_pct"].items() if k.startswith("load worker")]
    return {
        "phase": phase,
        "instances": n,
        "streams": s,
        "senders": cfg.senders,
        "seconds": wall,
        "callbacks": len(acks),
        "callbacks_per_s": len(acks) / wall,
        "ack_p50_ms": ack["p50"],
        "ack_p99_ms": ack["p99"],
        "failed_requests": bad + final_fail,
        "per_instance": per_instance,
        "redis_cpu_pct": cpu["cpu_pct"]["redis"],
        "sim_cpu_pct": cpu["cpu_pct"]["KIE sim"],
        "load_busiest_pct": max(load_cpu, default=0.0),
        "orchestrator_cpu_pct": cpu["cpu_pct"]["bench orchestrator"],
        "machine_busy_pct": cpu["machine_busy_pct"],
        "others_pct": cpu["others_pct"],
        "streams_opened": opened,
        "final_state_lost": final_lost,
        "final_wait_s": reach["seconds"],
        "streams_not_ended": not_ended,
        "tasks_not_completed": not_completed,
        "duplicated_deliveries": duplicates,
        "errors": {"statuses": dict(statuses), "errors": dict(errors)} if bad else {},
    }


async def send_finals(target: RelayTarget, instances: list[Instance], keys: list[str],
                      where: list[tuple[int, int]], in_flight: int) -> int:
    """A `success` callback per task, to its callback instance; returns the failures."""
    clients = [Client(inst.port, size=in_flight, timeout=30) for inst in instances]
    headers = update_headers("relay")
    todo = iter(range(len(keys)))
    failures = 0

    async def sender() -> None:
        nonlocal failures
        for i in todo:
            client = clients[where[i][1]]
            raw = client.build("POST", target.update_paths[keys[i]],
                               update_body("relay", keys[i], 0, final=True), headers)
            try:
                response = await client.send(raw)
                failures += not 200 <= response.status < 300
            except (OSError, TimeoutError):
                failures += 1

    try:
        await asyncio.gather(*(sender() for _ in range(max(1, in_flight))))
    finally:
        for client in clients:
            client.close()
    return failures


async def stored_versions(port: int, keys: list[str]) -> dict[str, tuple[int, str]]:
    """key -> (version, status) as Relay stored it."""
    client = Client(port, size=16, timeout=30)
    out: dict[str, tuple[int, str]] = {}
    todo = iter(keys)

    async def reader() -> None:
        for key in todo:
            response = await client.request("GET", f"/api/tasks/{key}")
            if response.status != 200:
                raise RuntimeError(f"GET /api/tasks/{key} answered {response.status}")
            task = orjson.loads(response.body)
            out[key] = (int(task["version"]), str(task["status"]))

    try:
        await asyncio.gather(*(reader() for _ in range(16)))
    finally:
        client.close()
    return out


# --- summarising -------------------------------------------------------------------------


def median_of(values: list[Any]) -> Any:
    """The median of numbers; of dicts, key by key (keys every dict has); else the first."""
    if all(isinstance(v, bool) for v in values) or not values:
        return values[0] if values else None
    if all(isinstance(v, int | float) for v in values):
        return statistics.median(values)
    if all(isinstance(v, dict) for v in values):
        common = [k for k in values[0] if all(k in v for v in values)]
        return {k: median_of([v[k] for v in values]) for k in common}
    return values[0]


def fmt(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def ticks(n: Any) -> str:
    return f"{fmt(n)} tick{'' if n == 1 else 's'}"


def table(medians: dict[str, dict[str, Any]], runs: int) -> str:
    head = ["phase", "inst", "streams", "callbacks/s", "CPU %", "CPU ticks", "idle ticks",
            "hub channels", "hub msgs", "watched changes"]
    rows = [head]
    for phase, r in medians.items():
        for label, inst in r["per_instance"].items():
            role = "idle" if phase == "bystander" and label != "A" else ""
            rows.append([
                phase, label + (f" ({role})" if role else ""), fmt(inst["streams"]),
                fmt(inst["callbacks_per_s"]), fmt(inst["cpu_pct"], 2), fmt(inst["cpu_ticks"]),
                fmt(inst.get("idle_cpu_ticks")), fmt(inst["hub_channels"]), fmt(inst["hub_messages_delta"]), fmt(inst["changes_watched"]),
            ])
        rows.append([
            phase, "total", fmt(r["streams"]), fmt(r["callbacks_per_s"]), "", "", "", "", "", "",
        ])
    widths = [max(len(row[c]) for row in rows) for c in range(len(head))]
    lines = ["  ".join(cell.rjust(w) if c > 1 else cell.ljust(w) for c, (cell, w) in enumerate(zip(row, widths,
                                                                                                  strict=True)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    cores = os.cpu_count() or 0
    other = ["", f"phase      ack p50/p99 ms  redis CPU %  busiest load proc %  machine busy % (of {cores * 100})"
             "  not ours %  final lost  not ended  failed"]
    for phase, r in medians.items():
        other.append(
            f"{phase:10} {fmt(r['ack_p50_ms'], 1):>6} / {fmt(r['ack_p99_ms'], 1):<5} {fmt(r['redis_cpu_pct'], 1):>11}"
            f"  {fmt(r['load_busiest_pct'], 0):>19}  {fmt(r['machine_busy_pct'], 0):>21}"
            f"  {fmt(r['others_pct'], 0):>10}  {fmt(r['final_state_lost']):>10}  {fmt(r['streams_not_ended']):>9}"
            f"  {fmt(r['failed_requests']):>6}"
        )
    note = f"(medians over {runs} runs)" if runs > 1 else "(one run)"
    return "\n".join([note, *lines, *other])


def verdicts(medians: dict[str, dict[str, Any]], cores: int) -> list[str]:
    out = []
    by = medians.get("bystander")
    if by is not None:
        a = by["per_instance"]["A"]
        for label, inst in by["per_instance"].items():
            if label == "A":
                continue
            out.append(
                f"bystander: {label} (no open stream) received {fmt(inst['hub_messages_delta'])} pub/sub "
                f"messages and used {fmt(inst['cpu_s'], 2)} s CPU ({ticks(inst['cpu_ticks'])} of "
                f"{TICK * 1000:.0f} ms, {fmt(inst['cpu_pct'], 2)}% of a core) over {fmt(by['seconds'], 1)} s "
                f"while A handled {fmt(a['callbacks_per_s'])} callbacks/s"
                + ("" if a["callbacks_per_s"] >= 1000 else " (below the acceptance figure's 1,000/s: "
                   "raise --senders, or the machine is the limit)")
                + ("" if inst.get("idle_cpu_ticks") is None else
                   f"; with no load anywhere it used {ticks(inst['idle_cpu_ticks'])} over "
                   f"{fmt(inst['idle_seconds'], 1)} s (its own timers)")
            )
        out.append(
            f"bystander: A's hub received {fmt(a['hub_messages_delta'])} messages for "
            f"{fmt(a['changes_watched'])} changes of the tasks its streams watch"
        )
    single, spread = medians.get("single"), medians.get("spread")
    if single is not None and spread is not None and single["callbacks_per_s"] > 0:
        ratio = spread["callbacks_per_s"] / single["callbacks_per_s"]
        out.append(
            f"scale-out: 1 instance {fmt(single['callbacks_per_s'])} callbacks/s, {spread['instances']} "
            f"instances {fmt(spread['callbacks_per_s'])} callbacks/s (x{ratio:.2f}) on {cores} cores"
            f"; machine busy {fmt(single['machine_busy_pct'])}% vs {fmt(spread['machine_busy_pct'])}% "
            f"of {cores * 100}% (processes this bench did not start: {fmt(single['others_pct'])}% vs "
            f"{fmt(spread['others_pct'])}%)"
        )
        if cores <= spread["instances"] + 1:
            out.append(
                f"scale-out: with {cores} cores the instances, Redis and the load tool share the same "
                "CPUs, so the growth is small here; on a machine with a core per instance (and Redis "
                "and the load tool elsewhere) the figure is what matters, the method is the same"
            )
    lost = sum(r["final_state_lost"] + r["streams_not_ended"] + r["tasks_not_completed"] for r in medians.values())
    out.append("delivery: every stream got its final state and was ended by the server" if lost == 0 else
               f"delivery: PROBLEM: final states lost / streams not ended / tasks not completed: {lost}")
    return out


# --- the command -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.scaleout", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=200, help="tasks per phase, one stream each (200)")
    p.add_argument("--senders", type=int, default=16, help="concurrent callback senders (16)")
    p.add_argument("--seconds", type=float, default=8.0, help="length of the callback phase (8)")
    p.add_argument("--instances", type=int, default=2, choices=(2, 3, 4),
                   help="instances in the bystander and spread phases (2)")
    p.add_argument("--baseline", type=float, default=None,
                   help="bystander: seconds of no load at all before the callbacks, each instance's "
                        "own idle CPU for comparison (default: --seconds; 0 = skip)")
    p.add_argument("--runs", type=int, default=1, help="repeat every phase; the table shows medians (1)")
    p.add_argument("--phases", default=",".join(PHASES), help="comma list of: " + ", ".join(PHASES))
    p.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2),
                   help="load processes (default: CPUs, at least 2; rounded up to a multiple of --instances)")
    p.add_argument("--output", type=Path, default=Path("/tmp/scaleout.json"), help="JSON figures (/tmp/scaleout.json)")
    p.add_argument("--relay-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for every `relay serve` (repeatable)")
    p.add_argument("--keep", action="store_true", help="keep the servers' logs")
    return p


def config_from(args: argparse.Namespace) -> Config:
    phases = tuple(x.strip() for x in args.phases.split(",") if x.strip())
    for phase in phases:
        if phase not in PHASES:
            raise SystemExit(f"unknown phase {phase!r}; choose from {', '.join(PHASES)}")
    if args.streams < 1 or args.senders < 1 or args.runs < 1 or not 0 < args.seconds <= 600:
        raise SystemExit("--streams, --senders and --runs must be at least 1, --seconds in (0, 600]")
    if args.senders > args.streams:
        raise SystemExit("--senders must not exceed --streams (each sender owns its own tasks)")
    workers = math.ceil(max(1, args.workers) / args.instances) * args.instances
    baseline = args.seconds if args.baseline is None else max(0.0, min(600.0, args.baseline))
    return Config(
        streams=args.streams, senders=args.senders, seconds=args.seconds, instances=args.instances,
        runs=args.runs, workers=workers, phases=phases,
        baseline=baseline,
        phase_budget=120.0 + 2 * args.seconds + baseline + args.streams / 20,
        relay_env=dict(item.split("=", 1) for item in args.relay_env),
    )


async def main_async(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    nofile = procstats.raise_nofile()
    load_at_start = procstats.load_average()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="relay-scaleout-"))
    print(f"scaleout: {cfg.streams} streams, {cfg.senders} senders, {cfg.seconds:g} s, "
          f"{cfg.instances} instances, {cfg.runs} run(s), {cfg.workers} load workers, "
          f"phases {','.join(cfg.phases)}; logs in {workdir}", flush=True)
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    if main_task is not None:
        loop.add_signal_handler(signal.SIGTERM, main_task.cancel)

    target = RelayTarget(workdir, nofile, extra_env=cfg.relay_env)
    pool = Pool(cfg.workers)
    results: list[dict[str, Any]] = []
    interrupted = False
    try:
        await pool.start()
        await target.start_backends()
        for run in range(cfg.runs):
            for phase in cfg.phases:
                t0 = time.monotonic()
                try:
                    result = await asyncio.wait_for(run_phase(phase, target, pool, cfg), cfg.phase_budget)
                except (Exception, TimeoutError) as exc:
                    traceback.print_exc()
                    result = {"phase": phase, "failed": f"{type(exc).__name__}: {exc}"[:500]}
                result["run"] = run + 1
                results.append(result)
                if "failed" in result:
                    print(f"  run {run + 1} {phase:9} FAILED: {result['failed']}", flush=True)
                else:
                    cpus = ", ".join(f"{k} {v['cpu_pct']:.2f}% ({v['hub_messages_delta']:.0f} msgs)"
                                     for k, v in result["per_instance"].items())
                    print(f"  run {run + 1} {phase:9} {result['callbacks_per_s']:,.0f} callbacks/s; CPU {cpus}; "
                          f"final lost {result['final_state_lost']}  [{time.monotonic() - t0:.0f}s]", flush=True)
    except (asyncio.CancelledError, KeyboardInterrupt):
        interrupted = True
        print("scaleout: interrupted; stopping every server", file=sys.stderr, flush=True)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.stop(), 30)
        pool.kill_now()
        await target.stop()

    ok = [r for r in results if "failed" not in r]
    medians = {
        phase: median_of([r for r in ok if r["phase"] == phase])
        for phase in cfg.phases if any(r["phase"] == phase for r in ok)
    }
    cores = os.cpu_count() or 0
    if medians:
        print()
        print(table(medians, cfg.runs))
        print()
        for line in verdicts(medians, cores):
            print(line)
    failed = len(results) - len(ok)
    info = {
        "command": ".venv/bin/python -m bench.scaleout " + " ".join(sys.argv[1:]),
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.monotonic() - started,
        "machine": procstats.machine(),
        "load_at_start": load_at_start,
        "config": {k: v for k, v in vars(cfg).items()},
        "cpu_tick_s": TICK,
        "interrupted": interrupted,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(
        {"info": info, "median": medians, "runs": results, "verdicts": verdicts(medians, cores) if medians else []},
        indent=1, default=str,
    ))
    print(f"scaleout: wrote {args.output}", flush=True)
    if args.keep or failed:
        print(f"scaleout: logs kept in {workdir}", flush=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 130 if interrupted else (1 if failed or not ok else 0)


def main() -> int:
    args = build_parser().parse_args()
    try:
        return run_loop(main_async(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
