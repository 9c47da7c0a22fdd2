"""HTTP/1.1 response framing, incremental and allocation-light: the status line and headers,
then a body that is chunked, sized by Content-Length, or delimited by the connection closing
(nchan's EventSource responses carry neither a length nor chunked encoding).

Pure code: no I/O. Used by the SSE streams and by the request client.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_HEAD = 64 * 1024
MAX_CHUNK_LINE = 4096


class WireError(Exception):
    """The peer sent something that is not HTTP/1.1 as we know it."""


@dataclass(frozen=True, slots=True)
class Head:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        if value is None or not value.strip().isdigit():
            return None
        return int(value)

    @property
    def keep_alive(self) -> bool:
        return "close" not in self.headers.get("connection", "").lower()


def parse_head(raw: bytes) -> Head:
    """`raw` is everything before the blank line that ends the head."""
    lines = raw.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise WireError(f"bad status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise WireError(f"bad header line {line[:80]!r}")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return Head(int(parts[1]), headers)


class HeadReader:
    """Collects bytes until the end of the head; `feed` returns (head, rest) once complete."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> tuple[Head, bytes] | None:
        buf = self._buf + data if self._buf else data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise WireError("response head is larger than 64 KiB")
            self._buf = buf
            return None
        self._buf = b""
        return parse_head(buf[:end]), buf[end + 4 :]


_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedDecoder:
    """Incremental `Transfer-Encoding: chunked` decoder; `done` after the last chunk."""

    __slots__ = ("_buf", "_remaining", "_state")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._state = _SIZE
        self._remaining = 0

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> bytes:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while True:
            state = self._state
            if state == _DATA:
                if not buf:
                    break
                take = min(self._remaining, len(buf))
                out.append(bytes(buf[:take]))
                del buf[:take]
                self._remaining -= take
                if self._remaining:
                    break
                self._state = _DATA_END
            elif state == _SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_CHUNK_LINE:
                        raise WireError("chunk size line too long")
                    break
                text = bytes(buf[:end]).split(b";", 1)[0].strip()
                del buf[: end + 2]
                try:
                    size = int(text, 16)
                except ValueError:
                    raise WireError(f"bad chunk size {text[:20]!r}") from None
                if size == 0:
                    self._state = _TRAILER
                else:
                    self._remaining = size
                    self._state = _DATA
            elif state == _DATA_END:
                if len(buf) < 2:
                    break
                if buf[:2] != b"\r\n":
                    raise WireError("chunk data not followed by CRLF")
                del buf[:2]
                self._state = _SIZE
            elif state == _TRAILER:
                end = buf.find(b"\r\n")
                if end < 0:
                    break
                line_empty = end == 0
                del buf[: end + 2]
                if line_empty:
                    self._state = _DONE
            else:  # _DONE: anything after the last chunk is ignored
                buf.clear()
                break
        return b"".join(out) if len(out) != 1 else out[0]


class BodyReader:
    """The body of one response, by whichever framing its head announces."""

    __slots__ = ("_chunked", "_left", "done")

    def __init__(self, head: Head, *, no_body: bool = False) -> None:
        self._chunked: ChunkedDecoder | None = None
        self._left: int | None = None  # None: until the connection closes
        self.done = False
        if no_body or head.status in (204, 304) or 100 <= head.status < 200:
            self.done = True
        elif head.chunked:
            self._chunked = ChunkedDecoder()
        elif head.content_length is not None:
            self._left = head.content_length
            self.done = self._left == 0

    @property
    def until_close(self) -> bool:
        return self._chunked is None and self._left is None and not self.done

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return b""
        if self._chunked is not None:
            out = self._chunked.feed(data)
            self.done = self._chunked.done
            return out
        if self._left is not None:
            out = data[: self._left]
            self._left -= len(out)
            self.done = self._left == 0
            return out
        return data
