"""A load-generator process: holds thousands of SSE streams (or runs callback senders) and
answers the orchestrator's commands, one JSON object per line on stdin/stdout.

Each stream is one `asyncio.Protocol` (no coroutine, no StreamReader): bytes go from the
socket through the HTTP framing and the SSE parser straight into a list of
(version, arrival time). An idle stream costs a socket and a few small objects. Arrival times
are `time.monotonic()`, which is CLOCK_MONOTONIC, shared by every process on the machine, so
the orchestrator can subtract the trigger times it took.

Commands (`{"cmd": ..., ...}` -> a JSON reply):
  open     streams [[sid, key, path, last_event_id|null], ...], ready "event"|"head",
           concurrency, timeout -> opened/failed counts
  await    version v (all streams) or targets [[sid, v], ...], timeout -> reached/missing
  collect  sids|null, forget -> per stream: events, status, ids, timings
  close    sids|null -> closes client-side
  stats    reset -> own CPU seconds, event-loop lag, open streams
  ingest   kind, items [[key, path]], senders, duration, timeout -> acks and latencies
  churn    port, paths, clients, duration, max_opens, timeout -> each client opens a stream,
           waits for its first `task` event (the snapshot), closes it, again: opens and latencies
  quit
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import resource
import sys
import time
from collections import Counter, deque
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

import orjson

from bench.httpclient import HOST, Client
from bench.payloads import update_body, update_headers
from bench.sse import SSEError, SSEParser
from bench.wire import BodyReader, Head, HeadReader, WireError

LAG_INTERVAL = 0.05
T = TypeVar("T")


class Stream(asyncio.Protocol):
    """One SSE subscription."""

    __slots__ = (
        "bad_events",
        "body",
        "bytes",
        "closed",
        "ended",
        "error",
        "events",
        "head",
        "head_reader",
        "key",
        "last_id",
        "max_version",
        "other_events",
        "owner",
        "parser",
        "ready",
        "ready_on_event",
        "request",
        "server_closed",
        "sid",
        "status",
        "t_first",
        "t_head",
        "t_open",
        "transport",
    )

    def __init__(self, owner: Worker, sid: int, key: str, request: bytes, ready_on_event: bool):
        self.owner = owner
        self.sid = sid
        self.key = key
        self.request = request
        self.ready_on_event = ready_on_event
        self.ready: asyncio.Future[None] | None = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.head_reader: HeadReader | None = HeadReader()
        self.head: Head | None = None
        self.body: BodyReader | None = None
        self.parser = SSEParser()
        self.events: list[tuple[int, float]] = []
        self.max_version = 0
        self.status = 0
        self.bytes = 0
        self.bad_events = 0
        self.other_events = 0
        self.closed = False
        self.ended = False  # the server finished the response (Relay, after the final event)
        self.server_closed = False
        self.error: str | None = None
        self.last_id: str | None = None
        self.t_open = time.monotonic()
        self.t_head = 0.0
        self.t_first = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def _set_ready(self) -> None:
        if self.ready is not None:
            if not self.ready.done():
                self.ready.set_result(None)
            self.ready = None

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.bytes += len(data)
        try:
            if self.head is None:
                assert self.head_reader is not None
                got = self.head_reader.feed(data)
                if got is None:
                    return
                self.head, data = got
                self.head_reader = None
                self.status = self.head.status
                self.t_head = now
                self.body = BodyReader(self.head)
                if self.status != 200 or not self.ready_on_event:
                    self._set_ready()
                if self.status != 200:
                    return
            assert self.body is not None
            text = self.body.feed(data)
            for event in self.parser.feed(text) if text else ():
                if event.event != "task":
                    self.other_events += 1
                    continue
                try:
                    version = orjson.loads(event.data)["version"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    self.bad_events += 1
                    continue
                self.events.append((version, now))
                if not self.t_first:
                    self.t_first = now
                self.last_id = event.id
                if version > self.max_version:
                    old, self.max_version = self.max_version, version
                    self.owner.on_version(self, old, version)
                self._set_ready()
            if self.body.done:  # the server ended the response (Relay, after the final event)
                self.ended = True
                if self.transport is not None:
                    self.transport.close()
        except (WireError, SSEError) as exc:
            self.error = str(exc)
            if self.transport is not None:
                self.transport.close()

    def eof_received(self) -> bool | None:
        self.server_closed = True
        if self.body is not None and self.body.until_close:
            self.ended = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None and self.error is None:
            self.error = type(exc).__name__
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(ConnectionResetError(self.error or "closed before ready"))
            self.ready.exception()  # mark retrieved: the opener may have given up already
        self.ready = None
        self.owner.on_closed(self)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def report(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "events": self.events,
            "status": self.status,
            "closed": self.closed,
            "server_closed": self.server_closed,
            "ended": self.ended,
            "error": self.error,
            "last_id": self.last_id,
            "retry": self.parser.retry,
            "comments": self.parser.comments,
            "bytes": self.bytes,
            "bad_events": self.bad_events,
            "other_events": self.other_events,
            "t_open": self.t_open,
            "t_head": self.t_head,
            "t_first": self.t_first,
        }


class Worker:
    def __init__(self) -> None:
        self.streams: dict[int, Stream] = {}
        self.lags: deque[float] = deque(maxlen=20000)
        # await state: sid -> version still awaited
        self._targets: dict[int, int] = {}
        self._missing = 0
        self._waiter: asyncio.Future[None] | None = None

    # --- stream callbacks -------------------------------------------------------------

    def on_version(self, stream: Stream, old: int, new: int) -> None:
        target = self._targets.get(stream.sid)
        if target is not None and new >= target:
            del self._targets[stream.sid]
            self._check_waiter()

    def on_closed(self, stream: Stream) -> None:
        if self._targets.pop(stream.sid, None) is not None:
            self._missing += 1
            self._check_waiter()

    def _check_waiter(self) -> None:
        if not self._targets and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # --- commands ---------------------------------------------------------------------

    async def cmd_open(self, msg: dict[str, Any]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        ready_on_event = msg.get("ready", "event") == "event"
        timeout = float(msg.get("timeout", 30))
        sem = asyncio.Semaphore(int(msg.get("concurrency", 200)))
        port = int(msg["port"])
        host_header = f"{HOST}:{port}"
        errors: Counter[str] = Counter()
        statuses: Counter[int] = Counter()
        started = time.monotonic()

        async def open_one(sid: int, key: str, path: str, last_id: str | None) -> None:
            request = stream_request(host_header, path, last_id)
            async with sem:
                stream = Stream(self, sid, key, request, ready_on_event)
                self.streams[sid] = stream
                try:
                    await asyncio.wait_for(
                        loop.create_connection(lambda: stream, HOST, port), timeout
                    )
                    if stream.ready is not None:
                        await asyncio.wait_for(asyncio.shield(stream.ready), timeout)
                    statuses[stream.status] += 1
                    if ready_on_event and stream.status != 200:
                        # Refused (e.g. 503): an open failure, not a stream that later "lost" updates.
                        raise ConnectionRefusedError(f"HTTP {stream.status}")
                except (OSError, TimeoutError, ConnectionError) as exc:
                    errors[type(exc).__name__ + (f": {exc}" if str(exc) else "")] += 1
                    stream.ready = None
                    stream.close()

        await asyncio.gather(*(open_one(*spec) for spec in msg["streams"]))
        failed = sum(errors.values())
        return {
            "opened": len(msg["streams"]) - failed,
            "failed": failed,
            "errors": dict(errors.most_common(5)),
            "statuses": {str(k): v for k, v in statuses.items()},
            "seconds": time.monotonic() - started,
        }

    async def cmd_await(self, msg: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        if msg.get("targets") is not None:
            wanted = {int(sid): int(v) for sid, v in msg["targets"] if int(sid) in self.streams}
        else:
            version = int(msg["version"])
            wanted = {sid: version for sid in self.streams}
        self._missing = 0
        self._targets = {}
        for sid, version in wanted.items():
            stream = self.streams[sid]
            if stream.max_version >= version:
                continue
            if stream.closed:
                self._missing += 1
            else:
                self._targets[sid] = version
        if self._targets:
            self._waiter = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._waiter, float(msg.get("timeout", 30)))
            self._waiter = None
        pending = len(self._targets)
        self._targets = {}
        missing = self._missing + pending
        return {
            "reached": len(wanted) - missing,
            "missing": missing,
            "timed_out": pending,
            "seconds": time.monotonic() - started,
        }

    def _select(self, sids: list[int] | None) -> list[Stream]:
        if sids is None:
            return list(self.streams.values())
        return [self.streams[sid] for sid in sids if sid in self.streams]

    async def cmd_collect(self, msg: dict[str, Any]) -> dict[str, Any]:
        chosen = self._select(msg.get("sids"))
        out = {str(s.sid): s.report() for s in chosen}
        if msg.get("forget"):
            for stream in chosen:
                stream.close()
                self.streams.pop(stream.sid, None)
        return {"streams": out}

    async def cmd_close(self, msg: dict[str, Any]) -> dict[str, Any]:
        chosen = [s for s in self._select(msg.get("sids")) if not s.closed]
        for stream in chosen:
            stream.close()
        # Let the transports finish closing (bounded).
        for _ in range(int(float(msg.get("timeout", 10)) / 0.02)):
            if all(s.closed for s in chosen):
                break
            await asyncio.sleep(0.02)
        return {"closed": len(chosen)}

    async def cmd_stats(self, msg: dict[str, Any]) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        lags = sorted(self.lags)
        out = {
            "cpu": usage.ru_utime + usage.ru_stime,
            "lag_max_ms": (lags[-1] * 1000) if lags else 0.0,
            "lag_p99_ms": (lags[int(0.99 * (len(lags) - 1))] * 1000) if lags else 0.0,
            "open": sum(1 for s in self.streams.values() if not s.closed),
            "maxrss_kib": usage.ru_maxrss,
        }
        if msg.get("reset"):
            self.lags.clear()
        return out

    async def cmd_ingest(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Senders post updates back to back for `duration` seconds; sender i owns items
        i, i+K, ... so no two senders race on one task."""
        kind = msg["kind"]
        items: list[list[Any]] = msg["items"]
        senders = max(1, int(msg["senders"]))
        duration = float(msg["duration"])
        client = Client(int(msg["port"]), size=senders, timeout=float(msg.get("timeout", 10)))
        headers = update_headers(kind)
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        errors: Counter[str] = Counter()
        started = time.monotonic()
        stop_at = started + duration

        async def sender(index: int) -> None:
            mine = items[index::senders]
            if not mine:
                return
            versions = {key: int(version) for key, _, version in mine}
            turn = 0
            while time.monotonic() < stop_at:
                key, path, _ = mine[turn % len(mine)]
                turn += 1
                versions[key] += 1
                raw = client.build("POST", path, update_body(kind, key, versions[key], final=False), headers)
                try:
                    response = await client.send(raw)
                except (OSError, TimeoutError, WireError) as exc:
                    errors[type(exc).__name__] += 1
                    await asyncio.sleep(0.01)
                    continue
                statuses[response.status] += 1
                if 200 <= response.status < 300:
                    latencies.append(response.seconds)

        try:
            await asyncio.wait_for(
                asyncio.gather(*(sender(i) for i in range(senders))), duration + 30
            )
        finally:
            client.close()
        return {
            "latencies": latencies,
            "statuses": {str(k): v for k, v in statuses.items()},
            "errors": dict(errors),
            "seconds": time.monotonic() - started,
        }

    async def cmd_churn(self, msg: dict[str, Any]) -> dict[str, Any]:
        """`clients` loops, each over its share of `paths` (client i: paths i, i+K, ...):
        open a stream (the `open` command's Stream), wait for its first `task` event (the
        snapshot, so the server's subscription was confirmed), close the connection, next.
        For `duration` seconds and at most `max_opens` opens in all; every open bounded by
        `timeout`. These streams are not kept (collect/close/await do not see them)."""
        loop = asyncio.get_running_loop()
        port = int(msg["port"])
        paths: list[str] = msg["paths"]
        clients = max(1, int(msg["clients"]))
        duration = float(msg["duration"])
        timeout = float(msg.get("timeout", 10))
        budget = max(0, int(msg["max_opens"]))
        host_header = f"{HOST}:{port}"
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        errors: Counter[str] = Counter()
        sids = itertools.count(-1, -1)  # never an `open` stream's id
        started = time.monotonic()
        stop_at = started + duration

        async def once(path: str) -> None:
            stream = Stream(self, next(sids), path, stream_request(host_header, path, None), True)
            t0 = time.monotonic()
            try:
                await asyncio.wait_for(loop.create_connection(lambda: stream, HOST, port), timeout)
                if stream.ready is not None:
                    await asyncio.wait_for(asyncio.shield(stream.ready), timeout)
                statuses[stream.status] += 1
                if stream.status != 200 or not stream.events:
                    raise ConnectionRefusedError(f"HTTP {stream.status}")
                latencies.append(time.monotonic() - t0)
            except (OSError, TimeoutError, ConnectionError) as exc:
                errors[type(exc).__name__ + (f": {exc}" if str(exc) else "")] += 1
                await asyncio.sleep(0.01)  # no hot loop against a refusing server
            finally:
                stream.ready = None
                stream.close()

        async def client(index: int) -> None:
            nonlocal budget
            mine = paths[index::clients]
            turn = 0
            while mine and budget > 0 and time.monotonic() < stop_at:
                budget -= 1
                await once(mine[turn % len(mine)])
                turn += 1

        await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(clients))), duration + 2 * timeout + 10)
        seconds = time.monotonic() - started
        await asyncio.sleep(0.1)  # let the last closes reach the sockets
        return {
            "opens": len(latencies),
            "latencies": latencies,
            "statuses": {str(k): v for k, v in statuses.items()},
            "errors": dict(errors.most_common(5)),
            "failed": sum(errors.values()),
            "seconds": seconds,
        }

    async def lag_monitor(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_INTERVAL)
            self.lags.append(max(0.0, time.monotonic() - before - LAG_INTERVAL))

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 30)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        out = sys.stdout.buffer
        monitor = asyncio.create_task(self.lag_monitor())
        handlers = {
            "open": self.cmd_open, "await": self.cmd_await, "collect": self.cmd_collect,
            "close": self.cmd_close, "stats": self.cmd_stats, "ingest": self.cmd_ingest,
            "churn": self.cmd_churn,
        }
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break  # the orchestrator is gone
                msg = orjson.loads(line)
                if msg["cmd"] == "quit":
                    break
                try:
                    reply = await handlers[msg["cmd"]](msg)
                except Exception as exc:
                    reply = {"error": f"{type(exc).__name__}: {exc}"}
                out.write(orjson.dumps(reply) + b"\n")
                out.flush()
        finally:
            monitor.cancel()
            for stream in self.streams.values():
                stream.close()


def stream_request(host_header: str, path: str, last_id: str | None) -> bytes:
    """The GET that opens an SSE stream on `path`."""
    lines = [
        f"GET {path} HTTP/1.1", f"Host: {host_header}", "Accept: text/event-stream",
        "Cache-Control: no-cache",
    ]
    if last_id is not None:
        lines.append(f"Last-Event-ID: {last_id}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        run_loop(Worker().serve())
    os._exit(0)


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """uvloop when available (it ships with uvicorn[standard]): cheaper per socket."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main)
    return uvloop.run(main)


if __name__ == "__main__":
    main()
