"""Outbound HTTP on asyncio's own streams (relay/netstream.py), against real servers on
loopback: plain and TLS (a certificate made here with openssl), connection reuse, a server
that closes an idle connection, a large upload, a server that never answers, a
certificate nobody trusts. Each scenario runs on asyncio's loop and on uvloop (what
`relay serve` runs on)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import uvloop

from relay.httpclient import AsyncClient
from tests.servers import HOST
from tests.waiting import until

LOOPS: dict[str, Callable[[Awaitable[None]], None]] = {
    "asyncio": lambda coro: asyncio.run(coro),  # type: ignore[arg-type]
    "uvloop": lambda coro: uvloop.run(coro),  # type: ignore[arg-type]
}


class Server:
    """A minimal HTTP/1.1 server: answers each request with its body's length, and can
    close after one answer or never answer at all."""

    def __init__(self, *, tls: ssl.SSLContext | None = None, close_after_one: bool = False, silent: bool = False):
        self.tls = tls
        self.close_after_one = close_after_one
        self.silent = silent
        self.connections = 0
        self.finished = 0  # connections this server has closed
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, HOST, 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                if self.silent:
                    await reader.read()  # until the client gives up
                    return
                answer = str(len(body)).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
                await writer.drain()
                if self.close_after_one:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()
            self.finished += 1


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make the test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=relay-test", "-addext", f"subjectAltName=IP:{HOST}"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def contexts(certificate: tuple[Path, Path]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = certificate
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_requests_reuse_one_connection_and_a_large_body_goes_through(
    loop: str, scheme: str, certificate: tuple[Path, Path]
) -> None:
    server_tls, client_tls = contexts(certificate)

    async def scenario() -> None:
        async with Server(tls=server_tls if scheme == "https" else None) as server:
            async with AsyncClient(verify=client_tls, timeout=5) as client:
                base = f"{scheme}://{HOST}:{server.port}"
                for size in (0, 10, 3 * 1024 * 1024):  # the last one has to wait for the socket
                    answer = await client.post(f"{base}/echo", content=b"x" * size)
                    assert answer.status_code == 200 and answer.text == str(size)
                assert server.connections == 1, "kept alive and reused"

    LOOPS[loop](scenario())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_connection_the_server_closed_is_not_reused(loop: str) -> None:
    async def scenario() -> None:
        async with Server(close_after_one=True) as server, AsyncClient(timeout=5) as client:
            for n in range(3):
                answer = await client.post(f"http://{HOST}:{server.port}/", content=b"abc")
                assert answer.status_code == 200 and answer.text == "3"
                # The server has closed it: the pool must notice, not send into it.

                async def closed(count: int = n + 1) -> bool:
                    return server.finished == count

                await until(closed, timeout=5, what="the server to close the connection")
            assert server.connections == 3

    LOOPS[loop](scenario())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_server_that_never_answers_times_out(loop: str) -> None:
    async def scenario() -> None:
        async with Server(silent=True) as server, AsyncClient(timeout=httpx.Timeout(5, read=0.3)) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(f"http://{HOST}:{server.port}/", content=b"hello")

    LOOPS[loop](scenario())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_certificate_nobody_trusts_is_refused(loop: str, certificate: tuple[Path, Path]) -> None:
    server_tls, _ = contexts(certificate)

    async def scenario() -> None:
        async with Server(tls=server_tls) as server, AsyncClient(timeout=5) as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(f"https://{HOST}:{server.port}/")
            assert server.connections <= 1

    LOOPS[loop](scenario())


@pytest.mark.parametrize("loop", LOOPS)
def test_nothing_listening_is_a_connect_error(loop: str) -> None:
    async def scenario() -> None:
        async with Server() as server:
            port = server.port
        async with AsyncClient(timeout=5) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://{HOST}:{port}/")

    LOOPS[loop](scenario())
