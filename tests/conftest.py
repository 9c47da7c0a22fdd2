from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import CHROMIUM, CHROMIUM_ARGS, PageErrors
from tests.cluster import RedisCluster
from tests.servers import AppProcess, RedisServer, relay_env

StartRelay = Callable[..., AppProcess]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared Redis, emptied for this test."""
    client = redis_server.client()
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A real three-master Redis Cluster on loopback, shared by the session."""
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> str:
    """The shared cluster (`redis+cluster://`), emptied for this test."""
    redis_cluster.flushall()
    return redis_cluster.url


@pytest.fixture
def private_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A cluster of this test's own, for tests that restart its nodes."""
    cluster = RedisCluster(tmp_path / "cluster").start()
    yield cluster
    cluster.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, for tests that kill it."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sim_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    logs = tmp_path_factory.mktemp("sim")
    sim = AppProcess(
        ["kie-sim", "--callback-delay", "manual"], {}, ready_path="/sim/tasks", log_path=logs / "sim.log"
    ).start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(sim_process: AppProcess) -> str:
    """The simulator's URL, with every task dropped and every quirk off (manual finishing)."""
    httpx.post(f"{sim_process.url}/sim/reset", timeout=5).raise_for_status()
    httpx.patch(
        f"{sim_process.url}/sim/config",
        json={
            "callback_delay": None, "failure_rate": 0, "duplicate_callbacks": 0, "drop_callbacks": 0,
            "out_of_order": False, "html_error_rate": 0, "rate_limit_burst": 0, "record_null_seconds": 0,
            "webhook_hmac_key": None, "link_ttl": 0, "file_delay": 0, "create_delay": 0,
        },
        timeout=5,
    ).raise_for_status()
    return sim_process.url


@pytest.fixture
def start_relay(tmp_path: Path, sim: str) -> Iterator[StartRelay]:
    """Start `relay serve` instances (real uvicorn subprocesses) on free loopback ports."""
    started: list[AppProcess] = []

    def start(redis_url: str = "memory://", **extra: str) -> AppProcess:
        proc = AppProcess(["serve"], {}, ready_path="/healthz", log_path=tmp_path / f"relay-{len(started)}.log")
        extra.setdefault("RELAY_STORAGE_URL", f"file://{tmp_path}/files-{len(started)}")
        proc.env = relay_env(redis_url=redis_url, sim_url=sim, public_url=proc.url, **extra)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(params=["memory", "redis", "cluster"])
def backend(request: pytest.FixtureRequest) -> str:
    """The store/hub URL: each behaviour test runs on the embedded backend, one Redis and a
    Redis Cluster."""
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("cluster_url" if request.param == "cluster" else "redis_url")
    return url


@pytest.fixture
async def client() -> Any:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


# --------------------------------------------------------------------------- browsers


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_sync = pytest.importorskip("playwright.sync_api")
    with playwright_sync.sync_playwright() as p:
        # executable_path: Debian's Chromium; Playwright never downloads a browser here.
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


@pytest.fixture
def new_page(browser: Any, page_errors: PageErrors) -> Iterator[Callable[..., Any]]:
    """`new_page(width=1280, height=900, **context_options)`: a page in a fresh context
    that records uncaught exceptions (checked at the end of the test)."""
    contexts: list[Any] = []

    def make(width: int = 1280, height: int = 900, **options: Any) -> Any:
        context = browser.new_context(viewport={"width": width, "height": height}, **options)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: page_errors.errors.append(str(exc)))
        return page

    yield make
    for context in contexts:
        context.close()
    page_errors.check()
