"""Mirroring with real parts: MemoryStore/MemoryHub + Ingestor, a result origin on uvicorn
(allowed as http://127.0.0.1:PORT), the real downloader, and storage that is either a
local folder or a real S3 API server (moto_server) that a test can stop and restart."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from relay.backends.files import FileStorage
from relay.backends.memory import MemoryHub, MemoryStore
from relay.backends.objects import ObjectStorage
from relay.backends.s3 import S3Storage
from relay.background import Supervisor
from relay.downloader import Downloader
from relay.ingest import Ingestor
from relay.mirror import METADATA_WRITERS, Mirror
from relay.models import Mode, ProviderReport, ProviderState, Status, Task, utcnow
from relay.settings import Settings
from relay.sim.png import gradient_png
from relay.storage_keys import metadata_key, result_key
from tests.s3server import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    LocalServer,
    MotoServer,
    eventually,
    moto_server,
)

pytestmark = pytest.mark.timeout(60)

IMAGE = gradient_png("mirror", 40)
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4


@dataclass
class Origin:
    """The provider's file server, counting requests per path."""

    server: LocalServer
    hits: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"{self.server.url}{path}"


def origin_app(hits: dict[str, int]) -> Starlette:
    async def serve(request: Request) -> Response:
        path = request.url.path
        hits[path] = hits.get(path, 0) + 1
        if path == "/a.png":
            return Response(IMAGE, media_type="image/png")
        if path == "/b.jpg":
            return Response(JPEG, media_type="image/jpeg")
        if path == "/page.png":
            return Response(b"<!doctype html><title>oops</title>", media_type="image/png")
        if path == "/x.svg":
            return Response(b"<svg xmlns='http://www.w3.org/2000/svg'/>", media_type="image/svg+xml")
        if path == "/flaky.png":
            if hits[path] == 1:
                return Response(b"try later", status_code=503)
            return Response(IMAGE, media_type="image/png")
        if path == "/to-loopback.png":
            return RedirectResponse("http://127.0.0.2:9/a.png")
        if path == "/endless.png":
            async def forever() -> AsyncIterator[bytes]:
                yield IMAGE[:64]
                while True:
                    yield b"\0" * 16384
                    await asyncio.sleep(0)

            return StreamingResponse(forever(), media_type="image/png")
        return Response(b"expired", status_code=404)

    return Starlette(routes=[Route("/{name:path}", serve)])


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    hits: dict[str, int] = {}
    server = await LocalServer().start(origin_app(hits))
    try:
        yield Origin(server, hits)
    finally:
        await server.stop()


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@dataclass
class Rig:
    store: MemoryStore
    ingestor: Ingestor
    mirror: Mirror
    storage: ObjectStorage
    supervisor: Supervisor
    downloader: Downloader

    async def task(self, task_id: str) -> Task:
        task = await self.store.get(task_id)
        assert task is not None
        return task

    async def wait_for(self, task_id: str, what: str, predicate: object) -> Task:
        async def check() -> Task | None:
            task = await self.store.get(task_id)
            return task if task is not None and predicate(task) else None  # type: ignore[operator]

        return await eventually(check, 20, f"{task_id}: {what}")

    async def metadata(self, task_id: str) -> dict[str, object]:
        async def check() -> dict[str, object] | None:
            try:
                data: dict[str, object] = orjson.loads(await self.storage.get(metadata_key(task_id)))
            except Exception:
                return None
            task = await self.store.get(task_id)
            # The newest terminal version, once its writer has caught up.
            return data if task is not None and data["version"] == task.version else None

        return await eventually(check, 20, f"metadata of {task_id}")


async def _async(value: bool) -> bool:
    return value


def new_task(task_id: str) -> Task:
    now = utcnow()
    return Task(
        task_id=task_id, provider="kie", model="google/nano-banana", mode=Mode.TEXT_TO_IMAGE,
        status=Status.PENDING, prompt="a red fox", image_urls=(), created_at=now, updated_at=now,
    )


@contextlib.asynccontextmanager
async def make_rig(
    storage: ObjectStorage, origin: Origin, *, mirror: bool = True, attempts: int = 2, attach: bool = True
) -> AsyncIterator[Rig]:
    settings = Settings(
        result_hosts=(f"http://127.0.0.1:{origin.server.port}",), max_download=256 * 1024, mirror=mirror
    )
    hub = MemoryHub()
    store = MemoryStore(hub)
    ingestor = Ingestor(store, mirroring=mirror)
    supervisor = Supervisor()
    downloader = Downloader(settings)
    mirror_ = Mirror(
        storage=storage, downloader=downloader, ingestor=ingestor, supervisor=supervisor, coordination=store,
        enabled=mirror,
        attempts=attempts, backoff=0.05, max_backoff=0.2,
    )
    if attach:
        ingestor.listeners.append(mirror_.on_change)
    try:
        yield Rig(store, ingestor, mirror_, storage, supervisor, downloader)
    finally:
        await supervisor.aclose()
        await downloader.aclose()


async def succeed(rig: Rig, task_id: str, *urls: str) -> None:
    """What a provider success callback does: create, then report success."""
    if await rig.store.get(task_id) is None:
        assert await rig.ingestor.create(new_task(task_id))
    await rig.ingestor.report(ProviderReport(task_id, ProviderState.SUCCEEDED, "jobs", result_urls=urls))


@pytest.fixture
async def files(tmp_path: Path) -> AsyncIterator[FileStorage]:
    storage = FileStorage(tmp_path / "files", base_url="http://relay.test/files")
    await storage.start()
    yield storage
    await storage.aclose()


async def s3_storage(server: MotoServer, bucket: str) -> S3Storage:
    storage = S3Storage(
        bucket=bucket, prefix="relay", endpoint_url=server.url, region=REGION,
        access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY, max_attempts=1,
    )
    await storage.start()
    return storage


async def test_success_mirrors_to_s3_and_completes_with_our_urls(moto: MotoServer, origin: Origin) -> None:
    bucket = await moto.create_bucket()
    storage = await s3_storage(moto, bucket)
    try:
        async with make_rig(storage, origin) as rig:
            provider_urls = (origin.url("/a.png"), origin.url("/b.jpg"))
            await succeed(rig, "task-ok", *provider_urls)
            processing = await rig.task("task-ok")
            assert processing.status is Status.PROCESSING and processing.provider_result_urls == provider_urls
            assert processing.result_urls == ()

            done = await rig.wait_for("task-ok", "completed", lambda t: t.status is Status.COMPLETED)
            assert done.mirror_error is None and done.version == processing.version + 1
            assert done.provider_result_urls == provider_urls
            paths = [urlsplit(u).path for u in done.result_urls]
            assert paths == [f"/{bucket}/relay/generated/task-ok/0.png", f"/{bucket}/relay/generated/task-ok/1.jpg"]
            async with httpx.AsyncClient(timeout=10) as client:
                fetched = [(await client.get(u)).content for u in done.result_urls]
            assert fetched == [IMAGE, JPEG]
            assert origin.hits == {"/a.png": 1, "/b.jpg": 1}

            meta = await rig.metadata("task-ok")
            assert meta["status"] == "completed" and meta["resultUrls"] == list(done.result_urls)
            assert await moto.keys(bucket) == [
                "relay/generated/task-ok/0.png", "relay/generated/task-ok/1.jpg", "relay/kie-tasks/task-ok.json",
            ]
            assert rig.mirror.pending_retries() == []
    finally:
        await storage.aclose()


async def test_storage_outage_keeps_provider_urls_then_retry_swaps_in_ours(
    tmp_path: Path, origin: Origin
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        server = MotoServer(tmp_path / "moto.log").start()
        stack.callback(server.stop)
        bucket = await server.create_bucket()
        storage = await s3_storage(server, bucket)
        stack.push_async_callback(storage.aclose)
        async with make_rig(storage, origin) as rig:
            server.stop()
            provider_urls = (origin.url("/a.png"),)
            await succeed(rig, "task-outage", *provider_urls)

            gave_up = await rig.wait_for("task-outage", "completed", lambda t: t.status is Status.COMPLETED)
            assert gave_up.result_urls == provider_urls
            assert gave_up.mirror_error is not None
            assert "could not store result 1 of 1 as generated/task-outage/0.png" in gave_up.mirror_error
            assert "Could not connect" in gave_up.mirror_error
            assert rig.mirror.pending_retries() == ["task-outage"]
            assert origin.hits == {"/a.png": 1}  # downloaded once; only the upload was retried

            server.start()  # same port; moto starts empty
            await server.create_bucket(bucket)
            assert await rig.mirror.retry("task-outage") is True

            mirrored = await rig.task("task-outage")
            assert mirrored.status is Status.COMPLETED and mirrored.mirror_error is None
            assert mirrored.version == gave_up.version + 1
            assert [urlsplit(u).path for u in mirrored.result_urls] == [f"/{bucket}/relay/generated/task-outage/0.png"]
            assert mirrored.provider_result_urls == provider_urls
            assert await storage.get(result_key("task-outage", 0, "png")) == IMAGE
            meta = await rig.metadata("task-outage")
            assert meta["resultUrls"] == list(mirrored.result_urls) and meta["mirrorError"] is None
            # The metadata write that failed during the outage is settled by the rewrite.
            await eventually(lambda: _async(rig.mirror.pending_retries() == []), 10, "no pending retries")
            # Another pass has nothing left to do and changes nothing.
            assert await rig.mirror.retry("task-outage") is True
            assert (await rig.task("task-outage")).version == mirrored.version


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/page.png", "is an HTML page"),
        ("/x.svg", "SVG is never stored"),
        ("/endless.png", "larger than the 262144-byte limit"),
        ("/to-loopback.png", "refused http://127.0.0.2:9/a.png: plain http is allowed only"),
        ("/expired.png", "answered HTTP 404"),
    ],
)
async def test_refused_results_complete_with_provider_urls(
    files: FileStorage, origin: Origin, path: str, message: str
) -> None:
    async with make_rig(files, origin, attempts=3) as rig:
        provider_urls = (origin.url("/a.png"), origin.url(path))
        await succeed(rig, "task-bad", *provider_urls)
        done = await rig.wait_for("task-bad", "completed", lambda t: t.status is Status.COMPLETED)
        assert done.result_urls == provider_urls
        assert done.mirror_error is not None
        assert done.mirror_error.startswith("could not download result 2 of 2: ")
        assert message in done.mirror_error
        assert origin.hits[path] == 1  # a refusal is final: no retries against it
        assert rig.mirror.pending_retries() == ["task-bad"]
        meta = await rig.metadata("task-bad")
        assert meta["mirrorError"] == done.mirror_error
    # Nothing of the refused file was written; the first result's copy is whole.
    stored = sorted(str(p.relative_to(files.root)) for p in files.root.rglob("*") if p.is_file())
    assert stored == ["generated/task-bad/0.png", "kie-tasks/task-bad.json"]
    assert (files.root / "generated/task-bad/0.png").read_bytes() == IMAGE


async def test_transient_download_failures_are_retried(files: FileStorage, origin: Origin) -> None:
    async with make_rig(files, origin, attempts=3) as rig:
        await succeed(rig, "task-flaky", origin.url("/flaky.png"))
        done = await rig.wait_for("task-flaky", "completed", lambda t: t.status is Status.COMPLETED)
        assert done.mirror_error is None
        assert done.result_urls == ("http://relay.test/files/generated/task-flaky/0.png",)
        assert origin.hits["/flaky.png"] == 2


async def test_crash_before_the_state_write_is_finished_by_a_later_pass(files: FileStorage, origin: Origin) -> None:
    # The listener is not attached: the process "died" after the provider's success was
    # stored, after the upload, before `completed` was written.
    async with make_rig(files, origin, attach=False) as rig:
        await succeed(rig, "task-crash", origin.url("/a.png"))
        (files.root / "generated/task-crash").mkdir(parents=True)
        (files.root / "generated/task-crash/0.png").write_bytes(IMAGE[:100])  # the earlier upload
        assert (await rig.task("task-crash")).status is Status.PROCESSING

        # What the reconciler does for a task left `processing` with provider URLs.
        await rig.mirror.on_stuck(await rig.task("task-crash"))
        done = await rig.task("task-crash")
        assert done.status is Status.COMPLETED and done.mirror_error is None
        assert done.result_urls == ("http://relay.test/files/generated/task-crash/0.png",)
        # Overwritten in place, never duplicated.
        assert [p.name for p in (files.root / "generated/task-crash").iterdir()] == ["0.png"]
        assert (files.root / "generated/task-crash/0.png").read_bytes() == IMAGE


async def test_duplicate_success_reports_mirror_once(files: FileStorage, origin: Origin) -> None:
    async with make_rig(files, origin) as rig:
        url = origin.url("/a.png")
        assert await rig.ingestor.create(new_task("task-dup"))
        await asyncio.gather(*(succeed(rig, "task-dup", url) for _ in range(5)))
        await rig.wait_for("task-dup", "completed", lambda t: t.status is Status.COMPLETED)
        await succeed(rig, "task-dup", url)  # a late duplicate after completion
        assert await rig.mirror.retry("task-dup") is True  # nothing to do
        assert origin.hits == {"/a.png": 1}


async def test_mirroring_off_completes_with_provider_urls(files: FileStorage, origin: Origin) -> None:
    async with make_rig(files, origin, mirror=False) as rig:
        await succeed(rig, "task-off", origin.url("/a.png"))
        done = await rig.task("task-off")
        assert done.status is Status.COMPLETED and done.result_urls == (origin.url("/a.png"),)
        meta = await rig.metadata("task-off")
        assert meta["status"] == "completed"
        assert await rig.mirror.retry("task-off") is True
        assert origin.hits == {}


async def test_failed_task_metadata(files: FileStorage, origin: Origin) -> None:
    async with make_rig(files, origin) as rig:
        assert await rig.ingestor.create(new_task("task-failed"))
        await rig.ingestor.report(ProviderReport("task-failed", ProviderState.FAILED, "jobs"))
        meta = await rig.metadata("task-failed")
        assert meta["status"] == "failed" and meta["taskId"] == "task-failed"


class CountingStorage(FileStorage):
    """A real FileStorage that records how many puts are in flight at once."""

    def __init__(self, root: Path):
        super().__init__(root, base_url="http://relay.test/files")
        self.in_flight = 0
        self.most = 0

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.01)  # a slow disk or object store: the writes overlap
            return await super().put(key, data, content_type)
        finally:
            self.in_flight -= 1


async def test_a_burst_of_completions_writes_its_metadata_a_few_at_a_time(tmp_path: Path, origin: Origin) -> None:
    storage = CountingStorage(tmp_path / "files")
    await storage.start()
    async with make_rig(storage, origin, mirror=False) as rig:
        ids = [f"burst-{i:02d}" for i in range(40)]
        await asyncio.gather(*(succeed(rig, t, origin.url("/a.png")) for t in ids))
        for t in ids:
            assert (await rig.metadata(t))["status"] == "completed"
    assert storage.most == METADATA_WRITERS, storage.most
