"""`POST /api/uploads`: a reference image for image-to-image, stored under
`uploads/{random}.{ext}`; the returned URL can be passed as `imageUrls` to POST /api/tasks.

The multipart body is parsed as it streams in (python-multipart is not a dependency, and
`request.form()` needs it): bytes are counted as they arrive, so an oversized upload is
refused with 413 after at most one chunk past the limit, Content-Length or not, and is
never held in memory whole. Only the `file` field is kept; what it is comes from its
magic bytes (PNG, JPEG, WebP, GIF), never from its name or declared type.
"""

from __future__ import annotations

import asyncio
import email.message
import email.utils
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from relay.access import identify
from relay.backends.objects import ObjectStorage
from relay.errors import BadRequest, PayloadTooLarge, RequestTimeout
from relay.http import JSONResponse
from relay.media import IMAGES, SNIFF_BYTES, describe, sniff
from relay.parsing import ascii_int
from relay.storage_keys import upload_key

MIN_UPLOAD_RATE = 64 * 1024  # bytes per second
FIELD = "file"
# Room for the boundaries, part headers and small extra fields around the file itself.
MULTIPART_OVERHEAD = 64 * 1024
MAX_PART_HEADERS = 16 * 1024
MAX_PREAMBLE = 1024


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the file is larger than {limit} bytes (RELAY_MAX_UPLOAD)")


def _malformed(why: str) -> BadRequest:
    return BadRequest(f"malformed multipart body: {why}", code="invalid_multipart")


class _Body:
    """The request body pulled chunk by chunk into a small buffer, with a byte cap."""

    def __init__(self, chunks: AsyncIterator[bytes], total_limit: int, file_limit: int):
        self.chunks = chunks
        self.total_limit = total_limit
        self.file_limit = file_limit
        self.buf = bytearray()
        self.seen = 0

    async def fill(self) -> bool:
        """Append the next chunk; False at the end of the body."""
        async for chunk in self.chunks:
            if not chunk:
                continue
            self.seen += len(chunk)
            if self.seen > self.total_limit:
                raise _too_large(self.file_limit)
            self.buf += chunk
            return True
        return False

    async def find(self, needle: bytes, start: int, within: int, what: str) -> int:
        """Index of `needle` at or after `start`, reading more as needed, but no further
        than `within` bytes: a part header or preamble is never unbounded."""
        while True:
            i = self.buf.find(needle, start)
            if i >= 0:
                return i
            if len(self.buf) > start + within:
                raise _malformed(f"{what} is too long")
            if not await self.fill():
                raise _malformed(f"the body ended inside the {what}")

    async def read_until(self, delimiter: bytes, *, keep: bool, limit: int | None) -> bytes:
        """The bytes up to `delimiter` (consumed too). Kept only when `keep`; counted
        against `limit` either way."""
        out = bytearray()
        size = 0
        while True:
            i = self.buf.find(delimiter)
            # Everything but a possible partial delimiter at the end is part data.
            take = i if i >= 0 else max(0, len(self.buf) - len(delimiter) + 1)
            size += take
            if limit is not None and size > limit:
                raise _too_large(limit)
            if keep:
                out += self.buf[:take]
            del self.buf[: take + (len(delimiter) if i >= 0 else 0)]
            if i >= 0:
                return bytes(out)
            if not await self.fill():
                raise _malformed("the body ended before the closing boundary")


def _boundary(content_type: str) -> bytes:
    msg = email.message.Message()
    msg["content-type"] = content_type
    boundary = msg.get_param("boundary")
    if msg.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
        raise BadRequest(
            "send the image as multipart/form-data with a 'file' field", code="invalid_multipart"
        )
    if not 1 <= len(boundary) <= 200:
        raise _malformed("the boundary must be 1 to 200 characters")
    return boundary.encode("latin-1")


def _field_name(raw_headers: bytes) -> str | None:
    for line in raw_headers.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-disposition":
            msg = email.message.Message()
            msg["content-disposition"] = value.strip()
            param = msg.get_param("name", header="content-disposition")
            if param is None:
                return None
            return email.utils.collapse_rfc2231_value(param)
    return None


async def read_field(
    chunks: AsyncIterator[bytes], boundary: bytes, *, name: str, limit: int, total_limit: int
) -> bytes:
    """The content of the first multipart field called `name`. Reading stops there: the
    rest of the body is never pulled in."""
    body = _Body(chunks, total_limit, limit)
    dash_boundary = b"--" + boundary
    delimiter = b"\r\n" + dash_boundary
    start = await body.find(dash_boundary, 0, MAX_PREAMBLE, "preamble")
    del body.buf[: start + len(dash_boundary)]
    while True:
        while len(body.buf) < 2:
            if not await body.fill():
                raise _malformed("the body ended after a boundary")
        if body.buf.startswith(b"--"):
            raise BadRequest(f"the upload has no {name!r} field", code="missing_file")
        # The rest of the boundary line (only transport padding is allowed there), then
        # the part's headers up to the blank line.
        line_end = await body.find(b"\r\n", 0, 256, "boundary line")
        header_end = await body.find(b"\r\n\r\n", line_end, MAX_PART_HEADERS, "part headers")
        headers = bytes(body.buf[line_end + 2 : header_end])
        del body.buf[: header_end + 4]
        if _field_name(headers) == name:
            return await body.read_until(delimiter, keep=True, limit=limit)
        await body.read_until(delimiter, keep=False, limit=None)


async def upload(request: Request) -> Response:
    return JSONResponse(await receive_upload(request), status_code=201)


async def receive_upload(request: Request) -> dict[str, Any]:
    """Read one multipart `file`, check it is an image, store it: `{url, key, contentType,
    size}`. Every upload route comes through here."""
    services = request.app.state.services
    # Uploads are the first step of a creation: they count against the same limit.
    await services.create_limit.check(identify(services.settings, request).key)
    storage: ObjectStorage = services.storage
    limit: int = services.settings.max_upload
    boundary = _boundary(request.headers.get("content-type", ""))
    total_limit = limit + MULTIPART_OVERHEAD
    declared = ascii_int(request.headers.get("content-length", ""))
    if declared is not None and declared > total_limit:
        raise _too_large(limit)
    # A slow-loris guard that still lets big files through slow links: the body must
    # arrive at an average of MIN_UPLOAD_RATE, after the usual read deadline.
    deadline = services.settings.read_timeout + (declared or total_limit) / MIN_UPLOAD_RATE
    try:
        async with asyncio.timeout(deadline):
            data = await read_field(request.stream(), boundary, name=FIELD, limit=limit, total_limit=total_limit)
    except ClientDisconnect:
        raise BadRequest("the upload was interrupted before it finished", code="upload_interrupted") from None
    except TimeoutError:
        raise RequestTimeout(f"the upload did not arrive within {deadline:.0f} s") from None
    head = data[:SNIFF_BYTES]
    media = sniff(head)
    if media is None or media not in IMAGES:
        what = describe(head) if media is None else f"a {media.content_type} file"
        raise BadRequest(
            f"the file is {what}; upload a PNG, JPEG, WebP or GIF image",
            code="unsupported_media",
        )
    key = upload_key(media.ext)
    url = await storage.put(key, data, media.content_type)
    return {"url": url, "key": key, "contentType": media.content_type, "size": len(data)}


routes: list[Route] = [Route("/api/uploads", upload, methods=["POST"])]
