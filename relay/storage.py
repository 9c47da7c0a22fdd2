"""The object-storage seam: result files, uploads and task metadata.

`file://path` (a local folder served by Relay under `/files/`) is the embedded default;
`s3://bucket/prefix` speaks the S3 API (AWS S3, Cloudflare R2, MinIO). Code above the seam
only ever sees `ObjectStorage`. With RELAY_STORAGE_FALLBACK_URL set, writes that the
primary cannot take go to the fallback instead, so a storage outage does not lose a result.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

from starlette.routing import Mount

from relay.backends.objects import SERVED_PREFIXES, ObjectStorage, check_key
from relay.errors import NotFound, ServiceUnavailable
from relay.settings import Settings

__all__ = ["SERVED_PREFIXES", "FallbackStorage", "ObjectStorage", "check_key", "files_mount", "open_storage"]

log = logging.getLogger("relay.storage")

class FallbackStorage:
    """Primary first; the fallback when the primary is unavailable.

    `put` returns the URL of whichever storage took the object, and `get` looks in both,
    so an object written during an outage stays reachable afterwards.
    """

    def __init__(self, primary: ObjectStorage, fallback: ObjectStorage):
        self.primary = primary
        self.fallback = fallback
        self.label = f"{primary.label} (fallback {fallback.label})"

    async def start(self) -> None:
        await self.primary.start()
        await self.fallback.start()

    async def aclose(self) -> None:
        try:
            await self.primary.aclose()
        finally:
            await self.fallback.aclose()

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        try:
            return await self.primary.put(key, data, content_type)
        except ServiceUnavailable as exc:
            log.warning("primary storage failed (%s); writing %s to the fallback", exc.message, key)
            return await self.fallback.put(key, data, content_type)

    async def get(self, key: str) -> bytes:
        try:
            return await self.primary.get(key)
        except NotFound:
            return await self.fallback.get(key)
        except ServiceUnavailable as exc:
            try:
                return await self.fallback.get(key)
            except NotFound:
                # Not in the fallback: it may well be in the primary, so say what is wrong.
                raise exc from None

    async def delete(self, key: str) -> None:
        errors: list[ServiceUnavailable] = []
        for storage in (self.primary, self.fallback):
            try:
                await storage.delete(key)
            except ServiceUnavailable as exc:
                errors.append(exc)
        if len(errors) == 2:
            raise errors[0]

    async def url(self, key: str) -> str:
        return await self.primary.url(key)

    async def ping(self) -> None:
        # Ready means "a result written now is kept": either side will do, but say so.
        try:
            await self.primary.ping()
        except ServiceUnavailable as exc:
            log.warning("primary storage unavailable (%s); the fallback takes writes", exc.message)
            await self.fallback.ping()


def _open_one(url: str, settings: Settings, *, public_url: str | None) -> ObjectStorage:
    parts = urlsplit(url)
    if parts.scheme == "file":
        from relay.backends.files import FileStorage

        base = public_url or f"{settings.public_url.rstrip('/')}/files"
        return FileStorage(file_path(url), base_url=base)
    if parts.scheme == "s3":
        from relay.backends.s3 import S3Storage

        if not parts.netloc:
            raise ValueError(f"storage URL {url!r} names no bucket: use s3://bucket/prefix")
        return S3Storage(
            bucket=parts.netloc,
            prefix=parts.path.strip("/"),
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            public_url=public_url,
        )
    raise ValueError(f"unsupported storage URL scheme {parts.scheme!r}: use file:// or s3://")


def open_storage(settings: Settings) -> ObjectStorage:
    """The storage RELAY_STORAGE_URL names, wrapped with the fallback when one is set.
    Call `await storage.start()` before use and `await storage.aclose()` at shutdown."""
    # RELAY_STORAGE_PUBLIC_URL describes the primary (an R2 public domain, a CDN in front
    # of it); the fallback serves its own URLs.
    primary = _open_one(settings.storage_url, settings, public_url=settings.storage_public_url)
    if not settings.storage_fallback_url:
        return primary
    fallback = _open_one(settings.storage_fallback_url, settings, public_url=None)
    return FallbackStorage(primary, fallback)


def file_path(url: str) -> Path:
    """The folder of a `file://` URL: `file://./data` is relative, `file:///srv/x` absolute."""
    return Path(url[len("file://") :] or ".")


def files_mount(settings: Settings) -> Mount | None:
    """`/files/` serving every local-folder storage that is configured (primary or
    fallback), or None when no storage is a local folder."""
    roots = [
        file_path(url)
        for url in (settings.storage_url, settings.storage_fallback_url)
        if url and urlsplit(url).scheme == "file"
    ]
    if not roots:
        return None
    from relay.backends.files import files_routes

    return Mount("/files", routes=files_routes(roots), name="files")
