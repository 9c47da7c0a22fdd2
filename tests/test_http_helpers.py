"""The hot path's own readers agree with Starlette's on every input (they replace
`request.query_params` and `request.stream()` on the callback route)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from relay.errors import BadRequest, PayloadTooLarge
from relay.http import query_value, read_body

pytestmark = pytest.mark.inprocess

_piece = st.lists(st.sampled_from([*"tokenask=%+2AFZz.-_ é", "%3D", "%26", "%2", "%C3%A9"]), max_size=10).map("".join)


def _request(query: bytes = b"", messages: list[dict[str, Any]] | None = None) -> Request:
    queue = list(messages or [])

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/", "query_string": query, "headers": []}
    return Request(scope, receive)


@settings(max_examples=400, deadline=None)
@given(st.lists(_piece, max_size=6).map("&".join), st.sampled_from(["token", "task", "tok en", "é"]))
def test_query_value_is_what_starlette_reads(query: str, name: str) -> None:
    request = _request(query.encode("utf-8"))
    assert query_value(request, name) == request.query_params.get(name)


async def test_read_body_joins_chunks_caps_size_and_notices_a_hang_up() -> None:
    chunks = [{"type": "http.request", "body": b"ab", "more_body": True},
              {"type": "http.request", "body": b"cd", "more_body": False}]
    request = _request(messages=chunks)
    assert await read_body(request, 10) == b"abcd"
    assert await request.body() == b"abcd"  # what was read stays readable
    with pytest.raises(PayloadTooLarge):
        await read_body(_request(messages=[{"type": "http.request", "body": b"x" * 11, "more_body": False}]), 10)
    with pytest.raises(BadRequest, match="ended before"):
        await read_body(_request(messages=[chunks[0], {"type": "http.disconnect"}]), 10)
