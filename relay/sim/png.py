"""A tiny PNG encoder (zlib + struct only) for the KIE simulator's result images.

Pillow would be a heavy dependency for one gradient; a truecolour PNG is a signature plus three
chunks, so it is written by hand here.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterable

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_RGB = 2  # IHDR colour type: truecolour, no alpha
_FILTER_NONE = b"\x00"


def _chunk(kind: bytes, data: bytes) -> bytes:
    # The CRC covers the chunk type and data but not the length.
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(width: int, height: int, rows: Iterable[bytes]) -> bytes:
    """Encode 8-bit RGB rows (each exactly `width * 3` bytes, top to bottom) as a PNG file."""
    if width <= 0 or height <= 0:
        raise ValueError("width and height must be positive")
    raw = bytearray()
    count = 0
    for row in rows:
        if len(row) != width * 3:
            raise ValueError(f"row {count} has {len(row)} bytes, expected {width * 3}")
        raw += _FILTER_NONE
        raw += row
        count += 1
    if count != height:
        raise ValueError(f"got {count} rows, expected {height}")
    ihdr = struct.pack(">IIBBBBB", width, height, 8, _RGB, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(bytes(raw), 6))
        + _chunk(b"IEND", b"")
    )


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> bytes:
    return bytes(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))


def gradient_png(seed_text: str, size: int = 256) -> bytes:
    """A `size` x `size` diagonal gradient whose colours come from a hash of `seed_text`.

    Different prompts therefore give visibly different pictures, and the same prompt always gives
    the same bytes (handy when a test compares a mirrored copy with the original).
    """
    digest = hashlib.sha256(seed_text.encode()).digest()
    start = (digest[0], digest[1], digest[2])
    end = (digest[3], digest[4], digest[5])
    # Along a diagonal every pixel has the same colour, so row y is just a window into one strip
    # of 2*size-1 colours: O(size) slicing instead of a Python loop per pixel.
    span = 2 * size - 2 or 1
    strip = b"".join(_mix(start, end, d / span) for d in range(2 * size - 1))
    rows = (strip[y * 3 : (y + size) * 3] for y in range(size))
    return encode_png(size, size, rows)


def png_dimensions(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (raises ValueError if `data` is not a PNG)."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)
