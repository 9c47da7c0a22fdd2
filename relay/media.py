"""What a file really is, from its first bytes. Headers and file names are whatever the
sender chose; the downloader and the upload endpoint trust only this.

SVG is deliberately absent: it is a script-capable document, and a stored SVG served from
our origin or bucket would be stored XSS.
"""

from __future__ import annotations

from dataclasses import dataclass

# Enough for every signature below, including WebM's DocType, which sits inside the
# EBML header a few dozen bytes in.
SNIFF_BYTES = 64


@dataclass(frozen=True, slots=True)
class MediaType:
    content_type: str
    ext: str
    kind: str  # "image", "video" or "audio"


PNG = MediaType("image/png", "png", "image")
JPEG = MediaType("image/jpeg", "jpg", "image")
WEBP = MediaType("image/webp", "webp", "image")
GIF = MediaType("image/gif", "gif", "image")
MP4 = MediaType("video/mp4", "mp4", "video")
WEBM = MediaType("video/webm", "webm", "video")
MP3 = MediaType("audio/mpeg", "mp3", "audio")
WAV = MediaType("audio/wav", "wav", "audio")
M4A = MediaType("audio/mp4", "m4a", "audio")
OGG = MediaType("audio/ogg", "ogg", "audio")

IMAGES = frozenset({PNG, JPEG, WEBP, GIF})
VIDEOS = frozenset({MP4, WEBM})
AUDIO = frozenset({MP3, WAV, M4A, OGG})
RESULTS = IMAGES | VIDEOS | AUDIO
# What a result of each kind may be: a video model that sends back a web page, or an
# image model that sends a video, is refused rather than stored under the wrong kind.
BY_KIND = {"image": IMAGES, "video": VIDEOS, "audio": AUDIO}

# Served content types by extension (the /files/ mount): only what we can have stored.
BY_EXT = {m.ext: m.content_type for m in RESULTS} | {"jpeg": "image/jpeg", "json": "application/json"}

# ISO-BMFF major brands of plain MP4 video. HEIC, AVIF and QuickTime share the `ftyp`
# box but are not what we promise to store.
_MP4_BRANDS = frozenset(
    {b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"dash", b"M4V ", b"mmp4", b"MSNV"}
)


def sniff(head: bytes) -> MediaType | None:
    """The media type of a file starting with `head` (pass at least SNIFF_BYTES when the
    file is that long), or None when it is none of the types we store."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if len(head) >= 12 and head[4:8] == b"ftyp" and head[8:12] in _MP4_BRANDS:
        return MP4
    if head.startswith(b"\x1a\x45\xdf\xa3") and b"webm" in head[:SNIFF_BYTES]:
        return WEBM
    if len(head) >= 12 and head[4:8] == b"ftyp" and head[8:12] == b"M4A ":
        return M4A
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return WAV
    if head.startswith(b"OggS"):
        return OGG
    # MP3: an ID3v2 tag, or straight into an MPEG audio frame (11 sync bits, layer III).
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE6 == 0xE2):
        return MP3
    return None


def describe(head: bytes) -> str:
    """A few words on what an unacceptable file looks like, for error messages."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"<svg" in text or (text.startswith(b"<?xml") and b"svg" in text):
        return "an SVG image (SVG is never stored: it can carry scripts)"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page"
    if text.startswith((b"{", b"[")):
        return "JSON"
    if text.startswith(b"<"):
        return "an XML/HTML document"
    if not head:
        return "empty"
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "plain text"
    return "an unrecognised binary format"
