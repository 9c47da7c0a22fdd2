"""The SSRF-safe downloader, loopback only: a real origin on uvicorn (allowed explicitly as
http://127.0.0.1:PORT), a raw TCP listener that counts connections (to prove refused
addresses are never connected to), and a resolver that maps test names to 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from relay.downloader import Downloader
from relay.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge, ServiceUnavailable
from relay.media import JPEG, PNG
from relay.netguard import HostPolicy, address_refusal, system_resolver
from relay.settings import DEFAULT_RESULT_HOSTS, Settings
from relay.sim.png import gradient_png
from tests.s3server import LocalServer
from tests.servers import free_port

pytestmark = pytest.mark.timeout(30)

IMAGE = gradient_png("downloader", 48)
CAP = 64 * 1024
SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
HTML = b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>"


async def endless(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield IMAGE[:64]  # a valid signature, so only the cap can stop it
        while True:
            yield b"\0" * 16384
            await asyncio.sleep(0)

    return StreamingResponse(body(), media_type="image/png")


async def slow(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield IMAGE[:64]
        await asyncio.sleep(30)
        yield b""

    return StreamingResponse(body(), media_type="image/png")


def origin_app() -> Starlette:
    def fixed(
        content: bytes, media_type: str, *, status: int = 200, headers: dict[str, str] | None = None
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return Response(content, status_code=status, media_type=media_type, headers=headers)

        return endpoint

    async def redirect(request: Request) -> Response:
        return RedirectResponse(request.query_params["to"], status_code=int(request.query_params.get("code", 302)))

    async def loop(request: Request) -> Response:
        return RedirectResponse("/loop", status_code=302)

    return Starlette(
        routes=[
            Route("/image.png", fixed(IMAGE, "image/png")),
            Route("/photo.jpg", fixed(b"\xff\xd8\xff\xe0" + b"\0" * 200, "image/jpeg")),
            Route("/html-as-png", fixed(HTML, "image/png")),
            Route("/image.svg", fixed(SVG, "image/svg+xml")),
            Route("/svg-as-png", fixed(SVG, "image/png")),
            Route("/text", fixed(b"hello", "image/png")),
            Route("/missing", fixed(b"gone", "text/plain", status=404)),
            Route("/busy", fixed(b"busy", "text/plain", status=503)),
            Route("/gzipped", fixed(IMAGE, "image/png", headers={"content-encoding": "gzip"})),
            Route("/big", fixed(IMAGE + b"\0" * CAP, "image/png")),
            Route("/endless", endless),
            Route("/slow", slow),
            Route("/redirect", redirect),
            Route("/loop", loop),
        ]
    )


@dataclass
class Env:
    origin: str
    port: int
    trap_port: int  # a listener nothing may ever connect to
    trap_connections: list[int]

    def downloader(self, *extra_hosts: str, **kwargs: object) -> Downloader:
        settings = Settings(result_hosts=(f"http://127.0.0.1:{self.port}", *extra_hosts), max_download=CAP)
        return Downloader(settings, resolver=fake_resolver, **kwargs)  # type: ignore[arg-type]


async def fake_resolver(host: str, port: int) -> list[str]:
    """Names under .example.test resolve to loopback; `mixed.example.test` has a public and
    a loopback address (a rebinding-style answer); everything else uses the system."""
    if host == "mixed.example.test":
        return ["93.184.216.34", "127.0.0.1"]
    if host.endswith(".example.test"):
        return ["127.0.0.1"]
    return await system_resolver(host, port)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    server = await LocalServer().start(origin_app())
    connections: list[int] = []

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        writer.close()

    trap = await asyncio.start_server(count, "127.0.0.1", 0)
    trap_port = trap.sockets[0].getsockname()[1]
    try:
        yield Env(server.url, server.port, trap_port, connections)
    finally:
        trap.close()
        await trap.wait_closed()
        await server.stop()


async def test_downloads_an_allowed_image(env: Env) -> None:
    downloader = env.downloader()
    try:
        got = await downloader.fetch(f"{env.origin}/image.png")
        assert got.data == IMAGE and got.media is PNG
        jpeg = await downloader.fetch(f"{env.origin}/redirect?to=/photo.jpg")
        assert jpeg.media is JPEG and jpeg.url == f"{env.origin}/photo.jpg"
    finally:
        await downloader.aclose()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:{trap}/image.png", "plain http is allowed only for hosts listed"),
        ("http://localhost:{port}/image.png", "plain http is allowed only for hosts listed"),
        ("http://[::1]:{port}/image.png", "plain http"),
        ("http://[::ffff:127.0.0.1]:{port}/image.png", "plain http"),
        ("http://0x7f000001:{port}/image.png", "plain http"),
        ("http://2130706433:{port}/image.png", "plain http"),
        ("http://127.1:{port}/image.png", "plain http"),
        ("http://0.0.0.0:{port}/image.png", "plain http"),
        ("http://169.254.169.254/latest/meta-data/", "plain http"),
        ("https://127.0.0.1:{trap}/image.png", "host '127.0.0.1' is not in RELAY_RESULT_HOSTS"),
        ("https://evil.example.com/a.png", "host 'evil.example.com' is not in RELAY_RESULT_HOSTS"),
        ("https://kie.ai.evil.example.com/a.png", "not in RELAY_RESULT_HOSTS"),
        ("https://tempfile.aiquickdraw.com.evil.test/a.png", "not in RELAY_RESULT_HOSTS"),
        ("http://tempfile.aiquickdraw.com/a.png", "plain http is allowed only"),
        ("file:///etc/passwd", "refused a file:// URL"),
        ("gopher://127.0.0.1:{port}/_GET", "refused a gopher:// URL"),
        ("ftp://tempfile.aiquickdraw.com/a.png", "refused a ftp:// URL"),
    ],
)
async def test_url_policy_refusals(env: Env, url: str, message: str) -> None:
    downloader = env.downloader(*DEFAULT_RESULT_HOSTS)
    try:
        with pytest.raises(Forbidden, match=message) as caught:
            await downloader.fetch(url.format(port=env.port, trap=env.trap_port))
        assert caught.value.code == "download_refused"
    finally:
        await downloader.aclose()
    assert env.trap_connections == []


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("[::1]", "loopback"),
        ("[::ffff:127.0.0.1]", "IPv4-mapped"),
        ("[64:ff9b::7f00:1]", "NAT64"),
        ("[2002:7f00:1::1]", "6to4"),
        ("[::127.0.0.1]", "IPv4-compatible"),
        ("0x7f000001", "loopback"),
        ("2130706433", "loopback"),
        ("127.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("169.254.169.254", "link-local"),
        ("10.1.2.3", "private"),
        ("img.example.test", "loopback"),
        ("mixed.example.test", "loopback"),
    ],
)
async def test_special_addresses_are_refused_before_connecting(env: Env, host: str, reason: str) -> None:
    """Even when the operator lists the host, its address must be an ordinary public one;
    refused before any connection is made (the trap listener stays untouched)."""
    downloader = env.downloader(host, "*.example.test")
    try:
        with pytest.raises(Forbidden, match=reason) as caught:
            await downloader.fetch(f"https://{host}:{env.trap_port}/image.png")
        assert caught.value.code == "address_refused"
        assert "refused to connect" in caught.value.message
    finally:
        await downloader.aclose()
    assert env.trap_connections == []


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        ("http://127.0.0.2:{port}/image.png", Forbidden, "plain http is allowed only"),
        ("http://127.0.0.1:{trap}/image.png", Forbidden, "plain http is allowed only"),
        ("http://localhost:{port}/image.png", Forbidden, "plain http is allowed only"),
        ("https://img.example.test:{trap}/image.png", Forbidden, "loopback"),
        ("gopher://127.0.0.1:{trap}/", Forbidden, "gopher://"),
        ("file:///etc/passwd", Forbidden, "file://"),
    ],
)
async def test_redirects_are_checked_again(env: Env, target: str, error: type[Exception], message: str) -> None:
    downloader = env.downloader("*.example.test")
    location = target.format(port=env.port, trap=env.trap_port)
    try:
        with pytest.raises(error, match=message):
            await downloader.fetch(f"{env.origin}/redirect?to={location}&code=307")
    finally:
        await downloader.aclose()
    assert env.trap_connections == []


async def test_redirect_loop_and_chain_limit(env: Env) -> None:
    downloader = env.downloader()
    try:
        with pytest.raises(Forbidden, match="more than 3 redirects"):
            await downloader.fetch(f"{env.origin}/loop")
        three = "/redirect?to=/redirect%3Fto%3D/redirect%253Fto%253D/image.png"
        assert (await downloader.fetch(env.origin + three)).data == IMAGE
    finally:
        await downloader.aclose()


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        ("/html-as-png", BadRequest, r"is an HTML page, not one of .*PNG.*served as 'image/png'"),
        ("/image.svg", BadRequest, "SVG is never stored"),
        ("/svg-as-png", BadRequest, "SVG is never stored"),
        ("/text", BadRequest, "plain text"),
        ("/missing", NotFound, "answered HTTP 404: the link has expired"),
        ("/busy", ServiceUnavailable, "answered HTTP 503"),
        ("/gzipped", BadRequest, "gzip-encoded"),
        ("/big", PayloadTooLarge, f"limit for a result is {CAP}"),
        ("/endless", PayloadTooLarge, f"larger than the {CAP}-byte limit"),
    ],
)
async def test_content_refusals(env: Env, path: str, error: type[Exception], message: str) -> None:
    downloader = env.downloader()
    try:
        with pytest.raises(error, match=message):
            await downloader.fetch(env.origin + path)
    finally:
        await downloader.aclose()


async def test_timeouts(env: Env) -> None:
    downloader = env.downloader(read_timeout=0.3)
    try:
        with pytest.raises(ServiceUnavailable, match="timed out"):
            await downloader.fetch(f"{env.origin}/slow")
    finally:
        await downloader.aclose()
    downloader = env.downloader(total_timeout=0.5, read_timeout=10)
    try:
        with pytest.raises(ServiceUnavailable, match=r"took longer than 0\.5s"):
            await downloader.fetch(f"{env.origin}/slow")
    finally:
        await downloader.aclose()


async def test_unreachable_origin_is_retryable() -> None:
    # A listed origin with nothing listening: a transient network failure, not a refusal.
    port = free_port()
    downloader = Downloader(Settings(result_hosts=(f"http://127.0.0.1:{port}",)))
    try:
        with pytest.raises(ServiceUnavailable, match="could not fetch"):
            await downloader.fetch(f"http://127.0.0.1:{port}/image.png")
    finally:
        await downloader.aclose()


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("93.184.216.34", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),
        ("169.254.169.254", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("::", False),
        ("::1", False),
        ("::ffff:8.8.8.8", False),
        ("64:ff9b::808:808", False),
        ("2002:808:808::1", False),
        ("2001:0:4136:e378::1", False),
        ("fd00:ec2::254", False),
        ("fe80::1", False),
        ("ff02::1", False),
    ],
)
def test_address_classification(address: str, public: bool) -> None:
    assert (address_refusal(ipaddress.ip_address(address)) is None) is public


def test_host_policy_entries() -> None:
    policy = HostPolicy.parse(["*.kie.ai", "files.example.com", "http://sim.local:8080", "https://cdn.example.net"])
    assert policy.exact == {"files.example.com", "cdn.example.net"}
    assert policy.http_origins == {("sim.local", 8080)}
    assert policy.trusts("SIM.local", 8080) and not policy.trusts("sim.local", 80)
    for bad in ("*", "*.com", "ftp://x.example.com", "a*.example.com"):
        with pytest.raises(ValueError, match="RELAY_RESULT_HOSTS"):
            HostPolicy.parse([bad])
