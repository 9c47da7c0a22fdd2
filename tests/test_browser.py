"""The demo page and relay.js in a real browser: Debian's Chromium, headless, driven by
Playwright's sync API (these tests are plain sync tests; no asyncio loop is running).

Everything runs on 127.0.0.1: Relay (`relay serve` subprocesses), the KIE simulator, and,
for the proxy tests, a private nginx that stands in for a CDN (tests/nginx.py). The page
mirrors its watchers' counters into data-* attributes (see relay/static/demo.js), which is
what these tests read. Every wait is a condition with a timeout.

Screenshots of the finished page (desktop and phone size) go to test-output/ at the root.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import CHROMIUM
from tests.nginx import NGINX, Nginx
from tests.servers import AppProcess

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"
# A generation that outlasts the proxy's idle timeout several times over (the brief's
# "CDN 100 s vs a 2-minute generation", scaled down).
LONG_GENERATION = 15.0

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")
needs_nginx = pytest.mark.skipif(not Path(NGINX).exists(), reason=f"{NGINX} is not installed")

StartRelay = Callable[..., AppProcess]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def relay(start_relay: StartRelay, sim: str, tmp_path: Path) -> Callable[..., AppProcess]:
    """Start Relay against the simulator, with its storage under tmp_path."""

    def start(**env: str) -> AppProcess:
        defaults = {
            "RELAY_STORAGE_URL": f"file://{tmp_path / 'files'}",
            "RELAY_RESULT_HOSTS": sim,  # "http://127.0.0.1:PORT": the simulator's result files
            "KIE_RETRY_BUDGET": "0",
            "RELAY_LOG_FORMAT": "console",
        }
        return start_relay(**{**defaults, **env})

    return start


@pytest.fixture
def proxies(tmp_path: Path) -> Iterator[Callable[..., Nginx]]:
    started: list[Nginx] = []

    def start(upstream: str, **options: Any) -> Nginx:
        proxy = Nginx(tmp_path / f"nginx-{len(started)}", upstream, **options)
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()


# --------------------------------------------------------------------------- helpers


def sim_config(sim: str, **changes: Any) -> None:
    httpx.patch(f"{sim}/sim/config", json=changes, timeout=5).raise_for_status()


def sim_tasks(sim: str) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = httpx.get(f"{sim}/sim/tasks", timeout=5).json()["tasks"]
    return tasks


def dataset(page: Any, selector: str) -> dict[str, str]:
    data: dict[str, str] = page.eval_on_selector(selector, "el => ({...el.dataset})")
    return data


def wait_data(page: Any, selector: str, name: str, value: str, timeout: float = 15) -> None:
    """Wait until `selector`'s data-<name> equals `value` (the function form of
    wait_for_function: the page's CSP forbids eval of string expressions)."""
    page.wait_for_function(
        "([sel, name, value]) => { const el = document.querySelector(sel); return !!el && el.dataset[name] === value; }",
        arg=[selector, name, value],
        timeout=timeout * 1000,
    )


def wait_image(page: Any, selector: str, timeout: float = 15) -> int:
    """Wait until the <img> has really loaded; return its naturalWidth."""
    page.wait_for_function(
        "sel => { const img = document.querySelector(sel); return !!img && img.complete && img.naturalWidth > 0; }",
        arg=selector,
        timeout=timeout * 1000,
    )
    width: int = page.eval_on_selector(selector, "img => img.naturalWidth")
    return width


def versions_of(page: Any) -> list[int]:
    text = dataset(page, "#task").get("versions", "")
    return [int(v) for v in text.split(",") if v]


def assert_in_order(versions: list[int]) -> None:
    assert versions, "no version was applied"
    assert versions[0] == 1, versions
    assert all(b > a for a, b in itertools.pairwise(versions)), f"not strictly increasing: {versions}"


def generate(page: Any, prompt: str) -> None:
    page.fill("#prompt", prompt)
    page.click("#generate")


def server_task(relay_url: str, task_id: str, token: str | None = None) -> dict[str, Any]:
    params = {"token": token} if token else {}
    task: dict[str, Any] = httpx.get(f"{relay_url}/api/tasks/{task_id}", params=params, timeout=5).json()
    return task


def event_requests(requests: list[Any], path: str = "/events") -> list[Any]:
    return [r for r in requests if path in r.url.split("?")[0]]


def write_screenshot(page: Any, name: str) -> Path:
    OUTPUT.mkdir(exist_ok=True)
    path = OUTPUT / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


# --------------------------------------------------------------------------- tests


def test_page_creates_a_task_and_shows_the_image(
    relay: Callable[..., AppProcess], sim: str, new_page: Callable[..., Any]
) -> None:
    sim_config(sim, callback_delay=1)
    app = relay(RELAY_AUTH="none")  # so the history gallery is on, for the screenshot
    with httpx.Client(timeout=10) as client:
        for prompt in ("a greenhouse full of ferns", "a tram in the fog", "a bowl of lemons"):
            client.post(f"{app.url}/api/tasks", json={"prompt": prompt}).raise_for_status()
    page = new_page()
    posts: list[Any] = []
    page.on("request", lambda r: posts.append(r) if r.method == "POST" and r.url.endswith("/api/tasks") else None)
    page.goto(app.url)
    page.fill("#prompt", "a red bicycle leaning on a blue wall")
    is_create = lambda r: r.request.method == "POST" and r.url.endswith("/api/tasks")  # noqa: E731
    with page.expect_response(is_create) as answer:
        # Two clicks in the same tick: the first disables the button, so one task only.
        page.evaluate("() => { const b = document.getElementById('generate'); b.click(); b.click(); }")
    created = answer.value.json()
    assert answer.value.status == 202
    wait_data(page, "#task", "status", "completed")
    assert wait_image(page, "#image") > 0

    data = dataset(page, "#task")
    assert_in_order(versions_of(page))
    assert data["streamsOpened"] == "1" and data["reconnects"] == "0" and data["polls"] == "0"
    assert len(posts) == 1 and posts[0].headers.get("idempotency-key")
    assert len(sim_tasks(sim)) == 4  # the three above, and one from the page
    # What the page shows is what the server has.
    final = server_task(app.url, created["taskId"])
    assert data["taskId"] == created["taskId"] and data["version"] == str(final["version"])
    assert page.get_attribute("#image", "src") == final["resultUrls"][0]
    assert page.inner_text("#status") == "Completed"
    assert page.get_attribute("#generate", "aria-busy") == "false"
    assert not page.is_disabled("#generate")
    wait_data(page, "#gallery", "completed", "4")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.tile-img')].every(i => i.hidden || (i.complete && i.naturalWidth > 0))"
    )
    write_screenshot(page, "demo-desktop.png")


def test_sse_off_polls_instead(relay: Callable[..., AppProcess], sim: str, new_page: Callable[..., Any]) -> None:
    sim_config(sim, callback_delay=1)
    app = relay()
    page = new_page()
    requests: list[Any] = []
    page.on("request", lambda r: requests.append(r))
    page.goto(f"{app.url}/?sse=0")
    generate(page, "polling only, for debugging")
    wait_data(page, "#task", "status", "completed")
    assert wait_image(page, "#image") > 0
    data = dataset(page, "#task")
    assert data["streamsOpened"] == "0" and int(data["polls"]) > 0
    assert not event_requests(requests)
    assert_in_order(versions_of(page))


@needs_nginx
def test_stream_outlives_the_proxy_idle_timeout_with_pings(
    relay: Callable[..., AppProcess], sim: str, proxies: Callable[..., Nginx], new_page: Callable[..., Any]
) -> None:
    """The CDN's 100 s origin timeout, scaled down: the proxy drops a connection idle for
    3 s, the generation takes 15 s, and Relay pings every second, so the one stream lives."""
    sim_config(sim, callback_delay=LONG_GENERATION)
    app = relay(RELAY_SSE_PING="1")
    proxy = proxies(app.url, read_timeout="3s")
    page = new_page()
    page.goto(proxy.url)
    started = time.monotonic()
    generate(page, "a lighthouse in a storm, long exposure")
    wait_data(page, "#task", "status", "completed", timeout=LONG_GENERATION + 20)
    assert time.monotonic() - started >= LONG_GENERATION - 1
    assert wait_image(page, "#image") > 0
    data = dataset(page, "#task")
    assert data["streamsOpened"] == "1", data
    assert data["reconnects"] == "0", data
    assert data["polls"] == "0", data
    assert_in_order(versions_of(page))
    assert "upstream timed out" not in proxy.log_text()


@needs_nginx
def test_stream_cut_by_the_proxy_resumes_with_last_event_id(
    relay: Callable[..., AppProcess], sim: str, proxies: Callable[..., Nginx], new_page: Callable[..., Any]
) -> None:
    """Pings slower than the proxy's idle timeout: the proxy cuts the stream every 2 s; the
    browser resumes with Last-Event-ID and the page applies every version once, in order."""
    sim_config(sim, callback_delay=7)
    app = relay(RELAY_SSE_PING="30")
    proxy = proxies(app.url, read_timeout="2s")
    page = new_page()
    requests: list[Any] = []
    page.on("request", lambda r: requests.append(r))
    page.goto(proxy.url)
    generate(page, "a night market, neon, rain")
    wait_data(page, "#task", "status", "completed", timeout=30)
    assert wait_image(page, "#image") > 0

    data = dataset(page, "#task")
    versions = versions_of(page)
    assert_in_order(versions)
    final = server_task(app.url, data["taskId"], token=_token_from(requests))
    assert final["status"] == "completed" and versions[-1] == final["version"]
    assert int(data["reconnects"]) >= 1, data
    streams = event_requests(requests)
    assert len(streams) >= 2, [r.url for r in streams]
    # The proxy saw the browser resume: a stream request carrying Last-Event-ID.
    logged = [line for line in proxy.access_log() if "/events " in line]
    assert len(logged) >= 2, logged
    assert 'last_event_id="-"' in logged[0], logged  # the first connection starts fresh
    assert all(re.search(r'last_event_id="\d+"', line) for line in logged[1:]), logged
    assert "upstream timed out" in proxy.log_text()  # the proxy really did cut the stream


def _token_from(requests: list[Any]) -> str | None:
    for r in event_requests(requests):
        if "token=" in r.url:
            return str(httpx.URL(r.url).params.get("token"))
    return None


@needs_nginx
def test_buffering_proxy_falls_back_to_polling(
    relay: Callable[..., AppProcess], sim: str, proxies: Callable[..., Nginx], new_page: Callable[..., Any]
) -> None:
    """A proxy that holds the stream back (buffering on, X-Accel-Buffering ignored): no first
    event arrives, so the page polls the status endpoint and still completes."""
    sim_config(sim, callback_delay=6)
    app = relay()
    proxy = proxies(app.url, buffering=True, read_timeout="30s")
    page = new_page()
    page.goto(proxy.url)
    generate(page, "a foggy harbour at dawn")
    wait_data(page, "#task", "mode", "poll", timeout=10)
    wait_data(page, "#task", "status", "completed", timeout=30)
    assert wait_image(page, "#image") > 0
    data = dataset(page, "#task")
    assert int(data["polls"]) > 0 and int(data["fallbacks"]) >= 1, data
    assert_in_order(versions_of(page))


def test_gallery_follows_ten_tasks_over_one_connection(
    relay: Callable[..., AppProcess], sim: str, new_page: Callable[..., Any]
) -> None:
    app = relay(RELAY_AUTH="none")  # the history needs per-user auth or none
    ids = []
    with httpx.Client(timeout=10) as client:
        for n in range(10):
            response = client.post(f"{app.url}/api/tasks", json={"prompt": f"tile number {n}, isometric"})
            assert response.status_code == 202, response.text
            ids.append(response.json()["taskId"])
    page = new_page()
    requests: list[Any] = []
    page.on("request", lambda r: requests.append(r))
    page.goto(app.url)
    wait_data(page, "#gallery", "watching", "10")
    wait_data(page, "#gallery", "mode", "stream")  # the snapshots arrived: the stream is live
    with httpx.Client(timeout=10) as client:
        for task_id in ids:
            client.post(f"{sim}/sim/tasks/{task_id}/complete").raise_for_status()
    wait_data(page, "#gallery", "completed", "10", timeout=20)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#gallery-grid .tile-img')].filter(i => i.complete && i.naturalWidth > 0).length === 10",
        timeout=15_000,
    )
    data = dataset(page, "#gallery")
    streams = event_requests(requests, "/api/events")
    assert len(streams) == 1, [r.url for r in streams]
    assert data["streamsOpened"] == "1" and data["reconnects"] == "0" and data["polls"] == "0", data
    assert not event_requests(requests, "/api/tasks/")  # no per-task streams either
    assert sorted(httpx.URL(streams[0].url).params.get_list("taskId")) == sorted(ids)


def test_phone_layout_keyboard_and_screenshot(
    relay: Callable[..., AppProcess], sim: str, new_page: Callable[..., Any]
) -> None:
    sim_config(sim, callback_delay=1)
    app = relay(RELAY_AUTH="none")
    with httpx.Client(timeout=10) as client:
        for prompt in ("a cat on a windowsill", "mountains at sunrise"):
            client.post(f"{app.url}/api/tasks", json={"prompt": prompt}).raise_for_status()
    page = new_page(390, 844, is_mobile=True, has_touch=True, device_scale_factor=2)
    page.goto(app.url)
    wait_data(page, "#gallery", "completed", "2")

    # Every form control has a label; the page works with the keyboard alone.
    unlabelled = page.evaluate(
        "() => [...document.querySelectorAll('input, select, textarea')]"
        ".filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')).map(el => el.id)"
    )
    assert unlabelled == []
    page.focus("#prompt")
    page.keyboard.press("Control+A")
    page.keyboard.type("a paper boat on a puddle")
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "generate":
            break
    assert page.evaluate("() => document.activeElement.id") == "generate"
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
    page.keyboard.press("Enter")
    wait_data(page, "#task", "status", "completed")
    assert wait_image(page, "#image") > 0
    assert page.get_attribute("#message", "aria-live") == "polite"
    wait_data(page, "#gallery", "completed", "3")

    # Fits a phone: nothing wider than the screen.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    page.wait_for_function(
        "() => [...document.querySelectorAll('.tile-img')].every(i => i.hidden || (i.complete && i.naturalWidth > 0))"
    )
    write_screenshot(page, "demo-phone.png")


def test_gallery_filters_by_mode_and_status(
    relay: Callable[..., AppProcess], sim: str, new_page: Callable[..., Any]
) -> None:
    app = relay(RELAY_AUTH="none")
    with httpx.Client(timeout=10) as client:
        done = client.post(f"{app.url}/api/tasks", json={"prompt": "finished one"}).json()["taskId"]
        client.post(f"{app.url}/api/tasks", json={"prompt": "still running"}).raise_for_status()
        client.post(
            f"{app.url}/api/tasks",
            json={"prompt": "edit this", "imageUrls": [f"{sim}/files/x/0.png"]},
        ).raise_for_status()
        client.post(f"{sim}/sim/tasks/{done}/complete").raise_for_status()
        wait_for(lambda: server_task(app.url, done)["status"] == "completed", 10, "the first task to complete")
    page = new_page()
    page.goto(app.url)
    wait_data(page, "#gallery", "count", "3")
    page.select_option("#filter-status", "completed")
    wait_data(page, "#gallery", "count", "1")
    assert page.eval_on_selector("#gallery-grid .tile", "el => el.dataset.taskId") == done
    page.select_option("#filter-status", "")
    page.select_option("#filter-mode", "image-to-image")
    # The count was already 1 under the previous filter: wait for the new page of results.
    page.wait_for_selector("#gallery-grid .tile:has-text('edit this')")
    wait_data(page, "#gallery", "count", "1")
    assert "finished one" not in page.inner_text("#gallery-grid")


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)  # polling interval of a bounded wait, not synchronisation
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def test_readable_errors(relay: Callable[..., AppProcess], sim: str, new_page: Callable[..., Any]) -> None:
    app = relay()
    page = new_page()
    page.goto(app.url)

    # KIE answers with an HTML error page: Relay turns it into its JSON error, and the page
    # shows Relay's message (what went wrong, in words), not a JSON parse error.
    sim_config(sim, html_error_rate=1)
    refused = httpx.post(f"{app.url}/api/tasks", json={"prompt": "probe"}, timeout=10)
    assert refused.status_code >= 500, refused.text
    message = refused.json()["error"]["message"]
    generate(page, "this one will not be created")
    page.wait_for_selector("#form-error:not([hidden])")
    shown = page.inner_text("#form-error")
    assert shown.startswith("Could not create the task:") and message in shown, shown
    assert "Unexpected token" not in shown
    assert not page.is_disabled("#generate")
    sim_config(sim, html_error_rate=0)

    # A generation that fails: the provider's reason is shown.
    generate(page, "this one will fail")
    wait_data(page, "#task", "status", "pending")
    task_id = dataset(page, "#task")["taskId"]
    httpx.post(f"{sim}/sim/tasks/{task_id}/fail", timeout=5).raise_for_status()
    wait_data(page, "#task", "status", "failed")
    page.wait_for_selector("#task-error:not([hidden])")
    assert page.inner_text("#task-error").strip()

    # relay.js itself: the contract's error body, HTML bodies, and bad input.
    result = page.evaluate(
        """async () => {
            const relay = await import('/static/relay.js');
            const out = {};
            try { await relay.createTask({prompt: 'x', imageUrls: ['ftp://nope']}); }
            catch (e) { out.bad = {name: e.name, status: e.status, code: e.code, message: e.message, isRelay: e instanceof relay.RelayError}; }
            try { await relay.listTasks({}, {baseUrl: '/static/index.html#'}); }
            catch (e) { out.html = {status: e.status, code: e.code, message: e.message}; }
            try { await relay.getTask('no-such-task', {token: 'x'}); }
            catch (e) { out.missing = {status: e.status, code: e.code}; }
            try { await relay.createTask({prompt: '  '}); }
            catch (e) { out.empty = {code: e.code, message: e.message}; }
            return out;
        }"""
    )
    assert result["bad"]["isRelay"] and result["bad"]["name"] == "RelayError"
    assert result["bad"]["status"] == 400 and result["bad"]["code"] == "bad_request"
    assert "imageUrls" in result["bad"]["message"]
    assert result["html"]["message"].startswith("the server answered with HTML, status 200")
    assert result["html"]["code"] == "html_response"
    assert result["missing"]["status"] in (401, 404)
    assert result["empty"]["code"] == "invalid_input"


def test_relay_js_watch_tasks_with_tokens(
    relay: Callable[..., AppProcess], sim: str, new_page: Callable[..., Any]
) -> None:
    """watchTasks on a token-protected Relay: one multiplexed stream with one token per task,
    every version once and in order, onDone per task, then onAllDone."""
    app = relay()
    page = new_page()
    page.goto(app.url)
    page.evaluate(
        """async () => {
            const relay = await import('/static/relay.js');
            const created = [];
            for (let n = 0; n < 3; n++) {
                created.push(await relay.createTask({prompt: `watched ${n}`}, {idempotencyKey: relay.newIdempotencyKey()}));
            }
            window.__watch = {ids: created.map(t => t.taskId), seen: {}, done: [], all: false};
            window.__handle = relay.watchTasks(created.map(t => ({taskId: t.taskId, token: t.token})), {
                onUpdate: (t) => { (window.__watch.seen[t.taskId] ||= []).push(t.version); },
                onDone: (t) => window.__watch.done.push(t.taskId),
                onAllDone: () => { window.__watch.all = true; },
            });
        }"""
    )
    page.wait_for_function("() => window.__handle.stats.mode === 'stream'")
    ids: list[str] = page.evaluate("() => window.__watch.ids")
    for task_id in ids:
        httpx.post(f"{sim}/sim/tasks/{task_id}/complete", timeout=5).raise_for_status()
    page.wait_for_function("() => window.__watch.all === true")
    state = page.evaluate("() => ({...window.__watch, stats: window.__handle.stats})")
    assert sorted(state["done"]) == sorted(ids)
    for task_id in ids:
        seen = state["seen"][task_id]
        assert seen == sorted(set(seen)) and seen[0] == 1, seen
    assert state["stats"]["streamsOpened"] == 1 and state["stats"]["mode"] == "done"


def test_image_to_image_with_upload(
    relay: Callable[..., AppProcess], sim: str, new_page: Callable[..., Any], tmp_path: Path
) -> None:
    from relay.sim.png import gradient_png

    sim_config(sim, callback_delay=1)
    app = relay()
    png = gradient_png("reference", 64)
    probe = httpx.post(f"{app.url}/api/uploads", files={"file": ("probe.png", png, "image/png")}, timeout=10)
    if probe.status_code in (404, 405):
        pytest.skip("POST /api/uploads is not served by this build yet")
    assert probe.status_code == 201, probe.text

    page = new_page()
    page.goto(app.url)
    page.check("#mode-i2i")
    assert page.input_value("#model") == "google/nano-banana-edit"
    reference = tmp_path / "reference.png"
    reference.write_bytes(png)
    page.set_input_files("#file", str(reference))
    wait_data(page, "#reference", "upload", "done")
    generate(page, "make it look like an oil painting")
    wait_data(page, "#task", "status", "completed")
    assert wait_image(page, "#image") > 0
    task_id = dataset(page, "#task")["taskId"]
    seen = next(t for t in sim_tasks(sim) if t["taskId"] == task_id)
    urls = seen["input"].get("image_urls") or seen["input"].get("imageUrls") or seen["input"].get("inputImage")
    assert urls, seen["input"]
    assert "uploads/" in str(urls)


def test_relay_js_returns_to_the_stream_after_polling(
    relay: Callable[..., AppProcess], sim: str, new_page: Callable[..., Any]
) -> None:
    """The first stream is refused (a proxy's HTML 502): the watcher polls, then goes back
    to the stream with `?lastEventId=` (one version back, so the server re-sends the newest
    state at once and proves the stream flows), and stops polling."""
    app = relay()
    page = new_page()
    refused: list[str] = []

    def refuse_first_stream(route: Any) -> None:
        if not refused:
            refused.append(route.request.url)
            route.fulfill(status=502, content_type="text/html", body="<html><title>502 Bad Gateway</title></html>")
        else:
            route.continue_()

    page.route("**/events*", refuse_first_stream)
    requests: list[Any] = []
    page.on("request", lambda r: requests.append(r))
    page.goto(app.url)
    page.evaluate(
        """async () => {
            const relay = await import('/static/relay.js');
            const task = await relay.createTask({prompt: 'back to the stream'});
            window.__seen = [];
            window.__handle = relay.watchTask(task.taskId, {
                token: task.token, initial: task, streamRetryDelay: 1500,
                onUpdate: (t) => window.__seen.push(t.version),
            });
            window.__taskId = task.taskId;
        }"""
    )
    page.wait_for_function("() => window.__handle.stats.fallbacks === 1 && window.__handle.stats.polls > 0")
    page.wait_for_function("() => window.__handle.stats.mode === 'stream'")  # back, and proven
    polls = page.evaluate("() => window.__handle.stats.polls")
    task_id = page.evaluate("() => window.__taskId")
    httpx.post(f"{sim}/sim/tasks/{task_id}/complete", timeout=5).raise_for_status()
    page.wait_for_function("() => window.__handle.stats.mode === 'done'")
    stats = page.evaluate("() => window.__handle.stats")
    seen = page.evaluate("() => window.__seen")
    assert seen == sorted(set(seen)) and seen[0] == 1 and page.evaluate("() => window.__handle.task.status") == "completed"
    assert stats["streamsOpened"] == 2 and stats["reconnects"] == 1 and stats["fallbacks"] == 1, stats
    assert stats["polls"] == polls, "polling went on after the stream came back"
    streams = event_requests(requests)
    assert len(streams) == 2, [r.url for r in streams]
    assert "lastEventId" not in streams[0].url and "lastEventId=0" in streams[1].url, [r.url for r in streams]
    assert stats["duplicates"] >= 1  # the re-sent newest state, dropped as already applied


def test_page_offers_every_kind_and_plays_video_and_audio(
    relay: Callable[..., AppProcess], sim: str, new_page: Callable[..., Any]
) -> None:
    sim_config(sim, callback_delay=1)
    app = relay()
    page = new_page()
    page.goto(app.url)
    page.wait_for_function("() => Number(document.getElementById('model').dataset.loaded || 0) > 10")
    groups = page.eval_on_selector_all("#model optgroup", "gs => gs.map(g => g.label)")
    assert groups == ["Images", "Video", "Music"]
    for model, tag, count in (("veo3.1-fast", "video", 1), ("suno-v4.5", "audio", 2)):
        page.select_option("#model", model)
        generate(page, f"a {tag} of the sea")
        wait_data(page, "#task", "status", "completed", timeout=20)
        # The players load our stored copies, and the browser can really read them.
        page.wait_for_function(
            "([tag, n]) => { const els = [...document.querySelectorAll('#media ' + tag)];"
            " return els.length === n && els.every(e => e.readyState >= 1 && e.duration > 0); }",
            arg=[tag, count],
            timeout=15_000,
        )
        sources = page.eval_on_selector_all(f"#media {tag}", "els => els.map(e => e.src)")
        assert all("/files/generated/" in src for src in sources), sources
        assert page.is_hidden("#image-link")
    write_screenshot(page, "demo-audio.png")


def test_demo_explains_itself_shows_progress_and_passes_axe(
    relay: Callable[..., AppProcess], sim: str, new_page: Callable[..., Any]
) -> None:
    from axe_playwright_python.sync_playwright import Axe

    sim_config(sim, callback_delay=3)
    # As `relay demo` runs it: the reconciler asks the simulator how tasks are doing.
    app = relay(RELAY_RECONCILE_AFTER="1", RELAY_RECONCILE_INTERVAL="0.5")
    page = new_page()
    page.goto(app.url)
    page.wait_for_function("() => Number(document.getElementById('model').dataset.loaded || 0) > 10")
    assert page.is_visible("#simulated"), "the page says its results come from the simulator"
    # The labels take the clicks (no invisible input on top of them).
    page.click("label[for=mode-i2i]")
    assert page.is_checked("#mode-i2i") and page.is_visible("#reference")
    page.click("label[for=mode-t2i]")
    assert page.is_checked("#mode-t2i")

    # Sora reports progress while it runs: the page shows it between pending and done.
    page.select_option("#model", "sora-2-text-to-video")
    generate(page, "a paper boat on a river")
    page.wait_for_function(
        "() => document.getElementById('task').dataset.status === 'processing'"
        " && document.getElementById('progress').value > 0",
        timeout=15_000,
    )
    wait_data(page, "#task", "status", "completed", timeout=20)
    assert len(versions_of(page)) >= 3  # pending, processing (with progress), ..., completed

    results = Axe().run(page)
    serious = [v for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
    assert not serious, [(v["id"], v["help"], [n["target"] for n in v["nodes"]]) for v in serious]


def test_demo_page_downloads_and_shares(
    relay: Callable[..., AppProcess], sim: str, new_page: Callable[..., Any]
) -> None:
    sim_config(sim, callback_delay=0.5)
    app = relay(RELAY_LEGACY_ROUTES="on")
    page = new_page()
    page.goto(app.url)
    generate(page, "a kite over the sea")
    wait_data(page, "#task", "status", "completed")
    with page.expect_download() as download:
        page.click("#download")
    assert download.value.suggested_filename.startswith("a-kite-over-the-sea-")
    page.click("#share")
    page.wait_for_selector("#share-link:not([hidden])")
    share_url = page.get_attribute("#share-link", "href")
    assert share_url and share_url.startswith(f"{app.url}/share/")
    shared = httpx.get(share_url, timeout=5)
    assert shared.status_code == 200 and 'property="og:image"' in shared.text


def test_relay_js_watch_my_tasks(relay: Callable[..., AppProcess], sim: str, new_page: Callable[..., Any]) -> None:
    """watchMyTasks with a user's JWT: opened before any task exists, it sees three tasks
    created afterwards (in two tabs' worth of creates) finish; another user's sees none."""
    import time as clock

    import jwt as pyjwt

    secret = "jwt-secret-for-browser-tests-0123456789abcdefgh"
    app = relay(RELAY_AUTH="jwt", RELAY_JWT_SECRET=secret)
    tokens = {u: pyjwt.encode({"sub": u, "exp": int(clock.time()) + 600}, secret, algorithm="HS256") for u in ("ann", "ben")}
    page = new_page()
    page.goto(app.url)
    page.evaluate(
        """async (tokens) => {
            const relay = await import('/static/relay.js');
            window.__mine = {ann: {}, ben: {}};
            for (const user of ["ann", "ben"]) {
                relay.watchMyTasks({jwt: tokens[user], onUpdate: (t) => { window.__mine[user][t.taskId] = t.status; }});
            }
        }""",
        tokens,
    )
    created = [
        httpx.post(f"{app.url}/api/tasks", json={"prompt": f"mine {n}"}, headers={"Authorization": f"Bearer {tokens['ann']}"},
                   timeout=10).json()["taskId"]
        for n in range(3)
    ]
    page.wait_for_function("(ids) => ids.every(id => window.__mine.ann[id] === 'pending')", arg=created)
    for task_id in created:
        httpx.post(f"{sim}/sim/tasks/{task_id}/complete", timeout=5).raise_for_status()
    page.wait_for_function("(ids) => ids.every(id => window.__mine.ann[id] === 'completed')", arg=created)
    assert page.evaluate("() => Object.keys(window.__mine.ben).length") == 0


def test_demo_page_cancels(relay: Callable[..., AppProcess], sim: str, new_page: Callable[..., Any]) -> None:
    app = relay()
    page = new_page()
    page.goto(app.url)
    generate(page, "never mind")
    wait_data(page, "#task", "status", "pending")
    page.click("#cancel")
    wait_data(page, "#task", "status", "cancelled")
    assert page.inner_text("#status") == "Cancelled" and page.is_hidden("#cancel")
    task_id = dataset(page, "#task")["taskId"]
    httpx.post(f"{sim}/sim/tasks/{task_id}/complete", timeout=5).raise_for_status()
    assert dataset(page, "#task")["status"] == "cancelled"
