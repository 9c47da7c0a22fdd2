"""Every KIE family end to end, over HTTP: `relay serve` (real uvicorn) against the KIE
simulator, which answers and calls back in the shapes KIE really uses. For each family's
representative model: create -> the right KIE endpoint, with the reference images under
the model's own field -> callback(s) -> results mirrored into Relay's storage as the
right kind of file -> `completed` on the SSE stream; and the failure path."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from relay.media import sniff
from tests.conftest import StartRelay
from tests.sse import Stream
from tests.waiting import until

FAST_RECONCILE = {"RELAY_RECONCILE_AFTER": "0.5", "RELAY_RECONCILE_INTERVAL": "0.2"}
IMAGE = "https://images.example.test/in.png"

# model, request extras, KIE family, what the model reads the image from, results, kind
CASES: list[tuple[str, dict[str, Any], str, str | None, int, str]] = [
    ("google/nano-banana-edit", {"imageUrls": [IMAGE]}, "jobs", "image_urls", 1, "image"),
    ("nano-banana-pro", {"imageUrls": [IMAGE]}, "jobs", "image_input", 1, "image"),
    ("gpt-image/1.5-image-to-image", {"imageUrls": [IMAGE]}, "jobs", "input_urls", 1, "image"),
    ("bytedance/v1-pro-image-to-video", {"imageUrls": [IMAGE]}, "jobs", "image_url", 1, "video"),
    ("sora-2-text-to-video", {}, "jobs", None, 1, "video"),
    ("gpt-4o-image", {"imageUrls": [IMAGE]}, "4o", "filesUrl", 1, "image"),
    ("flux-kontext-pro", {"imageUrls": [IMAGE]}, "flux", "inputImage", 1, "image"),
    ("midjourney", {}, "mj", None, 4, "image"),
    ("veo3.1-fast", {"imageUrls": [IMAGE]}, "veo", "imageUrls", 1, "video"),
    ("runway", {"imageUrls": [IMAGE]}, "runway", "imageUrl", 1, "video"),
    ("runway-aleph", {"options": {"videoUrl": "https://videos.example.test/in.mp4"}}, "aleph", None, 1, "video"),
    ("suno-v4.5", {}, "suno", None, 2, "audio"),
]


async def create(client: httpx.AsyncClient, relay_url: str, model: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"{relay_url}/api/tasks", json={"prompt": "a lighthouse", "model": model, **body})
    assert response.status_code == 202, response.text
    task: dict[str, Any] = response.json()
    return task


async def at_sim(client: httpx.AsyncClient, sim: str, task_id: str) -> dict[str, Any]:
    view: dict[str, Any] = (await client.get(f"{sim}/sim/tasks/{task_id}")).json()
    return view


async def check_mirrored(client: httpx.AsyncClient, task: dict[str, Any], count: int, kind: str) -> None:
    assert len(task["resultUrls"]) == count and len(task["providerResultUrls"]) == count
    for url in task["resultUrls"]:
        assert "/files/generated/" in url, "results are our stored copies"
        body = (await client.get(url)).content
        media = sniff(body[:64])
        assert media is not None and media.kind == kind


@pytest.mark.parametrize(("model", "extra", "family", "field", "count", "kind"), CASES, ids=[c[0] for c in CASES])
async def test_family_completes(
    start_relay: StartRelay, sim: str, client: httpx.AsyncClient,
    model: str, extra: dict[str, Any], family: str, field: str | None, count: int, kind: str,
) -> None:
    relay = start_relay()
    task = await create(client, relay.url, model, **extra)
    assert (task["model"], task["kind"], task["status"]) == (model, kind, "pending")
    view = await at_sim(client, sim, task["taskId"])
    assert (view["family"], view["kind"]) == (family, kind)
    if field is not None:
        sent = view["input"][field]
        assert sent == (IMAGE if field in ("image_url", "inputImage", "imageUrl") else [IMAGE])
    async with Stream(client, task["eventsUrl"]) as stream:
        done = await client.post(f"{sim}/sim/tasks/{task['taskId']}/complete")
        assert done.json()["delivered"] is True
        events = await stream.until_status("completed", timeout=20)
    final = events[-1].json()
    await check_mirrored(client, final, count, kind)
    assert final == (await client.get(task["statusUrl"])).json()


@pytest.mark.parametrize("model", ["google/nano-banana", "midjourney", "veo3.1-fast", "runway-aleph", "suno-v4.5"])
async def test_family_fails(start_relay: StartRelay, sim: str, client: httpx.AsyncClient, model: str) -> None:
    relay = start_relay()
    extra = {"options": {"videoUrl": "https://videos.example.test/in.mp4"}} if model == "runway-aleph" else {}
    task = await create(client, relay.url, model, **extra)
    async with Stream(client, task["eventsUrl"]) as stream:
        await client.post(f"{sim}/sim/tasks/{task['taskId']}/fail")
        events = await stream.until_status("failed", timeout=20)
    error = events[-1].json()["error"]
    assert error["code"] in ("provider_failed", "content_policy") and "KIE failed the task" in error["message"]


async def test_suno_text_and_first_callbacks_then_tracks_in_order(
    start_relay: StartRelay, sim: str, client: httpx.AsyncClient
) -> None:
    await client.patch(f"{sim}/sim/config", json={"callback_delay": 1.5})
    relay = start_relay()
    task = await create(client, relay.url, "suno-v4.5")
    async with Stream(client, task["eventsUrl"]) as stream:
        events = await stream.until_status("completed", timeout=20)
    statuses = [e.json()["status"] for e in events]
    assert "processing" in statuses, "the text/first callbacks move the task along"
    assert (await at_sim(client, sim, task["taskId"]))["callbacksSent"] == 3
    final = events[-1].json()
    assert [u.rsplit("/", 1)[1] for u in final["resultUrls"]] == ["0.wav", "1.wav"]
    assert [u.rsplit("/", 1)[1] for u in final["providerResultUrls"]] == ["0.wav", "1.wav"]


async def test_sora_progress_reaches_the_stream(start_relay: StartRelay, sim: str, client: httpx.AsyncClient) -> None:
    await client.patch(f"{sim}/sim/config", json={"callback_delay": 1.5})
    relay = start_relay()
    task = await create(client, relay.url, "sora-2-text-to-video")
    async with Stream(client, task["eventsUrl"]) as stream:
        events = await stream.until_status("completed", timeout=20)
    progress = [e.json()["progress"] for e in events if e.json()["status"] == "processing"]
    assert any(p is not None and 0 < p < 1 for p in progress), progress


async def test_extend_1080p_and_4k_of_a_veo_video(start_relay: StartRelay, sim: str, client: httpx.AsyncClient) -> None:
    relay = start_relay(**FAST_RECONCILE)
    parent = await create(client, relay.url, "veo3.1-fast")
    await client.post(f"{sim}/sim/tasks/{parent['taskId']}/complete")
    done = await until(lambda: completed(client, parent["statusUrl"]), timeout=15, what="the parent video")
    headers = {"X-Parent-Token": parent["token"]}

    extend = await client.post(
        f"{relay.url}/api/tasks", headers=headers,
        json={"model": "veo3.1-extend", "prompt": "and then it rains", "parentTaskId": parent["taskId"]},
    )
    assert extend.status_code == 202, extend.text
    assert (await at_sim(client, sim, extend.json()["taskId"]))["input"]["taskId"] == parent["taskId"]

    # 1080p: KIE answers with the link at once (a GET), so the reconciler completes it.
    hd = await client.post(
        f"{relay.url}/api/tasks", headers=headers, json={"model": "veo3.1-1080p", "parentTaskId": parent["taskId"]}
    )
    assert hd.status_code == 202, hd.text
    assert hd.json()["taskId"] == f"{parent['taskId']}-1080p"
    final = await until(lambda: completed(client, hd.json()["statusUrl"]), timeout=15, what="the 1080p video")
    await check_mirrored(client, final, 1, "video")

    # 4K: KIE calls back under the parent's id; the callback URL names the 4K task.
    uhd = (await client.post(
        f"{relay.url}/api/tasks", headers=headers, json={"model": "veo3.1-4k", "parentTaskId": parent["taskId"]}
    )).json()
    assert uhd["taskId"] == f"{parent['taskId']}-4k"
    sim_id = uhd["taskId"]  # the simulator keeps it under the same name
    async with Stream(client, uhd["eventsUrl"]) as stream:
        assert (await client.post(f"{sim}/sim/tasks/{sim_id}/complete")).json()["delivered"] is True
        events = await stream.until_status("completed", timeout=20)
    await check_mirrored(client, events[-1].json(), 1, "video")
    # The 4K callback carried the parent's id; the parent did not change.
    assert (await client.get(parent["statusUrl"])).json() == done


async def completed(client: httpx.AsyncClient, url: str) -> dict[str, Any] | None:
    body: dict[str, Any] = (await client.get(url)).json()
    return body if body["status"] == "completed" else None


async def test_extend_needs_a_finished_parent_of_the_caller(
    start_relay: StartRelay, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay()
    parent = await create(client, relay.url, "runway")
    body = {"model": "runway-extend", "prompt": "more", "parentTaskId": parent["taskId"]}
    no_token = await client.post(f"{relay.url}/api/tasks", json=body)
    assert no_token.status_code == 401
    early = await client.post(f"{relay.url}/api/tasks", json=body, headers={"X-Parent-Token": parent["token"]})
    assert early.status_code == 409 and early.json()["error"]["code"] == "conflict"
    missing = await client.post(f"{relay.url}/api/tasks", json={"model": "runway-extend", "prompt": "more"})
    assert missing.status_code == 400 and "parentTaskId" in missing.json()["error"]["message"]
    assert len((await client.get(f"{sim}/sim/tasks")).json()["tasks"]) == 1, "nothing was paid for"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": "google/nano-banana-edit", "imageUrls": [IMAGE] * 11}, "at most 10"),
        ({"model": "veo3.1-fast", "prompt": ""}, "prompt is required"),
        ({"model": "google/nano-banana", "options": {"colour": "red"}}, "unknown option(s) for google/nano-banana: colour"),
        ({"model": "google/nano-banana", "options": {"output_format": "gif"}}, "options.output_format must be one of"),
        ({"model": "runway", "options": {"duration": "5"}}, "options.duration must be a whole number"),
        ({"model": "runway-aleph"}, "options.videoUrl is required"),
        ({"model": "midjourney", "imageUrls": [IMAGE] * 6}, "at most 5"),
        ({"model": "no/such-model"}, "unknown model"),
    ],
)
async def test_a_request_that_does_not_fit_the_model_is_refused_before_kie_is_paid(
    start_relay: StartRelay, sim: str, client: httpx.AsyncClient, body: dict[str, Any], fragment: str
) -> None:
    relay = start_relay()
    response = await client.post(f"{relay.url}/api/tasks", json={"prompt": "x", **body})
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]["message"]
    assert (await client.get(f"{sim}/sim/tasks")).json()["tasks"] == []


async def test_models_are_listed(start_relay: StartRelay, sim: str, client: httpx.AsyncClient) -> None:
    relay = start_relay()
    models = {m["id"]: m for m in (await client.get(f"{relay.url}/api/models")).json()["models"]}
    assert {m["kind"] for m in models.values()} == {"image", "video", "audio"}
    pro = models["nano-banana-pro"]
    assert pro["referenceImages"] == {"min": 0, "max": 8, "field": "image_input"}
    assert pro["options"]["resolution"] == {"type": "choice", "values": ["1K", "2K", "4K"]}
    assert models["veo3.1-extend"]["parentTask"] is True and models["sora-2-text-to-video"]["progress"] is True


async def test_an_expired_result_link_is_renewed_through_download_url(
    start_relay: StartRelay, sim: str, client: httpx.AsyncClient
) -> None:
    # The callback is lost and the links die after 0.3 s, so by the time the reconciler
    # learns of the result, KIE's link answers 403: Relay asks download-url for a new one.
    await client.patch(f"{sim}/sim/config", json={"callback_delay": 0.1, "drop_callbacks": 1.0, "link_ttl": 0.3})
    relay = start_relay(RELAY_RECONCILE_AFTER="1.5", RELAY_RECONCILE_INTERVAL="0.3")
    task = await create(client, relay.url, "veo3.1-fast")
    final = await until(lambda: completed(client, task["statusUrl"]), timeout=20, what="completed")
    assert final["mirrorError"] is None
    await check_mirrored(client, final, 1, "video")
    assert (await at_sim(client, sim, task["taskId"]))["freshLinks"] >= 1
    expired = await client.get(final["providerResultUrls"][0])
    assert expired.status_code == 403


async def test_a_lost_record_is_rebuilt_with_prompt_mode_and_images(
    start_relay: StartRelay, redis_url: str, sim: str, client: httpx.AsyncClient
) -> None:
    import redis

    relay = start_relay(redis_url)
    task = await create(client, relay.url, "nano-banana-pro", imageUrls=[IMAGE, IMAGE + "?2"])
    flushed = redis.Redis.from_url(redis_url)
    flushed.flushall()
    flushed.close()
    rebuilt = (await client.get(task["statusUrl"])).json()
    assert (rebuilt["prompt"], rebuilt["mode"], rebuilt["model"], rebuilt["kind"]) == (
        "a lighthouse", "image-to-image", "nano-banana-pro", "image",
    )
    assert rebuilt["imageUrls"] == [IMAGE, IMAGE + "?2"]
