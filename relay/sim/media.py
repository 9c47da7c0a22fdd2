"""The simulator's result files: a real file of the right kind for every task, so the
mirror's magic-byte checks and the demo's players see what they would from KIE."""

from __future__ import annotations

import hashlib
import math
import struct
from functools import cache
from pathlib import Path

from relay.sim.png import gradient_png

# A 2-second 160x90 H.264 clip (ffmpeg's testsrc2; 8 KB): browsers play it, and the
# mirror recognises it by its `ftyp isom` box like any MP4 from KIE's video models.
SAMPLE_MP4 = Path(__file__).parent / "assets" / "sample.mp4"

EXTENSIONS = {"image": "png", "video": "mp4", "audio": "wav"}
CONTENT_TYPES = {"png": "image/png", "mp4": "video/mp4", "wav": "audio/wav"}


@cache
def _mp4() -> bytes:
    return SAMPLE_MP4.read_bytes()


def wav(seed_text: str, seconds: float = 2.0, rate: int = 8000) -> bytes:
    """A short 8-bit mono tone whose pitch comes from a hash of `seed_text`: a real WAV
    that an <audio> element plays (KIE's Suno links are MP3; the simulator has no MP3
    encoder, and WAV is a format Relay stores too)."""
    pitch = 220 + hashlib.sha256(seed_text.encode()).digest()[0] * 2
    count = int(seconds * rate)
    fade = rate // 20
    samples = bytes(
        128 + int(90 * min(1.0, n / fade, (count - n) / fade) * math.sin(2 * math.pi * pitch * n / rate))
        for n in range(count)
    )
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate, 1, 8)
    return (
        b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"data" + struct.pack("<I", len(samples)) + samples
    )


def result_file(kind: str, seed_text: str) -> tuple[bytes, str]:
    """The bytes and content type of one result of `kind`."""
    if kind == "video":
        return _mp4(), "video/mp4"
    if kind == "audio":
        return wav(seed_text), "audio/wav"
    return gradient_png(seed_text), "image/png"
