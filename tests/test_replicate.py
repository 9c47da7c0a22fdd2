"""Replicate, the second provider (issue #14): its recorded shapes read right, its
webhooks verified the way Replicate signs them, and a Replicate-backed model going
pending -> completed / failed / cancelled through Relay against the simulator's
Replicate mode (real uvicorn processes, real Redis)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from relay.errors import InvalidPayload
from relay.models import ProviderState
from relay.providers.replicate import normalize_prediction
from relay.sim.delivery import standard_webhook_headers
from tests.conftest import StartRelay
from tests.helpers import metric, sim_task, wait_status
from tests.waiting import until

FIXTURES = Path(__file__).parent / "fixtures" / "replicate"
MODEL = "black-forest-labs/flux-schnell"
SIM_SECRET = "whsec_cmVsYXktc2ltdWxhdG9yLXJlcGxpY2F0ZS1zZWNyZXQ="


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


EXPECTED = {
    "get-starting.json": ProviderState.PENDING,
    "create-201-version-sdxl.json": ProviderState.PENDING,
    "create-201-official-model-llama3.json": ProviderState.PENDING,
    "get-processing.json": ProviderState.RUNNING,
    "create-201-flux-schnell-prefer-wait-sdkmock.json": ProviderState.RUNNING,
    "get-succeeded-list-output.json": ProviderState.SUCCEEDED,
    "get-succeeded-legacy-serializer.json": ProviderState.SUCCEEDED,
    "get-failed.json": ProviderState.FAILED,
    "get-canceled.json": ProviderState.FAILED,
    "cancel-200.json": ProviderState.FAILED,
    "webhook-starting-docs.json": ProviderState.PENDING,
    "webhook-completed-signed-synthetic.json": ProviderState.SUCCEEDED,
}


@pytest.mark.inprocess
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_predictions_read_right(name: str) -> None:
    body = fixture(name)["body"]
    report = normalize_prediction(body)
    assert report.state is EXPECTED[name], (name, report)
    assert report.task_id == body["id"]
    if report.state is ProviderState.SUCCEEDED:
        assert report.result_urls and all(u.startswith("https://") for u in report.result_urls)
    if name in ("get-canceled.json", "cancel-200.json"):
        assert report.error is not None and report.error.code == "cancelled"


@pytest.mark.inprocess
def test_output_shapes_and_a_documentation_bug() -> None:
    base = fixture("get-succeeded-string-output.json")["body"]
    one = normalize_prediction({**base, "output": "https://replicate.delivery/pbxt/a/out.png"})
    assert one.result_urls == ("https://replicate.delivery/pbxt/a/out.png",)
    # A text model's string output is no result file Relay can keep.
    assert normalize_prediction(base).state is ProviderState.FAILED
    # Replicate's own docs show `"status": "successful"`, which the API never sends.
    with pytest.raises(InvalidPayload):
        normalize_prediction(fixture("webhook-completed-docs.json")["body"])


@pytest.mark.inprocess
def test_the_simulator_signs_as_replicate_does() -> None:
    vector = fixture("webhook-signature-vector.json")
    body = fixture("webhook-completed-signed-synthetic.json")["body"]
    raw = json.dumps(body).encode()
    headers = standard_webhook_headers(SIM_SECRET, raw)
    Webhook(SIM_SECRET).verify(raw, headers, json_parse=False)  # raises if not
    # The public test vector (svix/replicate SDKs) with our own HMAC recipe.
    secret = base64.b64decode(vector["secret"].removeprefix("whsec_"))
    import hashlib
    import hmac

    mac = hmac.new(secret, vector["signed_content"].encode(), hashlib.sha256).digest()
    assert "v1," + base64.b64encode(mac).decode() in json.dumps(vector)


def replicate_env(**extra: str) -> dict[str, str]:
    return {"RELAY_RECONCILE_AFTER": "1", "RELAY_RECONCILE_INTERVAL": "0.5", **extra}


async def create(client: httpx.AsyncClient, relay_url: str, **fields: Any) -> dict[str, Any]:
    answer = await client.post(f"{relay_url}/api/tasks", json={"prompt": "a heron", "model": MODEL, **fields})
    assert answer.status_code == 202, answer.text
    task: dict[str, Any] = answer.json()
    return task


async def test_pending_to_completed_and_failed(
    start_relay: StartRelay, redis_url: str, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay(redis_url, **replicate_env())
    done = await create(client, relay.url)
    assert done["provider"] == "replicate" and done["status"] == "pending"
    at_sim = await sim_task(client, sim, done["taskId"])
    assert at_sim["family"] == "replicate" and at_sim["input"]["webhook_events_filter"] == ["start", "completed"]
    assert at_sim["input"]["input"] == {"prompt": "a heron"}
    (await client.post(f"{sim}/sim/tasks/{done['taskId']}/complete")).raise_for_status()
    final = await wait_status(client, done["statusUrl"], "completed")
    assert final["resultUrls"] and "/files/generated/" in final["resultUrls"][0], "copied at once (outputs live 1 h)"
    failed = await create(client, relay.url, options={"num_outputs": 2})
    (await client.post(f"{sim}/sim/tasks/{failed['taskId']}/fail")).raise_for_status()
    end = await wait_status(client, failed["statusUrl"], "failed")
    assert end["error"]["code"] == "provider_failed" and "CUDA" in end["error"]["message"]


async def test_webhook_signatures_and_replays(
    start_relay: StartRelay, redis_url: str, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay(redis_url, **replicate_env(RELAY_RECONCILE_AFTER="300"))
    task = await create(client, relay.url)
    hook = (await sim_task(client, sim, task["taskId"]))["callBackUrl"]
    assert urlsplit(hook).path == "/api/callbacks/replicate" and parse_qs(urlsplit(hook).query)["token"]
    # A webhook claiming success, signed with another secret, with no signature, or stale.
    forged = {"id": task["taskId"], "status": "succeeded", "output": ["https://replicate.delivery/x/evil.png"]}
    raw = json.dumps(forged).encode()
    other = "whsec_" + base64.b64encode(b"not-the-account-secret-0123456").decode()
    stale = standard_webhook_headers(SIM_SECRET, raw)
    stale["webhook-timestamp"] = str(int(time.time()) - 3600)
    stale["webhook-signature"] = Webhook(SIM_SECRET).sign(stale["webhook-id"], _at(int(stale["webhook-timestamp"])), raw.decode())
    for headers, code in (
        (standard_webhook_headers(other, raw), "invalid_signature"),
        ({}, "invalid_signature"),
        (stale, "stale_signature"),
    ):
        answer = await client.post(hook, content=raw, headers={"content-type": "application/json", **headers})
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == code
    assert (await client.get(task["statusUrl"])).json()["version"] == 1, "nothing changed"
    # The real delivery, then the same delivery replayed: applied once.
    (await client.post(f"{sim}/sim/tasks/{task['taskId']}/complete")).raise_for_status()
    final = await wait_status(client, task["statusUrl"], "completed")
    (await client.post(f"{sim}/sim/tasks/{task['taskId']}/resend")).raise_for_status()
    again = (await client.get(task["statusUrl"])).json()
    assert again["version"] == final["version"]
    assert await metric(client, relay.url, "relay_callbacks_total", family="replicate", outcome="duplicate") == 1


def _at(ts: int) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC)


async def test_a_dropped_webhook_is_caught_by_the_reconciler(
    start_relay: StartRelay, redis_url: str, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay(redis_url, **replicate_env())
    await client.patch(f"{sim}/sim/config", json={"drop_callbacks": 1.0, "callback_delay": 0.3})
    task = await create(client, relay.url)
    await wait_status(client, task["statusUrl"], "completed", timeout=20)
    at_sim = await sim_task(client, sim, task["taskId"])
    # Only the `start` webhook went out; the reconciler read the rest from GET /v1/predictions.
    assert at_sim["statusQueries"] >= 1 and at_sim["callbacksSent"] == 1, at_sim


async def test_cancel_at_replicate(start_relay: StartRelay, redis_url: str, sim: str, client: httpx.AsyncClient) -> None:
    relay = start_relay(redis_url, **replicate_env())
    task = await create(client, relay.url)
    answer = await client.post(task["statusUrl"].replace(f"/{task['taskId']}", f"/{task['taskId']}/cancel"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "cancelled" and "provider cannot" not in answer.json()["error"]["message"]

    async def canceled_at_sim() -> bool:
        return bool((await sim_task(client, sim, task["taskId"]))["state"] == "fail")

    await until(canceled_at_sim, timeout=10, what="the prediction cancelled at the simulator")
    # Replicate's `completed` webhook for the cancel changes nothing.
    assert (await client.get(task["statusUrl"])).json()["version"] == answer.json()["version"]
