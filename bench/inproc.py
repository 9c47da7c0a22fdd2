"""CPU per provider callback inside Relay's ASGI app, without sockets or a server.

`python -m bench all` measures whole processes on a shared machine: its "server CPU per
callback" moves with the rate reached (a busier loop handles more requests per wake-up)
and with the neighbours, by +-7% or more between runs of one build. This drives the app
itself, as uvicorn would call it, one callback at a time on one event loop: what is left
is Relay's own Python (middleware, fast lane, the callback route, the status machine, the
store and hub). One build's medians spread by about +-3% between runs here (118-124 us),
so a change worth a few percent shows.

    .venv/bin/python -m bench.inproc                      # memory store and hub
    .venv/bin/python -m bench.inproc --redis redis://127.0.0.1:6379/0   # a real Redis
    .venv/bin/python -m bench.inproc --profile 30         # where it goes (cProfile)
    .venv/bin/python -m bench.inproc --concurrency 32     # 32 callbacks in flight, as `bench all`'s senders

One at a time, every store write is its own Redis round trip; with `--concurrency N` the
writes of one event-loop turn share a pipeline (relay/backends/redis_batch.py) as they do
under `bench all`'s 32 senders, so the Redis client's per-command cost shows apart from
its per-round-trip cost.

Every callback is a real change (progress rises), taken through the KIE jobs shape that
`bench all` sends. With `--streams`, every task also has its event stream open through the
app (`GET /api/tasks/{id}/events`), so each change is delivered and framed for it as well;
`--streams K` opens K per task, and `--tasks 1 --streams 1000` is the fanout scenario's shape.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import uvloop

from bench.payloads import MODEL, relay_update
from relay import auth
from relay.app import create_app
from relay.models import Mode, Status, Task, utcnow
from relay.settings import Settings

SECRET = "inproc-bench-secret-0123456789abcdef"
Message = dict[str, Any]


def settings_for(redis_url: str) -> Settings:
    return Settings.from_env({
        "RELAY_REDIS_URL": redis_url,
        "RELAY_PROVIDER": "sim",
        # Never contacted: tasks are stored directly, and the reconciler waits an hour.
        "KIE_BASE_URL": "http://127.0.0.1:9",
        "KIE_API_KEY": "inproc",
        "RELAY_PUBLIC_URL": "http://127.0.0.1:8000",
        "RELAY_SECRET": SECRET,
        "RELAY_AUTH": "none",
        "RELAY_MIRROR": "off",
        "RELAY_RECONCILE_AFTER": "3600",
        "RELAY_LOG_LEVEL": "WARNING",
        "RELAY_RATE_CALLBACK": "100000000",
        "RELAY_MAX_STREAMS_PER_CLIENT": "1000000",
    })


class Driver:
    """Calls the app as uvicorn does: one scope, a receive that hands over the body, a
    send that keeps the status."""

    def __init__(self, app: Callable[..., Awaitable[None]]):
        self.app = app

    @staticmethod
    def scope(method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> Message:
        return {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": query, "root_path": "", "headers": [(b"host", b"127.0.0.1:8000"), *headers],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {},
        }

    async def post(self, path: str, query: bytes, body: bytes) -> int:
        scope = self.scope("POST", path, query, [(b"content-type", b"application/json"),
                                                 (b"content-length", str(len(body)).encode())])
        sent = False
        status = 0

        async def receive() -> Message:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # a disconnect never comes
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await self.app(scope, receive, send)
        return status

    async def stream(self, path: str, seen: list[int]) -> None:
        """Hold a task's event stream open as a browser would; count the bytes it gets."""

        async def receive() -> Message:
            await asyncio.Event().wait()  # the browser never leaves; the task is cancelled
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            seen[0] += len(message.get("body", b""))

        await self.app(self.scope("GET", path, b"", [(b"accept", b"text/event-stream")]), receive, send)


async def run(args: argparse.Namespace) -> None:
    app = create_app(settings_for(args.redis))
    async with app.router.lifespan_context(app):
        svc = app.state.services
        driver = Driver(app)
        targets: list[tuple[str, str, bytes]] = []
        now = utcnow()
        for i in range(args.tasks):
            token = auth.callback_token(SECRET)
            task_id = f"inproc{os.getpid()}x{i:06d}"
            task = Task(task_id=task_id, provider="kie", model=MODEL, mode=Mode.TEXT_TO_IMAGE,
                        status=Status.PENDING, prompt="bench", image_urls=(), created_at=now,
                        updated_at=now, callback_hash=auth.token_hash(token))
            await svc.ingestor.create(task)
            url = urlsplit(svc.provider.for_path("/api/callbacks/kie").callback_url("http://x", token))
            targets.append((task_id, url.path, url.query.encode()))
        streams: list[asyncio.Task[None]] = []
        seen = [0]
        if args.streams:
            for task_id, _, _ in targets:
                for _ in range(args.streams):
                    streams.append(asyncio.create_task(driver.stream(f"/api/tasks/{task_id}/events", seen)))
            deadline = time.monotonic() + 30
            while svc.streams.total < len(streams):  # every stream open
                if time.monotonic() > deadline or any(s.done() for s in streams):
                    raise SystemExit(f"only {svc.streams.total} of {len(streams)} streams opened")
                await asyncio.sleep(0.01)
        version = 1
        rounds: list[float] = []
        user: list[float] = []  # the same without the kernel's share (the syscalls)
        profiler = cProfile.Profile() if args.profile else None
        for _ in range(args.rounds):
            sweeps = []  # the bodies are made before the clock starts
            for _ in range(args.per_task):
                version += 1
                sweeps.append([(path, query, relay_update(task_id, version, final=False))
                               for task_id, path, query in targets])
            started, started_user = time.process_time(), os.times().user
            if profiler:
                profiler.enable()
            for sweep in sweeps:
                for start in range(0, len(sweep), args.concurrency):
                    statuses = await asyncio.gather(*(driver.post(path, query, body)
                                                      for path, query, body in sweep[start:start + args.concurrency]))
                    if any(status != 200 for status in statuses):
                        raise SystemExit(f"a callback answered {sorted(set(statuses) - {200})}")
                await asyncio.sleep(0)  # the streams send what they were woken for
            if profiler:
                profiler.disable()
            rounds.append((time.process_time() - started) / (args.per_task * args.tasks))
            user.append((os.times().user - started_user) / (args.per_task * args.tasks))
        for stream in streams:
            stream.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    per = [r * 1e6 for r in rounds]
    print(f"bench.inproc: {args.tasks} tasks x {args.per_task} callbacks x {args.rounds} rounds, "
          f"{args.concurrency} at once, store {args.redis}, {args.streams} stream(s) per task")
    if args.streams:
        print(f"streams received {seen[0] / (args.rounds * args.per_task * args.tasks):.0f} bytes per callback")
        print(f"CPU per delivery (per callback / streams per task): median {statistics.median(per) / args.streams:.2f} us")
    print(f"CPU per callback: median {statistics.median(per):.1f} us "
          f"(rounds: {', '.join(f'{p:.1f}' for p in per)})")
    in_user = [u * 1e6 for u in user]
    print(f"of which user space: median {statistics.median(in_user):.1f} us "
          f"(rounds: {', '.join(f'{u:.1f}' for u in in_user)})")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inproc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="memory://", help="RELAY_REDIS_URL (default memory://)")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--per-task", type=int, default=20, help="callbacks per task per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=1, metavar="N",
                        help="callbacks in flight at once (N tasks' callbacks together, as concurrent senders would)")
    parser.add_argument("--streams", type=int, nargs="?", const=1, default=0, metavar="K",
                        help="K event streams open per task (1 if K is left out); --tasks 1 --streams 1000 is bench all's fanout")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="profile the rounds with cProfile and print the N costliest functions")
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
