"""The bench's launcher for the tutorial peer (not part of the tutorial app):

    python -m bench.peer.run --host 127.0.0.1 --port 8000

It times every garbage collection with a `gc.callbacks` hook (per generation, in the same
buckets as Relay's `relay_gc_pause_seconds`), answers `GET /_bench/gc` with the figures as
JSON in front of the app, and runs `bench.peer.app:app` with uvicorn, one worker, no access
log (as the bench runs Relay).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from typing import Any

import uvicorn

from bench.peer.app import app

# relay/metrics.py GC_PAUSES buckets, in seconds.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)
GC_PATH = "/_bench/gc"


class PauseRecorder:
    """Collections per generation: count, total seconds, longest, cumulative bucket counts."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        self.count = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self.buckets = [[0] * len(BUCKETS) for _ in range(3)]

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        generation = int(info.get("generation", 0))
        if phase == "start":
            self.started[generation] = time.perf_counter()
            return
        began = self.started.pop(generation, None)
        if began is None or not 0 <= generation <= 2:
            return
        pause = time.perf_counter() - began
        self.count[generation] += 1
        self.total[generation] += pause
        self.longest[generation] = max(self.longest[generation], pause)
        for i, bound in enumerate(BUCKETS):
            if pause <= bound:
                self.buckets[generation][i] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "generations": {
                str(g): {
                    "count": self.count[g],
                    "sum": self.total[g],
                    "max": self.longest[g],
                    "buckets": [
                        [bound, n] for bound, n in zip(BUCKETS, self.buckets[g], strict=True)
                    ],
                }
                for g in range(3)
            },
        }


def with_gc_route(inner: Any, recorder: PauseRecorder) -> Any:
    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == GC_PATH:
            body = json.dumps(recorder.snapshot()).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await inner(scope, receive, send)

    return asgi


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer.run")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    recorder = PauseRecorder()
    gc.callbacks.append(recorder)
    uvicorn.run(
        with_gc_route(app, recorder),
        host=args.host,
        port=args.port,
        workers=1,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
