"""KIE status-query answers: the caller names the endpoint's family, whose parser reads it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from relay.errors import InvalidPayload, ProviderError
from relay.models import TASK_ID_RE, ProviderReport, ProviderState
from relay.normalize.callbacks import _data_message, _jobs_report
from relay.normalize.shared import (
    _as_int,
    _body,
    _envelope,
    _failed,
    _find_task_id,
    _flag_state,
    _fraction,
    _named_state,
    _object,
    _succeeded,
    _suno_track_urls,
    _urls,
    _valid_task_id,
    is_record_pending,
)
from relay.normalize.tables import (
    FAILED,
    FAMILIES,
    GPT4O_STATUSES,
    PENDING,
    RUNNING,
    RUNWAY_STATES,
    SUCCEEDED,
    SUNO_STATUSES,
    Json,
)
from relay.providers.kie_errors import provider_error

# --- Status queries ----------------------------------------------------------------------


def _flag_failure(family: str, task_id: str, data: Json) -> ProviderReport:
    return _failed(family, task_id, _as_int(data.get("errorCode")), _data_message(data))


def _gpt4o_state(data: Json) -> ProviderState:
    # Prefer the documented `status`; fall back to successFlag when it is absent or a value
    # we do not know (the flag numbers come from client code, KIE-API.md §8.3).
    status = data.get("status")
    has_flag = data.get("successFlag") not in (None, "")
    if isinstance(status, str) and status.strip().upper() in GPT4O_STATUSES:
        return GPT4O_STATUSES[status.strip().upper()]
    if has_flag:
        return _flag_state(data)
    if status in (None, ""):
        raise InvalidPayload("4o record-info has neither data.status nor data.successFlag")
    return _named_state(GPT4O_STATUSES, status, "data.status")  # raises: names the value


def _gpt4o_status(task_id: str, data: Json) -> ProviderReport:
    state = _gpt4o_state(data)
    progress = _fraction(data.get("progress"))
    response = _object(data.get("response"), "data.response")
    # KIE-API.md §7: URLs have been seen in several places; read them all.
    urls = _urls(
        response.get("resultUrls"),
        response.get("result_urls"),
        data.get("resultUrls"),
        data.get("result_urls"),
    )
    if state is RUNNING and data.get("completeTime") and urls:
        # The "stuck" quirk: KIE finished (completeTime set, files present) but record-info
        # still says generating. Trust the files. Without files, keep polling.
        state = SUCCEEDED
    if state is SUCCEEDED:
        return _succeeded("4o", task_id, urls, "data.response.resultUrls", progress)
    if state is FAILED:
        return _flag_failure("4o", task_id, data)
    return ProviderReport(task_id, state, "4o", progress=progress)


def _flag_status(
    family: str, task_id: str, data: Json, urls_of: Callable[[Json], tuple[str, ...]], where: str
) -> ProviderReport:
    """Flux, Veo, MJ record-info: successFlag decides, URLs per family."""
    state = _flag_state(data)
    progress = _fraction(data.get("progress"))
    if state is SUCCEEDED:
        return _succeeded(family, task_id, urls_of(data), where, progress)
    if state is FAILED:
        return _flag_failure(family, task_id, data)
    return ProviderReport(task_id, state, family, progress=progress)


def _flux_status_urls(data: Json) -> tuple[str, ...]:
    response = _object(data.get("response"), "data.response")
    return _urls(response.get("resultImageUrl")) or _urls(response.get("originImageUrl"))


def _veo_status_urls(data: Json) -> tuple[str, ...]:
    return _urls(_object(data.get("response"), "data.response").get("resultUrls"))


def _mj_status_urls(data: Json) -> tuple[str, ...]:
    return _urls(_object(data.get("resultInfoJson"), "data.resultInfoJson").get("resultUrls"))


def _runway_status(task_id: str, data: Json) -> ProviderReport:
    state = _named_state(RUNWAY_STATES, data.get("state"), "data.state")
    if state is SUCCEEDED:
        video = _object(data.get("videoInfo"), "data.videoInfo")
        urls = _urls(video.get("videoUrl"), video.get("video_url"))
        return _succeeded("runway", task_id, urls, "data.videoInfo.videoUrl")
    if state is FAILED:
        return _failed("runway", task_id, _as_int(data.get("failCode")), _data_message(data))
    return ProviderReport(task_id, state, "runway")


def _aleph_status(task_id: str, data: Json) -> ProviderReport:
    """Aleph record-detail: `successFlag` like the other dedicated APIs, or a Runway-style
    `state`; the video under `response`, or in Runway's `videoInfo`."""
    if data.get("successFlag") not in (None, ""):
        state = _flag_state(data)
    else:
        state = _named_state(RUNWAY_STATES, data.get("state"), "data.state")
    if state is SUCCEEDED:
        response = _object(data.get("response"), "data.response")
        video = _object(data.get("videoInfo"), "data.videoInfo")
        urls = _urls(
            response.get("resultVideoUrl"), response.get("result_video_url"),
            data.get("resultVideoUrl"), video.get("videoUrl"),
        )
        return _succeeded("aleph", task_id, urls, "data.response.resultVideoUrl")
    if state is FAILED:
        code = _as_int(data.get("errorCode")) if data.get("errorCode") is not None else _as_int(data.get("failCode"))
        return _failed("aleph", task_id, code, _data_message(data))
    return ProviderReport(task_id, state, "aleph")


def _veo_upscale_status(task_id: str, data: Json) -> ProviderReport:
    """Veo's get-1080p-video / get-4k-video: the link once the file is ready, null before."""
    urls = _urls(data.get("resultUrl"), data.get("resultUrls"))
    if urls:
        return ProviderReport(task_id, SUCCEEDED, "veo-upscale", result_urls=urls)
    return ProviderReport(task_id, RUNNING, "veo-upscale")


def _suno_status(task_id: str, data: Json) -> ProviderReport:
    status = data.get("status")
    state = _named_state(SUNO_STATUSES, status, "data.status")
    if state is SUCCEEDED:
        response = _object(data.get("response"), "data.response")
        tracks = response.get("sunoData", response.get("data"))
        return _succeeded("suno", task_id, _suno_track_urls(tracks), "data.response.sunoData")
    if state is FAILED:
        # Without a message, the status name itself says what went wrong
        # (SENSITIVE_WORD_ERROR reads as a content-policy refusal).
        message = _data_message(data) or str(status).replace("_", " ").lower()
        return _failed("suno", task_id, _as_int(data.get("errorCode")), message)
    return ProviderReport(task_id, state, "suno")


def _jobs_status(task_id: str, data: Json) -> ProviderReport:
    return _jobs_report(task_id, data, fallback_code=None, fallback_message=None)


def _flux_status(task_id: str, data: Json) -> ProviderReport:
    return _flag_status("flux", task_id, data, _flux_status_urls, "data.response.resultImageUrl")


def _veo_status(task_id: str, data: Json) -> ProviderReport:
    return _flag_status("veo", task_id, data, _veo_status_urls, "data.response.resultUrls")


def _mj_status(task_id: str, data: Json) -> ProviderReport:
    return _flag_status("mj", task_id, data, _mj_status_urls, "data.resultInfoJson.resultUrls")


STATUS_PARSERS: Final[Mapping[str, Callable[[str, Json], ProviderReport]]] = {
    "jobs": _jobs_status,
    "4o": _gpt4o_status,
    "flux": _flux_status,
    "veo": _veo_status,
    "mj": _mj_status,
    "runway": _runway_status,
    "aleph": _aleph_status,
    "veo-upscale": _veo_upscale_status,
    "suno": _suno_status,
}


def _query_error(code: int, message: str | None) -> ProviderError:
    # A failed *query*, not a failed task: the caller must not fail the task on it.
    return provider_error(code, message)


def _check_same_task(body: Json, data: Json, task_id: str) -> None:
    found = _find_task_id(body, data)
    if found is None:
        return  # Runway record-detail and older renders do not echo the id.
    value, where = found
    answered = _valid_task_id(value, f"status response {where}")
    if answered != task_id:
        raise InvalidPayload(
            f"status response {where} {answered!r} does not match the queried task {task_id!r}"
        )


def normalize_status(payload: object, *, family: str, task_id: str) -> ProviderReport:
    """A status-query answer (jobs recordInfo, 4o/Flux/Veo/MJ record-info, Runway
    record-detail, Suno record-info) for `task_id` as a ProviderReport.

    `{"code":422,"msg":"recordInfo is null"}` is PENDING. Any other non-200 body `code` is a
    failed query, not a failed task: ProviderError (provider_code = KIE's code). A body no
    known shape matches: InvalidPayload. A `family` not in FAMILIES or an invalid `task_id`
    is a caller bug: ValueError.
    """
    parse = STATUS_PARSERS.get(family)
    if parse is None:
        raise ValueError(f"unknown KIE family {family!r}; expected one of {', '.join(FAMILIES)}")
    if not TASK_ID_RE.fullmatch(task_id):
        raise ValueError(f"task_id {task_id!r} is not a valid task id")

    body = _body(payload, "status response")
    env = _envelope(body)
    if env.code is None:
        raise InvalidPayload("status response has no integer code")
    if is_record_pending(env.code, env.message):
        return ProviderReport(task_id, PENDING, family)
    if env.code != 200:
        raise _query_error(env.code, env.message)
    if env.data is None:
        # §11: KIE answers `{"code":200,"msg":"success","data":null}` for an id it does not
        # know (yet). Like "recordInfo is null", the caller bounds how long it believes it.
        return ProviderReport(task_id, PENDING, family)
    if not isinstance(env.data, dict):
        raise InvalidPayload("status response has no data object")
    _check_same_task(body, env.data, task_id)
    return parse(task_id, env.data)
