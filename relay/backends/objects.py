"""What every object storage backend shares: the seam's Protocol and the key rules.

Low in the house on purpose: the backends (files.py, s3.py) and the factory above them
(relay/backends/factory.py) all import from here, and nothing here imports them.
"""

from __future__ import annotations

import re
from typing import Protocol

from relay.errors import BadRequest
from relay.storage_keys import GENERATED, UPLOADS

# Keys are built by Relay from task ids and random tokens, never taken from a client; the
# pattern still stops a bug from writing outside the folder or prefix.
_KEY_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")

# Only these top-level folders are readable through /files/. Task metadata (kie-tasks/)
# carries prompts, and task reads need a token, so it is not handed out by key.
SERVED_PREFIXES = (GENERATED, UPLOADS)


# What a download may be called: the legacy front ends' "save as" name.
DOWNLOAD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")


def check_key(key: str) -> str:
    if len(key) > 512 or not _KEY_RE.fullmatch(key) or ".." in key:
        raise BadRequest(f"invalid storage key {key[:80]!r}", code="invalid_key")
    return key


class ObjectStorage(Protocol):
    """A flat key space of small immutable-ish objects. Writes to one key replace it
    whole (never a half-written object), so deterministic keys make retries safe."""

    label: str  # where it points, without secrets: for logs and readiness

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        """Store `data` under `key` and return the URL it can be fetched from."""
        ...

    async def get(self, key: str) -> bytes:
        """The object's bytes; `NotFound` when there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; no error when it is already gone."""
        ...

    async def url(self, key: str) -> str:
        """A URL that serves the object: RELAY_STORAGE_PUBLIC_URL-based when set, else a
        presigned GET (S3) or `{RELAY_PUBLIC_URL}/files/{key}` (local folder)."""
        ...

    async def download_url(self, key: str, filename: str, *, current_url: str | None = None) -> str:
        """A URL that downloads the object as an attachment named `filename` (a presigned
        GET that sets Content-Disposition, or `/files/{key}?download=`). `current_url` is
        where the object is known to be served now, when a wrapper must pick a side."""
        ...

    async def ping(self) -> None:
        """Raise `ServiceUnavailable` when the storage cannot be written to now."""
        ...
