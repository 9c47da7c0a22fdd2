"""Issue #16's acceptance in a real browser: a front end written against the legacy routes
only (tests/fixtures/legacy/app.html: fetch polling every 2 s, and an EventSource on
poll-task) runs unchanged against Relay in headless Chromium, for text-to-image and
image-to-image: upload -> generate -> poll -> download -> share -> the share page. The
page is served at Relay's own origin (as those apps serve theirs beside their API), so
the browser's cookie is its only credential; another browser context gets nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.sim.png import gradient_png
from tests.browser import CHROMIUM
from tests.conftest import StartRelay
from tests.servers import AppProcess

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")

APP = (Path(__file__).parent / "fixtures" / "legacy" / "app.html").read_text()


def open_app(new_page: Callable[..., Any], relay: AppProcess) -> Any:
    page = new_page()
    page.route(f"{relay.url}/app.html", lambda route: route.fulfill(status=200, content_type="text/html", body=APP))
    page.goto(f"{relay.url}/app.html")
    return page


def wait_data(page: Any, name: str, value: str, timeout: float = 15) -> None:
    page.wait_for_function(
        "([name, value]) => document.body.dataset[name] === value", arg=[name, value], timeout=timeout * 1000
    )


def complete_when_created(page: Any, sim: str) -> str:
    page.wait_for_function("() => !!document.body.dataset.taskId", timeout=15_000)
    task_id: str = page.eval_on_selector("body", "b => b.dataset.taskId")
    httpx.post(f"{sim}/sim/tasks/{task_id}/complete", timeout=5).raise_for_status()
    return task_id


@pytest.mark.timeout(120)
def test_a_legacy_front_end_runs_unchanged(
    start_relay: StartRelay, sim: str, new_page: Callable[..., Any], tmp_path: Path
) -> None:
    relay = start_relay(
        "memory://", RELAY_LEGACY_ROUTES="on", RELAY_STORAGE_URL=f"file://{tmp_path / 'files'}",
        RELAY_RESULT_HOSTS=sim,
    )
    picture = tmp_path / "cat.png"
    picture.write_bytes(gradient_png("a cat to edit", 96))
    page = open_app(new_page, relay)
    shared: dict[str, str] = {}
    for mode in ("text-to-image", "image-to-image"):
        page.select_option("#mode", mode)
        if mode == "image-to-image":
            page.set_input_files("#file", str(picture))
        page.click("#generate")
        task_id = complete_when_created(page, sim)
        wait_data(page, "pollStatus", "SUCCESS")
        wait_data(page, "streamStatus", "SUCCESS")
        page.wait_for_function("() => document.getElementById('result').naturalWidth > 0", timeout=15_000)
        statuses = page.eval_on_selector("body", "b => b.dataset.streamStatuses").split(",")
        assert statuses[-1] == "SUCCESS" and statuses[0] in ("PENDING", "PROCESSING"), statuses
        if mode == "image-to-image":
            assert page.eval_on_selector("body", "b => b.dataset.uploadKey").startswith("uploads/")

        with page.expect_download() as download:
            page.click("#download")
        name = download.value.suggested_filename
        assert name.startswith("a-lighthouse-at-dusk-oil-painting-style-") and name.endswith("-1.png"), name
        saved = tmp_path / f"{mode}.png"
        download.value.save_as(str(saved))
        assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        page.click("#share")
        page.wait_for_function("() => !!document.body.dataset.shareUrl", timeout=15_000)
        shared[mode] = page.eval_on_selector("body", "b => b.dataset.shareUrl")
        page.evaluate("() => { delete document.body.dataset.shareUrl; document.body.dataset.pollStatus = ''; "
                      "document.body.dataset.streamStatus = ''; document.body.dataset.taskId = ''; }")
        # Another browser (a fresh context: no cookie) cannot read, stream, download or share it.
        stranger = open_app(new_page, relay)
        verdict = stranger.evaluate(
            """async (taskId) => {
                const q = `taskId=${encodeURIComponent(taskId)}`;
                const codes = {};
                for (const path of ["/api/poll-task", "/api/image-details", "/api/task-status", "/api/download-url"]) {
                    codes[path] = (await fetch(`${path}?${q}`)).status;
                }
                codes.share = (await fetch("/api/share", {method: "POST", headers: {"Content-Type": "application/json"},
                                                          body: JSON.stringify({taskId})})).status;
                codes.stream = await new Promise((resolve) => {
                    const source = new EventSource(`/api/poll-task?${q}`);
                    source.onmessage = () => { source.close(); resolve("message"); };
                    source.onerror = () => { source.close(); resolve("error"); };
                });
                return codes;
            }""",
            task_id,
        )
        assert verdict == {
            "/api/poll-task": 404, "/api/image-details": 404, "/api/task-status": 404,
            "/api/download-url": 404, "share": 404, "stream": "error",
        }, verdict
        stranger.context.close()

    # The share pages: the picture, the prompt, and the tags a chat app's preview reads.
    viewer = new_page()
    for url in shared.values():
        viewer.goto(url)
        viewer.wait_for_function("() => document.querySelector('img').naturalWidth > 0", timeout=15_000)
        og_image = viewer.get_attribute('meta[property="og:image"]', "content")
        assert og_image and "/generated/" in og_image
        assert viewer.get_attribute('meta[name="twitter:card"]', "content") == "summary_large_image"
        assert "a lighthouse at dusk" in viewer.inner_text("h1")
    # The gallery filter.
    for mode, url in shared.items():
        items = httpx.get(f"{relay.url}/api/share/list", params={"mode": mode}, timeout=5).json()["items"]
        assert [i["shareUrl"] for i in items] == [url]
