"""Script calls made in the same turn of the event loop share one round trip.

A provider's burst of callbacks means dozens of write scripts in flight at once, and
redis-py pays a connection checkout, a retry wrapper and a socket write per command. Here
the first caller in a turn leads: it lets the loop go round once so the others can join,
then sends them all as one pipeline (not a transaction: each script is its own atomic
compare-and-set) and hands each caller its own reply or error.

On one server (or Sentinel's master) the batch goes straight onto a pooled connection:
packed, written, its replies read in order. redis-py's pipeline object adds a retry
wrapper, observability hooks and response callbacks around the same round trip: 104-117
us of CPU for a batch of one against 77-90 us this way, 145-164 against 104-127 us for
eight (`python -m bench.rediscost`, two runs on a noisy machine). A cluster keeps
redis-py's pipeline, which sends each script to the node of its keys' slot.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import ConnectionPool
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay.backends.redis_clients import COMMAND_TIMEOUT
from relay.deadline import within

Call = tuple[AsyncScript, list[Any], list[Any], "asyncio.Future[Any]"]


class ScriptBatcher:
    def __init__(self, client: aioredis.Redis | RedisCluster, *, most: int = 64):
        self._r = client
        self._pool: ConnectionPool | None = None if isinstance(client, RedisCluster) else client.connection_pool
        self._most = most
        self._queue: list[Call] = []

    async def run(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((script, keys, args, answer))
        if len(self._queue) == 1:
            try:
                await asyncio.sleep(0)
            finally:
                # Taken at once, so the next caller leads the next batch; sent even when
                # this leader is cancelled, since its followers wait on it.
                batch, self._queue = self._queue, []
                await self._send(batch)
        return await answer

    async def _send(self, batch: list[Call]) -> None:
        done = 0
        try:
            for start in range(0, len(batch), self._most):
                chunk = batch[start : start + self._most]
                commands = [("EVALSHA", script.sha, len(keys), *keys, *args) for script, keys, args, _ in chunk]
                # Its own deadline: followers wait on this leader, and a hung Redis must
                # not hold the batcher (and every later write) with it.
                async with within(COMMAND_TIMEOUT):
                    replies = await self._round_trip(commands)
                for (script, keys, args, answer), reply in zip(chunk, replies, strict=True):
                    if isinstance(reply, NoScriptError):
                        reply = await _alone(script, keys, args)  # loads the script, then runs it
                    _settle(answer, reply)
                done = start + len(chunk)
        except BaseException as exc:
            # A cancelled leader (its own request's deadline, a shutdown) must not cancel
            # its followers, whose requests carry on: to them the batch simply failed. The
            # leader's own call is batch[0] (it found the queue empty).
            failure = exc if isinstance(exc, Exception) else RedisTimeoutError("its batch was cut off")
            for i, (*_, answer) in enumerate(batch[done:], done):
                _settle(answer, exc if i == 0 else failure)
            if not isinstance(exc, Exception):
                raise

    async def _round_trip(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Each command's reply, or its error reply as an exception (not raised)."""
        if self._pool is None:
            pipe = self._r.pipeline(transaction=False)
            for command in commands:
                # Not `pipe.evalsha`, which redis-py's cluster pipeline refuses; as a plain
                # command it is sent to the node of its keys' slot like any other.
                pipe.execute_command(*command)
            return await pipe.execute(raise_on_error=False)
        # No retry on a broken connection, as the pipeline's (the pool's connections are
        # made with none): a write whose reply was lost must not run twice, and the pool
        # checks a connection before handing it out, so a dropped one is replaced there.
        return await _on_one_connection(self._pool, commands)


async def _on_one_connection(pool: ConnectionPool, commands: list[tuple[Any, ...]]) -> list[Any]:
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await connection.send_packed_command(connection.pack_commands(commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await connection.read_response())
            except ResponseError as exc:  # this command's error reply; the rest still come
                replies.append(exc)
        return replies
    except BaseException:
        # Replies left unread (cancelled mid-way, a broken socket) must not be read as the
        # answers to the next user's commands. redis-py (8.1) already drops a connection
        # whose write or read is cut off; this keeps that true whatever its version does.
        await connection.disconnect(nowait=True)
        raise
    finally:
        await pool.release(connection)


async def _alone(script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
    try:
        async with within(COMMAND_TIMEOUT):
            return await script(keys=keys, args=args)
    except Exception as exc:
        return exc


def _settle(answer: asyncio.Future[Any], reply: Any) -> None:
    if answer.done():
        return  # its caller was cancelled
    if isinstance(reply, asyncio.CancelledError):
        answer.cancel()
    elif isinstance(reply, BaseException):
        answer.set_exception(reply)
    else:
        answer.set_result(reply)
