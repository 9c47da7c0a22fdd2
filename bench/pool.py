"""The orchestrator's side of the load-generator processes (`bench.worker`).

Streams are spread round-robin over the workers; each stream has a bench-wide id (`sid`)
and a key (the task or channel it watches). Every call is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.servers import _child_setup

ROOT = Path(__file__).resolve().parent.parent


class WorkerError(RuntimeError):
    pass


class WorkerProc:
    def __init__(self, index: int, proc: asyncio.subprocess.Process):
        self.index = index
        self.proc = proc
        self.lock = asyncio.Lock()

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def call(self, msg: dict[str, Any], within: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        async with self.lock:
            self.proc.stdin.write(orjson.dumps(msg) + b"\n")
            await self.proc.stdin.drain()
            line = await asyncio.wait_for(self.proc.stdout.readline(), within)
        if not line:
            raise WorkerError(f"load worker {self.index} exited (code {self.proc.returncode})")
        reply: dict[str, Any] = orjson.loads(line)
        if "error" in reply:
            raise WorkerError(f"load worker {self.index}: {reply['error']}")
        return reply


@dataclass
class OpenResult:
    sids: list[int]
    opened: int
    failed: int
    seconds: float
    errors: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)


class Pool:
    def __init__(self, size: int):
        self.size = size
        self.workers: list[WorkerProc] = []
        self.where: dict[int, int] = {}  # sid -> worker index
        self.keys: dict[int, str] = {}  # sid -> key
        self._next_sid = 0
        self._rr = 0

    async def start(self) -> None:
        for index in range(self.size):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.worker",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None,
                cwd=ROOT, limit=1 << 30, preexec_fn=_child_setup, start_new_session=True,
            )
            self.workers.append(WorkerProc(index, proc))

    async def stop(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker.call({"cmd": "quit"}, 5), 5)
        for worker in self.workers:
            if worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.terminate()
                try:
                    await asyncio.wait_for(worker.proc.wait(), 10)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        worker.proc.kill()
        self.workers = []

    def kill_now(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.kill()

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    async def each(self, messages: list[dict[str, Any] | None], within: float) -> list[dict[str, Any]]:
        """Send messages[i] to worker i (None: skip); return the replies in worker order."""
        calls = [
            self.workers[i].call(msg, within) for i, msg in enumerate(messages) if msg is not None
        ]
        return list(await asyncio.gather(*calls))

    async def all(self, msg: dict[str, Any], within: float) -> list[dict[str, Any]]:
        return await self.each([msg] * len(self.workers), within)

    # --- streams ------------------------------------------------------------------------

    async def open(
        self, port: int, specs: list[tuple[str, str, str | None]], *, ready: str = "event",
        within: float = 30.0, concurrency: int = 256,
    ) -> OpenResult:
        """Open one stream per (key, path, last_event_id)."""
        per: list[list[list[Any]]] = [[] for _ in self.workers]
        sids = []
        for key, path, last_id in specs:
            sid = self._next_sid
            self._next_sid += 1
            index = self._rr % len(self.workers)
            self._rr += 1
            self.where[sid] = index
            self.keys[sid] = key
            per[index].append([sid, key, path, last_id])
            sids.append(sid)
        per_worker_concurrency = max(1, concurrency // len(self.workers))
        overall = within + 10 + len(specs) / 20  # even a server opening 20 streams/s finishes
        replies = await self.each(
            [
                {"cmd": "open", "port": port, "streams": streams, "ready": ready, "timeout": within,
                 "concurrency": per_worker_concurrency} if streams else None
                for streams in per
            ],
            overall,
        )
        errors: Counter[str] = Counter()
        statuses: Counter[str] = Counter()
        for reply in replies:
            errors.update(reply["errors"])
            statuses.update(reply["statuses"])
        return OpenResult(
            sids,
            sum(r["opened"] for r in replies),
            sum(r["failed"] for r in replies),
            max((r["seconds"] for r in replies), default=0.0),
            dict(errors),
            dict(statuses),
        )

    async def await_versions(self, targets: dict[int, int] | None = None, *, version: int = 0,
                             within: float = 30.0) -> dict[str, float]:
        """Wait until every stream in `targets` (sid -> version), or every stream when None,
        has seen at least that version. Returns reached/missing counts and the seconds taken."""
        if targets is None:
            msgs: list[dict[str, Any] | None] = [
                {"cmd": "await", "version": version, "timeout": within} for _ in self.workers
            ]
        else:
            per: list[list[list[int]]] = [[] for _ in self.workers]
            for sid, v in targets.items():
                per[self.where[sid]].append([sid, v])
            msgs = [{"cmd": "await", "targets": t, "timeout": within} if t else None for t in per]
        replies = await self.each(msgs, within + 30)
        return {
            "reached": sum(r["reached"] for r in replies),
            "missing": sum(r["missing"] for r in replies),
            "timed_out": sum(r["timed_out"] for r in replies),
            "seconds": max((r["seconds"] for r in replies), default=0.0),
        }

    def _split(self, sids: list[int] | None) -> list[dict[str, Any] | None]:
        if sids is None:
            return [{} for _ in self.workers]
        per: list[list[int]] = [[] for _ in self.workers]
        for sid in sids:
            per[self.where[sid]].append(sid)
        return [{"sids": s} if s else None for s in per]

    async def collect(self, sids: list[int] | None = None, *, forget: bool = False,
                      within: float = 120.0) -> dict[int, dict[str, Any]]:
        msgs = [None if m is None else {"cmd": "collect", "forget": forget, **m} for m in self._split(sids)]
        out: dict[int, dict[str, Any]] = {}
        for reply in await self.each(msgs, within):
            for sid, report in reply["streams"].items():
                out[int(sid)] = report
        if forget:
            for sid in out:
                self.where.pop(sid, None)
                self.keys.pop(sid, None)
        return out

    async def close(self, sids: list[int] | None = None, within: float = 30.0) -> None:
        msgs = [None if m is None else {"cmd": "close", "timeout": within, **m} for m in self._split(sids)]
        await self.each(msgs, within + 10)

    async def reset(self) -> None:
        """Close and forget every stream."""
        await self.close()
        await self.collect(forget=True)

    async def stats(self, *, reset: bool = False) -> list[dict[str, Any]]:
        return await self.all({"cmd": "stats", "reset": reset}, 30)
