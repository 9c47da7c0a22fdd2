"""The command client packs commands with hiredis (relay/backends/redis_clients.py): the
bytes on the wire must be exactly what redis-py's own packing sends, its refusals the
same DataError, and a real Redis must read them back."""

from __future__ import annotations

from typing import Any

import pytest
from redis import asyncio as aioredis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from relay.backends.redis_clients import command_client, hiredis_packing

ARGUMENTS: list[tuple[Any, ...]] = [
    ("GET", "plain"),
    ("CONFIG GET", "maxmemory"),  # a name with a space is two arguments
    (b"CLIENT LIST",),
    ("SET", "k", "ünïcode ✓"),
    ("SET", "k", b"\x00\xff binary\r\n"),
    ("SET", "k", bytearray(b"array")),
    ("SET", "k", memoryview(b"view")),
    ("EVALSHA", "a" * 40, 2, "k1", "k2", 0, -5, 2**62, 1.5, 0.1, 1e20, -0.0, 3.141592653589793, float("inf")),
    ("SET", "k", "x" * 100_000),  # past redis-py's buffer cut-off, where it splits the output
]


def wire(packed: list[bytes] | list[bytes | memoryview]) -> bytes:
    return b"".join(bytes(part) for part in packed)


@pytest.mark.parametrize("args", ARGUMENTS, ids=lambda a: str(a[0]))
def test_the_bytes_sent_are_redis_pys_own(args: tuple[Any, ...]) -> None:
    ours = hiredis_packing(Connection)()
    theirs = Connection()
    assert wire(ours.pack_command(*args)) == wire(theirs.pack_command(*args))


@pytest.mark.parametrize("bad", [None, True, [1], {"a": 1}])
def test_what_redis_py_refuses_is_refused_the_same_way(bad: Any) -> None:
    with pytest.raises(DataError):
        Connection().pack_command("SET", "k", bad)
    with pytest.raises(DataError):
        hiredis_packing(Connection)().pack_command("SET", "k", bad)


def test_each_kind_of_connection_keeps_its_transport() -> None:
    for base in (Connection, SSLConnection, UnixDomainSocketConnection):
        packed = hiredis_packing(base)
        assert issubclass(packed, base) and packed is not base
        assert hiredis_packing(base) is packed  # one class per kind, not one per client


async def test_a_real_redis_reads_back_what_was_packed(redis_url: str) -> None:
    client = command_client(redis_url, max_connections=4)
    assert isinstance(client, aioredis.Redis)
    try:
        assert client.connection_pool.connection_class is hiredis_packing(Connection)
        values: list[bytes | str | int | float] = ["ünïcode ✓", b"\x00\xff\r\n", 2**62, 1.5, "x" * 100_000]
        for i, value in enumerate(values):
            await client.set(f"packing:{i}", value)
        got = [await client.get(f"packing:{i}") for i in range(len(values))]
        assert got == [
            "ünïcode ✓".encode(), b"\x00\xff\r\n", str(2**62).encode(), b"1.5", b"x" * 100_000
        ]
        assert "maxmemory" in await client.config_get("maxmemory")  # "CONFIG GET" split in two
        with pytest.raises(DataError):
            await client.set("packing:none", None)  # type: ignore[arg-type]
    finally:
        await client.delete(*(f"packing:{i}" for i in range(5)))
        await client.aclose()
