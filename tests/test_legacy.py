"""The routes existing front ends call (issue #16), against a real `relay serve` with
RELAY_LEGACY_ROUTES=on and the simulator: the shapes those front ends read, a browser's
cookie as its only credential, and nothing of one browser visible to another."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from relay.sim.png import gradient_png
from tests.conftest import StartRelay
from tests.servers import AppProcess
from tests.sse import iter_events
from tests.waiting import until

PNG = gradient_png("legacy upload", 64)


@pytest.fixture
def legacy(start_relay: StartRelay, backend: str) -> AppProcess:
    return start_relay(backend, RELAY_LEGACY_ROUTES="on", RELAY_RATE_CREATE="1000")


@pytest.fixture
async def browser_a() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


@pytest.fixture
async def browser_b() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


async def upload(browser: httpx.AsyncClient, base: str, path: str = "/api/upload-image") -> dict[str, Any]:
    answer = await browser.post(f"{base}{path}", files={"file": ("cat.png", PNG, "image/png")})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert body["success"] is True and body["url"].endswith(body["key"])
    return body


async def generate(browser: httpx.AsyncClient, base: str, **fields: Any) -> str:
    answer = await browser.post(f"{base}/api/generate-image", json=fields)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "pending"
    task_id: str = body["taskId"]
    return task_id


async def poll_until(browser: httpx.AsyncClient, base: str, task_id: str, status: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        body: dict[str, Any] = (await browser.get(f"{base}/api/poll-task", params={"taskId": task_id})).json()
        return body if body["status"] == status else None

    return await until(reached, timeout=15, what=f"poll-task {status}")


async def complete(sim: str, task_id: str) -> None:
    async with httpx.AsyncClient(timeout=5) as c:
        (await c.post(f"{sim}/sim/tasks/{task_id}/complete")).raise_for_status()


async def test_upload_generate_poll_download_share(
    legacy: AppProcess, sim: str, browser_a: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    base = legacy.url
    source = await upload(browser_a, base)
    task_id = await generate(
        browser_a, base, prompt="a cat in a hat", mode="image-to-image", imageUrl=source["url"], style="watercolor"
    )
    assert "relay_browser" in browser_a.cookies, "the first create gives the browser its cookie"
    first = (await browser_a.get(f"{base}/api/poll-task", params={"taskId": task_id})).json()
    assert first == {"status": "PENDING", "urls": [], "error": None} or first["status"] == "PROCESSING"
    await complete(sim, task_id)
    done = await poll_until(browser_a, base, task_id, "SUCCESS")
    assert done["error"] is None and len(done["urls"]) == 1 and "/generated/" in done["urls"][0]
    details = (await browser_a.get(f"{base}/api/image-details", params={"taskId": task_id})).json()
    assert details == done
    status = (await browser_a.get(f"{base}/api/task-status", params={"taskId": task_id})).json()
    assert status["success"] is True and status["status"] == "completed"
    assert status["prompt"] == "a cat in a hat, watercolor style" and status["imageUrl"] == source["url"]
    assert status["resultUrls"] == done["urls"] and {"createdAt", "updatedAt", "consumeCredits", "costTime"} <= set(status)

    link = (await browser_a.get(f"{base}/api/download-url", params={"taskId": task_id, "index": 0})).json()["url"]
    downloaded = await client.get(link)
    assert downloaded.status_code == 200 and downloaded.content[:8] == b"\x89PNG\r\n\x1a\n"
    disposition = downloaded.headers["content-disposition"]
    assert re.fullmatch(r'attachment; filename="a-cat-in-a-hat-watercolor-style-[\w-]+-1\.png"', disposition), disposition

    shared = (await browser_a.post(f"{base}/api/share", json={"generatedUrl": done["urls"][0], "style": "watercolor"})).json()
    again = (await browser_a.post(f"{base}/api/share", json={"taskId": task_id})).json()
    assert shared["success"] is True and again["shareId"] == shared["shareId"], "a double click shares once"
    page = await client.get(shared["shareUrl"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert f'<meta property="og:image" content="{done["urls"][0]}">' in html
    assert '<meta name="twitter:card" content="summary_large_image">' in html
    assert "a cat in a hat, watercolor style" in html and "Style: watercolor" in html
    gallery = (await client.get(f"{base}/api/share/list", params={"mode": "image-to-image"})).json()
    assert [i["shareId"] for i in gallery["items"]] == [shared["shareId"]]
    assert (await client.get(f"{base}/api/share/list", params={"mode": "text-to-image"})).json()["items"] == []


async def test_another_browser_sees_nothing(
    legacy: AppProcess, sim: str, browser_a: httpx.AsyncClient, browser_b: httpx.AsyncClient
) -> None:
    base = legacy.url
    task_id = await generate(browser_a, base, prompt="mine", mode="text-to-image")
    await complete(sim, task_id)
    await poll_until(browser_a, base, task_id, "SUCCESS")
    await generate(browser_b, base, prompt="theirs", mode="text-to-image")  # B has a cookie of its own
    forged = browser_a.cookies["relay_browser"].split(".")[0] + ".AAAAAAAAAAAAAAAAAAAAAAAA"
    for who, cookies in (("browser B", None), ("a forged cookie", {"relay_browser": forged})):
        async with httpx.AsyncClient(timeout=10, cookies=cookies) as other:
            target = browser_b if cookies is None else other
            for path in ("/api/poll-task", "/api/image-details", "/api/task-status", "/api/download-url"):
                answer = await target.get(f"{base}{path}", params={"taskId": task_id})
                assert answer.status_code == 404, (who, path, answer.text)
                body = answer.json()
                assert body["success"] is False and isinstance(body["error"], str), body
            stream = await target.get(
                f"{base}/api/poll-task", params={"taskId": task_id}, headers={"accept": "text/event-stream"}
            )
            assert stream.status_code == 404, who
            share = await target.post(f"{base}/api/share", json={"taskId": task_id})
            assert share.status_code == 404, who
            events = await target.get(f"{base}/api/tasks/{task_id}/events")
            assert events.status_code == 401, who
    assert (await browser_a.get(f"{base}/api/poll-task", params={"taskId": task_id})).status_code == 200


async def test_poll_task_as_an_event_stream(legacy: AppProcess, sim: str, browser_a: httpx.AsyncClient) -> None:
    base = legacy.url
    task_id = await generate(browser_a, base, prompt="streamed", mode="text-to-image")
    seen: list[dict[str, Any]] = []
    async with browser_a.stream(
        "GET", f"{base}/api/poll-task", params={"taskId": task_id}, headers={"accept": "text/event-stream"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in iter_events(response):
            if not event.data:
                continue  # the retry hint
            assert event.event == "message", "unnamed events reach EventSource.onmessage"
            seen.append(event.json())
            if len(seen) == 1:
                await complete(sim, task_id)
    # The server ended the stream after SUCCESS.
    assert seen[0]["status"] in ("PENDING", "PROCESSING") and seen[-1]["status"] == "SUCCESS"
    assert seen[-1]["urls"] and seen[-1]["error"] is None


async def test_both_ways_between_legacy_and_core_routes(
    legacy: AppProcess, sim: str, browser_a: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    base = legacy.url
    made = (await browser_a.post(f"{base}/api/generate-image", json={"prompt": "both ways"})).json()
    # The legacy create also returns the task's token: the core stream accepts it.
    async with client.stream("GET", made["eventsUrl"]) as response:
        assert response.status_code == 200
    core = (await client.post(f"{base}/api/tasks", json={"prompt": "core"})).json()
    answer = await client.get(f"{base}/api/poll-task", params={"taskId": core["taskId"], "token": core["token"]})
    assert answer.status_code == 200 and answer.json()["status"] == "PENDING"


async def test_batch_shares_rules_and_errors(
    legacy: AppProcess, sim: str, browser_a: httpx.AsyncClient
) -> None:
    base = legacy.url
    one, two = await upload(browser_a, base), await upload(browser_a, base, "/api/upload")
    batch = (
        await browser_a.post(
            f"{base}/api/generate", json={"prompt": "each", "imageUrls": [one["url"], "ftp://x/y.png", two["url"]]}
        )
    ).json()
    assert batch["success"] is True and len(batch["taskIds"]) == 2
    assert [t["sourceKey"] for t in batch["tasks"]] == [one["key"], two["key"]]
    assert [f["imageUrl"] for f in batch["failures"]] == ["ftp://x/y.png"]
    pending = batch["taskIds"][0]
    refused = await browser_a.post(f"{base}/api/share", json={"taskId": pending})
    assert refused.status_code == 409 and refused.json()["code"] == "conflict"
    for url in ("https://evil.example/x.png", f"{base}/generated/{pending}/0.png", "javascript:alert(1)"):
        answer = await browser_a.post(f"{base}/api/share", json={"generatedUrl": url})
        assert answer.status_code in (400, 409), (url, answer.text)
    broken = await browser_a.post(f"{base}/api/generate-image", content=b"{not json")
    assert broken.status_code == 400
    assert broken.json()["success"] is False and "JSON" in broken.json()["error"]
    missing = await browser_a.post(f"{base}/api/generate-image", json={"prompt": "x", "mode": "image-to-image"})
    assert missing.status_code == 400 and "imageUrl" in missing.json()["error"]
    assert (await browser_a.get(f"{base}/share/nope-nope-nope")).status_code == 404
