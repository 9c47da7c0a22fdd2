"""Download provider result files without becoming an SSRF proxy.

Result URLs arrive in callback bodies that KIE does not sign, so anyone who can reach the
callback endpoint chooses what this process fetches. Every layer is therefore checked:

- the URL: http(s) only, host in RELAY_RESULT_HOSTS, https unless the entry is an explicit
  `http://host:port`; every redirect (at most `max_redirects`) is checked again;
- the address: resolved by us, refused when special, connected to by IP, and the socket's
  peer checked again (relay/netguard.py). Only an explicit `http://host:port` entry skips it;
- the body: a byte cap, per-phase timeouts plus a total one, and the content recognised by
  its magic bytes, never by the Content-Type header (so no HTML or SVG gets through).

Refusals raise errors from `relay.errors` whose message says why (it becomes the task's
`mirrorError`): `Forbidden` (policy), `BadRequest` (content), `PayloadTooLarge`,
`ResultGone` (403/404/410: an expired link, which a fresh one may cure) are final;
`ServiceUnavailable` (network, timeouts, 5xx) is worth a retry.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from relay.errors import BadRequest, Forbidden, PayloadTooLarge, ResultGone, ServiceUnavailable
from relay.httpclient import AsyncClient
from relay.media import BY_KIND, RESULTS, SNIFF_BYTES, MediaType, describe, sniff
from relay.netguard import (
    GuardedNetworkBackend,
    GuardedTransport,
    HostPolicy,
    Resolver,
    shown,
    system_resolver,
)
from relay.settings import Settings

REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class Download:
    data: bytes
    media: MediaType
    url: str  # where it finally came from, after redirects


class Downloader:
    """`await fetch(url)` -> `Download`. One instance per process; `aclose()` at shutdown."""

    def __init__(
        self,
        settings: Settings,
        *,
        resolver: Resolver | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        total_timeout: float = 120.0,
        max_redirects: int = 3,
    ):
        self.policy = HostPolicy.parse(settings.result_hosts)
        self.max_bytes = settings.max_download
        self.caps = {
            "image": min(settings.max_image_download, settings.max_download),
            "audio": min(settings.max_audio_download, settings.max_download),
            "video": settings.max_download,
        }
        self.total_timeout = total_timeout
        self.max_redirects = max_redirects
        backend = GuardedNetworkBackend(self.policy, resolver or system_resolver)
        self._client = AsyncClient(
            transport=GuardedTransport(backend, httpx.Limits(max_connections=32, max_keepalive_connections=8)),
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout),
            follow_redirects=False,  # every hop is checked here, not inside httpx
            trust_env=False,  # no proxy or .netrc from the environment
            headers={"Accept": "image/*, video/*", "Accept-Encoding": "identity", "User-Agent": "relay-mirror/1"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, url: str, kind: str | None = None) -> Download:
        """Download one result; with `kind` (image, video, audio) only files of that kind,
        up to that kind's size cap, are accepted."""
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise BadRequest(f"refused {url[:80]!r}: not a valid URL ({exc})", code="download_refused") from None
        try:
            async with asyncio.timeout(self.total_timeout):
                return await self._follow(target, kind)
        except TimeoutError:
            raise ServiceUnavailable(
                f"downloading {shown(target)} took longer than {self.total_timeout:g}s", code="download_failed"
            ) from None

    async def _follow(self, url: httpx.URL, kind: str | None) -> Download:
        for _ in range(self.max_redirects + 1):
            self.policy.check(url)
            try:
                response = await self._client.send(self._client.build_request("GET", url), stream=True)
                try:
                    location = response.headers.get("location")
                    if response.status_code in REDIRECTS and location:
                        url = url.join(location)
                        continue
                    self._check_status(url, response.status_code)
                    return await self._read(url, response, kind)
                finally:
                    await response.aclose()
            except httpx.TimeoutException as exc:
                raise ServiceUnavailable(
                    f"timed out fetching {shown(url)} ({type(exc).__name__})", code="download_failed"
                ) from None
            except httpx.HTTPError as exc:
                raise ServiceUnavailable(
                    f"could not fetch {shown(url)}: {type(exc).__name__}: {exc}", code="download_failed"
                ) from None
        raise Forbidden(
            f"refused {shown(url)}: more than {self.max_redirects} redirects", code="download_refused"
        )

    def _check_status(self, url: httpx.URL, status: int) -> None:
        if 200 <= status < 300:
            return
        message = f"{shown(url)} answered HTTP {status}"
        if status in (403, 404, 410):
            # KIE's links expire (download links after 20 minutes, files after 14 days):
            # an expired signed link answers 403, a removed file 404 or 410.
            raise ResultGone(f"{message}: the link has expired or the result was removed")
        if status in (408, 425, 429) or status >= 500:
            raise ServiceUnavailable(message, code="download_failed")
        raise BadRequest(message, code="download_failed")

    async def _read(self, url: httpx.URL, response: httpx.Response, kind: str | None) -> Download:
        cap = self.caps.get(kind or "", self.max_bytes)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise PayloadTooLarge(
                f"the result at {shown(url)} is {declared} bytes; the limit for {kind or 'a result'} is {cap}",
                code="download_too_large",
            )
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            # Decompressing would let a small response expand past the cap in one chunk.
            raise BadRequest(
                f"the result at {shown(url)} came {encoding}-encoded although identity was asked for",
                code="unsupported_media",
            )
        body = bytearray()
        media: MediaType | None = None
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > cap:
                raise PayloadTooLarge(
                    f"the result at {shown(url)} is larger than the {cap}-byte limit for {kind or 'a result'}",
                    code="download_too_large",
                )
            if media is None and len(body) >= SNIFF_BYTES:
                media = self._recognise(url, response, bytes(body[:SNIFF_BYTES]), kind)
        if media is None:
            media = self._recognise(url, response, bytes(body), kind)
        return Download(bytes(body), media, str(url))

    def _recognise(self, url: httpx.URL, response: httpx.Response, head: bytes, kind: str | None) -> MediaType:
        allowed = BY_KIND.get(kind or "", RESULTS)
        media = sniff(head)
        if media is None or media not in allowed:
            declared = response.headers.get("content-type", "no content type")
            names = ", ".join(sorted(m.ext.upper() for m in allowed))
            what = describe(head) if media is None else f"a {media.kind} ({media.ext.upper()})"
            raise BadRequest(
                f"the result at {shown(url)} is {what}, not one of {names} "
                f"(it was served as {declared!r})",
                code="unsupported_media",
            )
        return media
