"""What the simulator answers and calls back with, family by family, in KIE's real shapes.

Each builder names the payload it copies; the copies themselves live in
tests/fixtures/kie/ (each with its source), and tests/test_sim_shapes.py checks that
every shape here has the same fields as its real counterpart. "real" marks an answer
recorded from api.kie.ai, "docs" an example from KIE's own documentation pages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from relay.sim.replicate_shapes import prediction
from relay.sim.state import SimState, SimTask

Json = dict[str, Any]

CREDITS_PER_TASK = 4


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _plain_time(ms: int) -> str:
    # Veo's record-info and Suno's tracks: "YYYY-MM-DD HH:mm:ss".
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _request_json(task: SimTask) -> str:
    return orjson.dumps(task.request).decode()


def jobs_param(task: SimTask) -> str:
    """Real recordInfo (jobs-status-waiting-real.json): `param` is JSON text whose `input`
    is JSON text again."""
    param = {k: v for k, v in task.request.items() if k != "input"}
    param["input"] = orjson.dumps(task.request.get("input", {})).decode()
    return orjson.dumps(param).decode()


# --------------------------------------------------------------------------- status answers


def jobs_record(task: SimTask) -> Json:
    """jobs-status-{waiting,success}-real.json: failCode/failMsg null unless failed,
    resultJson "" until success, costTime in seconds, times in epoch ms."""
    o = task.outcome
    state = task.state_name()
    record: Json = {
        "taskId": task.task_id,
        "model": task.model,
        "state": state,
        "param": jobs_param(task),
        "resultJson": "",
        "failCode": None,
        "failMsg": None,
        "costTime": None,
        "completeTime": None,
        "createTime": task.created_ms,
    }
    if task.progress_url is not None:
        record["progress"] = round(task.phase()[1] * 100) if o is None else 100
    if o is not None:
        record["completeTime"] = o.completed_ms
        record["costTime"] = max(1, (o.completed_ms - task.created_ms) // 1000)
        if o.success:
            record["resultJson"] = orjson.dumps({"resultUrls": task.result_urls}).decode()
        else:
            record["failCode"] = str(o.code)
            record["failMsg"] = o.msg
    return record


def gpt4o_record(task: SimTask) -> Json:
    """4o-status-{generating,success,fail}-docs.json."""
    o = task.outcome
    progress = task.phase()[1] if o is None else o.progress
    if o is None:
        flag, status = 0, "GENERATING"
    elif o.success:
        flag, status = 1, "SUCCESS"
    else:
        flag, status = 3, "GENERATE_FAILED"
    return {
        "taskId": task.task_id,
        "paramJson": _request_json(task),
        "completeTime": None if o is None else o.completed_ms,
        "response": {"resultUrls": task.result_urls} if o is not None and o.success else None,
        "successFlag": flag,
        "status": status,
        "errorCode": None if o is None or o.success else o.code,
        "errorMessage": "" if o is None or o.success else o.msg,
        "createTime": task.created_ms,
        "progress": f"{progress:.2f}",
    }


def _flag(task: SimTask) -> int:
    o = task.outcome
    return 0 if o is None else (1 if o.success else 3)


def flux_record(task: SimTask) -> Json:
    """flux-status-success-docs.json (ISO times)."""
    o = task.outcome
    url = task.result_urls[0] if task.result_urls else ""
    return {
        "taskId": task.task_id,
        "paramJson": _request_json(task),
        "completeTime": None if o is None else _iso(o.completed_ms),
        "response": {"originImageUrl": url, "resultImageUrl": url} if o is not None and o.success else None,
        "successFlag": _flag(task),
        "errorCode": None if o is None or o.success else o.code,
        "errorMessage": "" if o is None or o.success else o.msg,
        "createTime": _iso(task.created_ms),
    }


def mj_record(task: SimTask) -> Json:
    """mj-status-success-docs.json: results as a list of `{resultUrl}` objects."""
    o = task.outcome
    done = o is not None and o.success
    return {
        "taskId": task.task_id,
        "taskType": task.request.get("taskType"),
        "paramJson": _request_json(task),
        "completeTime": None if o is None else _iso(o.completed_ms),
        "resultInfoJson": {"resultUrls": [{"resultUrl": u} for u in task.result_urls]} if done else None,
        "successFlag": _flag(task),
        "createTime": _iso(task.created_ms),
        "errorCode": None if o is None or o.success else o.code,
        "errorMessage": None if o is None or o.success else o.msg,
    }


def veo_record(task: SimTask) -> Json:
    """veo-status-success-docs.json ("YYYY-MM-DD HH:mm:ss" times)."""
    o = task.outcome
    done = o is not None and o.success
    return {
        "taskId": task.task_id,
        "paramJson": _request_json(task),
        "completeTime": None if o is None else _plain_time(o.completed_ms),
        "response": (
            {"taskId": task.task_id, "resultUrls": task.result_urls, "originUrls": None, "resolution": "720p"}
            if done
            else None
        ),
        "successFlag": _flag(task),
        "errorCode": None if o is None or o.success else o.code,
        "errorMessage": "" if o is None or o.success else o.msg,
        "createTime": _plain_time(task.created_ms),
        "fallbackFlag": False,
    }


RUNWAY_STATES = {"waiting": "wait", "queuing": "queueing", "generating": "generating"}


def runway_record(task: SimTask) -> Json:
    """runway-status-success-docs.json: a string `state` spelt unlike the jobs API's."""
    o = task.outcome
    state = RUNWAY_STATES.get(task.state_name(), task.state_name())
    done = o is not None and o.success
    return {
        "taskId": task.task_id,
        "parentTaskId": task.parent.task_id if task.parent else "",
        "generateParam": {"prompt": task.prompt, "imageUrl": task.request.get("imageUrl", "")},
        "state": state,
        "generateTime": None if o is None else _plain_time(o.completed_ms),
        "videoInfo": (
            {"videoId": task.task_id, "videoUrl": task.result_urls[0], "imageUrl": ""}
            if done
            else None
        ),
        "failCode": None if o is None or o.success else o.code,
        "failMsg": "" if o is None or o.success else o.msg,
        "expireFlag": 0,
    }


def aleph_record(task: SimTask) -> Json:
    """aleph-status-success-docs.json (record-info, successFlag, camelCase response)."""
    o = task.outcome
    done = o is not None and o.success
    return {
        "taskId": task.task_id,
        "paramJson": _request_json(task),
        "response": (
            {"taskId": task.task_id, "resultVideoUrl": task.result_urls[0], "resultImageUrl": ""} if done else None
        ),
        "completeTime": None if o is None else _iso(o.completed_ms),
        "createTime": _iso(task.created_ms),
        "successFlag": _flag(task),
        "errorCode": 0 if o is None or o.success else o.code,
        "errorMessage": "" if o is None or o.success else o.msg,
    }


def _suno_tracks(task: SimTask, *, camel: bool, final: bool) -> list[Json]:
    """Two tracks per task (suno-callback-complete-docs.json); before `complete` only a
    stream URL exists."""
    tracks = []
    for n in range(2):
        url = task.result_urls[n] if final and n < len(task.result_urls) else ""
        stream = f"{task.base_url}/files/{task.task_id}/stream{n}"
        track: Json = {
            "id": f"{task.task_id}-{n}",
            "audio_url": url,
            "stream_audio_url": stream,
            "image_url": "",
            "prompt": task.prompt,
            "model_name": "chirp-v4-5",
            "title": str(task.request.get("title") or "Simulated song"),
            "tags": str(task.request.get("style") or ""),
            "createTime": _plain_time(task.created_ms),
            "duration": 2.0 if final else None,
        }
        if camel:
            track = {
                "id": track["id"], "audioUrl": url, "streamAudioUrl": stream, "imageUrl": "",
                "prompt": track["prompt"], "modelName": track["model_name"], "title": track["title"],
                "tags": track["tags"], "createTime": track["createTime"], "duration": track["duration"],
            }
        tracks.append(track)
    return tracks


SUNO_STATUS = {None: "PENDING", "text": "TEXT_SUCCESS", "first": "FIRST_SUCCESS"}


def suno_record(task: SimTask) -> Json:
    """suno-status-success-docs.json: `param` as JSON text, tracks in response.sunoData."""
    o = task.outcome
    if o is None:
        status = SUNO_STATUS[task.stage]
    else:
        status = "SUCCESS" if o.success else "GENERATE_AUDIO_FAILED"
    return {
        "taskId": task.task_id,
        "parentMusicId": "",
        "param": _request_json(task),
        "response": {
            "taskId": task.task_id,
            "sunoData": _suno_tracks(task, camel=True, final=o is not None and o.success),
        },
        "status": status,
        "type": "GENERATE",
        "errorCode": None if o is None or o.success else o.code,
        "errorMessage": None if o is None or o.success else o.msg,
    }


def upscale_record(task: SimTask) -> Json:
    """veo-status-1080p-docs.json / veo-create-4k-docs.json: the link once it exists. The
    answer before then is not documented; a null link is an assumption."""
    o = task.outcome
    url = task.result_urls[0] if o is not None and o.success else None
    if task.family == "veo-1080p":
        return {"resultUrl": url}
    return {"taskId": task.task_id, "resultUrls": [url] if url else None, "imageUrls": None}


RECORDS: Mapping[str, Callable[[SimTask], Json]] = {
    "jobs": jobs_record,
    "4o": gpt4o_record,
    "flux": flux_record,
    "mj": mj_record,
    "veo": veo_record,
    "veo-extend": veo_record,
    "runway": runway_record,
    "runway-extend": runway_record,
    "aleph": aleph_record,
    "suno": suno_record,
    "veo-1080p": upscale_record,
    "veo-4k": upscale_record,
}

# Which families' records each status endpoint shows (Veo's covers extend too).
STATUS_FAMILIES: Mapping[str, tuple[str, ...]] = {
    "veo": ("veo", "veo-extend"),
    "runway": ("runway", "runway-extend"),
}

DEFAULT_FAILURE: Mapping[str, tuple[int, str]] = {
    "jobs": (500, "Internal server error"),
    "4o": (500, "Generation failed, please try again later."),
    "flux": (501, "Image generation failed."),
    "mj": (500, "Image generation failed"),
    "veo": (501, "Video generation failed."),
    "veo-extend": (501, "Video generation failed."),
    "veo-4k": (500, "4K video generation failed."),
    "veo-1080p": (500, "1080P video generation failed."),
    "runway": (400, "Inappropriate content detected. Please replace the image or video."),
    "runway-extend": (500, "Video generation failed."),
    "aleph": (400, "Your prompt was caught by our AI moderator. Please adjust it and try again!"),
    "suno": (501, "Audio generation failed"),
    # get-failed.json's error (a hand-authored sample from trigger.dev's Replicate source;
    # no failed prediction was found in recorded traffic).
    "replicate": (0, "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 39.39 GiB total capacity)"),
}


# --------------------------------------------------------------------------- callbacks


def callback(state: SimState, task: SimTask) -> Json:
    """The finished task's callback body, in its family's shape."""
    o = task.outcome
    assert o is not None, "only finished tasks have a callback"
    family, ok, tid = task.family, o.success, task.task_id
    if family == "replicate":  # the prediction itself, no envelope (webhook-completed-docs.json)
        return prediction(task, task.base_url)
    if family == "jobs":
        # jobs-callback-success-real-z-image.json; a failure says 501 "Playground task failed."
        data = jobs_record(task)
        data["creditsConsumed"] = CREDITS_PER_TASK if ok else 0
        data["updateTime"] = o.completed_ms
        if ok:
            return {"code": 200, "msg": "Playground task completed successfully.", "data": data}
        return {"code": 501, "msg": "Playground task failed.", "data": data}
    if family == "4o":  # 4o-callback-{success,fail}-docs.json
        if ok:
            return {"code": 200, "msg": "success", "data": {"taskId": tid, "info": {"result_urls": task.result_urls}}}
        return {"code": o.code, "msg": o.msg, "data": {"taskId": tid, "info": None}}
    if family == "flux":  # flux-callback-*-docs.json
        url = task.result_urls[0] if ok else ""
        images = {"originImageUrl": url, "resultImageUrl": url}
        return {"code": 200 if ok else o.code, "msg": "BFL image generated successfully." if ok else o.msg,
                "data": {"taskId": tid, "info": images}}
    if family == "mj":  # mj-callback-{success,fail}-docs.json
        data = {"taskId": tid, "promptJson": _request_json(task), "resultUrls": task.result_urls if ok else []}
        return {"code": 200 if ok else o.code, "msg": "success" if ok else o.msg, "data": data}
    info: Json
    if family in ("veo", "veo-extend"):  # veo-callback-{success,fail}-docs.json
        if ok:
            info = {"resultUrls": task.result_urls, "originUrls": None, "resolution": "720p"}
            return {"code": 200, "msg": "Veo3.1 video generated successfully.",
                    "data": {"taskId": tid, "promptJson": _request_json(task), "info": info, "fallbackFlag": False}}
        return {"code": o.code, "msg": o.msg, "data": {"taskId": tid, "fallbackFlag": False}}
    if family == "veo-4k":  # veo-callback-4k-{success,fail}-docs.json: the parent's id
        parent_id = task.parent.task_id if task.parent else tid
        if ok:
            info = {"resultUrls": task.result_urls, "imageUrls": []}
            return {"code": 200, "msg": "4K Video generated successfully.", "data": {"taskId": parent_id, "info": info}}
        return {"code": o.code, "msg": o.msg, "data": {"taskId": parent_id, "info": None}}
    if family in ("runway", "runway-extend"):  # runway-callback-{success,fail}-docs.json
        url = task.result_urls[0] if ok else ""
        data = {"task_id": tid, "video_id": tid if ok else "", "video_url": url, "image_url": ""}
        return {"code": 200 if ok else o.code, "msg": "All generated successfully." if ok else o.msg, "data": data}
    if family == "aleph":  # aleph-callback-{success,fail}-docs.json: taskId at the top level
        if ok:
            return {"code": 200, "msg": "success", "taskId": tid,
                    "data": {"result_video_url": task.result_urls[0], "result_image_url": ""}}
        return {"code": o.code, "msg": o.msg, "data": None, "taskId": tid}
    if family == "suno":  # suno-callback-{complete,error}-docs.json
        if ok:
            return {"code": 200, "msg": "All generated successfully.",
                    "data": {"callbackType": "complete", "task_id": tid,
                             "data": _suno_tracks(task, camel=False, final=True)}}
        return {"code": o.code, "msg": o.msg, "data": {"callbackType": "error", "task_id": tid, "data": None}}
    raise ValueError(f"no callback shape for family {family!r}")


def suno_stage(task: SimTask, stage: str) -> Json:
    """Suno's `text` and `first` callbacks: the same shape as `complete`, with the tracks
    not yet downloadable (KIE documents these types without an example)."""
    messages = {"text": "Text generation completed successfully.", "first": "First audio generated successfully."}
    return {"code": 200, "msg": messages[stage],
            "data": {"callbackType": stage, "task_id": task.task_id,
                     "data": _suno_tracks(task, camel=False, final=False)}}


def progress_callback(task: SimTask) -> Json:
    """A jobs progress callback (Sora 2's progressCallBackUrl). KIE's page names the URL
    (jobs-create-sora-2-docs.json) but shows no payload and none was recorded: this is
    an assumption, the recordInfo data while generating with its `progress` 0..100 (the
    one field KIE-API.md §3 documents for sora2)."""
    return {"code": 200, "msg": "success", "data": jobs_record(task)}
