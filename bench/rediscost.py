"""CPU of Relay's Redis write path against redis-py's own, on a real Redis.

Two figures the code's comments quote (relay/backends/redis_clients.py,
relay/backends/redis_batch.py), so anyone can check them on their machine:

- packing one write script's call (EVALSHA with the arguments `RedisStore.replace` sends)
  in Python, as redis-py's asyncio client does, against hiredis, as Relay's client does;
- one batch of N such calls through redis-py's pipeline object against the script
  batcher's round trip on a pooled connection (`ScriptBatcher._round_trip`), with the
  same client and the same commands (a script that only returns 1, so Redis's own work is
  the least it can be and the client's is what is measured).

    .venv/bin/python -m bench.rediscost --redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from redis.asyncio.connection import Connection

from relay.backends.redis_batch import ScriptBatcher
from relay.backends.redis_clients import command_client, hiredis_packing

# The shape of a `replace` call: keys (task, open set, channels), then version, record,
# TTL, timestamp, id, terminal flag and the event.
RECORD = '{"task_id":"abc123","status":"processing","progress":0.5,' + '"x":"' + "y" * 400 + '"}'
COMMAND: tuple[Any, ...] = (
    "EVALSHA", "0" * 40, 4, "relay:task:abc123", "relay:open:{0}", "relay:events:abc123", "relay:events:owner",
    7, 8, RECORD, 86_400_000, 1_764_000_000_000, "abc123", 0, RECORD,
)


def per_call(fn: Callable[[], object], n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - started) / n * 1e6


async def per_call_async(fn: Callable[[], Awaitable[object]], n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        await fn()
    return (time.process_time() - started) / n * 1e6


def line(label: str, samples: list[float]) -> str:
    return f"{label}: median {statistics.median(samples):.1f} us ({', '.join(f'{s:.1f}' for s in samples)})"


async def run(args: argparse.Namespace) -> None:
    python, ours = Connection(), hiredis_packing(Connection)()
    assert b"".join(python.pack_command(*COMMAND)) == b"".join(ours.pack_command(*COMMAND))
    print(line("pack one write script, redis-py (Python)", [per_call(lambda: python.pack_command(*COMMAND), 20_000)
                                                             for _ in range(args.rounds)]))
    print(line("pack one write script, hiredis (Relay)", [per_call(lambda: ours.pack_command(*COMMAND), 20_000)
                                                           for _ in range(args.rounds)]))
    client = command_client(args.redis, max_connections=4)
    batcher = ScriptBatcher(client)
    try:
        sha = await client.script_load("return 1")
        for size in (1, 8):
            commands = [("EVALSHA", sha, *COMMAND[2:])] * size

            async def pipeline(commands: list[tuple[Any, ...]] = commands) -> list[Any]:
                pipe = client.pipeline(transaction=False)
                for command in commands:
                    pipe.execute_command(*command)
                return await pipe.execute(raise_on_error=False)

            async def direct(commands: list[tuple[Any, ...]] = commands) -> list[Any]:
                return await batcher._round_trip(commands)

            assert await pipeline() == await direct() == [1] * size
            for label, fn in ((f"batch of {size}, redis-py pipeline", pipeline), (f"batch of {size}, Relay's round trip", direct)):
                print(line(label, [await per_call_async(fn, args.calls) for _ in range(args.rounds)]))
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rediscost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", required=True, help="a Redis to send to (redis://127.0.0.1:PORT/DB)")
    parser.add_argument("--calls", type=int, default=3000, help="round trips per round")
    parser.add_argument("--rounds", type=int, default=7)
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
