"""Object storage in a local folder (`file://path`), the embedded default, and the
`/files/` routes that serve it."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from urllib.parse import quote

from relay.backends.objects import check_key
from relay.errors import NotFound, ServiceUnavailable

# Served files are results and reference images: never let a browser reinterpret them
# (nosniff), run them (sandbox CSP), or keep a stale copy for too long.
SERVE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "public, max-age=3600",
}


class FileStorage:
    def __init__(self, root: Path, *, base_url: str):
        self.root = root
        self.base_url = base_url.rstrip("/")
        self.label = f"file://{root}"

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise ServiceUnavailable(f"cannot create storage folder {self.root}: {exc.strerror}", code="storage_unavailable") from exc

    async def aclose(self) -> None:
        return None

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        path = self._path(key)
        try:
            await asyncio.to_thread(_write_atomic, path, data)
        except OSError as exc:
            raise ServiceUnavailable(f"could not write {key} to {self.label}: {exc.strerror}", code="storage_unavailable") from exc
        return await self.url(key)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise NotFound(f"no stored object {key!r}") from None
        except OSError as exc:
            raise ServiceUnavailable(f"could not read {key} from {self.label}: {exc.strerror}", code="storage_unavailable") from exc

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            raise ServiceUnavailable(f"could not delete {key} from {self.label}: {exc.strerror}", code="storage_unavailable") from exc

    async def url(self, key: str) -> str:
        return f"{self.base_url}/{quote(check_key(key))}"

    async def download_url(self, key: str, filename: str, *, current_url: str | None = None) -> str:
        return f"{await self.url(key)}?download={quote(filename)}"

    async def ping(self) -> None:
        ok = await asyncio.to_thread(lambda: self.root.is_dir() and os.access(self.root, os.W_OK))
        if not ok:
            raise ServiceUnavailable(f"storage folder {self.root} is missing or not writable", code="storage_unavailable")


def _write_atomic(path: Path, data: bytes) -> None:
    # Write beside the target and rename over it: a reader (or a crash) never sees half a
    # file, and a retry of the same key simply replaces it. The temporary name has an
    # extension /files/ never serves.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
