"""KIE callbacks: the family is recognised by the shape of `data`, then read by its own
table."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from relay.errors import InvalidPayload
from relay.models import ProviderReport
from relay.normalize.shared import (
    _as_int,
    _body,
    _callback_task_id,
    _Envelope,
    _envelope,
    _failed,
    _named_state,
    _object,
    _percent,
    _succeeded,
    _suno_track_urls,
    _text,
    _urls,
)
from relay.normalize.tables import FAILED, JOBS_STATES, SUCCEEDED, SUNO_CALLBACK_TYPES, Json

# --- Callbacks ---------------------------------------------------------------------------


def _info(data: Json) -> Json:
    info = data.get("info")
    return info if isinstance(info, dict) else {}


def _is_flux(data: Json) -> bool:
    info = _info(data)
    return "resultImageUrl" in info or "originImageUrl" in info


def _is_veo(data: Json) -> bool:
    # Veo success: info.{resultUrls, originUrls, resolution} plus data.fallbackFlag;
    # Veo failure: data.{taskId, fallbackFlag}. 4o never sends these.
    info = _info(data)
    return "fallbackFlag" in data or any(k in info for k in ("originUrls", "resolution", "imageUrls"))


# Callback shapes, checked in order; the first match names the family. Order matters:
# Flux and Veo both use `info`, so they go before the catch-all 4o `info` check.
CALLBACK_SHAPES: Final[tuple[tuple[str, Callable[[Json], bool]], ...]] = (
    ("suno", lambda d: "callbackType" in d),
    ("aleph", lambda d: "result_video_url" in d or "result_image_url" in d),
    ("jobs", lambda d: "state" in d or "resultJson" in d),
    ("runway", lambda d: any(k in d for k in ("video_url", "image_url", "video_id"))),
    ("flux", _is_flux),
    ("veo", _is_veo),
    ("4o", lambda d: "info" in d),
    ("mj", lambda d: "resultUrls" in d or "promptJson" in d),
)

# Family name for a failure envelope whose `data` holds nothing but a task id: the failure
# is still unambiguous, so it is reported rather than refused.
UNKNOWN_FAMILY: Final = "unknown"


def _callback_family(data: Json) -> str:
    for family, matches in CALLBACK_SHAPES:
        if matches(data):
            return family
    return UNKNOWN_FAMILY


def _data_message(data: Json) -> str | None:
    """A failure reason inside `data`, which is more specific than the envelope `msg`."""
    return _text(data.get("failMsg")) or _text(data.get("errorMessage"))


def _jobs_report(
    task_id: str, data: Json, *, fallback_code: int | None, fallback_message: str | None
) -> ProviderReport:
    """Jobs recordInfo `data`; jobs callbacks carry the same structure."""
    state = _named_state(JOBS_STATES, data.get("state"), "data.state")
    progress = _percent(data.get("progress"))
    if state is SUCCEEDED:
        # resultJson is documented as a JSON string, but some clients see an object.
        result = _object(data.get("resultJson"), "data.resultJson")
        urls = _urls(result.get("resultUrls"))
        return _succeeded("jobs", task_id, urls, "data.resultJson.resultUrls", progress)
    if state is FAILED:
        code = _as_int(data.get("failCode"))
        return _failed(
            "jobs",
            task_id,
            code if code is not None else fallback_code,
            _text(data.get("failMsg")) or fallback_message,
        )
    return ProviderReport(task_id, state, "jobs", progress=progress)


def _failure_code(env: _Envelope) -> int | None:
    return env.code if env.code is not None and env.code != 200 else None


def _jobs_callback(task_id: str, env: _Envelope, data: Json) -> ProviderReport:
    # `data.state` decides; the envelope (501 "Playground task failed.") only fills gaps.
    return _jobs_report(
        task_id, data, fallback_code=_failure_code(env), fallback_message=env.message
    )


def _suno_callback(task_id: str, env: _Envelope, data: Json) -> ProviderReport:
    state = _named_state(SUNO_CALLBACK_TYPES, data.get("callbackType"), "data.callbackType")
    if state is FAILED or _failure_code(env) is not None:
        return _failed("suno", task_id, _failure_code(env), _data_message(data) or env.message)
    if state is SUCCEEDED:
        urls = _suno_track_urls(data.get("data"))
        return _succeeded("suno", task_id, urls, "data.data[].audio_url")
    # text/first: progress only; tracks are not final until `complete`.
    return ProviderReport(task_id, state, "suno")


# Where each dedicated family puts its result URLs in a success callback.
def _gpt4o_callback_urls(data: Json) -> tuple[str, ...]:
    info = _info(data)
    return _urls(info.get("result_urls"), info.get("resultUrls"))


def _flux_callback_urls(data: Json) -> tuple[str, ...]:
    # originImageUrl lives only 10 minutes: use it only when resultImageUrl is missing.
    info = _info(data)
    return _urls(info.get("resultImageUrl")) or _urls(info.get("originImageUrl"))


def _veo_callback_urls(data: Json) -> tuple[str, ...]:
    return _urls(_info(data).get("resultUrls"))


def _runway_callback_urls(data: Json) -> tuple[str, ...]:
    # image_url is the cover frame, not the result.
    return _urls(data.get("video_url"), data.get("videoUrl"))


def _mj_callback_urls(data: Json) -> tuple[str, ...]:
    return _urls(data.get("resultUrls"))


def _aleph_callback_urls(data: Json) -> tuple[str, ...]:
    # result_image_url is the cover frame, not the result (as with Runway).
    return _urls(data.get("result_video_url"), data.get("resultVideoUrl"))


DEDICATED_CALLBACKS: Final[Mapping[str, tuple[Callable[[Json], tuple[str, ...]], str]]] = {
    "4o": (_gpt4o_callback_urls, "data.info.result_urls"),
    "flux": (_flux_callback_urls, "data.info.resultImageUrl"),
    "veo": (_veo_callback_urls, "data.info.resultUrls"),
    "runway": (_runway_callback_urls, "data.video_url"),
    "mj": (_mj_callback_urls, "data.resultUrls"),
    "aleph": (_aleph_callback_urls, "data.result_video_url"),
}


def _dedicated_callback(family: str, task_id: str, env: _Envelope, data: Json) -> ProviderReport:
    """4o, Flux, Veo, Runway, MJ: the envelope `code` is the outcome (200 = success)."""
    if env.code is None:
        raise InvalidPayload(f"{family} callback has no integer code")
    if env.code != 200:
        return _failed(family, task_id, env.code, _data_message(data) or env.message)
    if family == UNKNOWN_FAMILY:
        raise InvalidPayload(
            "callback data has none of the known result fields "
            "(state, callbackType, info, resultUrls, video_url, fallbackFlag)"
        )
    urls_of, where = DEDICATED_CALLBACKS[family]
    return _succeeded(family, task_id, urls_of(data), where)


def normalize_callback(payload: object) -> ProviderReport:
    """A KIE callback body (parsed JSON, or the raw bytes) as a ProviderReport.

    The family is recognised by the shape of `data`. Raises InvalidPayload, naming the
    missing or wrong field, for anything that matches no known shape.
    """
    body = _body(payload, "callback")
    task_id = _callback_task_id(body)
    env = _envelope(body)
    if env.data is None and env.code is not None and env.code != 200:
        # A failure with `data: null` (Runway Aleph refusing flagged input, §11): the id
        # sits at the top level and the envelope is all there is to say.
        return _failed(UNKNOWN_FAMILY, task_id, env.code, env.message)
    if not isinstance(env.data, dict):
        raise InvalidPayload("callback has no data object")
    data = env.data
    family = _callback_family(data)
    if family == "jobs":
        return _jobs_callback(task_id, env, data)
    if family == "suno":
        return _suno_callback(task_id, env, data)
    return _dedicated_callback(family, task_id, env, data)
