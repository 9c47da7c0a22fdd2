"""An incremental `text/event-stream` parser, as the WHATWG HTML standard (§9.2.6) defines it.

- lines end with CRLF, LF or a lone CR, and a CRLF may be split across two reads;
- a leading UTF-8 byte order mark is dropped once;
- `:` starts a comment; `field: value` loses one leading space; a line without a colon is a
  field with an empty value;
- `data` lines accumulate, joined by LF; a blank line dispatches the event (none if no data
  line came); `event` names it (default `message`);
- `id` sets the last event id (ignored when it contains NUL) and persists across events;
  `retry` is honoured only when it is all ASCII digits; unknown fields are ignored;
- an event cut off by the end of the stream is discarded.

It works on bytes: line terminators are ASCII, so a multi-byte UTF-8 character can never be
split by the line splitter, and a value is decoded only when someone asks for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"
MAX_LINE = 1024 * 1024


class SSEError(Exception):
    """The stream broke a limit (a line longer than MAX_LINE)."""


@dataclass(frozen=True, slots=True)
class Event:
    event: str
    data: bytes  # UTF-8; data lines joined with LF, no trailing LF
    id: str | None  # the last event id in force when this event was dispatched

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


class SSEParser:
    __slots__ = (
        "_buf",
        "_data",
        "_event",
        "_skip_lf",
        "_started",
        "comments",
        "last_id",
        "retry",
    )

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] | None = None
        self._event: bytes = b""
        self._skip_lf = False
        self._started = False
        self.last_id: str | None = None
        self.retry: int | None = None
        self.comments = 0

    def feed(self, chunk: bytes) -> list[Event]:
        """Parse `chunk`; return the events it completed, in order."""
        buf = self._buf + chunk if self._buf else chunk
        if not self._started:
            if len(buf) < 3 and _BOM.startswith(buf):
                self._buf = buf
                return []
            self._started = True
            if buf.startswith(_BOM):
                buf = buf[3:]
        if self._skip_lf and buf:
            if buf[0] == 0x0A:
                buf = buf[1:]
            self._skip_lf = False
        events: list[Event] = []
        pos = 0
        end = len(buf)
        search = _EOL.search
        while True:
            m = search(buf, pos)
            if m is None:
                break
            start, stop = m.span()
            if stop == end and buf[start] == 0x0D and stop - start == 1:
                # A CR at the very end: it ends the line, but an LF may follow in the next read.
                self._skip_lf = True
            event = self._line(buf[pos:start])
            if event is not None:
                events.append(event)
            pos = stop
        rest = buf[pos:]
        if len(rest) > MAX_LINE:
            raise SSEError(f"an SSE line is longer than {MAX_LINE} bytes")
        self._buf = rest
        return events

    def _line(self, line: bytes) -> Event | None:
        if not line:
            return self._dispatch()
        if line[0] == 0x3A:  # ':'
            self.comments += 1
            return None
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            if self._data is None:
                self._data = [value]
            else:
                self._data.append(value)
        elif name == b"event":
            self._event = value
        elif name == b"id":
            if b"\x00" not in value:
                self.last_id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value.isdigit():
                self.retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        data, event = self._data, self._event
        self._data = None
        self._event = b""
        if data is None:
            return None
        name = event.decode("utf-8", "replace") if event else "message"
        return Event(name, b"\n".join(data), self.last_id)
