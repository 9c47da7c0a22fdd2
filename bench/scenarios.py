"""The scenarios. Each runs against a freshly started target (servers + Redis) and
returns a `ScenarioResult`. Latency is always trigger-to-delivery: the trigger time is taken
just before the callback (or publish) request is written to the socket, the delivery time
when the bytes carrying the event reach the load worker; both are CLOCK_MONOTONIC.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench import procstats
from bench.gcstats import GcProbe
from bench.httpclient import Client
from bench.integrity import await_server_close
from bench.pool import Pool
from bench.stats import ScenarioResult, latency_ms
from bench.targets import Target

MB = 1024 * 1024
CLIENT_CPU_LIMIT = 80.0  # % of one core: above this a load process may be the bottleneck


@dataclass
class Sizes:
    per_task: int = 2000
    fanout_streams: int = 1000
    fanout_updates: int = 20
    fanout_interval: float = 0.0  # 0: send the next update when every stream has the last
    idle_levels: list[int] = field(default_factory=lambda: [1000, 5000, 10000])
    idle_probe: int = 200
    probe_in_flight: int = 4  # probe updates in flight: latency at N streams, not a burst
    ingest_senders: int = 32
    ingest_seconds: float = 10.0
    replay: int = 1000
    senders: int = 32  # concurrent trigger requests (callbacks / publishes)
    settle: float = 3.0
    leak_runs: int = 10
    leak_tasks: int = 0  # 0: the per-task size
    idle_window: float = 5.0
    open_concurrency: int = 256


@dataclass
class Env:
    target: Target
    pool: Pool
    sizes: Sizes
    client: Client


# --- measuring ---------------------------------------------------------------------------


class Meter:
    """CPU of every process group between start() and stop(), as % of one core, plus the
    load workers' event-loop lag: the proof that the load tool kept up."""

    def __init__(self, env: Env):
        self.env = env
        self.groups = env.target.groups()
        for i, pid in enumerate(env.pool.pids):
            self.groups[f"load worker {i}"] = [pid]
        self.t0 = 0.0
        self.cpu0: dict[str, float] = {}
        self.self0 = 0.0
        self.machine0 = 0.0
        self.gc = GcProbe(env.target)  # GC pauses over the same phase (read outside the clock)

    async def start(self) -> None:
        await self.gc.start()
        await self.env.pool.stats(reset=True)
        self.cpu0 = {name: procstats.cpu_seconds(pids) for name, pids in self.groups.items()}
        self.self0 = procstats.self_cpu_seconds()
        self.machine0 = procstats.machine_busy_seconds()
        self.t0 = time.monotonic()

    async def stop(self, result: ScenarioResult) -> dict[str, Any]:
        wall = max(1e-6, time.monotonic() - self.t0)
        cpu = {
            name: (procstats.cpu_seconds(pids) - self.cpu0[name]) / wall * 100
            for name, pids in self.groups.items()
        }
        cpu["bench orchestrator"] = (procstats.self_cpu_seconds() - self.self0) / wall * 100
        machine = (procstats.machine_busy_seconds() - self.machine0) / wall * 100
        others = max(0.0, machine - sum(cpu.values()))
        stats = await self.env.pool.stats()
        client_cpu = [v for k, v in cpu.items() if k.startswith("load worker")] + [cpu["bench orchestrator"]]
        lag_p99 = max((s["lag_p99_ms"] for s in stats), default=0.0)
        lag_max = max((s["lag_max_ms"] for s in stats), default=0.0)
        busiest = max(client_cpu, default=0.0)
        client = {
            "wall_s": wall, "cpu": cpu, "busiest_client_pct": busiest,
            "lag_p99_ms": lag_p99, "lag_max_ms": lag_max, "others_pct": others,
            "ok": busiest < CLIENT_CPU_LIMIT,
        }
        result.client = client
        result.add("server CPU", cpu.get("server", 0.0), "%", "low")
        result.add("redis CPU", cpu.get("redis", 0.0), "%", "low")
        result.add("load tool CPU, busiest process", busiest, "%")
        result.add("load worker loop lag p99", lag_p99, "ms")
        await self.gc.stop(result)
        if not client["ok"]:
            result.notes.append(
                f"a load process used {busiest:.0f}% of a core (limit {CLIENT_CPU_LIMIT:.0f}%): "
                "the load tool may have been a bottleneck here; try more --workers"
            )
        return client


def memory_rows(env: Env, result: ScenarioResult) -> None:
    groups = env.target.groups()
    result.add("server RSS", procstats.rss_bytes(groups.get("server", [])) / MB, "MB", "low")
    result.add("server peak RSS", procstats.peak_rss_bytes(groups.get("server", [])) / MB, "MB", "low")
    result.add("redis RSS", procstats.rss_bytes(groups.get("redis", [])) / MB, "MB", "low")


@dataclass
class Triggered:
    sent: dict[tuple[str, int], float]
    acks: list[float]
    statuses: Counter[int]
    errors: Counter[str]
    first: float
    last: float

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def rate(self) -> float:
        return self.ok / max(1e-6, self.last - self.first)

    def problems(self) -> str | None:
        bad = {s: n for s, n in self.statuses.items() if not 200 <= s < 300}
        if not bad and not self.errors:
            return None
        return f"non-2xx answers {bad or '{}'}, errors {dict(self.errors) or '{}'}"


async def trigger(env: Env, updates: list[tuple[str, int, bool]], in_flight: int = 0) -> Triggered:
    """Send the updates (key, version, final), `in_flight` (default `sizes.senders`) at a
    time, in order. Request bytes are built before the clock starts."""
    raws = [(key, version, env.target.update_request(env.client, key, version, final=final))
            for key, version, final in updates]
    out = Triggered({}, [], Counter(), Counter(), 0.0, 0.0)
    queue = iter(raws)  # shared by the senders: each takes the next request

    async def sender() -> None:
        for key, version, raw in queue:
            try:
                response = await env.client.send(raw)
            except (OSError, TimeoutError) as exc:
                out.errors[type(exc).__name__] += 1
                continue
            out.statuses[response.status] += 1
            if 200 <= response.status < 300:
                out.sent[(key, version)] = response.sent
                out.acks.append(response.seconds)
            out.last = max(out.last, response.done)

    out.first = time.monotonic()
    senders = max(1, min(in_flight or env.sizes.senders, len(raws)))
    await asyncio.gather(*(sender() for _ in range(senders)))
    if not out.last:
        out.last = time.monotonic()
    return out


@dataclass
class Deliveries:
    latencies: list[float]
    by_version: dict[int, list[float]]
    duplicates: int
    first_seen: list[dict[int, float]]  # per stream: version -> first arrival


def deliveries(reports: dict[int, dict[str, Any]], sent: dict[tuple[str, int], float]) -> Deliveries:
    latencies: list[float] = []
    by_version: dict[int, list[float]] = {}
    duplicates = 0
    first_seen = []
    for report in reports.values():
        key = report["key"]
        seen: dict[int, float] = {}
        for version, arrived in report["events"]:
            if version in seen:
                duplicates += 1
                continue
            seen[version] = arrived
            t = sent.get((key, version))
            if t is not None:
                latencies.append(arrived - t)
                by_version.setdefault(version, []).append(arrived - t)
        first_seen.append(seen)
    return Deliveries(latencies, by_version, duplicates, first_seen)


def open_rows(result: ScenarioResult, opened: Any, label: str = "streams") -> None:
    result.add(f"{label} opened", opened.opened, "", "high")
    result.add(f"{label} open failures", opened.failed, "", "low")
    result.add("stream open rate", opened.opened / max(1e-6, opened.seconds), "/s", "high")
    if opened.failed:
        result.notes.append(f"stream open failures: {opened.errors} (HTTP statuses {opened.statuses})")


def _timeout(n: int, per_second: float = 200, low: float = 30) -> float:
    return max(low, n / per_second)


# --- scenarios ---------------------------------------------------------------------------


async def per_task(env: Env) -> ScenarioResult:
    """N tasks, one stream each; a `processing` callback for every task, then a success."""
    n, target, pool = env.sizes.per_task, env.target, env.pool
    result = ScenarioResult("per-task", target.name)
    t0 = time.monotonic()
    keys = await target.create(n)
    result.add("tasks", n)
    result.add("task create rate", n / (time.monotonic() - t0), "/s", "high")
    opened = await pool.open(
        target.port, [(k, target.stream_path(k), None) for k in keys],
        within=_timeout(n), concurrency=env.sizes.open_concurrency,
    )
    open_rows(result, opened)
    meter = Meter(env)
    await meter.start()
    first = await trigger(env, [(k, 2, False) for k in keys])
    reach = await pool.await_versions(version=2, within=_timeout(n, 50))
    t_all = time.monotonic()
    final = await trigger(env, [(k, 3, True) for k in keys])
    reach_final = await pool.await_versions(version=3, within=_timeout(n, 50))
    await meter.stop(result)
    memory_rows(env, result)
    await await_server_close(env)
    reports = await pool.collect(forget=True)
    got = deliveries(reports, first.sent)
    done = deliveries(reports, final.sent)

    result.add("callbacks/s (processing round)", first.rate, "/s", "high")
    ack = latency_ms(first.acks)
    result.add("callback ack p50", ack["p50"], "ms", "low")
    result.add("callback ack p99", ack["p99"], "ms", "low")
    result.add_latency("callback→processing event", got.latencies)
    result.add("processing events delivered/s", len(got.latencies) / max(1e-6, t_all - first.first), "/s", "high")
    result.add_latency("callback→completed event", done.latencies)
    result.add("lost (stream never got the version)", int(reach["missing"] + reach_final["missing"]), "", "low")
    result.add("final state lost", int(reach_final["missing"]), "", "low")
    result.add("duplicated deliveries", got.duplicates, "", "low")
    ended = sum(1 for r in reports.values() if r["ended"])
    result.add("streams ended by the server after completion", ended)
    if target.closes_streams:
        result.add("streams not ended by the server after completion", len(reports) - ended, "", "low")
    for name, trig in (("processing", first), ("completion", final)):
        if (problem := trig.problems()) is not None:
            result.notes.append(f"{name} round: {problem}")
    return result


async def fanout(env: Env) -> ScenarioResult:
    """One task, S streams, U updates (the last one completes the task)."""
    s, u, target, pool = env.sizes.fanout_streams, env.sizes.fanout_updates, env.target, env.pool
    result = ScenarioResult("fanout", target.name)
    key = (await target.create(1))[0]
    result.add("streams", s)
    result.add("updates", u)
    opened = await pool.open(
        target.port, [(key, target.stream_path(key), None)] * s,
        within=_timeout(s), concurrency=env.sizes.open_concurrency,
    )
    open_rows(result, opened)
    meter = Meter(env)
    await meter.start()
    sent: dict[tuple[str, int], float] = {}
    problems = []
    missing_rounds = 0
    t_start = time.monotonic()
    for k in range(1, u + 1):
        trig = await trigger(env, [(key, k + 1, k == u)])
        sent.update(trig.sent)
        if (problem := trig.problems()) is not None:
            problems.append(problem)
        if env.sizes.fanout_interval <= 0:
            reach = await pool.await_versions(version=k + 1, within=_timeout(s, 100))
            missing_rounds += int(reach["missing"] > 0)
        else:
            await asyncio.sleep(env.sizes.fanout_interval)
    reach = await pool.await_versions(version=u + 1, within=_timeout(s, 100))
    t_end = time.monotonic()
    await meter.stop(result)
    memory_rows(env, result)
    await await_server_close(env)
    reports = await pool.collect(forget=True)
    got = deliveries(reports, sent)
    expected = set(range(2, u + 2))
    skipped = sum(len(expected - seen.keys()) for seen in got.first_seen)
    final_missing = sum(1 for seen in got.first_seen if u + 1 not in seen)
    result.add_latency("update→event", got.latencies)
    spread = sorted(max(v) for v in got.by_version.values()) if got.by_version else []
    result.add("time to reach every stream, median update",
               spread[len(spread) // 2] * 1000 if spread else None, "ms", "low")
    result.add("deliveries/s", len(got.latencies) / max(1e-6, t_end - t_start), "/s", "high")
    result.add("final state lost", final_missing, "", "low")
    result.add("intermediate versions not delivered", skipped, "", "low")
    result.add("duplicated deliveries", got.duplicates, "", "low")
    if target.closes_streams:  # nchan never ends a stream
        result.add("streams not ended by the server after completion",
                   sum(1 for r in reports.values() if not r["ended"]), "", "low")
    if skipped and target.kind == "relay":
        result.notes.append(
            "Relay keeps only the newest state per task for a stream that is behind, so a skipped "
            "intermediate version is coalesced by design, not lost; the final state must arrive"
        )
    if reach["missing"]:
        result.notes.append(f"{int(reach['missing'])} stream(s) never reached the final version")
    result.notes.extend(sorted(set(problems)))
    return result


async def idle(env: Env) -> ScenarioResult:
    """Open streams in steps (one task each), measure memory and idle CPU at each step and
    the latency of a probe of updates sent to a sample of the open streams."""
    levels, target, pool, sizes = sorted(env.sizes.idle_levels), env.target, env.pool, env.sizes
    result = ScenarioResult("idle", target.name)
    top = levels[-1]
    t0 = time.monotonic()
    keys = await target.create(top)
    result.add("tasks created for the sweep", top)
    result.add("task create rate", top / (time.monotonic() - t0), "/s", "high")
    await asyncio.sleep(sizes.settle)
    groups = target.groups()
    base_rss = procstats.rss_bytes(groups["server"])
    base_redis = procstats.rss_bytes(groups["redis"])
    base_client = procstats.rss_bytes(pool.pids)
    result.add("server RSS before streams", base_rss / MB, "MB", "low")
    sids: dict[str, int] = {}
    versions = dict.fromkeys(keys, 1)
    rng = random.Random(7)
    opened_total = 0
    last_level: dict[str, Any] = {}
    meter = Meter(env)
    await meter.start()
    for level in levels:
        batch = keys[opened_total:level]
        opened = await pool.open(
            target.port, [(k, target.stream_path(k), None) for k in batch],
            within=_timeout(len(batch), 100, 60), concurrency=sizes.open_concurrency,
        )
        sids.update(zip(batch, opened.sids, strict=True))
        opened_total = level
        await asyncio.sleep(sizes.settle)
        target.check_alive()
        rss = procstats.rss_bytes(groups["server"])
        redis_rss = procstats.rss_bytes(groups["redis"])
        client_rss = procstats.rss_bytes(pool.pids)
        cpu0, w0 = procstats.cpu_seconds(groups["server"]), time.monotonic()
        await asyncio.sleep(sizes.idle_window)
        idle_cpu = (procstats.cpu_seconds(groups["server"]) - cpu0) / (time.monotonic() - w0) * 100
        still_open = sum(s["open"] for s in await pool.stats())
        sample = rng.sample(keys[:level], min(sizes.idle_probe, level))
        updates = []
        for key in sample:
            versions[key] += 1
            updates.append((key, versions[key], False))
        cpu0 = procstats.cpu_seconds(groups["server"])
        trig = await trigger(env, updates, sizes.probe_in_flight)
        # The probe's senders go as fast as the answers come, so its rate and the server's
        # CPU meanwhile say whether its latency was measured on a resting server or on a
        # saturated one (then it is the throughput figure again, queued `in_flight` deep).
        # From the first send to the last answer: not the wait for the events below, which
        # lasts its whole bound when a sampled stream has closed.
        probe_cpu = (procstats.cpu_seconds(groups["server"]) - cpu0) / max(1e-6, time.monotonic() - trig.first) * 100
        probe_rate = trig.ok / max(1e-6, trig.last - trig.first)
        await pool.await_versions({sids[k]: versions[k] for k in sample}, within=30)
        reports = await pool.collect([sids[k] for k in sample])
        probe = latency_ms(deliveries(reports, trig.sent).latencies)
        last_level = {
            "streams": level,
            "opened": opened_total,
            "open_failures": opened.failed,
            "still_open": still_open,
            "open_rate": opened.opened / max(1e-6, opened.seconds),
            "rss_mb": rss / MB,
            "rss_delta_mb": (rss - base_rss) / MB,
            "bytes_per_stream": (rss - base_rss) / level,
            "redis_rss_mb": redis_rss / MB,
            "redis_delta_mb": (redis_rss - base_redis) / MB,
            "idle_cpu_pct": idle_cpu,
            "client_bytes_per_stream": (client_rss - base_client) / level,
            "probe_n": probe["n"],
            "probe_p50_ms": probe["p50"],
            "probe_p99_ms": probe["p99"],
            "probe_max_ms": probe["max"],
            "probe_rate": probe_rate,
            "probe_cpu_pct": probe_cpu,
        }
        result.levels.append(last_level)
        if opened.failed:
            result.notes.append(f"{level} streams: {opened.failed} failed to open: {opened.errors}")
        if still_open < level:
            result.notes.append(f"{level} streams: only {still_open} still open after the idle wait")
        print(f"    {target.name} idle {level}: {last_level['rss_mb']:.0f} MB, "
              f"{last_level['bytes_per_stream'] / 1024:.1f} KiB/stream, idle CPU {idle_cpu:.1f}%, "
              f"probe p99 {probe['p99']:.1f} ms", flush=True)
    await meter.stop(result)
    result.add("open streams", last_level.get("still_open"), "", "high")
    result.add("server RSS with all streams", last_level.get("rss_mb"), "MB", "low")
    result.add("server memory per stream", last_level.get("bytes_per_stream", 0) / 1024, "KiB", "low")
    result.add("redis RSS growth", last_level.get("redis_delta_mb"), "MB", "low")
    result.add("server idle CPU with all streams", last_level.get("idle_cpu_pct"), "%", "low")
    result.add("probe update→event p50", last_level.get("probe_p50_ms"), "ms", "low")
    result.add("probe update→event p99", last_level.get("probe_p99_ms"), "ms", "low")
    result.add("stream open rate (last step)", last_level.get("open_rate"), "/s", "high")
    result.add("load tool memory per stream", last_level.get("client_bytes_per_stream", 0) / 1024, "KiB")
    await pool.reset()
    return result


async def ingest(env: Env) -> ScenarioResult:
    """K senders post updates back to back for T seconds (no streams open)."""
    k, seconds, target, pool = env.sizes.ingest_senders, env.sizes.ingest_seconds, env.target, env.pool
    result = ScenarioResult("ingest", target.name)
    keys = await target.create(max(2 * k, 64))
    items = target.ingest_items(keys, dict.fromkeys(keys, 1))
    workers = len(pool.workers)
    messages: list[dict[str, Any] | None] = []
    for i in range(workers):
        senders = k // workers + (1 if i < k % workers else 0)
        mine = items[i::workers]
        messages.append(
            {"cmd": "ingest", "kind": target.kind, "port": target.port, "items": mine,
             "senders": senders, "duration": seconds} if senders and mine else None
        )
    result.add("senders", k)
    result.add("tasks", len(keys))
    meter = Meter(env)
    await meter.start()
    replies = await pool.each(messages, seconds + 90)
    await meter.stop(result)
    memory_rows(env, result)
    acks = [x for r in replies for x in r["latencies"]]
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for reply in replies:
        statuses.update(reply["statuses"])
        errors.update(reply["errors"])
    wall = max(r["seconds"] for r in replies)
    result.add("callbacks/s", len(acks) / wall, "/s", "high")
    # What a callback costs the server whatever the machine's speed: steadier than the rate
    # when comparing builds on a shared machine.
    client = result.client or {}
    server_cpu_s = client.get("cpu", {}).get("server", 0.0) / 100 * client.get("wall_s", 0.0)
    result.add("server CPU per callback", server_cpu_s / len(acks) * 1e6 if acks else None, "µs", "low")
    result.add_latency("ack", acks)
    failures = sum(n for s, n in statuses.items() if not s.startswith("2")) + sum(errors.values())
    result.add("failed requests", failures, "", "low")
    if failures:
        result.notes.append(f"ingest: statuses {dict(statuses)}, errors {dict(errors)}")
    return result


async def replay(env: Env) -> ScenarioResult:
    """Streams see version 2, disconnect, miss versions 3 and 4, reconnect with the
    Last-Event-ID they had; then version 5 (final) arrives live; then a reconnect with the
    final id must get nothing (Relay: 204)."""
    n, target, pool = env.sizes.replay, env.target, env.pool
    result = ScenarioResult("replay", target.name)
    keys = await target.create(n)
    result.add("tasks (one stream each)", n)
    first = await pool.open(target.port, [(k, target.stream_path(k), None) for k in keys],
                            within=_timeout(n), concurrency=env.sizes.open_concurrency)
    open_rows(result, first)
    meter = Meter(env)
    await meter.start()
    trig = await trigger(env, [(k, 2, False) for k in keys])
    await pool.await_versions(version=2, within=_timeout(n, 50))
    before = await pool.collect(first.sids, forget=True)  # forget closes them
    last_ids = {r["key"]: r["last_id"] for r in before.values()}
    missing_id = sum(1 for k in keys if last_ids.get(k) is None)
    away = await trigger(env, [(k, v, False) for v in (3, 4) for k in keys])
    second = await pool.open(target.port, [(k, target.stream_path(k), last_ids.get(k)) for k in keys],
                             within=_timeout(n), concurrency=env.sizes.open_concurrency)
    reach_newest = await pool.await_versions(version=4, within=_timeout(n, 50))
    live = await trigger(env, [(k, 5, True) for k in keys])
    reach_final = await pool.await_versions(version=5, within=_timeout(n, 50))
    await await_server_close(env)
    after = await pool.collect(second.sids, forget=True)
    resumed = [r["t_first"] - r["t_open"] for r in after.values() if r["t_first"]]
    already_seen = sum(1 for r in after.values() for v, _ in r["events"] if v <= 2)
    repeats = deliveries(after, live.sent)
    replayed_3 = sum(1 for seen in repeats.first_seen if 3 in seen)
    # A reconnect after the final version: nothing more may come.
    final_ids = {r["key"]: r["last_id"] for r in after.values()}
    third = await pool.open(target.port, [(k, target.stream_path(k), final_ids.get(k)) for k in keys],
                            ready="head", within=_timeout(n), concurrency=env.sizes.open_concurrency)
    await asyncio.sleep(1.0)
    last = await pool.collect(third.sids, forget=True)
    await meter.stop(result)
    resent_after_final = sum(len(r["events"]) for r in last.values())
    answers_204 = sum(1 for r in last.values() if r["status"] == 204)

    result.add("reconnect→first event p50", latency_ms(resumed)["p50"], "ms", "low")
    result.add("reconnect→first event p99", latency_ms(resumed)["p99"], "ms", "low")
    result.add("streams missing the newest state after reconnect", int(reach_newest["missing"]), "", "low")
    result.add("streams missing the live final event", int(reach_final["missing"]), "", "low")
    result.add("already-seen versions re-sent", already_seen, "", "low")
    result.add("duplicated deliveries", repeats.duplicates, "", "low")
    result.add("missed intermediate version replayed", replayed_3, "", "")
    result.add("events re-sent after the final id", resent_after_final, "", "low")
    result.add("reconnects after final answered 204", answers_204)
    if target.closes_streams:
        result.add("streams not ended by the server after completion",
                   sum(1 for r in after.values() if not r["ended"]), "", "low")
    if missing_id:
        result.notes.append(f"{missing_id} stream(s) had no event id to resume from")
    for name, t in (("first", trig), ("while away", away), ("final", live)):
        if (problem := t.problems()) is not None:
            result.notes.append(f"{name} round: {problem}")
    if target.kind != "nchan" and replayed_3 < n:
        result.notes.append(
            f"{target.name} resumes with the task's newest state (a snapshot), not a log of every "
            "version, so version 3 is not replayed when version 4 already exists: by design"
        )
    return result


async def settle_after_close(env: Env, within: float = 30.0) -> dict[str, float]:
    """After the streams (and the trigger client's keep-alive connections) were closed: wait
    until the server's side of every connection to its port is gone, then `sizes.settle`, then
    until two RSS readings 0.25 s apart differ by under 0.5% (bounded). Returns what it saw."""
    server = env.target.groups().get("server", [])
    t0 = time.monotonic()
    deadline = t0 + within
    sockets = procstats.server_connections(env.target.port)
    while sockets > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        sockets = procstats.server_connections(env.target.port)
    closed_s = time.monotonic() - t0
    await asyncio.sleep(env.sizes.settle)
    previous = procstats.rss_bytes(server)
    stable = False
    for _ in range(40):
        await asyncio.sleep(0.25)
        rss = procstats.rss_bytes(server)
        stable = abs(rss - previous) <= 0.005 * max(1, previous)
        previous = rss
        if stable:
            break
    return {"sockets_left": sockets, "closed_s": closed_s, "rss": previous,
            "stable": float(stable)}


async def leak(env: Env) -> ScenarioResult:
    """The per-task workload `leak_runs` times against one server: RSS after each run, once
    its streams are closed and the server has settled."""
    target, pool, sizes = env.target, env.pool, env.sizes
    n, runs = sizes.leak_tasks or sizes.per_task, max(1, sizes.leak_runs)
    result = ScenarioResult("leak", target.name)
    result.add("tasks per run (one stream each)", n)
    result.add("runs", runs)
    server = target.groups().get("server", [])
    await asyncio.sleep(sizes.settle)
    start_rss = procstats.rss_bytes(server)
    rss_mb: list[float] = []
    redis_mb: list[float] = []
    lost = duplicates = not_ended = 0
    lost_per_run: list[int] = []
    problems: list[str] = []
    meter = Meter(env)
    await meter.start()
    for run in range(1, runs + 1):
        keys = await target.create(n)
        opened = await pool.open(
            target.port, [(k, target.stream_path(k), None) for k in keys],
            within=_timeout(n), concurrency=sizes.open_concurrency,
        )
        if opened.failed:
            problems.append(f"run {run}: {opened.failed} stream(s) failed to open: {opened.errors}")
        first = await trigger(env, [(k, 2, False) for k in keys])
        reach = await pool.await_versions(version=2, within=_timeout(n, 50))
        final = await trigger(env, [(k, 3, True) for k in keys])
        reach_final = await pool.await_versions(version=3, within=_timeout(n, 50))
        await await_server_close(env)
        reports = await pool.collect(forget=True)  # closes every stream
        lost_per_run.append(int(reach["missing"] + reach_final["missing"]))
        lost += lost_per_run[-1]
        duplicates += deliveries(reports, first.sent).duplicates + deliveries(reports, final.sent).duplicates
        not_ended += sum(1 for r in reports.values() if not r["ended"])
        for name, trig in (("processing", first), ("completion", final)):
            if (problem := trig.problems()) is not None:
                problems.append(f"run {run}, {name} round: {problem}")
        env.client.close()  # its keep-alive connections too: the server should hold none
        settled = await settle_after_close(env)
        target.check_alive()
        rss_mb.append(settled["rss"] / MB)
        redis_mb.append(procstats.rss_bytes(target.groups().get("redis", [])) / MB)
        if settled["sockets_left"] > 0:
            problems.append(f"run {run}: {int(settled['sockets_left'])} connection(s) still open "
                            "on the server's side 30 s after the streams were closed")
        print(f"    {target.name} leak run {run}/{runs}: server RSS {rss_mb[-1]:.1f} MB, "
              f"lost {lost_per_run[-1]} "
              f"(streams gone after {settled['closed_s']:.2f} s)", flush=True)
    await meter.stop(result)
    growth = (rss_mb[-1] - rss_mb[0]) / rss_mb[0] * 100 if rss_mb and rss_mb[0] else None
    result.add("server RSS before run 1", start_rss / MB, "MB", "low")
    result.add("server RSS after run 1", rss_mb[0], "MB", "low")
    result.add(f"server RSS after run {runs}", rss_mb[-1], "MB", "low")
    result.add("server RSS growth, run 1 → last", growth, "%", "low")
    result.add("server RSS max over the runs", max(rss_mb), "MB", "low")
    result.add("redis RSS growth, run 1 → last", redis_mb[-1] - redis_mb[0], "MB", "low")
    result.add("lost (stream never got the version)", lost, "", "low")
    result.add("duplicated deliveries", duplicates, "", "low")
    result.add("streams not ended by the server after completion", not_ended, "", "low")
    result.series = {"server_rss_mb_per_run": rss_mb, "redis_rss_mb_per_run": redis_mb,
                     "lost_per_run": lost_per_run,
                     "server_rss_mb_before": start_rss / MB, "tasks_per_run": n}
    result.notes.append("server RSS per run (MB): " + ", ".join(f"{v:.1f}" for v in rss_mb))
    result.notes.extend(problems)
    return result


def not_applicable(scenario: str, target: str) -> ScenarioResult:
    """The result of a scenario that does not apply to a target (see NOT_APPLICABLE)."""
    result = ScenarioResult(scenario, target)
    result.add("server RSS growth, run 1 → last", "n/a", "%", "low")
    result.notes.append(f"not run for {target} (n/a)")
    return result


SCENARIOS: dict[str, Callable[[Env], Awaitable[ScenarioResult]]] = {
    "per-task": per_task,
    "fanout": fanout,
    "idle": idle,
    "ingest": ingest,
    "replay": replay,
    "leak": leak,
}
# scenario -> target keys it is not run for (n/a in the report): the leak check (RSS growth
# over repeated runs) is for the Python servers, Relay and the peer.
NOT_APPLICABLE: dict[str, set[str]] = {"leak": {"nchan"}}
