"""What every KIE payload shape shares: the envelope, task ids, result URLs, value
helpers and the report builders. Pure, like the whole package."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

import orjson

from relay.errors import InvalidPayload
from relay.models import TASK_ID_RE, ProviderReport, ProviderState, TaskError
from relay.normalize.tables import (
    CONTENT_POLICY_WORDS,
    DEFAULT_FAILURE_MESSAGES,
    FAILED,
    GENERIC_FAILURE_MESSAGE,
    MAX_MESSAGE,
    SUCCEEDED,
    SUCCESS_FLAGS,
    TASK_ERROR_CODES,
    Json,
)
from relay.parsing import ascii_int

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


def is_record_pending(code: int | None, message: str | None) -> bool:
    """KIE's 422 "recordInfo is null": the task is not visible yet (just created) or not
    known at all; the caller bounds how long it believes the former."""
    return code == 422 and "recordinfo is null" in (message or "").lower()


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
