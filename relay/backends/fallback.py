"""A primary object storage with a fallback: writes the primary cannot take go to the
fallback, reads look in both, so a storage outage does not lose a result."""

from __future__ import annotations

import logging

from relay.backends.objects import ObjectStorage
from relay.errors import NotFound, ServiceUnavailable

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

    async def download_url(self, key: str, filename: str, *, current_url: str | None = None) -> str:
        # The object lives where its stored URL points: the fallback took it if that URL
        # is the fallback's.
        if current_url is not None and _bare(current_url) == _bare(await self.fallback.url(key)):
            return await self.fallback.download_url(key, filename)
        return await self.primary.download_url(key, filename)

    async def ping(self) -> None:
        # Ready means "a result written now is kept": either side will do, but say so.
        try:
            await self.primary.ping()
        except ServiceUnavailable as exc:
            log.warning("primary storage unavailable (%s); the fallback takes writes", exc.message)
            await self.fallback.ping()


def _bare(url: str) -> str:
    return url.split("?", 1)[0]
