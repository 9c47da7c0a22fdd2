"""`AsyncClient`: httpx's client without a reference cycle per response, on asyncio's own
streams (relay/netstream.py) unless given another transport.

httpx 0.28 wraps every response's stream in a `BoundAsyncStream` that points back at the
response (httpx/_client.py, `_send_single_request`), so every response is a cycle that
only the cyclic GC frees (encode/httpx#3733, still open). Here the stream lets go of the
response when it is closed: a closed response is freed by reference counting.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx

from relay.netstream import DEFAULT_LIMITS, AsyncioBackend, PooledTransport

_CLOSED = httpx.ByteStream(b"")  # what a closed response's stream is replaced by


class _ReleasingStream(httpx.AsyncByteStream):
    """httpx's bound stream until it is closed; then nothing."""

    __slots__ = ("_bound",)

    def __init__(self, bound: httpx.AsyncByteStream):
        self._bound = bound

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._bound:
            yield chunk

    async def aclose(self) -> None:
        bound, self._bound = self._bound, _CLOSED
        await bound.aclose()  # sets response.elapsed, returns the connection


class AsyncClient(httpx.AsyncClient):
    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | str | bool = True,
        trust_env: bool = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
        **kwargs: Any,
    ) -> None:
        if transport is None:
            transport = PooledTransport(AsyncioBackend(), limits=limits, verify=verify, trust_env=trust_env)
        super().__init__(transport=transport, verify=verify, trust_env=trust_env, limits=limits, **kwargs)

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        response = await super().send(request, **kwargs)
        for earlier in response.history:  # redirects followed: read and closed
            earlier.stream = _CLOSED
        if response.is_closed:  # stream=False: the body is read and the stream closed
            response.stream = _CLOSED
        else:
            assert isinstance(response.stream, httpx.AsyncByteStream)
            response.stream = _ReleasingStream(response.stream)
        return response
