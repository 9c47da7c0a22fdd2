"""`python -m bench all [--quick]`: run every scenario against Relay, the tutorial Python peer
and nchan and write bench/RESULTS.md (+ bench/results.png, bench/results.json; with
`--output DIR/NAME.md`: DIR/NAME.png and DIR/NAME.json). `python -m bench selftest` checks the
SSE parser, HTTP framing, plotter and metrics parsing."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench import gcstats, procstats
from bench.httpclient import Client
from bench.plot import sweep_plot
from bench.pool import ROOT, Pool
from bench.report import RunInfo, render
from bench.scenarios import NOT_APPLICABLE, SCENARIOS, Env, Sizes, not_applicable
from bench.servers import command_version
from bench.stats import ScenarioResult, fmt
from bench.targets import TARGETS, RelayTarget, Target
from bench.worker import run_loop

BENCH_DIR = Path(__file__).resolve().parent
FD_RESERVE = 1000  # descriptors a server keeps for everything but streams
STANDARD_LEVELS = (1000, 5000, 10000)

QUICK: dict[str, float | str] = {
    "per_task": 500, "fanout_streams": 300, "fanout_updates": 20, "idle_levels": "500,1000,2000",
    "idle_probe": 100, "ingest_senders": 16, "ingest_seconds": 5.0, "replay": 100, "settle": 1.0,
    "idle_window": 2.0, "budget": 150.0,
    "leak_runs": 10, "leak_tasks": 300,
}
FULL: dict[str, float | str] = {
    "per_task": 2000, "fanout_streams": 1000, "fanout_updates": 20, "idle_levels": "1000,5000,10000,max",
    "idle_probe": 200, "ingest_senders": 32, "ingest_seconds": 10.0, "replay": 1000, "settle": 3.0,
    "idle_window": 5.0, "budget": 1800.0,
    "leak_runs": 10, "leak_tasks": 0,  # 0: the per-task size
}

# Headline figures printed after each run.
SUMMARY = {
    "per-task": ["callbacks/s (processing round)", "callback→processing event p50", "callback→processing event p99",
                 "lost (stream never got the version)", "streams not ended by the server after completion"],
    "fanout": ["deliveries/s", "update→event p50", "update→event p99", "final state lost",
               "streams not ended by the server after completion"],
    "idle": ["open streams", "server RSS with all streams", "server memory per stream", "probe update→event p99"],
    "ingest": ["callbacks/s", "ack p50", "ack p99"],
    "replay": ["streams missing the newest state after reconnect", "duplicated deliveries", "reconnect→first event p99"],
    "leak": ["server RSS after run 1", "server RSS max over the runs", "server RSS growth, run 1 → last"],
}


def max_streams() -> int:
    """How many streams one server process can hold: the fd hard limit minus a reserve (the
    load workers split their side over several processes), bounded by the ephemeral ports."""
    hard = procstats.raise_nofile()
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        ports = high - low
    except (OSError, ValueError):
        ports = 28000
    return max(1000, (min(hard, ports) - FD_RESERVE) // 1000 * 1000)


def parse_levels(text: str) -> list[int]:
    levels = set()
    for part in text.split(","):
        part = part.strip().lower()
        if part == "max":
            levels.add(max_streams())
        elif part:
            levels.add(int(part.replace("_", "").replace("k", "000")))
    return sorted(levels)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("all", help="run the scenarios against the targets and write the report")
    run.add_argument("--quick", action="store_true", help="small sizes, about five minutes in all")
    run.add_argument("--targets", default="relay,peer,nchan", help="comma list of: relay, peer, nchan")
    run.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list of: " + ", ".join(SCENARIOS))
    run.add_argument("--per-task", type=int, help="per-task: tasks, one stream each (full 2000, quick 500)")
    run.add_argument("--fanout-streams", type=int, help="fanout: streams on one task (full 1000, quick 300)")
    run.add_argument("--fanout-updates", type=int, help="fanout: updates, the last one final (20)")
    run.add_argument("--fanout-interval", type=float, default=0.0,
                     help="fanout: seconds between updates; 0 = wait for every stream (default)")
    run.add_argument("--idle", type=int, help="idle: the largest number of streams (full 10000 + the fd maximum)")
    run.add_argument("--idle-levels", help="idle: comma list of stream counts; 'max' = the fd-limited maximum")
    run.add_argument("--idle-probe", type=int, help="idle: updates sent at each level to measure latency")
    run.add_argument("--ingest-senders", type=int, help="ingest: concurrent senders (full 32, quick 16)")
    run.add_argument("--ingest-seconds", type=float, help="ingest: duration (full 10, quick 5)")
    run.add_argument("--replay", type=int, help="replay: streams that reconnect (full 1000, quick 100)")
    run.add_argument("--leak-runs", type=int, help="leak: per-task runs against one server (10)")
    run.add_argument("--leak-tasks", type=int, help="leak: tasks per run (full: the per-task size, quick 300)")
    run.add_argument("--senders", type=int, default=32, help="trigger requests in flight (32)")
    run.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2),
                     help="load-generator processes (default: number of CPUs, at least 2)")
    run.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS.md", help="report path")
    run.add_argument("--keep", action="store_true", help="keep the servers' logs and configs")
    run.add_argument("--relay-env", action="append", default=[], metavar="NAME=VALUE",
                     help="extra environment for `relay serve` (repeatable)")
    run.add_argument("--relay-workers", type=int, default=1, metavar="N",
                     help="run Relay as `relay serve --workers N` (default 1); CPU and RSS are summed")
    sub.add_parser("selftest", help="check the SSE parser, HTTP framing and plotter")
    return parser


def sizes_from(args: argparse.Namespace) -> tuple[Sizes, float]:
    base = QUICK if args.quick else FULL
    if args.idle_levels:
        levels = parse_levels(args.idle_levels)
    elif args.idle:
        levels = [n for n in STANDARD_LEVELS if n < args.idle] + [args.idle]
    else:
        levels = parse_levels(str(base["idle_levels"]))

    def pick(name: str) -> float:
        value = getattr(args, name, None)
        return float(value) if value is not None else float(base[name])

    sizes = Sizes(
        per_task=int(pick("per_task")),
        fanout_streams=int(pick("fanout_streams")),
        fanout_updates=int(pick("fanout_updates")),
        fanout_interval=args.fanout_interval,
        idle_levels=levels,
        idle_probe=int(pick("idle_probe")),
        ingest_senders=int(pick("ingest_senders")),
        ingest_seconds=pick("ingest_seconds"),
        replay=int(pick("replay")),
        senders=args.senders,
        settle=float(base["settle"]),
        idle_window=float(base["idle_window"]),
        leak_runs=int(pick("leak_runs")),
        leak_tasks=int(pick("leak_tasks")) or int(pick("per_task")),
    )
    return sizes, float(base["budget"])


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "relay"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        out["relay commit"] = commit + (" (with uncommitted changes in relay/)" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        out["relay commit"] = "?"
    for package in ("uvicorn", "starlette", "sse-starlette", "redis", "uvloop", "orjson"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[package] = importlib.metadata.version(package)
    out["nginx"] = command_version(["nginx", "-v"])
    nchan = command_version(["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-nchan"])
    out["nchan"] = f"libnginx-mod-nchan {nchan}" if nchan != "?" else "?"
    out["redis-server"] = command_version(["redis-server", "--version"])
    return out


def make_target(name: str, workdir: Path, nofile: int, relay_env: dict[str, str], relay_workers: int) -> Target:
    if name == "relay":
        return RelayTarget(workdir, nofile, extra_env=relay_env, workers=relay_workers)
    return TARGETS[name](workdir, nofile)


def companion(output: Path, suffix: str) -> Path:
    """results.json / results.png next to the report: RESULTS.md -> results.json,
    RESULTS-idle.md -> results-idle.json, /tmp/try.md -> /tmp/try.json."""
    stem = output.stem
    if stem.startswith("RESULTS"):
        stem = "results" + stem[len("RESULTS"):]
    return output.with_name(stem + suffix)


def summary_line(result: ScenarioResult) -> str:
    if result.failed:
        return f"  {result.scenario:8} {result.target:6} FAILED: {result.failed}"
    parts = []
    for label in SUMMARY.get(result.scenario, []):
        for row in result.rows:
            if row.label == label:
                parts.append(f"{label} {fmt(row.value, row.unit)}")
    client = result.client
    if client:
        parts.append(f"server CPU {client['cpu'].get('server', 0):.0f}%, "
                     f"busiest load process {client['busiest_client_pct']:.0f}%")
    if result.gc:
        parts.append(gcstats.summary(result.gc))
    return f"  {result.scenario:8} {result.target:6} " + "; ".join(parts)


async def run_all(args: argparse.Namespace) -> int:
    started = time.monotonic()
    started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_at_start = procstats.load_average()
    nofile = procstats.raise_nofile()
    # Before the run, not after: a folder that does not exist lost a 12-minute run's figures
    # at the very end (the plot was its first write).
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sizes, budget = sizes_from(args)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for name in targets:
        if name not in TARGETS:
            raise SystemExit(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")
    for name in scenarios:
        if name not in SCENARIOS:
            raise SystemExit(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    relay_env = dict(item.split("=", 1) for item in args.relay_env)
    if args.relay_workers < 1:
        raise SystemExit("--relay-workers must be at least 1")
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    print(f"bench: {'quick' if args.quick else 'full'} mode, targets {targets}, scenarios {scenarios}", flush=True)
    print(f"bench: sizes {dataclasses.asdict(sizes)}; {args.workers} load workers; "
          f"{args.relay_workers} Relay worker(s); logs in {workdir}", flush=True)

    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    if main_task is not None:
        loop.add_signal_handler(signal.SIGTERM, main_task.cancel)

    results: list[ScenarioResult] = []
    interrupted = False
    pool = Pool(args.workers)
    try:
        for scenario in scenarios:
            for name in targets:
                if name in NOT_APPLICABLE.get(scenario, ()):
                    results.append(not_applicable(scenario, TARGETS[name].name))
                    print(f"bench: {scenario} against {TARGETS[name].name}: n/a", flush=True)
                    continue
                target = make_target(name, workdir / f"{scenario}-{name}", nofile, relay_env, args.relay_workers)
                client: Client | None = None
                print(f"bench: {scenario} against {target.name} ...", flush=True)
                t0 = time.monotonic()
                # Fresh load workers per run: clean memory and loop-lag figures for each.
                pool = Pool(args.workers)
                try:
                    await pool.start()
                    await target.start()
                    client = Client(target.port, size=sizes.senders, timeout=30)
                    env = Env(target, pool, sizes, client)
                    result = await asyncio.wait_for(SCENARIOS[scenario](env), budget)
                except (Exception, TimeoutError) as exc:  # report and go on with the next run
                    traceback.print_exc()
                    result = ScenarioResult(scenario, target.name, failed=f"{type(exc).__name__}: {exc}"[:500])
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(pool.reset(), 60)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(pool.stop(), 30)
                    pool.kill_now()
                    if client is not None:
                        client.close()
                    await target.stop()
                results.append(result)
                print(summary_line(result) + f"  [{time.monotonic() - t0:.0f}s]", flush=True)
    except (asyncio.CancelledError, KeyboardInterrupt):
        interrupted = True
        print("bench: interrupted; stopping every server", file=sys.stderr, flush=True)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.stop(), 30)
        pool.kill_now()

    if not results:
        print(f"bench: no results; server logs kept in {workdir}", file=sys.stderr)
        return 130 if interrupted else 1
    order = list(TARGETS)  # the report's columns: Relay, peer, nchan, whatever the run order
    names = [TARGETS[t].name for t in sorted(targets, key=order.index)]
    plot_name = None
    levels = {r.target: r.levels for r in results if r.scenario == "idle" and r.levels}
    if levels:
        plot_path = companion(args.output, ".png")
        sweep_plot(plot_path, levels)
        plot_name = plot_path.name
    argv = " ".join(sys.argv[1:])
    info = RunInfo(
        mode=("quick" if args.quick else "full") + (" (interrupted)" if interrupted else ""),
        command=f".venv/bin/python -m bench {argv}",
        started=started_at,
        seconds=time.monotonic() - started,
        machine=procstats.machine(),
        versions=versions(),
        sizes={k: v for k, v in dataclasses.asdict(sizes).items() if k not in ("settle", "open_concurrency")},
        workers=args.workers,
        load_at_start=load_at_start,
        workdir=str(workdir) if args.keep or any(r.failed for r in results) else "(removed after the run)",
        relay_workers=args.relay_workers,
    )
    args.output.write_text(render(info, results, names, plot_name))
    json_path = companion(args.output, ".json")
    json_path.write_text(json.dumps(
        {"info": dataclasses.asdict(info), "results": [dataclasses.asdict(r) for r in results]},
        indent=1, default=str,
    ))
    print(f"bench: wrote {args.output}, {json_path.name}" + (f" and {plot_name}" if plot_name else ""), flush=True)
    if not args.keep and not any(r.failed for r in results):
        shutil.rmtree(workdir, ignore_errors=True)
    return 130 if interrupted else (1 if any(r.failed for r in results) else 0)


def main() -> int:
    args = build_parser().parse_args()
    if args.command == "selftest":
        from bench.selftest import run

        return run()
    try:
        return run_loop(run_all(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
