"""Small request/response helpers shared by the endpoints."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from relay.errors import BadRequest, PayloadTooLarge, RequestTimeout


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def read_body(request: Request, limit: int, deadline: float = 10.0) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes, whether or
    not the client sent a Content-Length (an oversized body is never buffered), and with
    408 if it has not all arrived within `deadline` seconds (a slow-loris sender cannot
    hold the worker)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {deadline:g} s") from None
    except ClientDisconnect:
        # The client hung up (or sent a broken chunk) mid-body: its request, not our fault,
        # and nobody is left to read the answer.
        raise BadRequest("the request body ended before it was complete", code="request_incomplete") from None
    return b"".join(chunks)


def parse_json(raw: bytes, what: str = "request body") -> Any:
    if not raw.strip():
        raise BadRequest(f"the {what} is empty; send a JSON object", code="invalid_json")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the {what} is not valid JSON: {exc.msg}", code="invalid_json") from None


def bearer_token(request: Request) -> str | None:
    """The token from `?token=` or `Authorization: Bearer` (EventSource cannot send headers)."""
    token = request.query_params.get("token")
    if token:
        return token
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None
