"""Relay against KIE's reality, in-process: every recorded or documented KIE payload in
tests/fixtures/kie/ (each names its source) normalizes to the task id, state, result
URLs (in order) and error it stands for; the simulator's answers have the same fields as
the real ones; a create body puts each model's fields where KIE reads them; a task
rebuilt from KIE's record keeps its prompt and reference images.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from relay.catalogue import builtin
from relay.errors import ProviderError
from relay.models import ProviderReport, ProviderState
from relay.normalize import normalize_callback, normalize_status
from relay.providers.base import CreateRequest
from relay.providers.kie import KieClient
from relay.providers.kie_families import FAMILIES, create_body, recorded_request
from relay.sim import shapes
from relay.sim.config import SimConfig
from relay.sim.state import Outcome, SimState, SimTask

pytestmark = pytest.mark.inprocess

FIXTURES = Path(__file__).parent / "fixtures" / "kie"


def load(name: str) -> dict[str, Any]:
    # KIE's pages redact ids as "5c79****be8e"; a real id has no "*", so undo that.
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text().replace("****", "xxxx"))
    return data


def fixtures(kind: str) -> list[str]:
    return sorted(p.name for p in FIXTURES.glob("*.json") if load(p.name)["kind"] == kind)


def status_shape(path: str) -> str:
    """Which normalizer table reads the answer of the status endpoint `path` queried."""
    endpoint = path.split()[-1].split("?")[0]
    for family in FAMILIES.values():
        if family.status == endpoint:
            return family.shape
    raise AssertionError(f"no family queries {endpoint}")


def check(report: Any, expect: dict[str, Any]) -> None:
    assert report.task_id == expect["taskId"]
    assert report.state is ProviderState(expect["state"])
    assert list(report.result_urls) == expect["resultUrls"]
    if expect["errorCode"] is None:
        assert report.error is None
    else:
        assert report.error is not None and f"(code {expect['errorCode']})" in report.error.message


ALL = sorted(p.name for p in FIXTURES.glob("*.json"))
STATUS = [n for n in fixtures("status") if load(n)["expect"]["state"] is not None]
CALLBACKS = fixtures("callback")


def test_there_is_real_traffic_for_every_family() -> None:
    families = {load(n)["family"] for n in STATUS + CALLBACKS}
    assert families >= {"jobs", "4o", "flux", "mj", "veo", "runway", "aleph", "suno"}
    assert sum("real" in n or "apicity" in n for n in STATUS + CALLBACKS) >= 40
    assert all(load(n)["source"] for n in STATUS + CALLBACKS)


@pytest.mark.parametrize("name", STATUS)
def test_status_answers_normalize(name: str) -> None:
    fixture = load(name)
    report = normalize_status(
        fixture["payload"], family=status_shape(fixture["path"]), task_id=fixture["expect"]["taskId"]
    )
    check(report, fixture["expect"])


@pytest.mark.parametrize("name", CALLBACKS)
def test_callbacks_normalize(name: str) -> None:
    fixture = load(name)
    check(normalize_callback(orjson.dumps(fixture["payload"])), fixture["expect"])


def test_every_endpoint_relay_calls_is_one_kie_documents_or_served() -> None:
    """Relay's endpoint table against KIE's sources (its pages and recorded requests), not
    against the simulator, which keeps its own table."""
    known = {str(load(n)["path"]).split()[-1].split("?")[0] for n in ALL if load(n).get("path")}
    known |= set(re.findall(r"/api/v1/[A-Za-z0-9/_-]+", (FIXTURES / "MODELS.md").read_text()))
    for name, family in FAMILIES.items():
        assert {family.create, family.status} <= known, name


# What Relay answers its caller for each refusal KIE was recorded giving a create.
CREATE_REFUSALS = {
    "This field is required": (400, "provider_rejected_input"),  # not retried: it cannot help
    "text is required": (400, "provider_rejected_input"),
    "Please enter callBackUrl.": (400, "provider_rejected_input"),
    "Record does not exist": (400, "provider_rejected_input"),
    "Server exception, please try again later": (503, "provider_unavailable"),
    "Server exception, please try again later or contact customer service": (503, "provider_unavailable"),
}


@pytest.mark.parametrize("name", fixtures("create"))
async def test_the_client_reads_every_recorded_create_answer(name: str) -> None:
    """KieClient.create against each recorded answer, served as KIE served it (KIE itself
    cannot run here, so its recorded bytes stand in for it)."""
    fixture = load(name)
    answer = fixture["payload"]
    calls = []

    def kie(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(fixture.get("http_status", 200), json=answer)

    client = KieClient("https://api.kie.ai", "key", retry_budget=0, transport=httpx.MockTransport(kie))
    request = CreateRequest("google/nano-banana", "a fox", "https://relay.test/cb?token=t")
    try:
        if answer.get("code") == 200:
            assert await client.create(request) == fixture["expect"]["taskId"]
        else:
            with pytest.raises(ProviderError) as refused:
                await client.create(request)
            status, code = CREATE_REFUSALS[answer["msg"]]
            assert (refused.value.status, refused.value.code) == (status, code)
            assert answer["msg"] in refused.value.message
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- create bodies


def body_for(model: str, images: tuple[str, ...] = (), **options: Any) -> dict[str, Any]:
    spec = builtin().get(model)
    checked = spec.check("a fox", images, options, None)
    return create_body(spec, CreateRequest(model, "a fox", "https://relay.test/cb?token=t", images, checked))


@pytest.mark.parametrize(
    ("model", "where", "value"),
    [
        # Each reference-image field as KIE's page for the model names it (MODELS.md).
        ("google/nano-banana-edit", ("input", "image_urls"), ["https://a.test/1.png"]),
        ("nano-banana-pro", ("input", "image_input"), ["https://a.test/1.png"]),
        ("nano-banana-2", ("input", "image_input"), ["https://a.test/1.png"]),
        ("flux-2/pro-image-to-image", ("input", "input_urls"), ["https://a.test/1.png"]),
        ("gpt-image/1.5-image-to-image", ("input", "input_urls"), ["https://a.test/1.png"]),
        ("bytedance/v1-pro-image-to-video", ("input", "image_url"), "https://a.test/1.png"),
        ("kling-2.6/image-to-video", ("input", "image_urls"), ["https://a.test/1.png"]),
        ("gpt-4o-image", ("filesUrl",), ["https://a.test/1.png"]),
        ("flux-kontext-pro", ("inputImage",), "https://a.test/1.png"),
        ("midjourney", ("fileUrls",), ["https://a.test/1.png"]),
        ("veo3.1-fast", ("imageUrls",), ["https://a.test/1.png"]),
        ("runway", ("imageUrl",), "https://a.test/1.png"),
    ],
)
def test_reference_images_go_where_the_model_reads_them(model: str, where: tuple[str, ...], value: Any) -> None:
    body: Any = body_for(model, ("https://a.test/1.png",))
    for key in where:
        body = body[key]
    assert body == value


def test_family_fields_and_callback_urls() -> None:
    mj = body_for("midjourney", ("https://a.test/1.png",))
    assert mj["taskType"] == "mj_img2img" and body_for("midjourney")["taskType"] == "mj_txt2img"
    veo = body_for("veo3.1-fast", ("https://a.test/1.png",))
    assert (veo["model"], veo["generationType"]) == ("veo3_fast", "FIRST_AND_LAST_FRAMES_2_VIDEO")
    suno = body_for("suno-v4.5")
    assert (suno["model"], suno["customMode"], suno["instrumental"]) == ("V4_5", False, False)
    assert suno["callBackUrl"] == "https://relay.test/cb?token=t"
    sora = body_for("sora-2-text-to-video")
    # Sora reports progress to a second URL (jobs-create-sora-2-docs.json).
    assert sora["progressCallBackUrl"] == sora["callBackUrl"] and sora["input"]["upload_method"] == "s3"


def test_a_derived_task_is_named_after_its_parent() -> None:
    spec = builtin().get("veo3.1-4k")
    request = CreateRequest("veo3.1-4k", "", "https://relay.test/cb?token=t", (), {}, parent_task_id="veo_abc")
    body = create_body(spec, request)
    assert body == {"taskId": "veo_abc", "callBackUrl": "https://relay.test/cb?token=t&task=veo_abc-4k"}


# --------------------------------------------------------------------------- recovery


def test_a_lost_task_is_rebuilt_from_the_double_encoded_param() -> None:
    fixture = load("jobs-status-waiting-real.json")
    report = normalize_status(fixture["payload"], family="jobs", task_id=fixture["expect"]["taskId"])
    recorded = recorded_request(fixture["payload"]["data"], "jobs", builtin(), report)
    assert recorded.report.state is ProviderState.PENDING
    assert recorded.model == "nano-banana-2"
    assert recorded.prompt.startswith("Remove all elements around the man")
    assert recorded.image_urls == (
        "https://tempfile.redpandaai.co/kieai/183531/images/user-uploads/2way-person1.jpg",
    )


def test_a_lost_dedicated_task_finds_its_model() -> None:
    fixture = load("veo-callback-success-docs.json")
    data = {"paramJson": fixture["payload"]["data"]["promptJson"], "taskId": "veo_task_abcdef123456"}
    report = ProviderReport("veo_task_abcdef123456", ProviderState.RUNNING, "veo")
    recorded = recorded_request(data, "veo", builtin(), report)
    assert (recorded.model, recorded.prompt) == ("veo3.1-fast", "cat")


# --------------------------------------------------------------------------- the simulator's shapes

SIM_REFERENCES = [
    # (family, success?, status fixture, callback fixture): the real shape each sim answer copies.
    ("jobs", True, "jobs-status-success-real-nano-banana-2.json", "jobs-callback-success-real-z-image.json"),
    ("jobs", False, "jobs-status-grok-imagine-image-to-video-harness-fail-apicity.json", None),
    ("4o", True, "4o-status-success-docs.json", "4o-callback-success-docs.json"),
    ("4o", False, None, "4o-callback-fail-docs.json"),
    ("flux", True, "flux-status-success-docs.json", "flux-callback-success-docs.json"),
    ("mj", True, "mj-status-success-docs.json", "mj-callback-success-docs.json"),
    ("mj", False, None, "mj-callback-fail-docs.json"),
    ("veo", True, "veo-status-success-docs.json", "veo-callback-success-docs.json"),
    ("veo", False, None, "veo-callback-fail-docs.json"),
    ("runway", True, "runway-status-success-docs.json", "runway-callback-success-docs.json"),
    ("runway", False, None, "runway-callback-fail-docs.json"),
    ("aleph", True, "aleph-status-success-docs.json", "aleph-callback-success-docs.json"),
    ("aleph", False, None, "aleph-callback-fail-docs.json"),
    ("suno", True, "suno-status-success-docs.json", "suno-callback-complete-docs.json"),
    ("suno", False, None, "suno-callback-error-docs.json"),
    ("veo-4k", True, None, "veo-callback-4k-success-docs.json"),
]

# Fields a real answer may carry that the simulator leaves out, and why.
OPTIONAL = {
    "fullResultUrls",  # Veo: only in one docs example
    "operationType", "creditsConsumed", "paramJson", "response", "successFlag", "updateTime",  # jobs: some models
    "parentTaskId", "generateParam", "failCode", "failMsg",  # Runway record-detail: not on the quickstart page
    "sourceAudioUrl", "sourceStreamAudioUrl", "sourceImageUrl", "source_audio_url",
    "source_stream_audio_url", "source_image_url",  # Suno: older track fields
}


def sim_task(family: str, success: bool) -> tuple[SimState, SimTask]:
    state = SimState(SimConfig())
    kind = {"veo": "video", "veo-4k": "video", "runway": "video", "aleph": "video", "suno": "audio"}.get(family, "image")
    parent = SimTask("parent", "veo", "veo3.1-fast", "video", {}, None, "p", "http://s.test", 0, 0.0, 5.0)
    task = SimTask("t1", family, "m", kind, {"prompt": "p", "taskType": "mj_txt2img", "input": {"prompt": "p"}},
                   "http://cb.test/", "p", "http://s.test", 1_700_000_000_000, 0.0, 5.0,
                   parent=parent if family == "veo-4k" else None)
    task.result_urls = ["http://s.test/files/t1/0.png"] if success else []
    task.outcome = Outcome(success, 200 if success else 501, "msg", 1_700_000_005_000, 1.0)
    return state, task


def keys(value: Any) -> set[str]:
    """Field paths of a JSON value (lists: their first element), for comparing shapes."""
    out: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key in OPTIONAL:
                continue
            out.add(key)
            out |= {f"{key}.{sub}" for sub in keys(item[0] if isinstance(item, list) and item else item)}
    return out


@pytest.mark.parametrize(("family", "success", "status", "callback"), SIM_REFERENCES)
def test_the_simulator_answers_in_the_real_shapes(family: str, success: bool, status: str | None, callback: str | None) -> None:
    state, task = sim_task(family, success)
    if status is not None:
        real = load(status)["payload"]["data"]
        assert keys(shapes.RECORDS[family](task)) == keys(real)
    if callback is not None:
        real = load(callback)["payload"]
        assert keys(shapes.callback(state, task)) == keys(real)
