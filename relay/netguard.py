"""The network guard under the result downloader: which hosts may be fetched from, and a
connection layer that resolves names itself, refuses special addresses (loopback,
private, link-local, metadata, IPv4-mapped, NAT64, 6to4, ...), connects by IP and checks
the socket's peer again, so DNS rebinding and odd literals (`0x7f000001`, `127.1`) meet
the same check. Only an explicit `http://host:port` entry in RELAY_RESULT_HOSTS skips it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from relay.errors import Forbidden
from relay.netstream import AsyncioBackend, PooledTransport

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses to try, in order
Resolver = Callable[[str, int], Awaitable[list[str]]]

DEFAULT_PORTS = {"http": 80, "https": 443}

# `ipaddress` calls several of these "global" (NAT64, 6to4, Teredo embed an IPv4 address
# that may be private), so they are refused by prefix before its own checks run.
_SPECIAL_V6 = tuple(
    (ipaddress.IPv6Network(net), why)
    for net, why in (
        ("::/96", "an IPv4-compatible IPv6 address"),
        ("64:ff9b::/96", "a NAT64 address"),
        ("64:ff9b:1::/48", "a NAT64 address"),
        ("2002::/16", "a 6to4 address"),
        ("2001::/32", "a Teredo address"),
        ("100::/64", "a discard-only address"),
        ("2001:db8::/32", "a documentation address"),
        ("fc00::/7", "a private (unique local) address"),
        ("fec0::/10", "a site-local address"),
    )
)


def address_refusal(ip: IPAddress) -> str | None:
    """Why connecting to `ip` is refused, or None when it is an ordinary public address."""
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return "an IPv4-mapped IPv6 address"
        for net, why in _SPECIAL_V6:
            if ip in net:
                return why
    if ip.is_link_local:
        return "a link-local address (where cloud metadata lives)"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "not a globally routable address"
    return None


def _norm_host(host: str) -> str:
    return host.lower().rstrip(".")


def shown(url: httpx.URL) -> str:
    """The URL for messages and logs: no query (presigned signatures), bounded length."""
    text = str(url.copy_with(query=None, fragment=None))
    return text if len(text) <= 160 else text[:157] + "..."


@dataclass(frozen=True)
class HostPolicy:
    """RELAY_RESULT_HOSTS (or RELAY_WEBHOOK_HOSTS): `host`, `*.domain` (any subdomain) or
    `http://host:port`. `pinned` URLs are the operator's own (RELAY_WEBHOOK_URL): their
    origin is allowed and trusted like an explicit `http://host:port` entry."""

    exact: frozenset[str]
    suffixes: tuple[str, ...]
    http_origins: frozenset[tuple[str, int]]
    pinned: frozenset[tuple[str, int]] = frozenset()
    setting: str = "RELAY_RESULT_HOSTS"
    purpose: str = field(default="results are downloaded", compare=False)
    code: str = "download_refused"

    @classmethod
    def parse(
        cls,
        entries: Iterable[str],
        *,
        setting: str = "RELAY_RESULT_HOSTS",
        purpose: str = "results are downloaded",
        code: str = "download_refused",
        pinned: Iterable[str] = (),
    ) -> HostPolicy:
        exact: set[str] = set()
        suffixes: list[str] = []
        http_origins: set[tuple[str, int]] = set()
        pins: set[tuple[str, int]] = set()
        for url in pinned:
            parts = urlsplit(url)
            if parts.scheme in DEFAULT_PORTS and parts.hostname:
                origin = (_norm_host(parts.hostname), parts.port or DEFAULT_PORTS[parts.scheme])
                pins.add(origin)
                if parts.scheme == "http":
                    http_origins.add(origin)
                else:
                    exact.add(origin[0])
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            if "://" in entry:
                parts = urlsplit(entry)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise ValueError(f"{setting} entry {entry!r}: use host, *.domain or http://host:port")
                if parts.scheme == "http":
                    http_origins.add((_norm_host(parts.hostname), parts.port or 80))
                    continue
                entry = parts.hostname
            entry = _norm_host(entry)
            if entry.startswith("*."):
                if "." not in entry[2:]:
                    raise ValueError(f"{setting} entry {raw!r} is too broad")
                suffixes.append(entry[1:])
            elif "*" in entry:
                raise ValueError(f"{setting} entry {raw!r}: only a leading '*.' is supported")
            else:
                exact.add(entry.strip("[]"))
        return cls(
            frozenset(exact), tuple(suffixes), frozenset(http_origins), frozenset(pins), setting, purpose, code
        )

    def trusts(self, host: str, port: int) -> bool:
        """An explicit `http://host:port` entry (or a pinned URL): the operator vouches for
        that exact origin (a simulator on loopback), so its address is not checked."""
        origin = (_norm_host(host), port)
        return origin in self.http_origins or origin in self.pinned

    def check(self, url: httpx.URL) -> None:
        """Raise `Forbidden` unless `url` may be fetched."""
        scheme = url.scheme
        if scheme not in DEFAULT_PORTS:
            raise Forbidden(
                f"refused a {scheme or 'relative'}:// URL: {self.purpose} over https only", code=self.code
            )
        host = _norm_host(url.raw_host.decode("ascii", "replace"))
        port = url.port or DEFAULT_PORTS[scheme]
        if not host:
            raise Forbidden(f"refused {shown(url)}: the URL has no host", code=self.code)
        if scheme == "http":
            if (host, port) not in self.http_origins:
                raise Forbidden(
                    f"refused {shown(url)}: plain http is allowed only for hosts listed as "
                    f"http://host:port in {self.setting}; {self.purpose} over https",
                    code=self.code,
                )
            return
        if host not in self.exact and not host.endswith(self.suffixes):
            raise Forbidden(f"refused {shown(url)}: host {host!r} is not in {self.setting}", code=self.code)


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # Keep the resolver's order (it already sorts by preference), without duplicates.
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, resolving and checking addresses itself before it
    connects by IP. httpcore still passes the URL's host name to TLS (SNI, certificate
    check) and httpx sends it as `Host`, so only the address lookup changes hands."""

    def __init__(self, policy: HostPolicy, resolver: Resolver):
        self.policy = policy
        self.resolver = resolver
        self._inner = AsyncioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        trusted = self.policy.trusts(host, port)
        try:
            addresses = [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            try:
                async with asyncio.timeout(timeout):
                    found = await self.resolver(host, port)
            except (OSError, TimeoutError) as exc:
                raise httpcore.ConnectError(f"could not resolve {host}: {exc}") from exc
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in found]
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no addresses")
        if not trusted:
            # One special address among several refuses the host: a name that points at
            # both a public and a private address is an attack, not a fallback.
            for ip in addresses:
                self._check_address(host, ip)
        last: Exception | None = None
        for ip in addresses:
            try:
                stream = await self._inner.connect_tcp(
                    str(ip), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            if not trusted:
                try:
                    self._check_peer(host, stream)
                except Forbidden:
                    await stream.aclose()
                    raise
            return stream
        assert last is not None
        raise last

    def _check_address(self, host: str, ip: IPAddress) -> None:
        why = address_refusal(ip)
        if why is not None:
            shown = f"{host} ({ip})" if str(ip) != host.strip("[]") else str(ip)
            raise Forbidden(
                f"refused to connect to {shown}: {why}. Only an explicit http://host:port entry "
                f"in {self.policy.setting} allows such an address",
                code="address_refused",
            )

    def _check_peer(self, host: str, stream: httpcore.AsyncNetworkStream) -> None:
        peer = stream.get_extra_info("server_addr")
        if not peer:
            raise Forbidden(f"refused {host}: the connected address is unknown", code="address_refused")
        self._check_address(host, ipaddress.ip_address(str(peer[0]).split("%")[0]))

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise Forbidden("unix sockets are never used for downloads", code="download_refused")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class GuardedTransport(PooledTransport):
    """httpx's transport over a pool that connects through the guarded backend."""

    def __init__(self, backend: GuardedNetworkBackend, limits: httpx.Limits):
        super().__init__(backend, limits=limits, trust_env=False)
