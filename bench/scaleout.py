"""`python -m bench.scaleout`: several `relay serve` instances on one Redis and one
`relay kie-sim` (issue #18 item 4). `--redis single` (the default): one redis-server;
`--redis cluster`: a three-master Redis Cluster on loopback (bench/servers.py
start_redis_cluster, each node from deploy/redis-cluster.conf), every instance given
`RELAY_REDIS_URL=redis+cluster://...` (RelayTarget.redis_url).

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

- churn: instance A alone, --churn-tasks tasks; --churn-clients clients (spread over the
  load workers, their `churn` command) each open a stream on one of its tasks, read until
  the first `task` event (the snapshot: the server subscribed, read, sent), close the
  connection, next, for --churn-seconds (default --seconds; at most --churn-max-opens opens).
  Reports opens/s, A's CPU and Redis's CPU (all nodes) per open in us, the (S)SUBSCRIBE /
  (S)UNSUBSCRIBE commands Redis served (INFO commandstats), and then, within 10 s, that Redis
  holds no task subscription: on one server PUBSUB CHANNELS relay:* is only the control
  channel relay:events, on a cluster PUBSUB SHARDCHANNELS relay:* is empty on every node.
  In the default phase list; it adds about --seconds + 5 s.

Every phase but churn checks that every stream received its task's final state (the
version Relay stored, read back with GET /api/tasks/{id}) and was ended by the server.

CPU is utime + stime from /proc (bench/procstats.py) over the callback phase, as % of one
core; Redis's is reported per node (by port) and summed. The kernel counts it in ticks (1/CLK_TCK s, 10 ms): a reading of 0 ticks is "no
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
from bench.servers import Managed, redis_command
from bench.stats import latency_ms
from bench.targets import RelayTarget
from bench.worker import run_loop

PHASES = ("single", "bystander", "spread", "churn")
DEFAULT_PHASES = PHASES  # churn adds about --seconds + 5 s
CHURN_OPEN_TIMEOUT = 10.0  # one churn open (connect + snapshot), seconds
CLEAN_WITHIN = 10.0  # churn: how long Redis may take to drop the last subscriptions
PUBSUB_COMMANDS = ("subscribe", "unsubscribe", "ssubscribe", "sunsubscribe")
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
    phases: tuple[str, ...] = DEFAULT_PHASES
    settle: float = 1.0
    baseline: float = 8.0  # bystander: an idle window (no load at all) before the callbacks
    phase_budget: float = 180.0
    relay_env: dict[str, str] = field(default_factory=dict)
    redis: str = "single"
    churn_tasks: int = 200
    churn_clients: int = 8
    churn_seconds: float = 8.0
    churn_max_opens: int = 200_000
    churn_budget: float = 180.0


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


def redis_groups(target: RelayTarget) -> dict[str, list[int]]:
    """One CPU group per Redis node (the single server, or each cluster master), by port."""
    return {f"redis :{port}": [node.pid] for node, port in zip(target.redis_nodes, target.redis_ports, strict=True)}


def redis_figures(cpu: dict[str, Any], target: RelayTarget) -> dict[str, Any]:
    """Redis CPU over a window: the sum over nodes, and each node's."""
    nodes = {str(port): {"cpu_pct": cpu["cpu_pct"][f"redis :{port}"], "cpu_s": cpu["cpu_s"][f"redis :{port}"]}
             for port in target.redis_ports}
    return {
        "redis": target.redis_mode,
        "redis_cpu_pct": sum(n["cpu_pct"] for n in nodes.values()),
        "redis_cpu_s": sum(n["cpu_s"] for n in nodes.values()),
        "redis_nodes": nodes,
    }


async def run_phase(phase: str, target: RelayTarget, pool: Pool, cfg: Config) -> dict[str, Any]:
    n = 1 if phase in ("single", "churn") else cfg.instances
    instances: list[Instance] = []
    try:
        for j in range(n):
            proc, port = await target.add_instance(LABELS[j])
            instances.append(Instance(LABELS[j], proc, port))
        if phase == "churn":
            return await _churn(target, pool, cfg, instances[0])
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
    groups.update(redis_groups(target))
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
        **redis_figures(cpu, target),
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


async def _churn(target: RelayTarget, pool: Pool, cfg: Config, a: Instance) -> dict[str, Any]:
    """Instance A alone, M tasks; the load workers' `churn` command: C clients each open a
    stream, read its snapshot, close it, again, for S seconds. Then Redis must hold no
    task subscription (bounded wait)."""
    keys = await target.create(cfg.churn_tasks, a.port)
    paths = [target.stream_path(k) for k in keys]
    await asyncio.sleep(cfg.settle)
    if not a.proc.alive():
        raise RuntimeError(f"instance A died; log {a.proc.log_path}:\n{a.proc.log_tail()}")
    before = await scrape(a)
    calls_before = await pubsub_calls(target.redis_ports)
    workers = len(pool.workers)
    clients = split(cfg.churn_clients, workers)
    budgets = split(cfg.churn_max_opens, workers)
    messages: list[dict[str, Any] | None] = [
        {"cmd": "churn", "port": a.port, "paths": paths[w::workers], "clients": clients[w],
         "duration": cfg.churn_seconds, "max_opens": budgets[w], "timeout": CHURN_OPEN_TIMEOUT}
        if clients[w] else None
        for w in range(workers)
    ]
    groups = {"relay A": [a.proc.pid], **redis_groups(target), "KIE sim": [target.helpers["sim"].pid]}
    for w, pid in enumerate(pool.pids):
        groups[f"load worker {w}"] = [pid]
    window = CpuWindow(groups)
    window.start()
    replies = await pool.each(messages, cfg.churn_seconds + 2 * CHURN_OPEN_TIMEOUT + 30)
    cpu = window.stop()
    calls_after = await pubsub_calls(target.redis_ports)

    # Every stream is closed: Redis must drop every task channel (bounded wait).
    started = time.monotonic()
    for _ in range(int(CLEAN_WITHIN / 0.1) + 1):
        found = await subscriptions(target.redis_ports)
        left = leftover(target.redis_mode, found)
        if not left or time.monotonic() - started >= CLEAN_WITHIN:
            break
        await asyncio.sleep(0.1)
    clean_after = time.monotonic() - started
    after = await scrape(a)
    if not a.proc.alive():
        raise RuntimeError(f"instance A died; log {a.proc.log_path}:\n{a.proc.log_tail()}")

    latencies = [x for r in replies for x in r["latencies"]]
    opens = len(latencies)
    wall = max((r["seconds"] for r in replies), default=1e-6)
    errors: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for r in replies:
        errors.update(r["errors"])
        statuses.update(r["statuses"])
    lat = latency_ms(latencies)
    load_cpu = [v for k, v in cpu["cpu_pct"].items() if k.startswith("load worker")]
    redis = redis_figures(cpu, target)
    per_open = 1e6 / opens if opens else math.nan
    return {
        "phase": "churn",
        "instances": 1,
        "tasks": len(keys),
        "clients": sum(clients),
        "seconds": wall,
        "opens": opens,
        "opens_per_s": opens / wall,
        "open_p50_ms": lat["p50"],
        "open_p99_ms": lat["p99"],
        "failed_opens": sum(r["failed"] for r in replies),
        "errors": dict(errors),
        "statuses": dict(statuses),
        "instance_cpu_pct": cpu["cpu_pct"]["relay A"],
        "instance_cpu_s": cpu["cpu_s"]["relay A"],
        "instance_us_per_open": cpu["cpu_s"]["relay A"] * per_open,
        **redis,
        "redis_us_per_open": redis["redis_cpu_s"] * per_open,
        "redis_pubsub_calls": {k: calls_after.get(k, 0) - calls_before.get(k, 0) for k in PUBSUB_COMMANDS},
        "sim_cpu_pct": cpu["cpu_pct"]["KIE sim"],
        "load_busiest_pct": max(load_cpu, default=0.0),
        "orchestrator_cpu_pct": cpu["cpu_pct"]["bench orchestrator"],
        "machine_busy_pct": cpu["machine_busy_pct"],
        "others_pct": cpu["others_pct"],
        "hub_messages_delta": after["relay_hub_messages_total"] - before["relay_hub_messages_total"],
        "hub_channels_after": after.get("relay_hub_channels", math.nan),
        "open_streams_after": after.get("relay_open_streams", math.nan),
        "subscriptions_after": found,
        "leftover_subscriptions": left,
        "control_channel": any("relay:events" in f["channels"] for f in found.values()),
        "clean_after_s": clean_after,
    }


async def pubsub_calls(ports: list[int]) -> dict[str, int]:
    """Calls of each (un)subscribe command so far, summed over the nodes (INFO commandstats)."""
    out: Counter[str] = Counter()
    for port in ports:
        for line in str(await redis_command(port, "INFO", "commandstats")).splitlines():
            name, _, rest = line.partition(":")
            command = name.removeprefix("cmdstat_")
            if command in PUBSUB_COMMANDS and rest.startswith("calls="):
                out[command] += int(rest.split(",", 1)[0].removeprefix("calls="))
    return dict(out)


async def subscriptions(ports: list[int]) -> dict[str, dict[str, list[str]]]:
    """Per node: PUBSUB CHANNELS relay:* and PUBSUB SHARDCHANNELS relay:* (each is per node)."""
    out: dict[str, dict[str, list[str]]] = {}
    for port in ports:
        out[str(port)] = {
            "channels": sorted(await redis_command(port, "PUBSUB", "CHANNELS", "relay:*")),
            "shardchannels": sorted(await redis_command(port, "PUBSUB", "SHARDCHANNELS", "relay:*")),
        }
    return out


def leftover(mode: str, found: dict[str, dict[str, list[str]]]) -> list[str]:
    """Subscriptions that should be gone once no stream is open: on one server every channel
    but the control channel `relay:events` (always subscribed); on a cluster every shard
    channel on any node."""
    if mode == "cluster":
        return sorted(f"{port}: {c}" for port, f in found.items() for c in f["shardchannels"])
    return sorted(f"{port}: {c}" for port, f in found.items()
                  for c in [*(c for c in f["channels"] if c != "relay:events"), *f["shardchannels"]])


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
        if phase == "churn":
            continue
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
             "  not ours %  final lost  not ended  failed  redis CPU % per node"]
    for phase, r in medians.items():
        if phase == "churn":
            continue
        other.append(
            f"{phase:10} {fmt(r['ack_p50_ms'], 1):>6} / {fmt(r['ack_p99_ms'], 1):<5} {fmt(r['redis_cpu_pct'], 1):>11}"
            f"  {fmt(r['load_busiest_pct'], 0):>19}  {fmt(r['machine_busy_pct'], 0):>21}"
            f"  {fmt(r['others_pct'], 0):>10}  {fmt(r['final_state_lost']):>10}  {fmt(r['streams_not_ended']):>9}"
            f"  {fmt(r['failed_requests']):>6}  {per_node(r)}"
        )
    note = f"(medians over {runs} runs)" if runs > 1 else "(one run)"
    out = [note, *lines, *other] if len(rows) > 1 else [note]
    if "churn" in medians:
        out += ["", *churn_table(medians["churn"], cores)]
    return "\n".join(out)


def per_node(r: dict[str, Any]) -> str:
    """Each Redis node's CPU %, by port."""
    return " / ".join(f":{port} {fmt(n['cpu_pct'], 1)}" for port, n in r.get("redis_nodes", {}).items())


def churn_table(r: dict[str, Any], cores: int) -> list[str]:
    calls = r["redis_pubsub_calls"]
    sub, unsub = ("ssubscribe", "sunsubscribe") if r["redis"] == "cluster" else ("subscribe", "unsubscribe")
    return [
        f"churn ({r['redis']} Redis): {fmt(r['clients'])} clients over {fmt(r['tasks'])} tasks for "
        f"{fmt(r['seconds'], 1)} s, each open = connect, snapshot, close",
        f"  opens {fmt(r['opens'])}  opens/s {fmt(r['opens_per_s'])}  open->snapshot p50/p99 "
        f"{fmt(r['open_p50_ms'], 1)} / {fmt(r['open_p99_ms'], 1)} ms  failed {fmt(r['failed_opens'])}",
        f"  relay A CPU {fmt(r['instance_cpu_pct'], 1)}% = {fmt(r['instance_us_per_open'])} us/open;"
        f"  redis CPU {fmt(r['redis_cpu_pct'], 1)}% = {fmt(r['redis_us_per_open'])} us/open ({per_node(r)})",
        f"  redis {sub.upper()} / {unsub.upper()} commands {fmt(calls.get(sub, 0))} / {fmt(calls.get(unsub, 0))}"
        f" ({fmt(calls.get(sub, 0) / max(1, r['opens']), 2)} / {fmt(calls.get(unsub, 0) / max(1, r['opens']), 2)}"
        f" per open)",
        f"  busiest load proc {fmt(r['load_busiest_pct'])}%  machine busy {fmt(r['machine_busy_pct'])}% of "
        f"{cores * 100}%  not ours {fmt(r['others_pct'])}%",
        f"  after: leftover subscriptions {len(r['leftover_subscriptions'])} ("
        + (f"none after {fmt(r['clean_after_s'], 1)} s" if not r["leftover_subscriptions"]
           else f"still there after {fmt(r['clean_after_s'], 1)} s")
        + f")  relay_hub_channels {fmt(r['hub_channels_after'])}"
        f"  relay_open_streams {fmt(r['open_streams_after'])}",
    ]


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
    measured = [r for phase, r in medians.items() if phase != "churn"]
    lost = sum(r["final_state_lost"] + r["streams_not_ended"] + r["tasks_not_completed"] for r in measured)
    if measured:
        out.append("delivery: every stream got its final state and was ended by the server" if lost == 0 else
                   f"delivery: PROBLEM: final states lost / streams not ended / tasks not completed: {lost}")
    churn = medians.get("churn")
    if churn is not None:
        where = ("PUBSUB SHARDCHANNELS relay:* empty on every node" if churn["redis"] == "cluster"
                 else "PUBSUB CHANNELS relay:* only the control channel relay:events")
        left = churn["leftover_subscriptions"]
        out.append(
            f"churn: {fmt(churn['opens'])} opens ({fmt(churn['opens_per_s'])}/s), "
            f"{fmt(churn['instance_us_per_open'])} us relay CPU and {fmt(churn['redis_us_per_open'])} us Redis "
            f"CPU per open; "
            + (f"afterwards {where}" if not left else
               f"PROBLEM: {len(left)} subscription(s) left after {fmt(churn['clean_after_s'], 1)} s: {left[:5]}")
            + ("" if churn["redis"] == "cluster" or churn["control_channel"] else
               "; PROBLEM: the control channel relay:events is not subscribed")
            + ("" if not churn["failed_opens"] else f"; {fmt(churn['failed_opens'])} opens failed: {churn['errors']}")
        )
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
    p.add_argument("--phases", default=",".join(DEFAULT_PHASES),
                   help=f"comma list of: {', '.join(PHASES)} (default {','.join(DEFAULT_PHASES)})")
    p.add_argument("--redis", choices=("single", "cluster"), default="single",
                   help="one redis-server, or a three-master Redis Cluster on loopback (single)")
    p.add_argument("--churn-tasks", type=int, default=200, help="churn: tasks the clients cycle over (200)")
    p.add_argument("--churn-clients", type=int, default=8, help="churn: concurrent open/close clients (8)")
    p.add_argument("--churn-seconds", type=float, default=None, help="churn: length (default: --seconds)")
    p.add_argument("--churn-max-opens", type=int, default=200_000,
                   help="churn: stop after this many opens in all, even before --churn-seconds (200000)")
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
    churn_seconds = args.seconds if args.churn_seconds is None else args.churn_seconds
    if not 0 < churn_seconds <= 600 or not 1 <= args.churn_clients <= 256 or args.churn_tasks < 1 \
            or args.churn_max_opens < 1:
        raise SystemExit("--churn-seconds in (0, 600], --churn-clients in [1, 256], "
                         "--churn-tasks and --churn-max-opens at least 1")
    return Config(
        streams=args.streams, senders=args.senders, seconds=args.seconds, instances=args.instances,
        runs=args.runs, workers=workers, phases=phases,
        baseline=baseline,
        phase_budget=120.0 + 2 * args.seconds + baseline + args.streams / 20,
        relay_env=dict(item.split("=", 1) for item in args.relay_env),
        redis=args.redis,
        churn_tasks=args.churn_tasks, churn_clients=args.churn_clients, churn_seconds=churn_seconds,
        churn_max_opens=args.churn_max_opens,
        churn_budget=120.0 + 2 * churn_seconds + args.churn_tasks / 20,
    )


async def main_async(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    nofile = procstats.raise_nofile()
    load_at_start = procstats.load_average()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="relay-scaleout-"))
    print(f"scaleout: {cfg.streams} streams, {cfg.senders} senders, {cfg.seconds:g} s, "
          f"{cfg.instances} instances, {cfg.runs} run(s), {cfg.workers} load workers, "
          f"phases {','.join(cfg.phases)}, {cfg.redis} Redis; logs in {workdir}", flush=True)
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    if main_task is not None:
        loop.add_signal_handler(signal.SIGTERM, main_task.cancel)

    target = RelayTarget(workdir, nofile, extra_env=cfg.relay_env, redis=cfg.redis)
    pool = Pool(cfg.workers)
    results: list[dict[str, Any]] = []
    interrupted = False
    try:
        await pool.start()
        await target.start_backends()
        print(f"scaleout: RELAY_REDIS_URL={target.redis_url}", flush=True)
        for run in range(cfg.runs):
            for phase in cfg.phases:
                t0 = time.monotonic()
                try:
                    budget = cfg.churn_budget if phase == "churn" else cfg.phase_budget
                    result = await asyncio.wait_for(run_phase(phase, target, pool, cfg), budget)
                except (Exception, TimeoutError) as exc:
                    traceback.print_exc()
                    result = {"phase": phase, "failed": f"{type(exc).__name__}: {exc}"[:500]}
                result["run"] = run + 1
                results.append(result)
                if "failed" in result:
                    print(f"  run {run + 1} {phase:9} FAILED: {result['failed']}", flush=True)
                elif phase == "churn":
                    print(f"  run {run + 1} {phase:9} {result['opens_per_s']:,.0f} opens/s; "
                          f"{result['instance_us_per_open']:,.0f} us relay CPU, {result['redis_us_per_open']:,.0f} us "
                          f"Redis CPU per open; leftover subscriptions {len(result['leftover_subscriptions'])}"
                          f"  [{time.monotonic() - t0:.0f}s]", flush=True)
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
