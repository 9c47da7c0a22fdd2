"""`relay serve | demo | kie-sim`."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import httpx
import uvicorn

if TYPE_CHECKING:
    from relay.backends.factory import Backends
    from relay.settings import Settings

GRACEFUL_SHUTDOWN = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _uvicorn(app: object, host: str, port: int, **kwargs: object) -> None:
    # uvicorn re-raises the signal that stopped it once shutdown is done; with Python's
    # default handlers that kills the process (exit 143 / a KeyboardInterrupt trace)
    # after a clean shutdown. These no-op handlers are what it re-raises into.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.run(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        proxy_headers=True,
        server_header=False,  # no banner naming the server; one header less per response
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        access_log=False,  # our request log leaves query strings (tokens) out
        log_config=None,
        **kwargs,  # type: ignore[arg-type]
    )


def _settings() -> Settings | None:
    """The environment's settings, or None after printing every problem, one per line."""
    from relay.settings import Settings, SettingsError

    try:
        return Settings.from_env()
    except SettingsError as exc:
        _print_problems(exc.problems)
        return None


def _print_problems(problems: list[str]) -> None:
    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    print(f"relay: the configuration has {count}:", file=sys.stderr)
    for line in problems:
        print(f"  - {line}", file=sys.stderr)


def _port_free(host: str, port: int) -> bool:
    """Whether `port` can be listened on, checked before anything claims to be ready."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _busy(host: str, port: int) -> bool:
    if _port_free(host, port):
        return False
    print(
        f"relay: port {port} on {host} is already in use (another Relay or program?); "
        f"choose another with --port, e.g. --port {port + 1}",
        file=sys.stderr,
    )
    return True


def cmd_serve(args: argparse.Namespace) -> int:
    from relay.app import create_app

    if (settings := _settings()) is None:
        return 2
    if _busy(args.host, args.port):
        return 2
    forwarded = ",".join(settings.trusted_proxies)
    if args.workers > 1:
        if settings.redis_url.startswith("memory"):
            print(
                "relay: --workers needs a shared store: set RELAY_REDIS_URL=redis://... (with memory:// each "
                "worker would hold its own tasks and streams)",
                file=sys.stderr,
            )
            return 2
        # uvicorn's worker processes share the listening socket; each builds its own app
        # (and its own clients) from the environment through the factory.
        _uvicorn("relay.app:create_app", args.host, args.port, factory=True, workers=args.workers,
                 forwarded_allow_ips=forwarded)
        return 0
    _uvicorn(create_app(settings), args.host, args.port, forwarded_allow_ips=forwarded)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import asyncio

    from relay.check import run_checks
    from relay.settings import Settings

    # Every link that can still be tested is, whatever else is wrong.
    settings, problems = Settings.read()
    # The report is the output; background retries of a broken link would only add noise.
    logging.basicConfig(level=logging.CRITICAL)
    ok = asyncio.run(run_checks(settings, sys.stdout, problems))
    return 2 if problems else (0 if ok else 1)


def _on_shared_store(act: Callable[[Backends, argparse.Namespace], Awaitable[int]], args: argparse.Namespace) -> int:
    """Run an operator command against the store the instances share. Settings are read
    strictly: a mistyped RELAY_REDIS_URL must not quietly become an in-process store that
    takes the change and forgets it when the command exits."""
    import asyncio

    from relay.backends import open_backends

    if (settings := _settings()) is None:
        return 2
    if settings.redis_url.startswith("memory"):
        print(f"relay {args.command}: set RELAY_REDIS_URL to the instances' Redis (memory:// is this process only)",
              file=sys.stderr)
        return 2

    async def run() -> int:
        backends = open_backends(settings)
        try:
            return await act(backends, args)
        finally:
            await backends.store.aclose()

    return asyncio.run(run())


async def _webhooks(backends: Backends, args: argparse.Namespace) -> int:
    """List disabled webhook endpoints, or enable one again (it answered 410 Gone)."""
    if args.action == "enable":
        if not args.url:
            print("relay webhooks enable: give the endpoint URL", file=sys.stderr)
            return 2
        found = await backends.outbox.enable(args.url)
        print(f"{args.url}: {'enabled again' if found else 'was not disabled'}")
        return 0
    disabled = await backends.outbox.disabled()
    for url, why in disabled.items():
        print(f"{url}\t{why}")
    if not disabled:
        print("no endpoint is disabled")
    return 0


async def _credits(backends: Backends, args: argparse.Namespace) -> int:
    """`relay credits grant USER N` / `relay credits show USER`: balances by hand."""
    if args.action == "grant":
        if args.amount is None:
            print("relay credits grant: give the amount, e.g. relay credits grant alice 100", file=sys.stderr)
            return 2
        balance = await backends.ledger.grant(args.user, args.amount, args.reason)
        print(f"{args.user}: {args.amount:+d}, balance {balance}")
        return 0
    print(f"{args.user}: balance {await backends.ledger.balance(args.user)}")
    for entry in await backends.ledger.entries(args.user, 20):
        task = f" task {entry.task}" if entry.task else ""
        print(f"  {entry.delta:+6d} -> {entry.balance:6d}  {entry.reason}{task}")
    return 0


def cmd_webhooks(args: argparse.Namespace) -> int:
    return _on_shared_store(_webhooks, args)


def cmd_credits(args: argparse.Namespace) -> int:
    return _on_shared_store(_credits, args)


def cmd_kie_sim(args: argparse.Namespace) -> int:
    from relay.sim import SimConfig, create_sim_app

    _uvicorn(create_sim_app(SimConfig.from_namespace(args)), args.host, args.port)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Relay on embedded backends plus the KIE simulator: nothing to install or configure."""
    from relay.app import create_app
    from relay.settings import Settings, SettingsError

    if _busy(args.host, args.port):
        return 2
    sim_port = free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "kie-sim", "--port", str(sim_port),
         "--callback-delay", str(args.generation_seconds)],
    )
    try:
        _wait_ready(f"http://127.0.0.1:{sim_port}/sim/tasks", sim)
        demo_env = {
            "RELAY_PROVIDER": "sim",
            "KIE_BASE_URL": f"http://127.0.0.1:{sim_port}",
            "KIE_API_KEY": "sim-key",
            "RELAY_PUBLIC_URL": f"http://127.0.0.1:{args.port}",
            # The simulator serves its images over plain http on loopback: allow exactly it.
            "RELAY_RESULT_HOSTS": f"http://127.0.0.1:{sim_port}",
            "RELAY_STORAGE_URL": "file://./data/files",
            # Ask the simulator how each task is doing every half second, so the page shows
            # queued -> generating -> done (KIE's jobs API calls back only at the end).
            "RELAY_RECONCILE_AFTER": "1",
            "RELAY_RECONCILE_INTERVAL": "0.5",
        }
        try:
            settings = Settings.from_env(demo=True, overrides=demo_env).with_demo_secret()
        except SettingsError as exc:
            _print_problems(exc.problems)
            return 2
        print(
            f"\n  Relay demo: open http://127.0.0.1:{args.port} in a browser"
            f"\n  (KIE simulator on 127.0.0.1:{sim_port}; Ctrl-C stops both)\n",
            flush=True,
        )
        _uvicorn(create_app(settings), args.host, args.port)
    finally:
        sim.terminate()
        try:
            sim.wait(timeout=5)
        except subprocess.TimeoutExpired:
            sim.kill()
    return 0


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"relay: the KIE simulator exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"relay: the KIE simulator did not start within {timeout:.0f}s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run Relay with the environment's configuration")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="worker processes (all cores of one host; needs Redis)")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check", help="print the configuration and test every link (store, hub, storage, KIE, public URL)")
    check.set_defaults(func=cmd_check)

    hooks = sub.add_parser("webhooks", help="list disabled webhook endpoints, or enable one again")
    hooks.add_argument("action", choices=("disabled", "enable"))
    hooks.add_argument("url", nargs="?")
    hooks.set_defaults(func=cmd_webhooks)

    credit = sub.add_parser("credits", help="grant credits to a user, or show a balance and its ledger")
    credit.add_argument("action", choices=("grant", "show"))
    credit.add_argument("user")
    credit.add_argument("amount", nargs="?", type=int)
    credit.add_argument("--reason", default="granted by an operator")
    credit.set_defaults(func=cmd_credits)

    demo = sub.add_parser("demo", help="run Relay and the KIE simulator on embedded defaults")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--generation-seconds", type=float, default=4.0, help="simulated generation time")
    demo.set_defaults(func=cmd_demo)

    from relay.sim import SimConfig

    sim = sub.add_parser("kie-sim", help="run the KIE simulator (KIE's API, callbacks and quirks)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8001)
    SimConfig.add_arguments(sim)
    sim.set_defaults(func=cmd_kie_sim)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
