"""Tests for relay.normalize: every KIE payload shape in KIE-API.md §4 and §9, plus the
malformed inputs that must end in InvalidPayload (never KeyError/TypeError/ValueError)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from relay.errors import InvalidPayload, ProviderError
from relay.models import TASK_ID_RE, ProviderReport, ProviderState
from relay.normalize import FAMILIES, callback_task_id, normalize_callback, normalize_status

pytestmark = pytest.mark.inprocess

PENDING = ProviderState.PENDING
RUNNING = ProviderState.RUNNING
SUCCEEDED = ProviderState.SUCCEEDED
FAILED = ProviderState.FAILED

JOBS_ID = "3f2c9a1e7b5d4c0a9e8f7d6c5b4a3921"
JOBS_FAIL_ID = "bd3a37c523149e4adf45a3ddb5faf1a8"
RUNWAY_ID = "ee603959-debb-48d1-98c4-a6d1c717eba6"
PNG = "https://tempfile.aiquickdraw.com/h/abc123.png"
FOX = "https://tempfile.aiquickdraw.com/v/fox.png"
MP4 = "https://tempfile.aiquickdraw.com/v/clip.mp4"


def result_json(*urls: str) -> str:
    return orjson.dumps({"resultUrls": list(urls)}).decode()


# --- Realistic payloads (KIE-API.md §9, reconstructed) ------------------------------------

JOBS_CALLBACK_SUCCESS: dict[str, Any] = {
    "code": 200,
    "msg": "Playground task completed successfully.",
    "data": {
        "taskId": JOBS_ID,
        "model": "google/nano-banana-edit",
        "state": "success",
        "param": '{"model":"google/nano-banana-edit","input":{"prompt":"sunset"}}',
        "resultJson": result_json(PNG),
        "consumeCredits": 4,
        "remainedCredits": 996,
        "costTime": 8,
        "createTime": 1755599634000,
        "completeTime": 1755599644000,
        "updateTime": 1755599644000,
    },
}

JOBS_CALLBACK_FAILURE: dict[str, Any] = {
    "code": 501,
    "msg": "Playground task failed.",
    "data": {
        "taskId": JOBS_FAIL_ID,
        "model": "google/nano-banana",
        "state": "fail",
        "failCode": "500",
        "failMsg": "Internal server error",
        "param": "{}",
        "consumeCredits": 0,
        "remainedCredits": 1000,
        "costTime": 0,
        "createTime": 1755596341000,
        "completeTime": 1755597081000,
        "updateTime": 1755597097000,
    },
}

GPT4O_CALLBACK_SUCCESS: dict[str, Any] = {
    "code": 200,
    "msg": "success",
    "data": {"taskId": "task_4o_123", "info": {"result_urls": [FOX]}},
}

GPT4O_CALLBACK_FAILURE: dict[str, Any] = {
    "code": 451,
    "msg": "Failed to download image from filesUrl",
    "data": {"taskId": "task_4o_123", "info": None},
}

FLUX_CALLBACK_SUCCESS: dict[str, Any] = {
    "code": 200,
    "msg": "BFL image generated successfully.",
    "data": {
        "taskId": "flux_789",
        "info": {
            "originImageUrl": "https://cdn.bfl.ai/orig.jpg",
            "resultImageUrl": "https://tempfile.aiquickdraw.com/f/result.jpg",
        },
    },
}

FLUX_CALLBACK_FAILURE: dict[str, Any] = {
    "code": 400,
    "msg": "Your prompt was flagged by Website as violating content policies",
    "data": {"taskId": "flux_789", "info": {"originImageUrl": "", "resultImageUrl": ""}},
}

VEO_CALLBACK_SUCCESS: dict[str, Any] = {
    "code": 200,
    "msg": "Veo3.1 video generated successfully.",
    "data": {
        "taskId": "veo_task_abcdef123456",
        "info": {"resultUrls": [MP4], "originUrls": [], "resolution": "1080p"},
        "fallbackFlag": False,
        "promptJson": '{"prompt":"a fox"}',
    },
}

VEO_CALLBACK_FAILURE: dict[str, Any] = {
    "code": 422,
    "msg": "Your request was rejected by Flow. Please consider fallback channels.",
    "data": {"taskId": "veo_task_abcdef123456", "fallbackFlag": False},
}

RUNWAY_CALLBACK_SUCCESS: dict[str, Any] = {
    "code": 200,
    "msg": "All generated successfully.",
    "data": {
        "task_id": RUNWAY_ID,
        "video_id": "485da89c-7fca-4340-8c04-101025b2ae71",
        "video_url": MP4,
        "image_url": "https://tempfile.aiquickdraw.com/r/cover.jpg",
    },
}

RUNWAY_CALLBACK_FAILURE: dict[str, Any] = {
    "code": 400,
    "msg": "Inappropriate content detected. Please replace the image or video.",
    "data": {"task_id": RUNWAY_ID, "video_id": "", "video_url": "", "image_url": ""},
}

MJ_CALLBACK_SUCCESS: dict[str, Any] = {
    "code": 200,
    "msg": "success",
    "data": {
        "taskId": "mj_task_42",
        "promptJson": '{"prompt":"castle"}',
        "resultUrls": [f"https://cdn.kie.ai/mj/{i}.png" for i in range(4)],
    },
}

MJ_CALLBACK_FAILURE: dict[str, Any] = {
    "code": 500,
    "msg": "Internal Error, Please try again later.",
    "data": {"taskId": "mj_task_42", "promptJson": "{}", "resultUrls": []},
}


def suno_callback(callback_type: str, code: int = 200, tracks: Any = None) -> dict[str, Any]:
    return {
        "code": code,
        "msg": "All generated successfully." if code == 200 else "Generation failed",
        "data": {"callbackType": callback_type, "task_id": "suno_2fac", "data": tracks},
    }


SUNO_TRACKS = [
    {
        "id": "8551",
        "audio_url": "https://cdn.kie.ai/suno/1.mp3",
        "stream_audio_url": "https://cdn.kie.ai/suno/1-stream",
        "image_url": "https://cdn.kie.ai/suno/1.jpg",
        "title": "Iron Man",
    },
    {
        "id": "bd15",
        "audioUrl": "",  # camelCase variant, still empty: fall back to the stream
        "streamAudioUrl": "https://cdn.kie.ai/suno/2-stream",
    },
]

# (id, payload, task_id, state, family, result_urls, error code)
CallbackCase = tuple[str, dict[str, Any], str, ProviderState, str, tuple[str, ...], str | None]

CALLBACK_CASES: list[CallbackCase] = [
    ("jobs-success", JOBS_CALLBACK_SUCCESS, JOBS_ID, SUCCEEDED, "jobs", (PNG,), None),
    (
        "jobs-failure",
        JOBS_CALLBACK_FAILURE,
        JOBS_FAIL_ID,
        FAILED,
        "jobs",
        (),
        "provider_failed",
    ),
    ("4o-success", GPT4O_CALLBACK_SUCCESS, "task_4o_123", SUCCEEDED, "4o", (FOX,), None),
    (
        "4o-failure-451",
        GPT4O_CALLBACK_FAILURE,
        "task_4o_123",
        FAILED,
        "4o",
        (),
        "input_unavailable",
    ),
    (
        "flux-success",
        FLUX_CALLBACK_SUCCESS,
        "flux_789",
        SUCCEEDED,
        "flux",
        ("https://tempfile.aiquickdraw.com/f/result.jpg",),
        None,
    ),
    ("flux-failure-400", FLUX_CALLBACK_FAILURE, "flux_789", FAILED, "flux", (), "content_policy"),
    (
        "veo-success",
        VEO_CALLBACK_SUCCESS,
        "veo_task_abcdef123456",
        SUCCEEDED,
        "veo",
        (MP4,),
        None,
    ),
    (
        "veo-failure-422",
        VEO_CALLBACK_FAILURE,
        "veo_task_abcdef123456",
        FAILED,
        "veo",
        (),
        "provider_rejected",
    ),
    ("runway-success", RUNWAY_CALLBACK_SUCCESS, RUNWAY_ID, SUCCEEDED, "runway", (MP4,), None),
    (
        "runway-failure-400",
        RUNWAY_CALLBACK_FAILURE,
        RUNWAY_ID,
        FAILED,
        "runway",
        (),
        "content_policy",
    ),
    (
        "mj-success",
        MJ_CALLBACK_SUCCESS,
        "mj_task_42",
        SUCCEEDED,
        "mj",
        tuple(f"https://cdn.kie.ai/mj/{i}.png" for i in range(4)),
        None,
    ),
    ("mj-failure-500", MJ_CALLBACK_FAILURE, "mj_task_42", FAILED, "mj", (), "provider_failed"),
    (
        "suno-complete",
        suno_callback("complete", tracks=SUNO_TRACKS),
        "suno_2fac",
        SUCCEEDED,
        "suno",
        ("https://cdn.kie.ai/suno/1.mp3", "https://cdn.kie.ai/suno/2-stream"),
        None,
    ),
    (
        "suno-error",
        suno_callback("error", code=501),
        "suno_2fac",
        FAILED,
        "suno",
        (),
        "provider_failed",
    ),
]


@pytest.mark.parametrize(
    ("payload", "task_id", "state", "family", "urls", "error_code"),
    [case[1:] for case in CALLBACK_CASES],
    ids=[case[0] for case in CALLBACK_CASES],
)
def test_callback_shapes(
    payload: dict[str, Any],
    task_id: str,
    state: ProviderState,
    family: str,
    urls: tuple[str, ...],
    error_code: str | None,
) -> None:
    report = normalize_callback(payload)
    assert report.task_id == task_id
    assert report.state is state
    assert report.family == family
    assert report.result_urls == urls
    assert (report.error.code if report.error else None) == error_code
    assert callback_task_id(payload) == task_id


# --- Callback details ------------------------------------------------------------------------


def test_jobs_failure_message_uses_fail_code_and_fail_msg() -> None:
    report = normalize_callback(JOBS_CALLBACK_FAILURE)
    assert report.error is not None
    assert report.error.message == "KIE failed the task (code 500): Internal server error"


def test_jobs_failure_without_fail_fields_falls_back_to_envelope() -> None:
    payload = copy.deepcopy(JOBS_CALLBACK_FAILURE)
    payload["data"]["failCode"] = ""
    payload["data"]["failMsg"] = ""
    report = normalize_callback(payload)
    assert report.error is not None
    assert report.error.code == "provider_failed"
    assert report.error.message == "KIE failed the task (code 501): Playground task failed."


def test_jobs_failure_flagged_message_is_content_policy() -> None:
    payload = copy.deepcopy(JOBS_CALLBACK_FAILURE)
    payload["data"]["failMsg"] = "Your prompt was flagged as sensitive."
    report = normalize_callback(payload)
    assert report.error is not None
    assert report.error.code == "content_policy"


def test_jobs_result_json_as_object() -> None:
    payload = copy.deepcopy(JOBS_CALLBACK_SUCCESS)
    payload["data"]["resultJson"] = {"resultUrls": [PNG, "https://x.example/2.png"]}
    assert normalize_callback(payload).result_urls == (PNG, "https://x.example/2.png")


def test_message_instead_of_msg() -> None:
    payload = copy.deepcopy(GPT4O_CALLBACK_FAILURE)
    payload["message"] = payload.pop("msg")
    report = normalize_callback(payload)
    assert report.error is not None
    assert report.error.message == (
        "KIE failed the task (code 451): Failed to download image from filesUrl"
    )


def test_failure_without_any_message_gets_readable_default() -> None:
    payload = {"code": 500, "data": {"taskId": "task_4o_123", "info": None}}
    report = normalize_callback(payload)
    assert report.error is not None
    assert report.error.message == "KIE failed the task (code 500): internal error"


@pytest.mark.parametrize(
    ("code", "error_code"),
    [(400, "content_policy"), (451, "input_unavailable"), (500, "provider_failed")],
)
def test_4o_failure_codes(code: int, error_code: str) -> None:
    payload = {"code": code, "msg": "nope", "data": {"taskId": "task_4o_123", "info": None}}
    report = normalize_callback(payload)
    assert report.state is FAILED
    assert report.family == "4o"
    assert report.error is not None
    assert report.error.code == error_code
    assert f"(code {code})" in report.error.message


def test_4o_callback_camel_case_result_urls() -> None:
    payload = copy.deepcopy(GPT4O_CALLBACK_SUCCESS)
    payload["data"]["info"] = {"resultUrls": [FOX]}
    report = normalize_callback(payload)
    assert (report.family, report.result_urls) == ("4o", (FOX,))


@pytest.mark.parametrize(
    ("code", "error_code"), [(500, "provider_failed"), (501, "provider_failed")]
)
def test_flux_and_veo_server_failures(code: int, error_code: str) -> None:
    flux = copy.deepcopy(FLUX_CALLBACK_FAILURE)
    flux["code"], flux["msg"] = code, "Internal error"
    veo = copy.deepcopy(VEO_CALLBACK_FAILURE)
    veo["code"], veo["msg"] = code, "Internal error"
    for payload, family in ((flux, "flux"), (veo, "veo")):
        report = normalize_callback(payload)
        assert (report.state, report.family) == (FAILED, family)
        assert report.error is not None and report.error.code == error_code


def test_flux_falls_back_to_origin_image_url() -> None:
    payload = copy.deepcopy(FLUX_CALLBACK_SUCCESS)
    payload["data"]["info"]["resultImageUrl"] = ""
    assert normalize_callback(payload).result_urls == ("https://cdn.bfl.ai/orig.jpg",)


def test_mj_result_urls_as_objects() -> None:
    payload = copy.deepcopy(MJ_CALLBACK_SUCCESS)
    payload["data"]["resultUrls"] = [
        {"resultUrl": "https://cdn.kie.ai/mj/0.png"},
        {"resultUrl": "https://cdn.kie.ai/mj/1.png"},
    ]
    report = normalize_callback(payload)
    assert report.family == "mj"
    assert report.result_urls == ("https://cdn.kie.ai/mj/0.png", "https://cdn.kie.ai/mj/1.png")


@pytest.mark.parametrize(
    ("callback_type", "state"),
    [("text", RUNNING), ("first", RUNNING), ("complete", SUCCEEDED), ("error", FAILED)],
)
def test_suno_callback_types(callback_type: str, state: ProviderState) -> None:
    code = 501 if callback_type == "error" else 200
    tracks = None if callback_type == "error" else SUNO_TRACKS
    report = normalize_callback(suno_callback(callback_type, code=code, tracks=tracks))
    assert report.task_id == "suno_2fac"
    assert report.family == "suno"
    assert report.state is state
    # Tracks are only final on `complete`: earlier callbacks carry no result URLs.
    assert bool(report.result_urls) is (state is SUCCEEDED)
    assert (report.error is not None) is (state is FAILED)


def test_suno_non_200_code_is_a_failure_whatever_the_callback_type() -> None:
    report = normalize_callback(suno_callback("first", code=531))
    assert report.state is FAILED
    assert report.error is not None and "(code 531)" in report.error.message


def test_failure_envelope_with_only_a_task_id_is_still_a_failure() -> None:
    report = normalize_callback({"code": 500, "msg": "boom", "data": {"taskId": "abc"}})
    assert (report.state, report.family) == (FAILED, "unknown")
    assert report.error is not None and report.error.code == "provider_failed"


def test_jobs_progress_callback() -> None:
    payload = {
        "code": 200,
        "msg": "ok",
        "data": {"taskId": "s2", "state": "generating", "progress": 45},
    }
    report = normalize_callback(payload)
    assert (report.state, report.progress) == (RUNNING, 0.45)


def test_callback_accepts_raw_json_bytes() -> None:
    report = normalize_callback(orjson.dumps(GPT4O_CALLBACK_SUCCESS))
    assert report.result_urls == (FOX,)


def test_result_urls_filtered_deduplicated_in_order() -> None:
    payload = copy.deepcopy(JOBS_CALLBACK_SUCCESS)
    payload["data"]["resultJson"] = orjson.dumps(
        {
            "resultUrls": [
                "https://a.example/1.png",
                "ftp://a.example/x.png",
                "javascript:alert(1)",
                "/relative.png",
                "https://",
                "HTTPS://A.EXAMPLE/3.PNG",
                None,
                42,
                "http://a.example/2.png",
                "https://a.example/1.png",
            ]
        }
    ).decode()
    assert normalize_callback(payload).result_urls == (
        "https://a.example/1.png",
        "HTTPS://A.EXAMPLE/3.PNG",
        "http://a.example/2.png",
    )


# --- callback_task_id --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"data": {"taskId": "a1", "task_id": "b2"}}, "a1"),
        ({"data": {"task_id": "b2"}}, "b2"),
        ({"data": {"taskId": "", "task_id": "b2"}}, "b2"),
        ({"taskId": "top", "data": {}}, "top"),
        ({"task_id": "top_2", "data": None}, "top_2"),
        ({"data": {"taskId": 12345}}, "12345"),
    ],
)
def test_callback_task_id_lookup_order(payload: dict[str, Any], expected: str) -> None:
    assert callback_task_id(payload) == expected


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"code": 200, "data": {}}, "no data.taskId or data.task_id"),
        ({"code": 200}, "no data.taskId or data.task_id"),
        ({"data": {"taskId": "bad id!"}}, "data.taskId 'bad id!' is not a valid task id"),
        ({"data": {"task_id": "x" * 129}}, "data.task_id"),
        ({"data": {"taskId": "../etc/passwd"}}, "not a valid task id"),
        ({"data": {"taskId": {"id": 1}}}, "data.taskId is not a string"),
        ({"data": {"taskId": True}}, "data.taskId is not a string"),
        ([JOBS_CALLBACK_SUCCESS], "not a JSON object (got list)"),
        (None, "not a JSON object (got NoneType)"),
        (b"<html><body>502 Bad Gateway</body></html>", "not JSON (starts with '<html>"),
    ],
)
def test_callback_task_id_invalid(payload: object, fragment: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        callback_task_id(payload)
    assert fragment in info.value.message


# --- Invalid callbacks -------------------------------------------------------------------------


def _jobs_with(**changes: Any) -> dict[str, Any]:
    payload = copy.deepcopy(JOBS_CALLBACK_SUCCESS)
    payload["data"].update(changes)
    return payload


INVALID_CALLBACKS: list[tuple[str, object, str]] = [
    ("list-body", [1, 2], "callback is not a JSON object (got list)"),
    ("int-body", 7, "callback is not a JSON object (got int)"),
    ("html-text", "<!DOCTYPE html><html>", "callback body is not JSON"),
    ("no-data", {"code": 200, "msg": "ok", "taskId": "abc"}, "callback has no data object"),
    ("data-is-list", {"code": 200, "taskId": "abc", "data": [1]}, "no data object"),
    ("no-task-id", {"code": 200, "data": {"state": "success"}}, "no data.taskId or data.task_id"),
    ("bad-task-id", _jobs_with(taskId="a b"), "data.taskId 'a b' is not a valid task id"),
    (
        "unknown-state",
        _jobs_with(state="weird"),
        "data.state 'weird' is not one of waiting, queuing, generating, success, fail",
    ),
    ("state-not-string", _jobs_with(state=3), "data.state 3 is not one of"),
    ("empty-state", _jobs_with(state=""), "data.state is missing"),
    (
        "garbage-result-json",
        _jobs_with(resultJson="{not json"),
        "data.resultJson is not valid JSON",
    ),
    ("result-json-list", _jobs_with(resultJson="[1, 2]"), "data.resultJson is not a JSON object"),
    ("result-json-number", _jobs_with(resultJson=5), "data.resultJson is not an object"),
    ("success-no-result-json", _jobs_with(resultJson=""), "no result URL in data.resultJson"),
    (
        "success-empty-urls",
        _jobs_with(resultJson='{"resultUrls":[]}'),
        "no result URL in data.resultJson.resultUrls",
    ),
    (
        "success-text-model",
        _jobs_with(resultJson='{"resultObject":{"text":"hi"}}'),
        "no result URL",
    ),
    (
        "success-non-http-url",
        _jobs_with(resultJson='{"resultUrls":["file:///etc/passwd"]}'),
        "no result URL",
    ),
    (
        "4o-success-info-null",
        {"code": 200, "msg": "success", "data": {"taskId": "t4o", "info": None}},
        "4o success for task t4o has no result URL in data.info.result_urls",
    ),
    (
        "veo-success-no-urls",
        {"code": 200, "data": {"taskId": "v1", "fallbackFlag": False, "info": {"resultUrls": []}}},
        "veo success for task v1 has no result URL",
    ),
    (
        "runway-success-empty-video",
        {"code": 200, "data": {"task_id": "r1", "video_url": "", "image_url": "https://x/y.jpg"}},
        "no result URL in data.video_url",
    ),
    (
        "flux-no-code",
        {"msg": "ok", "data": {"taskId": "f1", "info": {"resultImageUrl": "https://x/y.jpg"}}},
        "flux callback has no integer code",
    ),
    (
        "unknown-shape-success",
        {"code": 200, "msg": "ok", "data": {"taskId": "abc", "foo": 1}},
        "none of the known result fields",
    ),
    ("suno-unknown-type", suno_callback("halfway"), "data.callbackType 'halfway' is not one of"),
    (
        "suno-complete-no-tracks",
        suno_callback("complete", tracks=None),
        "no result URL in data.data",
    ),
]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [case[1:] for case in INVALID_CALLBACKS],
    ids=[case[0] for case in INVALID_CALLBACKS],
)
def test_invalid_callbacks(payload: object, fragment: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        normalize_callback(payload)
    assert fragment in info.value.message
    assert info.value.status == 400
    assert info.value.code == "invalid_payload"


def test_failed_jobs_task_ignores_garbage_result_json() -> None:
    # resultJson only matters on success; a failure report must not be lost to it.
    payload = copy.deepcopy(JOBS_CALLBACK_FAILURE)
    payload["data"]["resultJson"] = "{garbage"
    assert normalize_callback(payload).state is FAILED


# --- Status queries ------------------------------------------------------------------------------


def ok(data: dict[str, Any]) -> dict[str, Any]:
    return {"code": 200, "msg": "success", "data": data}


JOBS_STATUS_SUCCESS = ok(
    {
        "taskId": JOBS_ID,
        "model": "google/nano-banana-edit",
        "state": "success",
        "param": "{}",
        "resultJson": result_json(PNG),
        "failCode": "",
        "failMsg": "",
        "costTime": 9000,
        "completeTime": 1755599644000,
        "createTime": 1755599634000,
        "updateTime": 1755599644000,
    }
)
JOBS_STATUS_FAILURE = ok(
    {
        "taskId": JOBS_FAIL_ID,
        "model": "google/nano-banana",
        "state": "fail",
        "param": "{}",
        "resultJson": "",
        "failCode": "500",
        "failMsg": "Internal server error",
        "completeTime": 1755597081000,
        "createTime": 1755596341000,
        "updateTime": 1755597097000,
    }
)


def gpt4o_status(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "taskId": "task_4o_123",
        "paramJson": '{"prompt":"a red fox","size":"1:1","nVariants":1}',
        "response": None,
        "successFlag": 0,
        "errorCode": None,
        "errorMessage": "",
        "progress": "0.00",
        "createTime": 1672561200000,
        "completeTime": None,
    }
    data.update(fields)
    return ok(data)


GPT4O_STATUS_SUCCESS = gpt4o_status(
    response={"resultUrls": [FOX]},
    successFlag=1,
    status="SUCCESS",
    progress="1.00",
    completeTime=1672574400000,
)
GPT4O_STATUS_FAILURE = gpt4o_status(
    successFlag=3, status="GENERATE_FAILED", errorCode=400, errorMessage="Image flagged"
)
FLUX_STATUS_SUCCESS = ok(
    {
        "taskId": "flux_789",
        "paramJson": "{}",
        "response": {
            "originImageUrl": "https://cdn.bfl.ai/orig.jpg",
            "resultImageUrl": "https://tempfile.aiquickdraw.com/f/result.jpg",
        },
        "successFlag": 1,
        "errorCode": None,
        "errorMessage": "",
        "createTime": "2025-01-01T00:00:00Z",
        "completeTime": "2025-01-01T00:00:20Z",
    }
)
FLUX_STATUS_FAILURE = ok(
    {
        "taskId": "flux_789",
        "response": None,
        "successFlag": 3,
        "errorCode": 501,
        "errorMessage": "Generation failed",
    }
)
VEO_STATUS_SUCCESS = ok(
    {
        "taskId": "veo_task_abcdef123456",
        "paramJson": "{}",
        "response": {
            "taskId": "veo_task_abcdef123456",
            "resultUrls": [MP4],
            "originUrls": None,
            "resolution": "1080p",
        },
        "successFlag": 1,
        "errorCode": None,
        "errorMessage": "",
        "fallbackFlag": False,
        "createTime": "2025-06-07 12:00:00",
        "completeTime": "2025-06-07 12:03:00",
    }
)
VEO_STATUS_FAILURE = ok(
    {
        "taskId": "veo_task_abcdef123456",
        "response": None,
        "successFlag": 3,
        "errorCode": 422,
        "errorMessage": "Rejected by Flow",
    }
)
MJ_STATUS_SUCCESS = ok(
    {
        "taskId": "mj_task_42",
        "taskType": "mj_txt2img",
        "paramJson": "{}",
        "resultInfoJson": {
            "resultUrls": [
                {"resultUrl": "https://cdn.kie.ai/mj/0.png"},
                {"resultUrl": "https://cdn.kie.ai/mj/1.png"},
            ]
        },
        "successFlag": 1,
        "errorCode": None,
        "errorMessage": None,
    }
)
MJ_STATUS_FAILURE = ok(
    {
        "taskId": "mj_task_42",
        "resultInfoJson": None,
        "successFlag": 2,
        "errorCode": 500,
        "errorMessage": "create task failed",
    }
)
RUNWAY_STATUS_SUCCESS = ok(
    {
        "taskId": RUNWAY_ID,
        "state": "success",
        "videoInfo": {
            "videoId": "485da89c",
            "taskId": RUNWAY_ID,
            "videoUrl": MP4,
            "imageUrl": "https://tempfile.aiquickdraw.com/r/cover.jpg",
        },
        "failCode": None,
        "failMsg": "",
        "expireFlag": 0,
    }
)
RUNWAY_STATUS_FAILURE = ok(
    {"taskId": RUNWAY_ID, "state": "fail", "failCode": 400, "failMsg": "Inappropriate content"}
)
SUNO_STATUS_SUCCESS = ok(
    {
        "taskId": "suno_2fac",
        "parentMusicId": "",
        "param": "{}",
        "response": {
            "taskId": "suno_2fac",
            "sunoData": [
                {
                    "id": "e231",
                    "audioUrl": "https://cdn.kie.ai/suno/1.mp3",
                    "streamAudioUrl": "https://cdn.kie.ai/suno/1-stream",
                    "imageUrl": "https://cdn.kie.ai/suno/1.jpeg",
                }
            ],
        },
        "status": "SUCCESS",
        "type": "GENERATE",
        "errorCode": None,
        "errorMessage": None,
    }
)
SUNO_STATUS_FAILURE = ok(
    {
        "taskId": "suno_2fac",
        "response": {"taskId": "suno_2fac", "sunoData": []},
        "status": "GENERATE_AUDIO_FAILED",
        "errorCode": 501,
        "errorMessage": "Generation failed, please retry",
    }
)

# (id, payload, family, task_id, state, result_urls, error code)
StatusCase = tuple[str, dict[str, Any], str, str, ProviderState, tuple[str, ...], str | None]

STATUS_CASES: list[StatusCase] = [
    ("jobs-success", JOBS_STATUS_SUCCESS, "jobs", JOBS_ID, SUCCEEDED, (PNG,), None),
    ("jobs-failure", JOBS_STATUS_FAILURE, "jobs", JOBS_FAIL_ID, FAILED, (), "provider_failed"),
    ("4o-success", GPT4O_STATUS_SUCCESS, "4o", "task_4o_123", SUCCEEDED, (FOX,), None),
    ("4o-failure", GPT4O_STATUS_FAILURE, "4o", "task_4o_123", FAILED, (), "content_policy"),
    (
        "flux-success",
        FLUX_STATUS_SUCCESS,
        "flux",
        "flux_789",
        SUCCEEDED,
        ("https://tempfile.aiquickdraw.com/f/result.jpg",),
        None,
    ),
    ("flux-failure", FLUX_STATUS_FAILURE, "flux", "flux_789", FAILED, (), "provider_failed"),
    ("veo-success", VEO_STATUS_SUCCESS, "veo", "veo_task_abcdef123456", SUCCEEDED, (MP4,), None),
    (
        "veo-failure",
        VEO_STATUS_FAILURE,
        "veo",
        "veo_task_abcdef123456",
        FAILED,
        (),
        "provider_rejected",
    ),
    (
        "mj-success",
        MJ_STATUS_SUCCESS,
        "mj",
        "mj_task_42",
        SUCCEEDED,
        ("https://cdn.kie.ai/mj/0.png", "https://cdn.kie.ai/mj/1.png"),
        None,
    ),
    ("mj-failure", MJ_STATUS_FAILURE, "mj", "mj_task_42", FAILED, (), "provider_failed"),
    ("runway-success", RUNWAY_STATUS_SUCCESS, "runway", RUNWAY_ID, SUCCEEDED, (MP4,), None),
    ("runway-failure", RUNWAY_STATUS_FAILURE, "runway", RUNWAY_ID, FAILED, (), "content_policy"),
    (
        "suno-success",
        SUNO_STATUS_SUCCESS,
        "suno",
        "suno_2fac",
        SUCCEEDED,
        ("https://cdn.kie.ai/suno/1.mp3",),
        None,
    ),
    ("suno-failure", SUNO_STATUS_FAILURE, "suno", "suno_2fac", FAILED, (), "provider_failed"),
]


@pytest.mark.parametrize(
    ("payload", "family", "task_id", "state", "urls", "error_code"),
    [case[1:] for case in STATUS_CASES],
    ids=[case[0] for case in STATUS_CASES],
)
def test_status_shapes(
    payload: dict[str, Any],
    family: str,
    task_id: str,
    state: ProviderState,
    urls: tuple[str, ...],
    error_code: str | None,
) -> None:
    report = normalize_status(payload, family=family, task_id=task_id)
    assert report.task_id == task_id
    assert report.state is state
    assert report.family == family
    assert report.result_urls == urls
    assert (report.error.code if report.error else None) == error_code


def test_status_failure_messages() -> None:
    jobs = normalize_status(JOBS_STATUS_FAILURE, family="jobs", task_id=JOBS_FAIL_ID)
    assert jobs.error is not None
    assert jobs.error.message == "KIE failed the task (code 500): Internal server error"
    veo = normalize_status(VEO_STATUS_FAILURE, family="veo", task_id="veo_task_abcdef123456")
    assert veo.error is not None
    assert veo.error.message == "KIE failed the task (code 422): Rejected by Flow"


@pytest.mark.parametrize(
    ("state", "expected"),
    [("waiting", PENDING), ("queuing", PENDING), ("generating", RUNNING)],
)
def test_jobs_status_in_progress(state: str, expected: ProviderState) -> None:
    payload = copy.deepcopy(JOBS_STATUS_SUCCESS)
    payload["data"].update(state=state, resultJson="", progress=45)
    report = normalize_status(payload, family="jobs", task_id=JOBS_ID)
    assert (report.state, report.result_urls, report.progress) == (expected, (), 0.45)


@pytest.mark.parametrize("family", FAMILIES)
def test_record_info_null_is_pending(family: str) -> None:
    payload = {"code": 422, "msg": "recordInfo is null", "data": None}
    report = normalize_status(payload, family=family, task_id="t_1")
    assert report == ProviderReport("t_1", PENDING, family)


def test_record_info_null_with_message_key() -> None:
    payload = {"code": 422, "message": "recordInfo is null", "data": None}
    assert normalize_status(payload, family="veo", task_id="t_1").state is PENDING


@pytest.mark.parametrize(
    ("flag", "state", "error_code"),
    [
        (0, RUNNING, None),
        (1, SUCCEEDED, None),
        (2, FAILED, "provider_failed"),
        (3, FAILED, "provider_failed"),
    ],
)
def test_4o_success_flags_without_status(
    flag: int, state: ProviderState, error_code: str | None
) -> None:
    fields: dict[str, Any] = {"successFlag": flag, "progress": "0.45"}
    if flag == 1:
        fields.update(response={"result_urls": [FOX]}, completeTime=1672574400000)
    if flag >= 2:
        fields.update(errorCode=500, errorMessage="Generate failed")
    report = normalize_status(gpt4o_status(**fields), family="4o", task_id="task_4o_123")
    assert report.state is state
    assert report.result_urls == ((FOX,) if flag == 1 else ())
    assert (report.error.code if report.error else None) == error_code
    # Progress is reported while running and on success; a failure carries none.
    assert report.progress == (None if state is FAILED else 0.45)


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("GENERATING", RUNNING),
        ("SUCCESS", SUCCEEDED),
        ("CREATE_TASK_FAILED", FAILED),
        ("GENERATE_FAILED", FAILED),
    ],
)
def test_4o_status_wins_over_success_flag(status: str, state: ProviderState) -> None:
    # successFlag deliberately contradicts: `status` is the documented field.
    payload = gpt4o_status(status=status, successFlag=2, response={"resultUrls": [FOX]})
    assert normalize_status(payload, family="4o", task_id="task_4o_123").state is state


def test_4o_unknown_status_falls_back_to_success_flag() -> None:
    payload = gpt4o_status(status="PROCESSING", successFlag=0)
    assert normalize_status(payload, family="4o", task_id="task_4o_123").state is RUNNING


def test_4o_stuck_quirk_with_urls_is_success() -> None:
    payload = gpt4o_status(
        successFlag=0,
        status="GENERATING",
        completeTime=1672574400000,
        response={"resultUrls": [FOX]},
    )
    report = normalize_status(payload, family="4o", task_id="task_4o_123")
    assert (report.state, report.result_urls) == (SUCCEEDED, (FOX,))


def test_4o_stuck_quirk_without_urls_keeps_polling() -> None:
    payload = gpt4o_status(successFlag=0, completeTime=1672574400000, response={"resultUrls": None})
    report = normalize_status(payload, family="4o", task_id="task_4o_123")
    assert (report.state, report.result_urls, report.error) == (RUNNING, (), None)


@pytest.mark.parametrize(
    ("code", "error_code"),
    [
        (400, "content_policy"),
        (451, "input_unavailable"),
        (500, "provider_failed"),
        (None, "provider_failed"),
    ],
)
def test_4o_status_error_codes(code: int | None, error_code: str) -> None:
    payload = gpt4o_status(
        successFlag=2, status="CREATE_TASK_FAILED", errorCode=code, errorMessage=""
    )
    report = normalize_status(payload, family="4o", task_id="task_4o_123")
    assert report.error is not None
    assert report.error.code == error_code
    assert report.error.message.startswith("KIE failed the task")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0.45", 0.45),
        ("1.00", 1.0),
        ("1.7", 1.0),
        ("-3", 0.0),
        ("abc", None),
        (None, None),
        ("nan", None),
    ],
)
def test_4o_progress(raw: object, expected: float | None) -> None:
    payload = gpt4o_status(successFlag=0, progress=raw)
    assert normalize_status(payload, family="4o", task_id="task_4o_123").progress == expected


@pytest.mark.parametrize(
    ("raw", "expected"), [(0, 0.0), (45, 0.45), ("80", 0.8), (250, 1.0), (None, None)]
)
def test_jobs_progress(raw: object, expected: float | None) -> None:
    payload = ok({"taskId": "s2", "state": "generating", "progress": raw})
    assert normalize_status(payload, family="jobs", task_id="s2").progress == expected


@pytest.mark.parametrize(
    ("state", "expected"), [("wait", PENDING), ("queueing", PENDING), ("generating", RUNNING)]
)
def test_runway_status_in_progress(state: str, expected: ProviderState) -> None:
    payload = ok({"taskId": RUNWAY_ID, "state": state, "videoInfo": None})
    assert normalize_status(payload, family="runway", task_id=RUNWAY_ID).state is expected


def test_mj_result_info_json_as_string() -> None:
    payload = copy.deepcopy(MJ_STATUS_SUCCESS)
    payload["data"]["resultInfoJson"] = orjson.dumps(payload["data"]["resultInfoJson"]).decode()
    report = normalize_status(payload, family="mj", task_id="mj_task_42")
    assert len(report.result_urls) == 2


def test_veo_result_urls_as_json_string() -> None:
    payload = copy.deepcopy(VEO_STATUS_SUCCESS)
    payload["data"]["response"]["resultUrls"] = orjson.dumps([MP4]).decode()
    report = normalize_status(payload, family="veo", task_id="veo_task_abcdef123456")
    assert report.result_urls == (MP4,)


@pytest.mark.parametrize(
    ("status", "state"),
    [("PENDING", PENDING), ("TEXT_SUCCESS", RUNNING), ("FIRST_SUCCESS", RUNNING)],
)
def test_suno_status_in_progress(status: str, state: ProviderState) -> None:
    payload = ok({"taskId": "suno_2fac", "status": status, "response": None})
    assert normalize_status(payload, family="suno", task_id="suno_2fac").state is state


def test_suno_sensitive_word_error_is_content_policy() -> None:
    payload = ok({"taskId": "suno_2fac", "status": "SENSITIVE_WORD_ERROR", "errorCode": None})
    report = normalize_status(payload, family="suno", task_id="suno_2fac")
    assert report.error is not None and report.error.code == "content_policy"


def test_status_without_task_id_echo_uses_the_queried_id() -> None:
    payload = copy.deepcopy(RUNWAY_STATUS_SUCCESS)
    del payload["data"]["taskId"]
    assert normalize_status(payload, family="runway", task_id="mine").task_id == "mine"


# --- Failed queries (not failed tasks) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "msg", "status", "error_code"),
    [
        # The same table as for creates (relay/providers/kie_errors.py).
        (401, "You do not have access permissions", 502, "provider_auth_failed"),
        (402, "Insufficient credits", 402, "provider_out_of_credits"),
        (404, "Task not found", 400, "provider_not_found"),
        (429, "Rate limit exceeded", 503, "provider_rate_limited"),
        (455, "Service unavailable", 503, "provider_unavailable"),
        (500, "Server error", 503, "provider_unavailable"),
        (505, "Feature disabled", 502, "provider_error"),
        (400, "taskId parameter is required", 400, "provider_rejected_input"),
        (422, "The page does not exist or is not published", 400, "provider_rejected_input"),
    ],
)
def test_non_200_status_raises_provider_error(
    code: int, msg: str, status: int, error_code: str
) -> None:
    payload = {"code": code, "msg": msg, "data": None}
    with pytest.raises(ProviderError) as info:
        normalize_status(payload, family="jobs", task_id=JOBS_ID)
    err = info.value
    assert (err.status, err.code, err.provider_code) == (status, error_code, code)
    assert f"({code})" in err.message
    assert msg in err.message


def test_provider_error_code_as_string() -> None:
    with pytest.raises(ProviderError) as info:
        normalize_status({"code": "429", "message": "slow down"}, family="4o", task_id="t")
    assert info.value.provider_code == 429
    assert "slow down" in info.value.message


# --- Invalid status answers ----------------------------------------------------------------------

INVALID_STATUSES: list[tuple[str, object, str, str]] = [
    ("list-body", [], "jobs", "status response is not a JSON object (got list)"),
    ("html-bytes", b"<html>login</html>", "4o", "status response body is not JSON"),
    ("no-code", {"msg": "success", "data": {"state": "success"}}, "jobs", "no integer code"),
    ("data-string", {"code": 200, "data": "oops"}, "flux", "no data object"),
    (
        "task-mismatch",
        ok({"taskId": "someone_else", "state": "waiting"}),
        "jobs",
        "data.taskId 'someone_else' does not match the queried task 'q1'",
    ),
    ("bad-echoed-id", ok({"taskId": "a b", "state": "waiting"}), "jobs", "is not a valid task id"),
    ("jobs-unknown-state", ok({"state": "weird"}), "jobs", "data.state 'weird' is not one of"),
    ("jobs-no-state", ok({"resultJson": ""}), "jobs", "data.state is missing"),
    (
        "jobs-garbage-result-json",
        ok({"state": "success", "resultJson": "{{"}),
        "jobs",
        "data.resultJson is not valid JSON",
    ),
    ("flag-missing", ok({"response": None}), "veo", "data.successFlag is missing"),
    ("flag-unknown", ok({"successFlag": 7}), "flux", "data.successFlag 7 is not one of 0, 1, 2, 3"),
    ("flag-bool", ok({"successFlag": True}), "mj", "data.successFlag True is not one of"),
    ("4o-nothing", ok({"progress": "0.10"}), "4o", "neither data.status nor data.successFlag"),
    ("4o-unknown-status", ok({"status": "MELTED"}), "4o", "data.status 'MELTED' is not one of"),
    (
        "4o-success-no-urls",
        ok({"successFlag": 1, "status": "SUCCESS", "response": {"resultUrls": None}}),
        "4o",
        "no result URL in data.response.resultUrls",
    ),
    (
        "4o-response-garbage",
        ok({"successFlag": 1, "response": "{nope"}),
        "4o",
        "data.response is not valid JSON",
    ),
    ("flux-success-no-url", ok({"successFlag": 1, "response": {}}), "flux", "no result URL"),
    (
        "mj-garbage-result-info",
        ok({"successFlag": 1, "resultInfoJson": "]["}),
        "mj",
        "data.resultInfoJson is not valid JSON",
    ),
    (
        "runway-unknown-state",
        ok({"state": "queuing"}),
        "runway",
        "data.state 'queuing' is not one of wait",
    ),
    (
        "runway-success-no-video",
        ok({"state": "success", "videoInfo": {"videoUrl": ""}}),
        "runway",
        "no result URL in data.videoInfo.videoUrl",
    ),
    ("suno-unknown-status", ok({"status": "DONE"}), "suno", "data.status 'DONE' is not one of"),
]


@pytest.mark.parametrize(
    ("payload", "family", "fragment"),
    [case[1:] for case in INVALID_STATUSES],
    ids=[case[0] for case in INVALID_STATUSES],
)
def test_invalid_status_answers(payload: object, family: str, fragment: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        normalize_status(payload, family=family, task_id="q1")
    assert fragment in info.value.message


def test_status_caller_bugs_raise_value_error() -> None:
    with pytest.raises(ValueError, match="unknown KIE family 'sora'"):
        normalize_status(JOBS_STATUS_SUCCESS, family="sora", task_id=JOBS_ID)
    with pytest.raises(ValueError, match="not a valid task id"):
        normalize_status(JOBS_STATUS_SUCCESS, family="jobs", task_id="a/b")


# --- Robustness: mutate every field of every realistic payload ----------------------------------

JUNK: tuple[object, ...] = (
    None,
    "",
    " ",
    0,
    -1,
    1,
    True,
    1.5,
    float("nan"),
    "x",
    "{",
    "[",
    "[1, {}]",
    "null",
    "https://ok.example/a.png",
    [],
    [None],
    [{}],
    [[1]],
    {},
    {"a": 1},
    {"resultUrl": 5},
)


def _paths(value: object, prefix: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
    """Every path (dict key / list index) into `value`, the root included."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


def _replace(value: Any, path: tuple[Any, ...], new: object) -> Any:
    if not path:
        return new
    clone = copy.deepcopy(value)
    node = clone
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = new
    return clone


def _mutations(payload: dict[str, Any]) -> Iterator[object]:
    for path in _paths(payload):
        for junk in JUNK:
            yield _replace(payload, path, junk)
    for path in _paths(payload):
        if path and isinstance(path[-1], str):  # drop each key once
            clone = copy.deepcopy(payload)
            node: Any = clone
            for step in path[:-1]:
                node = node[step]
            del node[path[-1]]
            yield clone


def _check_report(report: ProviderReport) -> None:
    assert TASK_ID_RE.fullmatch(report.task_id)
    assert isinstance(report.state, ProviderState)
    assert all(url.startswith(("http://", "https://")) for url in report.result_urls)
    assert len(set(report.result_urls)) == len(report.result_urls)
    assert report.progress is None or 0.0 <= report.progress <= 1.0
    if report.state is ProviderState.SUCCEEDED:
        assert report.result_urls
    if report.state is ProviderState.FAILED:
        assert report.error is not None and report.error.message


def test_malformed_callbacks_only_raise_invalid_payload() -> None:
    count = 0
    for _, payload, *_ in CALLBACK_CASES:
        for mutated in _mutations(payload):
            count += 1
            try:
                report = normalize_callback(mutated)
            except InvalidPayload as exc:
                assert exc.message
                continue
            _check_report(report)
    assert count > 1000


def test_malformed_status_answers_only_raise_invalid_payload_or_provider_error() -> None:
    count = 0
    for _, payload, family, task_id, *_ in STATUS_CASES:
        for mutated in _mutations(payload):
            count += 1
            try:
                report = normalize_status(mutated, family=family, task_id=task_id)
            except (InvalidPayload, ProviderError) as exc:
                assert exc.message
                continue
            _check_report(report)
            assert report.task_id == task_id
    assert count > 1000


@pytest.mark.parametrize(
    "payload",
    [
        None,
        0,
        1.5,
        True,
        "",
        "null",
        "[]",
        b"",
        b"\xff\xfe",
        bytearray(b"{"),
        [],
        (),
        {1, 2},
        object(),
    ],
)
def test_non_dict_bodies(payload: object) -> None:
    with pytest.raises(InvalidPayload):
        normalize_callback(payload)
    with pytest.raises(InvalidPayload):
        callback_task_id(payload)
    for family in FAMILIES:
        with pytest.raises(InvalidPayload):
            normalize_status(payload, family=family, task_id="t")
