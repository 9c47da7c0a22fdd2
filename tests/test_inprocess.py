"""The app itself, in this process: httpx's ASGITransport on the memory backends, with
the lifespan run by hand. What needs no provider answer: the catalogue, the contract's
refusals, the OpenAPI document, readiness."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.app import create_app
from relay.settings import Settings
from tests.helpers import assert_contract
from tests.servers import SECRET
from tests.waiting import until

pytestmark = pytest.mark.inprocess


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app on the memory backends, its lifespan run, an httpx client on it."""
    defaults: dict[str, Any] = {
        "public_url": "http://relay.test", "secret": SECRET, "provider": "sim", "kie_api_key": "sim-key",
        "kie_base_url": "http://127.0.0.1:9", "storage_url": f"file://{tmp_path}/files", "kie_retry_budget": 0,
        "log_level": "WARNING",
    }
    app = create_app(Settings(**{**defaults, **settings}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://relay.test") as client:
            yield client


@pytest.fixture
async def app_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(tmp_path) as client:
        yield client


async def test_catalogue_and_document(app_client: httpx.AsyncClient) -> None:
    models = (await app_client.get("/api/models")).json()
    assert models["simulated"] is True and len(models["models"]) >= 30
    doc = (await app_client.get("/openapi.json")).json()
    assert "/api/models" in doc["paths"] and doc["openapi"] == "3.1.0"
    assert (await app_client.get("/healthz")).json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": "google/nano-banana-edit", "prompt": "x"}, "imageUrls needs at least 1"),
        ({"model": "suno-v4.5", "prompt": "x", "options": {"customMode": "yes"}}, "options.customMode must be true or false"),
        ({"model": "veo3.1-4k"}, "parentTaskId is required"),
        ({"model": "gpt-4o-image", "prompt": "x", "imageUrls": ["https://a.test/1.png"] * 6}, "at most 5"),
        ({"prompt": "x", "parentTaskId": "no such!"}, "parentTaskId must match"),
    ],
)
async def test_refusals_are_json_400s_naming_the_field(
    app_client: httpx.AsyncClient, body: dict[str, object], fragment: str
) -> None:
    response = await app_client.post("/api/tasks", json=body)
    assert response.status_code == 400, response.text
    assert_contract(response)
    assert fragment in response.json()["error"]["message"]


async def test_forged_callbacks_and_unknown_routes(app_client: httpx.AsyncClient) -> None:
    forged = await app_client.post("/api/callbacks/kie?token=a.b", json={"data": {"taskId": "t"}})
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "invalid_callback_token"
    missing = await app_client.get("/api/nope/")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"


async def test_models_of_unconfigured_providers_are_not_offered(tmp_path: Path) -> None:
    """Without REPLICATE_API_TOKEN (and not on the simulator) Replicate's models are not
    listed, and creating one is a 400 naming what is missing, before anyone is called."""
    async with serving(tmp_path, provider="kie", kie_api_key="key") as client:
        providers = {m["provider"] for m in (await client.get("/api/models")).json()["models"]}
        assert providers == {"kie"}
        answer = await client.post("/api/tasks", json={"prompt": "p", "model": "black-forest-labs/flux-schnell"})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "provider_not_configured"


async def test_the_collector_is_tuned_and_timed(app_client: httpx.AsyncClient) -> None:
    import gc

    from relay.gctune import THRESHOLDS

    assert gc.get_threshold() == THRESHOLDS and gc.get_freeze_count() > 0
    gc.collect()
    text = (await app_client.get("/metrics")).text
    assert 'relay_gc_pause_seconds_count{generation="2"}' in text


async def test_unexpected_errors_on_the_fast_lane_are_json_500s(
    app_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast lane (callbacks, streams) sits outside Starlette's error layer: its 500 must
    look like every other route's, and the error must not escape to the server (httpx's
    transport would raise it here)."""
    from relay import auth, events

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(auth, "callback_token_signed", broken)
    monkeypatch.setattr(events, "open_stream", broken)
    for response in (
        await app_client.post("/api/callbacks/kie?token=a.b", json={"data": {"taskId": "t"}}),
        await app_client.get("/api/tasks/abc/events"),
    ):
        assert response.status_code == 500, response.text
        assert response.json()["error"]["code"] == "internal_error"
        assert response.headers["x-request-id"] and response.headers["x-content-type-options"] == "nosniff"


async def test_young_garbage_is_collected_by_time_when_the_count_would_not(app_client: httpx.AsyncClient) -> None:
    """A reference cycle made while the count stays under the threshold (as an idle
    stream's churn does) is still collected, within about a second, by `sweep_young`,
    which the app's lifespan runs."""
    import gc
    import weakref

    class Node:
        other: Node | None = None

    assert any(t.get_name() == "relay-gc-young" and not t.done() for t in asyncio.all_tasks())
    before = gc.get_threshold()
    gc.set_threshold(10**9, 10**9, 10**9)  # no collection by count while we wait
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b

        async def collected() -> bool:
            return gone() is None

        await until(collected, timeout=10, what="the cycle to be collected by time")
    finally:
        gc.set_threshold(*before)
