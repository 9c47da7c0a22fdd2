"""Turn every KIE payload shape into one `ProviderReport`.

KIE has one envelope (`{code, msg|message, data}`) but a different `data` per API family:
`taskId` vs `task_id`, `resultJson` as a JSON string vs `info.result_urls` vs
`info.resultImageUrl`, string states vs integer `successFlag`s (see KIE-API.md §3, §4, §9).
This module is the only place that knows those shapes. It is pure: no I/O, no clock, and
every malformed input ends in `InvalidPayload` (or `ProviderError` for a status query KIE
itself refused), never in a KeyError/TypeError/ValueError.

Public API:
- `callback_task_id(payload)`: just the task id, for HMAC verification before anything else.
- `normalize_callback(payload)`: a callback body POSTed by KIE; the family is found by shape.
- `normalize_status(payload, family=..., task_id=...)`: a status-query answer; the caller
  knows which endpoint it asked, so it names the family.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

import orjson

from relay.errors import InvalidPayload, ProviderError
from relay.models import TASK_ID_RE, ProviderReport, ProviderState, TaskError
from relay.parsing import ascii_int

__all__ = ["FAMILIES", "callback_task_id", "normalize_callback", "normalize_status"]

Json = dict[str, object]

PENDING: Final = ProviderState.PENDING
RUNNING: Final = ProviderState.RUNNING
SUCCEEDED: Final = ProviderState.SUCCEEDED
FAILED: Final = ProviderState.FAILED

FAMILIES: Final = ("jobs", "4o", "flux", "veo", "veo-upscale", "mj", "runway", "aleph", "suno")

# --- State tables ------------------------------------------------------------------------

# Jobs/market API `state` (recordInfo and callbacks).
JOBS_STATES: Final[Mapping[str, ProviderState]] = {
    "waiting": PENDING,
    "queuing": PENDING,
    "generating": RUNNING,
    "success": SUCCEEDED,
    "fail": FAILED,
}

# Runway record-detail `state` (note the different spellings from the jobs API).
RUNWAY_STATES: Final[Mapping[str, ProviderState]] = {
    "wait": PENDING,
    "queueing": PENDING,
    "generating": RUNNING,
    "success": SUCCEEDED,
    "fail": FAILED,
}

# 4o, Flux, Veo and MJ record-info `successFlag`.
SUCCESS_FLAGS: Final[Mapping[int, ProviderState]] = {
    0: RUNNING,
    1: SUCCEEDED,
    2: FAILED,  # create task failed
    3: FAILED,  # generation failed
}

# 4o record-info `status`: documented, unlike the 4o successFlag numbers, so it wins.
GPT4O_STATUSES: Final[Mapping[str, ProviderState]] = {
    "GENERATING": RUNNING,
    "SUCCESS": SUCCEEDED,
    "CREATE_TASK_FAILED": FAILED,
    "GENERATE_FAILED": FAILED,
}

# Suno callbacks: several POSTs per task; only `complete` carries the finished tracks.
SUNO_CALLBACK_TYPES: Final[Mapping[str, ProviderState]] = {
    "text": RUNNING,
    "first": RUNNING,
    "complete": SUCCEEDED,
    "error": FAILED,
}

# Suno record-info `status` (not in KIE-API.md; taken from KIE's Suno docs).
SUNO_STATUSES: Final[Mapping[str, ProviderState]] = {
    "PENDING": PENDING,
    "TEXT_SUCCESS": RUNNING,
    "FIRST_SUCCESS": RUNNING,
    "SUCCESS": SUCCEEDED,
    "CREATE_TASK_FAILED": FAILED,
    "GENERATE_AUDIO_FAILED": FAILED,
    "CALLBACK_EXCEPTION": FAILED,
    "SENSITIVE_WORD_ERROR": FAILED,
}

# --- Error tables ------------------------------------------------------------------------

# KIE failure code -> Relay `TaskError.code`. Anything else is "provider_failed".
TASK_ERROR_CODES: Final[Mapping[int, str]] = {
    400: "content_policy",  # flagged prompt / inappropriate content (4o, Flux, Runway)
    451: "input_unavailable",  # 4o could not download the filesUrl image
    422: "provider_rejected",  # Veo "rejected by Flow" (no fallback channel)
}

# Jobs failures only carry a string failCode (usually "500") and a message; KIE words
# content-policy refusals in the message, so look for those words too.
CONTENT_POLICY_WORDS: Final = ("flagged", "inappropriate", "content policy", "sensitive")

# Readable messages for when KIE sends a failure code but no text.
DEFAULT_FAILURE_MESSAGES: Final[Mapping[int, str]] = {
    400: "content policy violation (prompt or image flagged)",
    408: "generation timed out",
    422: "request rejected by the upstream model",
    451: "could not download the input image",
    500: "internal error",
    501: "generation failed",
}
GENERIC_FAILURE_MESSAGE: Final = "generation failed"

# Non-200 status-query answers: (HTTP status Relay reports, RelayError code). These are a
# failed *query*, not a failed task, so the caller must not fail the task on them. KIE
# refusing our key or throttling us is an upstream problem, not the browser's: 502/503.
QUERY_ERRORS: Final[Mapping[int, tuple[int, str]]] = {
    401: (502, "provider_auth"),
    402: (502, "provider_insufficient_credits"),
    404: (502, "provider_task_not_found"),
    429: (503, "provider_rate_limited"),
    455: (503, "provider_unavailable"),
}

# Longest provider text we copy into a TaskError / exception message.
MAX_MESSAGE: Final = 300


# --- Small value helpers -----------------------------------------------------------------


def _short(value: object) -> str:
    """repr() for messages, cut so a hostile payload cannot blow up logs."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(value: object) -> str | None:
    """A non-empty stripped string, else None (KIE uses "" and null for "no value")."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped:
            return stripped[:MAX_MESSAGE]
    return None


def _as_int(value: object) -> int | None:
    """KIE codes are ints, but jobs `failCode` is a string ("500"): accept both."""
    if isinstance(value, bool):  # bool is an int subclass; True is not code 1
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return ascii_int(value, max_digits=9, signed=True)
    return None


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _clamp(number: float | None) -> float | None:
    return None if number is None else min(1.0, max(0.0, number))


def _fraction(value: object) -> float | None:
    """4o `progress`: "0.00".."1.00". A garbage value is dropped, not fatal."""
    return _clamp(_number(value))


def _percent(value: object) -> float | None:
    """Jobs `progress`: 0..100 (sora2 only)."""
    number = _number(value)
    return _clamp(None if number is None else number / 100)


def _object(value: object, where: str) -> Json:
    """A nested object that KIE sends either as an object or as a JSON string
    (`resultJson`, `resultInfoJson`, sometimes `response`). null and "" mean empty."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise InvalidPayload(f"{where} is not valid JSON ({exc.msg})") from None
        if isinstance(parsed, dict):
            return parsed
        raise InvalidPayload(f"{where} is not a JSON object (got {type(parsed).__name__})")
    raise InvalidPayload(f"{where} is not an object (got {type(value).__name__})")


def _body(payload: object, what: str) -> Json:
    """The parsed body. Raw bytes/str are parsed too, so an HTML error page (KIE-API.md §7)
    is reported as such instead of as a missing field."""
    if isinstance(payload, bytes | bytearray | memoryview | str):
        raw = bytes(payload) if not isinstance(payload, str) else payload
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            head = raw[:40] if isinstance(raw, str) else raw[:40].decode("utf-8", "replace")
            raise InvalidPayload(f"{what} body is not JSON (starts with {head!r})") from None
    if not isinstance(payload, dict):
        raise InvalidPayload(f"{what} is not a JSON object (got {type(payload).__name__})")
    return payload


def _named_state(table: Mapping[str, ProviderState], raw: object, where: str) -> ProviderState:
    """A string state through `table` (case-insensitively: a casing change at KIE must not
    strand tasks), naming the field and the allowed values when it does not fit."""
    if raw is None or raw == "":
        raise InvalidPayload(f"{where} is missing")
    if isinstance(raw, str):
        wanted = raw.strip().casefold()
        for name, state in table.items():
            if name.casefold() == wanted:
                return state
    raise InvalidPayload(f"{where} {_short(raw)} is not one of {', '.join(table)}")


def _flag_state(data: Json) -> ProviderState:
    """4o/Flux/Veo/MJ `successFlag` (an int; tolerated as a digit string)."""
    raw = data.get("successFlag")
    if raw is None or raw == "":
        raise InvalidPayload("data.successFlag is missing")
    flag = _as_int(raw)
    if flag is None or flag not in SUCCESS_FLAGS:
        allowed = ", ".join(str(k) for k in SUCCESS_FLAGS)
        raise InvalidPayload(f"data.successFlag {_short(raw)} is not one of {allowed}")
    return SUCCESS_FLAGS[flag]


# --- Result URLs -------------------------------------------------------------------------

# Keys under which a URL hides when KIE sends a list of objects (MJ `resultUrls`).
URL_OBJECT_KEYS: Final = ("resultUrl", "result_url", "url")

# Suno track fields, best first: the final file, then its source copy, then the stream
# (a stream URL is only a stand-in while the file is being written).
SUNO_URL_KEYS: Final = (
    "audio_url",
    "audioUrl",
    "source_audio_url",
    "sourceAudioUrl",
    "stream_audio_url",
    "streamAudioUrl",
    "source_stream_audio_url",
    "sourceStreamAudioUrl",
)


def _is_http_url(value: object) -> bool:
    # Only http(s) with something after the scheme: the mirror fetches these URLs, so
    # file:, data:, javascript: or relative paths must never get through.
    if not isinstance(value, str):
        return False
    scheme, sep, rest = value.strip().partition("://")
    return bool(sep) and scheme.lower() in ("http", "https") and bool(rest)


def _url_candidates(value: object) -> Iterator[object]:
    """Everything that might be a URL in a string, a list of strings, a list of
    `{resultUrl}` objects, or a JSON-encoded list (old Veo `resultUrls`)."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, dict):
            yield from (item.get(key) for key in URL_OBJECT_KEYS)
        else:
            yield item


def _urls(*values: object) -> tuple[str, ...]:
    """http(s) URLs from `values`, in order, without duplicates."""
    seen: dict[str, None] = {}
    for value in values:
        for candidate in _url_candidates(value):
            if isinstance(candidate, str) and _is_http_url(candidate):
                seen.setdefault(candidate.strip(), None)
    return tuple(seen)


def _suno_track_urls(tracks: object) -> tuple[str, ...]:
    """One URL per Suno track: the best field that holds one."""
    if not isinstance(tracks, list):
        return ()
    picked: list[str] = []
    for track in tracks:
        if isinstance(track, dict):
            picked.extend(_urls(*(track.get(key) for key in SUNO_URL_KEYS))[:1])
    return _urls(picked)


# --- Report builders ---------------------------------------------------------------------


def _task_error(provider_code: int | None, message: str | None) -> TaskError:
    """KIE's failure as a TaskError: code from the table, then from the wording."""
    text = message or DEFAULT_FAILURE_MESSAGES.get(provider_code or 0, GENERIC_FAILURE_MESSAGE)
    code = TASK_ERROR_CODES.get(provider_code or 0)
    if code is None:
        lowered = text.lower()
        is_policy = any(word in lowered for word in CONTENT_POLICY_WORDS)
        code = "content_policy" if is_policy else "provider_failed"
    where = f" (code {provider_code})" if provider_code is not None else ""
    return TaskError(code, f"KIE failed the task{where}: {text}")


def _succeeded(
    family: str,
    task_id: str,
    urls: tuple[str, ...],
    where: str,
    progress: float | None = None,
) -> ProviderReport:
    # A success without a file is nothing Relay can deliver: refuse it loudly rather than
    # completing the task with no result.
    if not urls:
        raise InvalidPayload(f"{family} success for task {task_id} has no result URL in {where}")
    return ProviderReport(task_id, SUCCEEDED, family, result_urls=urls, progress=progress)


def _failed(
    family: str, task_id: str, provider_code: int | None, message: str | None
) -> ProviderReport:
    return ProviderReport(task_id, FAILED, family, error=_task_error(provider_code, message))


# --- Envelope and task id ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Envelope:
    code: int | None
    message: str | None  # KIE's `msg`, or `message` in some renders
    data: object


def _envelope(body: Json) -> _Envelope:
    message = _text(body.get("msg")) or _text(body.get("message"))
    return _Envelope(_as_int(body.get("code")), message, body.get("data"))


def _valid_task_id(value: object, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidPayload(f"{where} is not a string (got {type(value).__name__})")
    if not TASK_ID_RE.fullmatch(value):
        raise InvalidPayload(f"{where} {_short(value)} is not a valid task id")
    return value


def _find_task_id(body: Json, data: object) -> tuple[object, str] | None:
    """The first present task id and where it was: data.taskId, data.task_id, then a
    top-level taskId/task_id (KIE's own HMAC sample reads task_id)."""
    places: list[tuple[Mapping[str, object], str, str]] = []
    if isinstance(data, dict):
        places += [(data, "taskId", "data.taskId"), (data, "task_id", "data.task_id")]
    places += [(body, "taskId", "taskId"), (body, "task_id", "task_id")]
    for obj, key, where in places:
        value = obj.get(key)
        if value is not None and value != "":
            return value, where
    return None


def _callback_task_id(body: Json) -> str:
    found = _find_task_id(body, body.get("data"))
    if found is None:
        raise InvalidPayload("callback has no data.taskId or data.task_id")
    value, where = found
    return _valid_task_id(value, f"callback {where}")


def callback_task_id(payload: object) -> str:
    """The task id of a callback body, validated against TASK_ID_RE.

    Reads data.taskId, then data.task_id, then a top-level taskId/task_id. Used before full
    normalization, since the HMAC signature covers only `taskId + "." + timestamp`.
    """
    return _callback_task_id(_body(payload, "callback"))


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


def _is_record_pending(env: _Envelope) -> bool:
    # Just after create KIE answers 422 "recordInfo is null": not visible yet. The same body
    # comes back for an unknown task id, so the caller bounds how long it believes this.
    return env.code == 422 and "recordinfo is null" in (env.message or "").lower()


def _query_error(code: int, message: str | None) -> ProviderError:
    status, error_code = QUERY_ERRORS.get(code, (502, "provider_error"))
    return ProviderError(
        f"KIE status query failed with code {code}: {message or 'no message'}",
        status=status,
        code=error_code,
        provider_code=code,
    )


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
    if _is_record_pending(env):
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
