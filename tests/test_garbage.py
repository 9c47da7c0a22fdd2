"""No reference cycles per request on the hot paths (#17): with thousands of streams open a
full collection scans a large heap, so requests must leave nothing that only the cyclic
collector can free. The app is driven over raw ASGI (no client library in between, whose
own garbage would count), on the memory backends."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from relay import auth
from relay.app import create_app
from relay.httpclient import AsyncClient
from relay.models import Mode, Status, Task, utcnow
from relay.settings import Settings
from tests.servers import SECRET

pytestmark = pytest.mark.inprocess


@contextlib.contextmanager
def cyclic_garbage() -> Iterator[Counter[str]]:
    """Counts, by type, what only the cyclic collector could free of what the block made."""
    found: Counter[str] = Counter()
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.update(type(o).__name__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _scope(method: str, path: str, query: str = "", body: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"relay.test"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 80), "state": {},
    }


async def _request(app: Any, scope: dict[str, Any], body: bytes = b"", until: asyncio.Event | None = None) -> tuple[int, bytes]:
    """One request; the client 'disconnects' only when `until` is set (or at once)."""
    sent = False
    status: list[int] = []
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        if until is not None:
            await until.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        else:
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status[0], b"".join(chunks)


async def test_callbacks_and_streams_leave_no_cycles(tmp_path: Path) -> None:
    settings = Settings(
        public_url="http://relay.test", secret=SECRET, provider="sim", kie_api_key="sim-key",
        kie_base_url="http://127.0.0.1:9", storage_url=f"file://{tmp_path}/files", kie_retry_budget=0,
        log_level="WARNING", auth="none", mirror=False, reconcile_after=3600,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        svc = app.state.services
        tokens: dict[str, str] = {}
        for i in range(40):
            task_id, token = f"gc{i:04d}", auth.callback_token(SECRET)
            now = utcnow()
            await svc.ingestor.create(Task(task_id, "kie", "google/nano-banana", Mode.TEXT_TO_IMAGE, Status.PENDING,
                                           "p", (), now, now, callback_hash=auth.token_hash(token)))
            tokens[task_id] = token

        async def callback(task_id: str, state: str, progress: float = 0.0) -> int:
            data: dict[str, Any] = {"taskId": task_id, "state": state, "progress": progress}
            if state == "success":
                data["resultJson"] = orjson.dumps({"resultUrls": ["https://tempfile.aiquickdraw.com/h/a.png"]}).decode()
            body = orjson.dumps({"code": 200, "msg": "ok", "data": data})
            status, _ = await _request(app, _scope("POST", "/api/callbacks/kie", f"token={tokens[task_id]}", body), body)
            return status

        ids = list(tokens)
        await callback(ids[0], "generating", 0.1)  # warm: first-use caches are not garbage
        with cyclic_garbage() as found:
            closed = asyncio.Event()
            streams = [asyncio.create_task(_request(app, _scope("GET", f"/api/tasks/{t}/events"), until=closed))
                       for t in ids[20:]]
            for step in range(1, 4):
                assert {await callback(t, "generating", step / 10) for t in ids} == {200}
            assert {await callback(t, "success") for t in ids} == {200}
            assert await callback(ids[0], "success") == 200  # a duplicate
            forged = orjson.dumps({"data": {"taskId": ids[1]}})
            assert (await _request(app, _scope("POST", "/api/callbacks/kie", "token=a.b", forged), forged))[0] == 401
            answers = await asyncio.wait_for(asyncio.gather(*streams), 10)
            closed.set()
            assert all(status == 200 and b'"status":"completed"' in body for status, body in answers)
        assert sum(found.values()) == 0, found.most_common(10)


async def test_outbound_responses_leave_no_cycles() -> None:
    """httpx's own client makes each response a cycle (encode/httpx#3733); ours does not.
    The first half shows the check can fail."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'{"code":200}')

    async def fetch(client: httpx.AsyncClient) -> None:
        for _ in range(5):
            response = await client.get("http://kie.test/api/v1/jobs/recordInfo")
            assert response.json() == {"code": 200}
        async with client.stream("GET", "http://kie.test/file.png") as response:
            assert await response.aread() == b'{"code":200}'

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as plain, \
            AsyncClient(transport=httpx.MockTransport(answer)) as ours:
        await fetch(plain)
        await fetch(ours)
        with cyclic_garbage() as found_plain:
            await fetch(plain)
        with cyclic_garbage() as found_ours:
            await fetch(ours)
    assert found_plain["Response"] >= 5
    assert sum(found_ours.values()) == 0, found_ours.most_common(10)
