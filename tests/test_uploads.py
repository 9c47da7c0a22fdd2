"""POST /api/uploads through a small Starlette app made of the upload routes and /files/,
in-process (httpx's ASGI transport streams the request body chunk by chunk, so an endless
body really is endless) and over real HTTP on uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from starlette.applications import Starlette

from relay import uploads
from relay.app import relay_error
from relay.backends import open_storage
from relay.backends.memory import MemoryStore
from relay.backends.objects import ObjectStorage
from relay.errors import RelayError
from relay.files import files_mount
from relay.limits import RateLimit
from relay.settings import Settings
from relay.sim.png import gradient_png
from tests.s3server import LocalServer

pytestmark = pytest.mark.timeout(30)

LIMIT = 32 * 1024
PNG = gradient_png("upload", 24)
SAMPLES = {
    "png": (PNG, "image/png"),
    "jpg": (b"\xff\xd8\xff\xdb" + b"\x11" * 300, "image/jpeg"),
    "gif": (b"GIF89a" + b"\x01" * 100, "image/gif"),
    "webp": (b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x02" * 100, "image/webp"),
}


@dataclass
class UploadApp:
    app: Starlette
    settings: Settings
    root: Path

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url=self.settings.public_url, timeout=10
        )


async def build(tmp_path: Path, public_url: str = "http://relay.test") -> tuple[UploadApp, ObjectStorage]:
    settings = Settings(storage_url=f"file://{tmp_path / 'files'}", public_url=public_url, max_upload=LIMIT)
    storage = open_storage(settings)
    await storage.start()
    mount = files_mount(settings)
    assert mount is not None
    app = Starlette(routes=[*uploads.routes, mount], exception_handlers={RelayError: relay_error})
    app.state.services = SimpleNamespace(
        settings=settings, storage=storage, create_limit=RateLimit(MemoryStore(), "create", settings.rate_create)
    )
    return UploadApp(app, settings, tmp_path / "files"), storage


@pytest.fixture
async def upload_app(tmp_path: Path) -> AsyncIterator[UploadApp]:
    built, _ = await build(tmp_path)
    yield built


def stored_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("ext", sorted(SAMPLES))
async def test_images_are_stored_and_served(upload_app: UploadApp, ext: str) -> None:
    data, content_type = SAMPLES[ext]
    async with upload_app.client() as client:
        # Name and declared type are the sender's guess; the bytes decide.
        response = await client.post("/api/uploads", files={"file": ("whatever.bin", data, "text/plain")})
        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == {"url", "key", "contentType", "size"}
        assert body["key"].startswith("uploads/") and body["key"].endswith(f".{ext}")
        assert body["contentType"] == content_type and body["size"] == len(data)
        assert body["url"] == f"{upload_app.settings.public_url}/files/{body['key']}"
        served = await client.get(body["url"])
    assert served.status_code == 200 and served.content == data
    assert served.headers["content-type"] == content_type
    assert served.headers["x-content-type-options"] == "nosniff"
    assert stored_files(upload_app.root) == [body["key"]]


async def test_other_fields_around_the_file_are_skipped(upload_app: UploadApp) -> None:
    async with upload_app.client() as client:
        response = await client.post(
            "/api/uploads",
            data={"note": "x" * 5000, "other": "y"},
            files={"file": ("a.png", PNG, "image/png")},
        )
    assert response.status_code == 201 and response.json()["size"] == len(PNG)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"just some words\n", "the file is plain text; upload a PNG, JPEG, WebP or GIF image"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "SVG is never stored"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG is never stored"),
        (b"<!DOCTYPE html><html><script>alert(1)</script></html>", "an HTML page"),
        (b"\x00\x00\x00\x18ftypmp42" + b"\0" * 64, "a video/mp4 file"),  # a video: not a reference image
        (b"", "the file is empty"),
    ],
)
async def test_non_images_are_refused(upload_app: UploadApp, content: bytes, message: str) -> None:
    async with upload_app.client() as client:
        response = await client.post("/api/uploads", files={"file": ("image.png", content, "image/png")})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unsupported_media" and message in error["message"]
    assert stored_files(upload_app.root) == []


async def test_missing_field_and_wrong_encoding(upload_app: UploadApp) -> None:
    async with upload_app.client() as client:
        missing = await client.post("/api/uploads", files={"image": ("a.png", PNG, "image/png")})
        as_json = await client.post("/api/uploads", json={"file": "aGVsbG8="})
        truncated = await client.post(
            "/api/uploads",
            content=b'--XyZ\r\nContent-Disposition: form-data; name="file"\r\n\r\n' + PNG,
            headers={"content-type": "multipart/form-data; boundary=XyZ"},
        )
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "missing_file"
    assert "no 'file' field" in missing.json()["error"]["message"]
    assert as_json.status_code == 400 and "multipart/form-data" in as_json.json()["error"]["message"]
    assert truncated.status_code == 400 and truncated.json()["error"]["code"] == "invalid_multipart"
    assert stored_files(upload_app.root) == []


async def test_oversize_with_content_length(upload_app: UploadApp) -> None:
    async with upload_app.client() as client:
        # Far past the limit: refused from the header alone.
        huge = await client.post("/api/uploads", files={"file": ("a.png", PNG + b"\0" * (4 * LIMIT), "image/png")})
        # Just past the limit (within the multipart allowance): refused while streaming.
        just = await client.post("/api/uploads", files={"file": ("a.png", PNG + b"\0" * (LIMIT - len(PNG) + 1), "image/png")})
        exact = await client.post("/api/uploads", files={"file": ("a.png", PNG + b"\0" * (LIMIT - len(PNG)), "image/png")})
    for response in (huge, just):
        assert response.status_code == 413
        assert response.json()["error"] == {
            "code": "payload_too_large",
            "message": f"the file is larger than {LIMIT} bytes (RELAY_MAX_UPLOAD)",
        }
    assert exact.status_code == 201 and exact.json()["size"] == LIMIT
    assert len(stored_files(upload_app.root)) == 1


async def test_oversize_without_content_length_stops_reading(upload_app: UploadApp) -> None:
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        yield b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        yield PNG
        while True:  # never ends: only an early stop can answer this request
            pulled += 1
            yield b"\0" * 4096

    async with upload_app.client() as client:
        response = await client.post(
            "/api/uploads", content=endless(), headers={"content-type": "multipart/form-data; boundary=XyZ"}
        )
    assert response.status_code == 413
    assert "content-length" not in response.request.headers
    assert pulled * 4096 <= LIMIT + 8192  # stopped within a chunk or two of the limit
    assert stored_files(upload_app.root) == []


async def test_over_real_http(tmp_path: Path) -> None:
    server = LocalServer()
    built, storage = await build(tmp_path, public_url=server.url)
    await server.start(built.app)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(f"{server.url}/api/uploads", files={"file": ("a.png", PNG, "image/png")})
            assert response.status_code == 201, response.text
            url = response.json()["url"]
            assert url.startswith(f"{server.url}/files/uploads/")
            served = await client.get(url)
            assert served.content == PNG

            async def chunks() -> AsyncIterator[bytes]:
                yield b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + PNG
                for _ in range(4):  # 2x the limit, without a Content-Length
                    yield b"\0" * (LIMIT // 2)
                yield b"\r\n--XyZ--\r\n"

            too_big = await client.post(
                f"{server.url}/api/uploads", content=chunks(),
                headers={"content-type": "multipart/form-data; boundary=XyZ"},
            )
            assert too_big.status_code == 413
    finally:
        await server.stop()
        await storage.aclose()
