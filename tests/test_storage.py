"""Object storage against real parts: a local folder served by Relay's /files/ routes on
uvicorn, and a real S3 API server (moto_server on loopback) through aiobotocore."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.applications import Starlette

from relay.app import relay_error
from relay.backends import open_storage
from relay.backends.fallback import FallbackStorage
from relay.backends.files import FileStorage
from relay.backends.objects import ObjectStorage, check_key
from relay.backends.s3 import S3Storage
from relay.errors import BadRequest, NotFound, RelayError, ServiceUnavailable
from relay.files import files_mount
from relay.settings import Settings
from relay.sim.png import gradient_png
from tests.s3server import ACCESS_KEY, REGION, SECRET_KEY, LocalServer, MotoServer, moto_server

pytestmark = pytest.mark.timeout(60)

PNG = gradient_png("storage test", 32)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


def s3_settings(server: MotoServer, bucket: str, prefix: str = "relay", **extra: object) -> Settings:
    values: dict[str, object] = {
        "storage_url": f"s3://{bucket}/{prefix}",
        "s3_endpoint_url": server.url,
        "s3_region": REGION,
        "s3_access_key_id": ACCESS_KEY,
        "s3_secret_access_key": SECRET_KEY,
        **extra,
    }
    return Settings(**values)  # type: ignore[arg-type]


def files_app(settings: Settings) -> Starlette:
    mount = files_mount(settings)
    assert mount is not None
    return Starlette(routes=[mount], exception_handlers={RelayError: relay_error})


@dataclass
class Opened:
    storage: ObjectStorage
    kind: str


@pytest.fixture(params=["file", "s3"])
async def opened(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opened]:
    """Each backend as `open_storage` builds it from settings, with whatever serves its URLs."""
    server: LocalServer | None = None
    if request.param == "file":
        server = LocalServer()
        settings = Settings(storage_url=f"file://{tmp_path / 'files'}", public_url=server.url)
        await server.start(files_app(settings))
    else:
        moto: MotoServer = request.getfixturevalue("moto")
        settings = s3_settings(moto, await moto.create_bucket())
    storage = open_storage(settings)
    await storage.start()
    try:
        yield Opened(storage, request.param)
    finally:
        await storage.aclose()
        if server is not None:
            await server.stop()


async def test_put_get_overwrite_delete(opened: Opened) -> None:
    storage = opened.storage
    key = "generated/task-1/0.png"
    await storage.put(key, b"first", "image/png")
    assert await storage.get(key) == b"first"
    # A second write to the same key replaces the object: retries never duplicate.
    await storage.put(key, PNG, "image/png")
    assert await storage.get(key) == PNG
    await storage.delete(key)
    with pytest.raises(NotFound):
        await storage.get(key)
    await storage.delete(key)  # already gone: not an error
    await storage.ping()


async def test_url_serves_the_bytes(opened: Opened) -> None:
    storage = opened.storage
    url = await storage.put("generated/task-2/0.png", PNG, "image/png")
    if opened.kind == "file":
        assert url == await storage.url("generated/task-2/0.png")
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    if opened.kind == "s3":
        assert "X-Amz-Signature=" in url  # presigned: the bucket itself stays private
    else:
        assert urlsplit(url).path == "/files/generated/task-2/0.png"
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_s3_keys_live_under_the_prefix_and_public_url(moto: MotoServer) -> None:
    bucket = await moto.create_bucket()
    # An R2 public domain or CDN maps the bucket root; moto serves anonymous GETs there.
    public = f"{moto.url}/{bucket}"
    storage = open_storage(s3_settings(moto, bucket, prefix="/env/prod/", storage_public_url=public))
    assert isinstance(storage, S3Storage)
    await storage.start()
    try:
        url = await storage.put("uploads/abc.png", PNG, "image/png")
        assert url == f"{public}/env/prod/uploads/abc.png"
        assert await moto.keys(bucket) == ["env/prod/uploads/abc.png"]
        # What a public bucket (R2 public access, a CDN origin policy) grants.
        async with moto.client() as client:
            await client.put_object_acl(Bucket=bucket, Key="env/prod/uploads/abc.png", ACL="public-read")
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(url)
        assert response.status_code == 200 and response.content == PNG
    finally:
        await storage.aclose()


async def test_file_public_url_setting(tmp_path: Path) -> None:
    settings = Settings(storage_url=f"file://{tmp_path}", storage_public_url="https://cdn.example.com/relay")
    storage = open_storage(settings)
    assert isinstance(storage, FileStorage)
    await storage.start()
    assert await storage.put("uploads/x.png", PNG, "image/png") == "https://cdn.example.com/relay/uploads/x.png"
    assert (tmp_path / "uploads" / "x.png").read_bytes() == PNG
    # No temporary files are left beside the object.
    assert [p.name for p in (tmp_path / "uploads").iterdir()] == ["x.png"]


async def test_s3_unreachable_and_missing_bucket(tmp_path: Path) -> None:
    server = MotoServer(tmp_path / "moto.log").start()
    try:
        storage = open_storage(s3_settings(server, "no-such-bucket"))
        await storage.start()
        with pytest.raises(ServiceUnavailable, match="no-such-bucket"):
            await storage.ping()
        server.stop()
        with pytest.raises(ServiceUnavailable, match="could not write"):
            await storage.put("uploads/a.png", PNG, "image/png")
        await storage.aclose()
    finally:
        server.stop()


async def test_fallback_takes_over_when_the_primary_is_stopped(tmp_path: Path) -> None:
    server = MotoServer(tmp_path / "moto.log").start()
    local = LocalServer()
    try:
        bucket = await server.create_bucket()
        settings = s3_settings(
            server, bucket, storage_fallback_url=f"file://{tmp_path / 'fallback'}", public_url=local.url
        )
        await local.start(files_app(settings))
        storage = open_storage(settings)
        assert isinstance(storage, FallbackStorage)
        await storage.start()
        try:
            first = await storage.put("generated/t/0.png", PNG, "image/png")
            assert first.startswith(server.url)  # the primary took it
            assert await server.keys(bucket) == ["relay/generated/t/0.png"]

            server.stop()
            url = await storage.put("generated/t/1.png", PNG, "image/png")
            assert url == f"{local.url}/files/generated/t/1.png"
            assert await storage.get("generated/t/1.png") == PNG
            await storage.ping()  # the fallback still takes writes
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.get(url)
            assert response.status_code == 200 and response.content == PNG
            # An object that only the stopped primary holds: the primary's error, not a 404.
            with pytest.raises(ServiceUnavailable):
                await storage.get("generated/t/0.png")
        finally:
            await storage.aclose()
    finally:
        server.stop()
        await local.stop()


async def test_files_mount_serves_only_results_and_uploads(tmp_path: Path) -> None:
    local = LocalServer()
    settings = Settings(storage_url=f"file://{tmp_path}", public_url=local.url)
    await local.start(files_app(settings))
    storage = open_storage(settings)
    await storage.start()
    try:
        await storage.put("generated/t/0.png", PNG, "image/png")
        await storage.put("kie-tasks/t.json", b'{"prompt": "private"}', "application/json")
        (tmp_path / "secret.txt").write_text("nope")
        (tmp_path / "uploads").mkdir()
        (tmp_path / "uploads" / "page.html").write_text("<script>alert(1)</script>")
        async with httpx.AsyncClient(base_url=local.url, timeout=10) as client:
            ok = await client.get("/files/generated/t/0.png")
            assert ok.status_code == 200 and ok.content == PNG
            assert ok.headers["content-type"] == "image/png"
            assert ok.headers["x-content-type-options"] == "nosniff"
            assert "sandbox" in ok.headers["content-security-policy"]
            head = await client.head("/files/generated/t/0.png")
            assert head.status_code == 200 and head.headers["content-length"] == str(len(PNG))
            for path in (
                "/files/kie-tasks/t.json",  # task metadata is not public by key
                "/files/secret.txt",
                "/files/uploads/page.html",  # never served, whatever is on disk
                "/files/generated/../secret.txt",
                "/files/generated/%2e%2e/secret.txt",
                "/files/generated/t/9.png",
            ):
                response = await client.get(path)
                assert response.status_code == 404, path
                assert response.json()["error"]["code"] == "not_found"
    finally:
        await storage.aclose()
        await local.stop()


def test_open_storage_and_mount_by_scheme(tmp_path: Path) -> None:
    assert isinstance(open_storage(Settings(storage_url=f"file://{tmp_path}")), FileStorage)
    s3 = open_storage(Settings(storage_url="s3://bucket/a/b", s3_endpoint_url="http://127.0.0.1:1"))
    assert isinstance(s3, S3Storage) and s3.prefix == "a/b/" and s3.bucket == "bucket"
    assert files_mount(Settings(storage_url="s3://bucket")) is None
    assert files_mount(Settings(storage_url="s3://bucket", storage_fallback_url=f"file://{tmp_path}")) is not None
    with pytest.raises(ValueError, match="no bucket"):
        open_storage(Settings(storage_url="s3:///prefix"))


@pytest.mark.parametrize("key", ["../x.png", "/abs.png", "a//b.png", "a/../b.png", "a/.hidden", "", "a b.png"])
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(BadRequest):
        check_key(key)


async def test_download_links_ask_for_a_save_as(opened: Opened) -> None:
    """The legacy download route's link: the same bytes, as an attachment with our name."""
    url = await opened.storage.put("generated/dl-task/0.png", PNG, "image/png")
    link = await opened.storage.download_url("generated/dl-task/0.png", "a-red-fox-dl-task-1.png", current_url=url)
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(link)
        plain = await client.get(url)
    assert answer.status_code == 200 and answer.content == PNG
    assert answer.headers["content-disposition"] == 'attachment; filename="a-red-fox-dl-task-1.png"'
    assert "content-disposition" not in plain.headers, "the ordinary URL still shows the picture inline"


async def test_concurrent_file_writes_share_thread_hops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A burst of puts (completions writing their metadata) goes to the worker thread in
    # batches; each put still gets its own outcome, and a cancelled caller's file lands.
    from relay.backends import files

    hops: list[int] = []
    write_all = files._write_all

    def counting(batch: list[tuple[Path, bytes]]) -> list[OSError | None]:
        hops.append(len(batch))
        return write_all(batch)

    monkeypatch.setattr(files, "_write_all", counting)
    storage = FileStorage(tmp_path / "files", base_url="http://relay.test/files")
    await storage.start()
    await storage.put("generated/blocker", b"a file where a folder is needed", "text/plain")
    hops.clear()
    keys = [f"generated/burst-{i:03d}/meta.json" for i in range(150)]
    bad = "generated/blocker/meta.json"
    puts = [asyncio.ensure_future(storage.put(k, k.encode(), "application/json")) for k in [*keys, bad]]
    cancelled = asyncio.ensure_future(storage.put("generated/cancelled/meta.json", b"still written", "application/json"))
    await asyncio.sleep(0)  # queued behind the writer
    cancelled.cancel()
    outcomes = await asyncio.gather(*puts, return_exceptions=True)
    await storage.aclose()

    assert [o for o in outcomes[:-1] if not isinstance(o, str)] == []
    assert isinstance(outcomes[-1], ServiceUnavailable) and outcomes[-1].code == "storage_unavailable"
    for k in keys:
        assert (tmp_path / "files" / k).read_bytes() == k.encode()
    assert (tmp_path / "files/generated/cancelled/meta.json").read_bytes() == b"still written"
    assert sum(hops) == len(keys) + 2
    assert max(hops) <= files.MAX_BATCH and len(hops) <= 4, hops
