"""KIE in earnest, through the real HTTP simulator and a real redis-server: lost and
duplicated callbacks, every kind of provider failure, idempotent creation, signed
callbacks and the reconciler."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from relay.errors import ProviderError
from relay.providers.kie import _check, _Retryable
from tests.conftest import StartRelay
from tests.helpers import create, sim_task, success_payload, wait_status
from tests.servers import HOST, free_port
from tests.sse import Stream
from tests.waiting import until

FAST_RECONCILE = {"RELAY_RECONCILE_AFTER": "0.3", "RELAY_RECONCILE_INTERVAL": "0.2"}


async def polled(client: httpx.AsyncClient, sim: str, task_id: str, n: int) -> bool:
    return bool((await sim_task(client, sim, task_id))["statusQueries"] >= n)


async def answered(client: httpx.AsyncClient, sim: str, task_id: str, n: int) -> bool:
    return bool((await sim_task(client, sim, task_id))["callbacksAnswered"] >= n)


async def started(server: Any) -> bool:
    return bool(server.started)


async def configure(client: httpx.AsyncClient, sim: str, **changes: Any) -> None:
    (await client.patch(f"{sim}/sim/config", json=changes)).raise_for_status()


async def test_dropped_callback_is_recovered_by_the_reconciler(
    start_relay: StartRelay, redis_url: str, sim: str, client: httpx.AsyncClient
) -> None:
    await configure(client, sim, callback_delay=0.3, drop_callbacks=1.0, record_null_seconds=0.5)
    relay = start_relay(redis_url, **FAST_RECONCILE)
    task = await create(client, relay.url)
    async with Stream(client, task["eventsUrl"]) as stream:
        events = await stream.until_status("completed", timeout=20)
    assert events[-1].json()["resultUrls"]
    at_sim = await sim_task(client, sim, task["taskId"])
    assert at_sim["callbacksSent"] == 0, "the callback really was dropped"
    assert at_sim["statusQueries"] >= 1


async def test_task_the_provider_never_finishes_times_out(
    start_relay: StartRelay, redis_url: str, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay(redis_url, RELAY_TASK_DEADLINE="2", **FAST_RECONCILE)
    task = await create(client, relay.url)
    async with Stream(client, task["eventsUrl"]) as stream:
        events = await stream.until_status("failed", timeout=20)
    final = events[-1].json()
    assert final["error"]["code"] == "timeout" and final["completedAt"]


async def test_recordinfo_null_just_after_create_means_pending(
    start_relay: StartRelay, redis_url: str, sim: str, client: httpx.AsyncClient
) -> None:
    await configure(client, sim, record_null_seconds=60)
    relay = start_relay(redis_url, **FAST_RECONCILE)
    task = await create(client, relay.url)
    await until(lambda: polled(client, sim, task["taskId"], 3), timeout=10, what="three status polls")
    body = (await client.get(task["statusUrl"])).json()
    assert body["status"] == "pending" and body["version"] == 1


async def test_duplicates_and_out_of_order_change_nothing_after_terminal(
    start_relay: StartRelay, redis_url: str, sim: str, client: httpx.AsyncClient
) -> None:
    await configure(client, sim, callback_delay=0.2, duplicate_callbacks=2, out_of_order=True)
    relay = start_relay(redis_url)
    task = await create(client, relay.url)
    final = await wait_status(client, task["statusUrl"], "completed")
    # Every delivery (the success three times, then a failure) is answered before we look again.
    await until(lambda: answered(client, sim, task["taskId"], 4), timeout=10, what="four deliveries")
    callback_url = (await sim_task(client, sim, task["taskId"]))["callBackUrl"]
    late = {"code": 501, "msg": "Playground task failed.", "data": {"taskId": task["taskId"], "state": "fail", "failCode": "500", "failMsg": "late"}}
    assert (await client.post(callback_url, json=late)).status_code == 200
    after = (await client.get(task["statusUrl"])).json()
    assert after == final


# -- honest errors ---------------------------------------------------------------


async def post_task(client: httpx.AsyncClient, relay_url: str, **body: Any) -> httpx.Response:
    return await client.post(f"{relay_url}/api/tasks", json={"prompt": "a fox", **body})


async def test_html_error_page(start_relay: StartRelay, sim: str, client: httpx.AsyncClient) -> None:
    await configure(client, sim, html_error_rate=1.0)
    relay = start_relay(KIE_RETRY_BUDGET="1")
    response = await post_task(client, relay.url)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "provider_bad_response"
    assert "KIE answered with HTML, status 502" in error["message"]


async def test_bad_key(start_relay: StartRelay, sim: str, client: httpx.AsyncClient) -> None:
    relay = start_relay(KIE_API_KEY="not-the-key")
    response = await post_task(client, relay.url)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "provider_auth_failed" and "KIE_API_KEY" in error["message"]


async def test_out_of_credits(start_relay: StartRelay, sim: str, client: httpx.AsyncClient) -> None:
    await configure(client, sim, credits=0)
    relay = start_relay()
    response = await post_task(client, relay.url)
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "provider_out_of_credits"
    await configure(client, sim, credits=10000)


async def test_invalid_field_is_named(start_relay: StartRelay, sim: str, client: httpx.AsyncClient) -> None:
    relay = start_relay()
    # Refused by the model's catalogue entry, naming the field, before KIE is paid.
    response = await post_task(client, relay.url, model="google/nano-banana-edit")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and "imageUrls" in error["message"]
    assert (await client.get(f"{sim}/sim/tasks")).json()["tasks"] == []


async def test_rate_limited_is_retried_then_503(start_relay: StartRelay, sim: str, client: httpx.AsyncClient) -> None:
    await configure(client, sim, rate_limit_burst=1)
    relay = start_relay(KIE_RETRY_BUDGET="1.5")
    assert (await post_task(client, relay.url)).status_code == 202
    started = time.monotonic()
    response = await post_task(client, relay.url, prompt="another")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "provider_rate_limited"
    assert int(response.headers["retry-after"]) >= 1
    assert time.monotonic() - started < 10, "retries stay within the budget"
    assert len((await client.get(f"{sim}/sim/tasks")).json()["tasks"]) == 1


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in held:
            conn.close()
        listener.close()


async def test_timeout(start_relay: StartRelay, sim: str, client: httpx.AsyncClient) -> None:
    with silent_server() as port:
        relay = start_relay(KIE_BASE_URL=f"http://{HOST}:{port}", KIE_TIMEOUT="0.5")
        response = await post_task(client, relay.url)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "provider_timeout"


async def test_connection_refused(start_relay: StartRelay, sim: str, client: httpx.AsyncClient) -> None:
    relay = start_relay(KIE_BASE_URL=f"http://{HOST}:{free_port()}", KIE_RETRY_BUDGET="1")
    response = await post_task(client, relay.url)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "provider_unreachable" and "could not connect to KIE" in error["message"]


@pytest.mark.parametrize(
    ("status", "body", "content_type", "code"),
    [
        (200, b'{"code":401,"msg":"You do not have access permissions"}', "application/json", "provider_auth_failed"),
        (401, b'{"code":401,"msg":"Unauthorized"}', "application/json", "provider_auth_failed"),
        (200, b'{"code":402,"msg":"insufficient credits"}', "application/json", "provider_out_of_credits"),
        (402, b'{"msg":"insufficient credits"}', "application/json", "provider_out_of_credits"),
        (200, b'{"code":422,"message":"input.prompt is required"}', "application/json", "provider_rejected_input"),
        (200, b'{"code":505,"msg":"feature disabled"}', "application/json", "provider_error"),
        (200, b"not json at all", "text/plain", "provider_bad_response"),
        (200, b"[1,2]", "application/json", "provider_bad_response"),
        (404, b"<!DOCTYPE html><title>Not found</title>", "text/html", "provider_bad_response"),
    ],
)
def test_every_kie_answer_is_judged_by_body_code_and_http_status(
    status: int, body: bytes, content_type: str, code: str
) -> None:
    response = httpx.Response(status, content=body, headers={"content-type": content_type})
    with pytest.raises(ProviderError) as caught:
        _check(response)
    assert caught.value.code == code
    assert "Traceback" not in caught.value.message and caught.value.message


@pytest.mark.parametrize("status,code", [(200, 429), (429, 429), (200, 500), (503, 503), (200, 455)])
def test_retryable_answers(status: int, code: int) -> None:
    response = httpx.Response(status, json={"code": code, "msg": "busy"}, headers={"retry-after": "2"})
    with pytest.raises(_Retryable) as caught:
        _check(response)
    assert caught.value.final.status == 503 and caught.value.retry_after == 2.0


def test_recordinfo_null_is_not_an_error() -> None:
    body = _check(httpx.Response(200, json={"code": 422, "msg": "recordInfo is null", "data": None}))
    assert body["data"] is None


# -- idempotent creation -------------------------------------------------------------


async def test_double_click_creates_one_task(start_relay: StartRelay, redis_url: str, sim: str, client: httpx.AsyncClient) -> None:
    relay = start_relay(redis_url)
    answers = await asyncio.gather(*(post_task(client, relay.url, prompt="double click") for _ in range(5)))
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["taskId"] for a in answers}) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 4
    assert len((await client.get(f"{sim}/sim/tasks")).json()["tasks"]) == 1


async def test_idempotency_key_replays_the_first_task(
    start_relay: StartRelay, backend: str, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay(backend)
    headers = {"Idempotency-Key": "order-42"}
    first = await client.post(f"{relay.url}/api/tasks", json={"prompt": "first"}, headers=headers)
    again = await client.post(f"{relay.url}/api/tasks", json={"prompt": "changed my mind"}, headers=headers)
    other = await client.post(f"{relay.url}/api/tasks", json={"prompt": "first"}, headers={"Idempotency-Key": "order-43"})
    assert first.status_code == again.status_code == other.status_code == 202
    assert again.json()["taskId"] == first.json()["taskId"] != other.json()["taskId"]
    assert again.headers["idempotent-replayed"] == "true"
    assert len((await client.get(f"{sim}/sim/tasks")).json()["tasks"]) == 2


async def test_failed_create_does_not_block_a_retry(start_relay: StartRelay, sim: str, client: httpx.AsyncClient) -> None:
    await configure(client, sim, credits=0)
    relay = start_relay()
    headers = {"Idempotency-Key": "retry-me"}
    assert (await client.post(f"{relay.url}/api/tasks", json={"prompt": "x"}, headers=headers)).status_code == 402
    await configure(client, sim, credits=10000)
    assert (await client.post(f"{relay.url}/api/tasks", json={"prompt": "x"}, headers=headers)).status_code == 202


# -- signed callbacks ----------------------------------------------------------------

HMAC_KEY = "whk-test-key-0123456789"


def signature(task_id: str, timestamp: int | str, key: str = HMAC_KEY) -> str:
    digest = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


async def test_signed_callbacks(start_relay: StartRelay, sim: str, client: httpx.AsyncClient) -> None:
    await configure(client, sim, webhook_hmac_key=HMAC_KEY)
    relay = start_relay(KIE_WEBHOOK_HMAC_KEY=HMAC_KEY)

    # The simulator signs like KIE: accepted end to end.
    task = await create(client, relay.url)
    (await client.post(f"{sim}/sim/tasks/{task['taskId']}/complete")).raise_for_status()
    await wait_status(client, task["statusUrl"], "completed")

    target = await create(client, relay.url, "target")
    tid = target["taskId"]
    url = (await sim_task(client, sim, tid))["callBackUrl"]
    now = int(time.time())
    bad_cases: list[dict[str, str | bytes]] = [
        {},  # unsigned
        {"X-Webhook-Timestamp": str(now), "X-Webhook-Signature": signature(tid, now, "wrong-key")},
        {"X-Webhook-Timestamp": str(now), "X-Webhook-Signature": signature("other-task", now)},
        {"X-Webhook-Timestamp": str(now - 301), "X-Webhook-Signature": signature(tid, now - 301)},
        {"X-Webhook-Timestamp": str(now + 400), "X-Webhook-Signature": signature(tid, now + 400)},
        {"X-Webhook-Timestamp": "yesterday", "X-Webhook-Signature": signature(tid, "yesterday")},
        {"X-Webhook-Timestamp": str(now), "X-Webhook-Signature": "%%%not-base64%%%"},
        {"X-Webhook-Timestamp": str(now), "X-Webhook-Signature": ""},
        {"X-Webhook-Timestamp": "9" * 40, "X-Webhook-Signature": signature(tid, now)},
        {"X-Webhook-Timestamp": str(now), "X-Webhook-Signature": "\u00e9t\u00e9".encode()},
    ]
    for headers in bad_cases:
        response = await client.post(url, json=success_payload(tid), headers=headers)  # type: ignore[arg-type]  # raw bytes, on purpose
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["error"]["code"] in ("invalid_signature", "stale_signature")
    assert (await client.get(target["statusUrl"])).json()["version"] == 1, "nothing stored from a refused callback"
    good = {"X-Webhook-Timestamp": str(now), "X-Webhook-Signature": signature(tid, now)}
    assert (await client.post(url, json=success_payload(tid), headers=good)).status_code == 200
    await wait_status(client, target["statusUrl"], "completed")


# -- the reconciler across instances ------------------------------------------------


async def test_two_reconcilers_poll_each_task_once_per_interval(
    start_relay: StartRelay, redis_url: str, sim: str, client: httpx.AsyncClient
) -> None:
    env = {"RELAY_RECONCILE_AFTER": "0.1", "RELAY_RECONCILE_INTERVAL": "1"}
    a = start_relay(redis_url, **env)
    start_relay(redis_url, **env)
    task = await create(client, a.url)
    started = time.monotonic()
    await until(lambda: polled(client, sim, task["taskId"], 1), timeout=10, what="the first status poll")
    first_poll = time.monotonic()
    await asyncio.sleep(4.0)  # the window being measured, not a synchronisation
    polls = (await sim_task(client, sim, task["taskId"]))["statusQueries"]
    window = time.monotonic() - first_poll
    # One lease per 1 s interval across both instances: at most one poll per interval
    # (plus the first); two unco-ordinated reconcilers would poll about twice that.
    assert 2 <= polls <= int(window / 1.0) + 2, (polls, window, first_poll - started)


# -- a callback that beats the create response -----------------------------------------


async def test_callback_racing_the_create_is_not_lost(sim: str, client: httpx.AsyncClient) -> None:
    """The simulator is told to finish the task the moment KIE's create answers, before
    Relay has stored it: the callback is parked and applied once the task exists."""
    import uvicorn

    from relay.app import create_app
    from relay.providers.base import CreateRequest
    from relay.settings import Settings

    port = free_port()
    settings = Settings.from_env(
        {
            "RELAY_PROVIDER": "sim", "KIE_BASE_URL": sim, "KIE_API_KEY": "sim-key",
            "RELAY_PUBLIC_URL": f"http://{HOST}:{port}", "RELAY_SECRET": "x" * 40, "RELAY_MIRROR": "off",
        }
    )
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    try:
        await until(lambda: started(server), timeout=10, what="uvicorn to start")
        services = app.state.services
        real_create = services.provider.for_model("google/nano-banana").create
        parked_statuses: list[int] = []

        async def racing_create(request: CreateRequest) -> str:
            task_id = await real_create(request)
            delivered = (await client.post(f"{sim}/sim/tasks/{task_id}/complete")).json()
            parked_statuses.append(delivered["status"])
            return str(task_id)

        services.provider.for_model("google/nano-banana").create = racing_create
        task = await create(client, f"http://{HOST}:{port}")
        assert parked_statuses == [200], "the early callback was acknowledged (parked)"
        assert task["status"] == "completed", "the parked callback was applied at create time"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
