"""Object storage over the S3 API (`s3://bucket/prefix`) through aiobotocore.

One client, opened in `start()` and closed in `aclose()`. The endpoint and region come from
settings, so AWS S3 (no endpoint), Cloudflare R2 (`https://<account>.r2.cloudflarestorage.com`,
region `auto`) and MinIO all work. Every key lives under the prefix.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any
from urllib.parse import quote

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from relay.backends.objects import check_key
from relay.errors import NotFound, ServiceUnavailable

log = logging.getLogger("relay.storage")

# SigV4's longest allowed validity. Result URLs are handed to browsers and stored on the
# task, so they should live as long as the signature scheme allows.
PRESIGN_SECONDS = 7 * 24 * 3600

_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
# Transport failures surface as botocore errors, but aiohttp's and the OS's can escape
# aiobotocore on some paths (a connection reset mid-body).
_TRANSPORT_ERRORS = (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError)


class S3Storage:
    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        public_url: str | None = None,
        max_attempts: int = 2,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
    ):
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.region = region
        self.public_url = public_url.rstrip("/") if public_url else None
        self.label = f"s3://{bucket}/{self.prefix}"
        self._credentials = (access_key_id, secret_access_key)
        # The mirror retries with its own backoff, so botocore's retries stay few: a dead
        # endpoint should fail fast enough for the fallback to take over.
        self._config = AioConfig(
            signature_version="s3v4",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            # Custom endpoints (MinIO, moto, most S3-compatibles) need path-style
            # addressing; AWS itself prefers virtual-hosted style.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    async def start(self) -> None:
        if self._client is not None:
            return
        stack = contextlib.AsyncExitStack()
        access_key_id, secret_access_key = self._credentials
        self._client = await stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                config=self._config,
            )
        )
        self._stack = stack

    async def aclose(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    @property
    def client(self) -> Any:
        if self._client is None:
            raise ServiceUnavailable(f"storage {self.label} is not started")
        return self._client

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        try:
            await self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
            )
        except ClientError as exc:
            raise self._error("write", key, exc) from exc
        except _TRANSPORT_ERRORS as exc:
            raise self._unreachable("write", key, exc) from exc
        return await self.url(key)

    async def get(self, key: str) -> bytes:
        try:
            response = await self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            async with response["Body"] as body:
                data: bytes = await body.read()
                return data
        except ClientError as exc:
            raise self._error("read", key, exc) from exc
        except _TRANSPORT_ERRORS as exc:
            raise self._unreachable("read", key, exc) from exc

    async def delete(self, key: str) -> None:
        try:
            await self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            error = self._error("delete", key, exc)
            if not isinstance(error, NotFound):
                raise error from exc
        except _TRANSPORT_ERRORS as exc:
            raise self._unreachable("delete", key, exc) from exc

    async def url(self, key: str) -> str:
        full = self._key(key)
        if self.public_url:
            return f"{self.public_url}/{quote(full)}"
        try:
            url: str = await self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": full}, ExpiresIn=PRESIGN_SECONDS
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._unreachable("sign a URL for", key, exc) from exc
        return url

    async def download_url(self, key: str, filename: str, *, current_url: str | None = None) -> str:
        # Always presigned, even with a public domain: only a signed request may ask S3 to
        # answer with Content-Disposition: attachment.
        params = {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "ResponseContentDisposition": f'attachment; filename="{filename}"',
        }
        try:
            url: str = await self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=PRESIGN_SECONDS)
        except (BotoCoreError, ClientError) as exc:
            raise self._unreachable("sign a download URL for", key, exc) from exc
        return url

    async def ping(self) -> None:
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "")) or "error"
            raise ServiceUnavailable(
                f"bucket {self.bucket!r} is not usable at {self.endpoint_url or 'AWS S3'}: {code}",
                code="storage_unavailable",
            ) from exc
        except _TRANSPORT_ERRORS as exc:
            raise self._unreachable("reach bucket", self.bucket, exc) from exc

    def _error(self, action: str, key: str, exc: ClientError) -> NotFound | ServiceUnavailable:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
            return NotFound(f"no stored object {key!r}")
        return ServiceUnavailable(
            f"storage {self.label} refused to {action} {key}: {code or 'error'}", code="storage_unavailable"
        )

    def _unreachable(self, action: str, key: str, exc: Exception) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"could not {action} {key} at {self.label}: {type(exc).__name__}: {exc}", code="storage_unavailable"
        )
