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


# Writes waiting when a batch starts that go to the thread with it; bounds one hop's work.
MAX_BATCH = 64


class FileStorage:
    def __init__(self, root: Path, *, base_url: str):
        self.root = root
        self.base_url = base_url.rstrip("/")
        self.label = f"file://{root}"
        # Concurrent puts share one trip to a worker thread: a burst of completions writes
        # hundreds of small metadata files, and a thread hop each (a pool hand-off and a
        # wake-up of the event loop per file) cost the streams about 2 ms of every
        # completed event's latency. The writer runs while puts are waiting; aclose waits
        # for it, so nothing accepted is left unwritten.
        self._waiting: list[tuple[Path, bytes, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise ServiceUnavailable(f"cannot create storage folder {self.root}: {exc.strerror}", code="storage_unavailable") from exc

    async def aclose(self) -> None:
        if self._writer is not None:
            await asyncio.wait([self._writer])  # the files accepted so far are written

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        path = self._path(key)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((path, data, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting(), name="file-storage-writer")
        try:
            await done
        except OSError as exc:
            raise ServiceUnavailable(f"could not write {key} to {self.label}: {exc.strerror}", code="storage_unavailable") from exc
        return await self.url(key)

    async def _write_waiting(self) -> None:
        batch: list[tuple[Path, bytes, asyncio.Future[None]]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                errors = await asyncio.to_thread(_write_all, [(path, data) for path, data, _ in batch])
                for (_, _, done), error in zip(batch, errors, strict=True):
                    if done.done():  # its caller was cancelled; the file is written anyway
                        continue
                    if error is None:
                        done.set_result(None)
                    else:
                        done.set_exception(error)
                batch = []
        finally:
            # Only non-empty when the writer was cancelled or its thread pool is gone (the
            # loop is closing): nobody may wait forever.
            for _, _, done in batch + self._waiting:
                if not done.done():
                    done.set_exception(OSError(0, "the storage writer stopped"))
            self._waiting = []

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


def _write_all(files: list[tuple[Path, bytes]]) -> list[OSError | None]:
    errors: list[OSError | None] = []
    for path, data in files:
        try:
            _write_atomic(path, data)
            errors.append(None)
        except OSError as exc:
            errors.append(exc)
    return errors


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
