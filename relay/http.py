"""Small request/response helpers shared by the endpoints."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from relay.deadline import within
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
    receive = request.receive  # not request.stream(): no generator per request
    try:
        async with within(deadline):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {deadline:g} s") from None
    except ClientDisconnect:
        # The client hung up (or sent a broken chunk) mid-body: its request, not our fault,
        # and nobody is left to read the answer.
        raise BadRequest("the request body ended before it was complete", code="request_incomplete") from None
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    request._body = body  # so a later request.body() returns it rather than wait for more
    return body


def query_value(request: Request, name: str) -> str | None:
    """One query parameter (the last, as Starlette's `query_params` has it), without
    parsing the whole query string into a multi-dict."""
    raw = request.scope.get("query_string", b"")
    if not raw:
        return None
    # Read as Starlette reads it: the bytes as latin-1, then percent-decoding as UTF-8.
    found: bytes | None = None
    for part in raw.split(b"&"):
        k, eq, v = part.partition(b"=")
        key = k.decode("latin-1")
        if key == name or (("%" in key or "+" in key) and unquote_plus(key) == name):
            found = v if eq else b""
    if found is None:
        return None
    text = found.decode("latin-1")
    return unquote_plus(text) if "%" in text or "+" in text else text


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
