"""KIE AI simulator: a separate Starlette server that speaks KIE's API as KIE-API.md describes it.

Relay reaches it only through its normal KIE client (`KIE_BASE_URL=http://127.0.0.1:PORT`), so
demos and tests exercise the production code path. It covers three families:

- jobs/market  `POST /api/v1/jobs/createTask`, `GET /api/v1/jobs/recordInfo`
- 4o image     `POST /api/v1/gpt4o-image/generate`, `GET /api/v1/gpt4o-image/record-info`
- Flux Kontext `POST /api/v1/flux/kontext/generate`, `GET /api/v1/flux/kontext/record-info`

plus `GET /api/v1/chat/credit`, result files under `/files/`, and a control API under `/sim/`.
Every quirk KIE-API.md warns about (late, duplicate, dropped or conflicting callbacks, HTML error
pages, 429s, "recordInfo is null" just after create) can be switched on in `SimConfig`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import logging
import math
import random
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay.providers.png import gradient_png

logger = logging.getLogger("relay.sim")

CREDITS_PER_TASK = 4
RATE_WINDOW_SECONDS = 10.0  # KIE: 20 new generation requests per 10 s
CALLBACK_TIMEOUT_SECONDS = 15.0  # KIE gives a callback receiver 15 s to answer
RETRY_BACKOFF_SECONDS = (0.25, 0.5, 1.0)  # first attempt + up to 3 retries, like KIE
# With no automatic finish there is no real schedule; this only paces the displayed states.
MANUAL_NOMINAL_SECONDS = 5.0
MAX_IMAGES_PER_TASK = 16
MAX_PROMPT_CHARS = 5000

BAD_GATEWAY_HTML = (
    "<!DOCTYPE html>\n<html>\n<head><title>502 Bad Gateway</title></head>\n"
    "<body>\n<center><h1>502 Bad Gateway</h1></center>\n<hr><center>nginx</center>\n"
    "</body>\n</html>\n"
)

Family = Literal["jobs", "gpt4o-image", "flux-kontext"]


# --------------------------------------------------------------------------- configuration


def _number(name: str, value: object) -> float:
    # bool is an int in Python, but `true` is never a sensible rate or delay.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    return float(value)


def _integer(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    return value


def _boolean(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false")
    return value


def _string(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value


def _optional_string(name: str, value: object) -> str | None:
    return None if value is None else _string(name, value)


def _optional_integer(name: str, value: object) -> int | None:
    return None if value is None else _integer(name, value)


def _delay(name: str, value: object) -> float | None:
    if value is None or value == "manual":
        return None
    return _number(name, value)


# How each field is checked when it arrives as JSON (PATCH /sim/config); ranges live in SimConfig.
_JSON_PARSERS: Mapping[str, Callable[[str, object], object]] = {
    "api_key": _string,
    "callback_delay": _delay,
    "failure_rate": _number,
    "duplicate_callbacks": _integer,
    "drop_callbacks": _number,
    "out_of_order": _boolean,
    "html_error_rate": _number,
    "rate_limit_burst": _integer,
    "record_null_seconds": _number,
    "webhook_hmac_key": _optional_string,
    "http_errors": _boolean,
    "credits": _integer,
    "images_per_task": _integer,
    "public_url": _optional_string,
    "seed": _optional_integer,
}


def _probability_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text!r}")
    return value


def _non_negative_float_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a non-negative number: {text!r}")
    return value


def _non_negative_int_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _delay_arg(text: str) -> float | None:
    if text.strip().lower() == "manual":
        return None
    value = _non_negative_float_arg(text)
    return None if value == 0 else value


def _positive_int_arg(text: str) -> int:
    value = _non_negative_int_arg(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


# (flag, parser, help) for every valued flag; the dest is the flag's SimConfig field name.
_VALUE_FLAGS: tuple[tuple[str, Callable[[str], object], str], ...] = (
    ("--api-key", str, "bearer key clients must send (default: %(default)s)"),
    (
        "--callback-delay",
        _delay_arg,
        "seconds until a task finishes; 'manual' or 0 = only via the /sim/ control API "
        "(default: %(default)s)",
    ),
    ("--failure-rate", _probability_arg, "probability a task fails (0..1)"),
    ("--duplicate-callbacks", _non_negative_int_arg, "extra identical deliveries of each callback"),
    ("--drop-callbacks", _probability_arg, "probability a callback is never sent (0..1)"),
    ("--html-error-rate", _probability_arg, "probability an API request gets an HTML 502 (0..1)"),
    ("--rate-limit-burst", _non_negative_int_arg, "creates per 10 s before 429 (KIE: 20; 0 = off)"),
    (
        "--record-null-seconds",
        _non_negative_float_arg,
        "status queries answer 'recordInfo is null' this long after create",
    ),
    ("--webhook-hmac-key", str, "sign callbacks (X-Webhook-Timestamp / X-Webhook-Signature)"),
    ("--credits", _non_negative_int_arg, "starting credit balance (default: %(default)s)"),
    ("--images-per-task", _positive_int_arg, "result images per task (default: %(default)s)"),
    ("--public-url", str, "base URL of result files (default: the URL the client used)"),
    ("--seed", int, "seed for the random quirks"),
)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Every knob of the simulator. The defaults behave like a well-behaved KIE: all quirks off."""

    api_key: str = "sim-key"
    callback_delay: float | None = 2.0  # seconds until a task finishes; None (or 0) = manual only
    failure_rate: float = 0.0  # probability a task fails
    duplicate_callbacks: int = 0  # extra identical deliveries of every automatic callback
    drop_callbacks: float = 0.0  # probability a finished task's callback is never sent
    out_of_order: bool = False  # after a success callback, also send a failure for the task
    html_error_rate: float = 0.0  # probability an /api/ request gets an HTML 502 page
    rate_limit_burst: int = 0  # creates allowed per 10 s before 429; 0 = unlimited
    record_null_seconds: float = 0.0  # status queries say "recordInfo is null" this long
    webhook_hmac_key: str | None = None  # sign callbacks like KIE's webhook HMAC option
    http_errors: bool = False  # send error bodies with the matching HTTP status, not 200
    credits: int = 10000  # starting balance; each create costs CREDITS_PER_TASK
    images_per_task: int = 1  # result images per jobs / 4o task (Flux always has one)
    public_url: str | None = None  # base of result URLs; None = the URL the client used
    seed: int | None = None  # seeds the random quirks, for reproducible runs

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.api_key:
            problems.append("api_key must not be empty")
        if self.callback_delay is not None and not (
            math.isfinite(self.callback_delay) and self.callback_delay >= 0
        ):
            problems.append("callback_delay must be a non-negative number or null (manual)")
        for name in ("failure_rate", "drop_callbacks", "html_error_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be between 0 and 1")
        for name in ("duplicate_callbacks", "rate_limit_burst", "credits"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative")
        if not (math.isfinite(self.record_null_seconds) and self.record_null_seconds >= 0):
            problems.append("record_null_seconds must be a non-negative number")
        if not 1 <= self.images_per_task <= MAX_IMAGES_PER_TASK:
            problems.append(f"images_per_task must be between 1 and {MAX_IMAGES_PER_TASK}")
        if self.public_url is not None and not self.public_url.startswith(("http://", "https://")):
            problems.append("public_url must start with http:// or https://")
        if problems:
            raise ValueError("; ".join(problems))
        # "0" means manual, as on the command line; an empty key means "not signing".
        if self.callback_delay == 0:
            object.__setattr__(self, "callback_delay", None)
        if self.webhook_hmac_key == "":
            object.__setattr__(self, "webhook_hmac_key", None)
        if self.public_url is not None:
            object.__setattr__(self, "public_url", self.public_url.rstrip("/"))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def updated(self, changes: Mapping[str, object]) -> SimConfig:
        """A copy with `changes` (JSON values, snake_case field names) applied; ValueError if any
        name is unknown or any value has the wrong type or range."""
        unknown = sorted(set(changes) - set(_JSON_PARSERS))
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
        parsed: dict[str, Any] = {
            name: _JSON_PARSERS[name](name, value) for name, value in changes.items()
        }
        return dataclasses.replace(self, **parsed)

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Add the simulator's flags (not --host/--port: those belong to the CLI). Each flag's
        dest is the SimConfig field name, which is what `from_namespace` reads."""
        defaults = SimConfig()
        group = parser.add_argument_group("KIE simulator")
        for flag, parse, help_text in _VALUE_FLAGS:
            name = flag.removeprefix("--").replace("-", "_")
            group.add_argument(
                flag, dest=name, type=parse, default=getattr(defaults, name), help=help_text
            )
        group.add_argument(
            "--out-of-order",
            dest="out_of_order",
            action="store_true",
            help="after a success callback, also send a failure callback for the same task",
        )
        group.add_argument(
            "--http-errors",
            dest="http_errors",
            action="store_true",
            help="send error bodies with the matching HTTP status instead of 200",
        )

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> SimConfig:
        """Build from parsed `add_arguments` flags; attributes that are not fields are ignored."""
        names = (f.name for f in dataclasses.fields(cls))
        return cls(**{name: getattr(ns, name) for name in names if hasattr(ns, name)})


def webhook_signature(key: str, task_id: str, timestamp: int) -> str:
    """KIE's X-Webhook-Signature: base64(HMAC-SHA256(key, f"{taskId}.{timestamp}"))."""
    mac = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


# --------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class Outcome:
    success: bool
    code: int  # the callback's body code (jobs failures always say 501; failCode keeps this)
    msg: str
    completed_ms: int
    progress: float


@dataclass(slots=True)
class SimTask:
    task_id: str
    family: Family
    model: str
    request: dict[str, Any]  # the create body exactly as received
    callback_url: str | None
    prompt: str
    base_url: str  # result files are served below this
    created_ms: int
    created_mono: float
    nominal_seconds: float  # paces waiting -> queuing -> generating
    outcome: Outcome | None = None
    result_urls: list[str] = dataclasses.field(default_factory=list)
    callbacks_sent: int = 0
    status_queries: int = 0  # lets tests see how often a reconciler polled
    callbacks_answered: int = 0  # deliveries finished (answered or given up)
    last_status: int | None = None
    last_callback: bytes | None = None  # the canonical callback body, for /resend


class SimState:
    """All mutable simulator state; one instance lives on `app.state.sim`."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.credits = config.credits
        self.tasks: dict[str, SimTask] = {}
        self.recent_creates: deque[float] = deque()
        self.background: set[asyncio.Task[None]] = set()
        self.http: httpx.AsyncClient | None = None

    def chance(self, probability: float) -> bool:
        # Draw only when the quirk is on, so switching one quirk on does not reshuffle another's
        # seeded sequence.
        if probability <= 0:
            return False
        return probability >= 1 or self.rng.random() < probability

    def client(self) -> httpx.AsyncClient:
        if self.http is None:
            raise RuntimeError("the simulator's HTTP client is only available inside its lifespan")
        return self.http

    def rate_limited(self, now: float) -> bool:
        while self.recent_creates and now - self.recent_creates[0] >= RATE_WINDOW_SECONDS:
            self.recent_creates.popleft()
        burst = self.config.rate_limit_burst
        return burst > 0 and len(self.recent_creates) >= burst

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self.background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self.background.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.error("simulator background task %s failed", task.get_name(), exc_info=exc)

    async def cancel_background(self) -> None:
        pending = list(self.background)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def reset(self) -> None:
        await self.cancel_background()
        self.tasks.clear()
        self.recent_creates.clear()
        self.credits = self.config.credits
        self.rng.seed(self.config.seed)


# --------------------------------------------------------------------------- task views


def _now_ms() -> int:
    return int(time.time() * 1000)


def _iso(ms: int) -> str:
    # Flux's record-info shows ISO times where jobs and 4o use epoch milliseconds.
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _pending_phase(task: SimTask) -> tuple[str, float]:
    fraction = (time.monotonic() - task.created_mono) / task.nominal_seconds
    progress = min(max(fraction, 0.0), 0.95)
    if fraction < 0.1:
        return "waiting", progress
    if fraction < 0.25:
        return "queuing", progress
    return "generating", progress


def _state_name(task: SimTask) -> str:
    if task.outcome is None:
        return _pending_phase(task)[0]
    return "success" if task.outcome.success else "fail"


def _param_json(task: SimTask) -> str:
    return orjson.dumps(task.request).decode()


def _jobs_record(task: SimTask) -> dict[str, Any]:
    o = task.outcome
    state = _state_name(task)
    record: dict[str, Any] = {
        "taskId": task.task_id,
        "model": task.model,
        "state": state,
        "param": _param_json(task),
        "resultJson": "",
        "failCode": "",
        "failMsg": "",
        "costTime": 0,
        "completeTime": None,
        "createTime": task.created_ms,
        "updateTime": task.created_ms if state == "waiting" else _now_ms(),
    }
    if o is not None:
        record["completeTime"] = record["updateTime"] = o.completed_ms
        if o.success:
            record["resultJson"] = orjson.dumps({"resultUrls": task.result_urls}).decode()
            record["costTime"] = o.completed_ms - task.created_ms
        else:
            record["failCode"] = str(o.code)
            record["failMsg"] = o.msg
    return record


def _gpt4o_record(task: SimTask) -> dict[str, Any]:
    o = task.outcome
    progress = _pending_phase(task)[1] if o is None else o.progress
    if o is None:
        flag, status = 0, "GENERATING"
    elif o.success:
        flag, status = 1, "SUCCESS"
    else:
        flag, status = 3, "GENERATE_FAILED"
    return {
        "taskId": task.task_id,
        "paramJson": _param_json(task),
        "completeTime": None if o is None else o.completed_ms,
        "response": {"resultUrls": task.result_urls} if o is not None and o.success else None,
        "successFlag": flag,
        "status": status,
        "errorCode": None if o is None or o.success else o.code,
        "errorMessage": "" if o is None or o.success else o.msg,
        "progress": f"{progress:.2f}",
        "createTime": task.created_ms,
    }


def _flux_images(task: SimTask) -> dict[str, str]:
    # KIE's originImageUrl is BFL's short-lived copy of the same picture; the sim has one file.
    url = task.result_urls[0] if task.result_urls else ""
    return {"originImageUrl": url, "resultImageUrl": url}


def _flux_record(task: SimTask) -> dict[str, Any]:
    o = task.outcome
    if o is None:
        flag = 0
    else:
        flag = 1 if o.success else 3
    return {
        "taskId": task.task_id,
        "paramJson": _param_json(task),
        "completeTime": None if o is None else _iso(o.completed_ms),
        "response": _flux_images(task) if o is not None and o.success else None,
        "successFlag": flag,
        "errorCode": None if o is None or o.success else o.code,
        "errorMessage": "" if o is None or o.success else o.msg,
        "createTime": _iso(task.created_ms),
    }


_RECORD_BUILDERS: Mapping[Family, Callable[[SimTask], dict[str, Any]]] = {
    "jobs": _jobs_record,
    "gpt4o-image": _gpt4o_record,
    "flux-kontext": _flux_record,
}

_DEFAULT_FAILURE: Mapping[Family, tuple[int, str]] = {
    "jobs": (500, "Internal server error"),
    "gpt4o-image": (500, "Generation failed, please try again later."),
    "flux-kontext": (501, "Image generation failed."),
}


def _callback_payload(state: SimState, task: SimTask) -> dict[str, Any]:
    """The finished task's callback body, in its family's shape (KIE-API.md §4.2 / §9)."""
    o = task.outcome
    assert o is not None, "only finished tasks have a callback"
    if task.family == "jobs":
        data = _jobs_record(task)
        data["consumeCredits"] = CREDITS_PER_TASK if o.success else 0
        data["remainedCredits"] = state.credits
        if o.success:
            return {"code": 200, "msg": "Playground task completed successfully.", "data": data}
        return {"code": 501, "msg": "Playground task failed.", "data": data}
    if task.family == "gpt4o-image":
        if o.success:
            info = {"result_urls": task.result_urls}
            return {"code": 200, "msg": "success", "data": {"taskId": task.task_id, "info": info}}
        return {"code": o.code, "msg": o.msg, "data": {"taskId": task.task_id, "info": None}}
    if o.success:
        return {
            "code": 200,
            "msg": "BFL image generated successfully.",
            "data": {"taskId": task.task_id, "info": _flux_images(task)},
        }
    empty = {"originImageUrl": "", "resultImageUrl": ""}
    return {"code": o.code, "msg": o.msg, "data": {"taskId": task.task_id, "info": empty}}


def _task_view(task: SimTask) -> dict[str, Any]:
    task_input = (
        task.request.get("input")
        if task.family == "jobs"
        else {k: v for k, v in task.request.items() if k != "callBackUrl"}
    )
    return {
        "taskId": task.task_id,
        "family": task.family,
        "model": task.model,
        "state": _state_name(task),
        "callBackUrl": task.callback_url,
        "input": task_input,
        "callbacksSent": task.callbacks_sent,
        "statusQueries": task.status_queries,
        "callbacksAnswered": task.callbacks_answered,
        "lastCallbackStatus": task.last_status,
        "resultUrls": task.result_urls,
        "createTime": task.created_ms,
    }


# --------------------------------------------------------------------------- lifecycle


def _finish(
    state: SimState,
    task: SimTask,
    *,
    success: bool,
    code: int | None = None,
    msg: str | None = None,
) -> bytes:
    """Make the task terminal and return its canonical callback body."""
    now = _now_ms()
    if success:
        count = 1 if task.family == "flux-kontext" else state.config.images_per_task
        task.result_urls = [f"{task.base_url}/files/{task.task_id}/{n}.png" for n in range(count)]
        task.outcome = Outcome(True, 200, "success", now, 1.0)
    else:
        default_code, default_msg = _DEFAULT_FAILURE[task.family]
        progress = _pending_phase(task)[1]
        task.outcome = Outcome(False, code or default_code, msg or default_msg, now, progress)
        # KIE's failure callback reports consumeCredits 0: a failed task is not charged.
        state.credits += CREDITS_PER_TASK
    task.last_callback = orjson.dumps(_callback_payload(state, task))
    return task.last_callback


async def _post_callback(state: SimState, task: SimTask, body: bytes) -> int | None:
    """POST one callback with KIE's retry policy; return the last HTTP status (None: no answer)."""
    assert task.callback_url is not None
    task.callbacks_sent += 1  # before any await, so observers see the decision immediately
    status: int | None = None
    for attempt, backoff in enumerate((0.0, *RETRY_BACKOFF_SECONDS), start=1):
        if backoff:
            await asyncio.sleep(backoff)
        headers = {"content-type": "application/json"}
        key = state.config.webhook_hmac_key
        if key:
            timestamp = int(time.time())
            headers["X-Webhook-Timestamp"] = str(timestamp)
            headers["X-Webhook-Signature"] = webhook_signature(key, task.task_id, timestamp)
        try:
            response = await state.client().post(task.callback_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            status = None
            logger.warning("callback for %s, attempt %d: %r", task.task_id, attempt, exc)
            continue
        status = response.status_code
        if 200 <= status < 300:
            break
        logger.warning("callback for %s, attempt %d: HTTP %d", task.task_id, attempt, status)
    task.last_status = status
    task.callbacks_answered += 1
    return status


async def _deliver_with_quirks(state: SimState, task: SimTask, body: bytes) -> None:
    if task.callback_url is None:
        return
    config = state.config
    if state.chance(config.drop_callbacks):
        logger.info("dropping the callback for %s (drop_callbacks quirk)", task.task_id)
        return
    for _ in range(1 + config.duplicate_callbacks):
        await _post_callback(state, task, body)
    if config.out_of_order and task.outcome is not None and task.outcome.success:
        code, msg = _DEFAULT_FAILURE[task.family]
        bogus = dataclasses.replace(
            task, outcome=Outcome(False, code, msg, _now_ms(), 0.5), result_urls=[]
        )
        await _post_callback(state, task, orjson.dumps(_callback_payload(state, bogus)))


async def _auto_finish(state: SimState, task: SimTask, delay: float) -> None:
    await asyncio.sleep(delay)
    # Skip tasks finished by the control API meanwhile, or dropped by /sim/reset.
    if task.outcome is not None or state.tasks.get(task.task_id) is not task:
        return
    failed = state.chance(state.config.failure_rate)
    body = _finish(state, task, success=not failed)
    await _deliver_with_quirks(state, task, body)


# --------------------------------------------------------------------------- HTTP helpers


def _json(data: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers=headers, media_type="application/json")


def _kie(state: SimState, code: int, msg: str, data: object = None) -> Response:
    """KIE's envelope. KIE sends most body errors with HTTP 200; `http_errors` mirrors the code."""
    status = code if state.config.http_errors and code != 200 else 200
    return _json({"code": code, "msg": msg, "data": data}, status)


def _sim_error(status: int, code: str, message: str) -> Response:
    return _json({"error": {"code": code, "message": message}}, status)


def _state(request: Request) -> SimState:
    state: SimState = request.app.state.sim
    return state


async def _json_body(request: Request) -> object:
    """The parsed body, or `...` when it is not valid JSON (None is a valid JSON value)."""
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return ...


def _authorized(request: Request, api_key: str) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), api_key.encode()
    )


KieHandler = Callable[[Request, SimState], Awaitable[Response]]


def _kie_route(path: str, handler: KieHandler, method: str) -> Route:
    async def endpoint(request: Request) -> Response:
        state = _state(request)
        # The gateway answers before KIE's app sees the request, so this comes before auth.
        if state.chance(state.config.html_error_rate):
            return Response(BAD_GATEWAY_HTML, 502, media_type="text/html")
        if not _authorized(request, state.config.api_key):
            return _kie(state, 401, "You do not have access permissions")
        return await handler(request, state)

    return Route(path, endpoint, methods=[method])


# --------------------------------------------------------------------------- KIE endpoints


class _Invalid(Exception):
    def __init__(self, msg: str, code: int = 422) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


@dataclass(frozen=True, slots=True)
class _CreateSpec:
    model: str
    prompt: str
    callback_url: str | None


def _callback_url(body: Mapping[str, Any]) -> str | None:
    url = body.get("callBackUrl")
    if url is None or url == "":
        return None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise _Invalid("callBackUrl must be an http(s) URL")
    return url


def _prompt(value: object, name: str, *, required: bool) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise _Invalid(f"{name} is required")
        return ""
    if not isinstance(value, str):
        raise _Invalid(f"{name} must be a string")
    if len(value) > MAX_PROMPT_CHARS:
        raise _Invalid(f"{name} must be at most {MAX_PROMPT_CHARS} characters")
    return value


def _url_list(value: object, name: str, limit: int) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(u, str) and u for u in value):
        raise _Invalid(f"{name} must be a list of URLs")
    if len(value) > limit:
        raise _Invalid(f"{name} accepts at most {limit} URLs")
    return value


def _parse_jobs(body: Mapping[str, Any]) -> _CreateSpec:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _Invalid("model is required")
    task_input = body.get("input")
    if not isinstance(task_input, dict):
        raise _Invalid("input is required")
    prompt = _prompt(task_input.get("prompt"), "input.prompt", required=True)
    image_urls = _url_list(task_input.get("image_urls"), "input.image_urls", 10)
    if model == "google/nano-banana-edit" and not image_urls:
        raise _Invalid("input.image_urls is required")
    return _CreateSpec(model, prompt, _callback_url(body))


_GPT4O_SIZES = ("1:1", "3:2", "2:3")


def _parse_gpt4o(body: Mapping[str, Any]) -> _CreateSpec:
    size = body.get("size")
    if size is None or size == "":
        raise _Invalid("size is required")
    if size not in _GPT4O_SIZES:
        raise _Invalid(f"size must be one of {', '.join(_GPT4O_SIZES)}")
    prompt = _prompt(body.get("prompt"), "prompt", required=False)
    files = _url_list(body.get("filesUrl"), "filesUrl", 5)
    legacy_file = body.get("fileUrl")  # deprecated single-URL form, still accepted
    if not prompt and not files and not (isinstance(legacy_file, str) and legacy_file):
        raise _Invalid("prompt or filesUrl is required")
    return _CreateSpec("gpt4o-image", prompt, _callback_url(body))


_FLUX_MODELS = ("flux-kontext-pro", "flux-kontext-max")


def _parse_flux(body: Mapping[str, Any]) -> _CreateSpec:
    prompt = _prompt(body.get("prompt"), "prompt", required=True)
    model = body.get("model") or _FLUX_MODELS[0]
    if model not in _FLUX_MODELS:
        raise _Invalid(f"model must be one of {', '.join(_FLUX_MODELS)}")
    image = body.get("inputImage")
    if image is not None and not isinstance(image, str):
        raise _Invalid("inputImage must be a URL")
    return _CreateSpec(str(model), prompt, _callback_url(body))


_PARSERS: Mapping[Family, Callable[[Mapping[str, Any]], _CreateSpec]] = {
    "jobs": _parse_jobs,
    "gpt4o-image": _parse_gpt4o,
    "flux-kontext": _parse_flux,
}


def _create_handler(family: Family) -> KieHandler:
    async def create(request: Request, state: SimState) -> Response:
        now = time.monotonic()
        if state.rate_limited(now):
            return _kie(state, 429, "Rate limit exceeded")
        body = await _json_body(request)
        if not isinstance(body, dict):
            return _kie(state, 400, "Invalid JSON body: expected an object")
        try:
            spec = _PARSERS[family](body)
        except _Invalid as exc:
            return _kie(state, exc.code, exc.msg)
        if state.credits < CREDITS_PER_TASK:
            return _kie(state, 402, "insufficient credits")
        state.credits -= CREDITS_PER_TASK
        state.recent_creates.append(now)
        config = state.config
        task = SimTask(
            task_id=secrets.token_hex(16),
            family=family,
            model=spec.model,
            request=body,
            callback_url=spec.callback_url,
            prompt=spec.prompt,
            base_url=config.public_url or str(request.base_url).rstrip("/"),
            created_ms=_now_ms(),
            created_mono=now,
            nominal_seconds=config.callback_delay or MANUAL_NOMINAL_SECONDS,
        )
        state.tasks[task.task_id] = task
        if config.callback_delay is not None:
            state.spawn(_auto_finish(state, task, config.callback_delay), f"sim-{task.task_id}")
        return _kie(state, 200, "success", {"taskId": task.task_id})

    return create


def _record_handler(family: Family) -> KieHandler:
    async def record(request: Request, state: SimState) -> Response:
        task_id = request.query_params.get("taskId", "").strip()
        if not task_id:
            return _kie(state, 400, "taskId parameter is required")
        task = state.tasks.get(task_id)
        if task is not None:
            task.status_queries += 1
        # KIE answers the same body for "not visible yet" and "no such task".
        if (
            task is None
            or task.family != family
            or time.monotonic() - task.created_mono < state.config.record_null_seconds
        ):
            return _kie(state, 422, "recordInfo is null")
        return _kie(state, 200, "success", _RECORD_BUILDERS[family](task))

    return record


async def _credit(request: Request, state: SimState) -> Response:
    return _kie(state, 200, "success", state.credits)


async def _file(request: Request) -> Response:
    state = _state(request)
    task = state.tasks.get(request.path_params["task_id"])
    n: int = request.path_params["n"]
    if (
        task is None
        or task.outcome is None
        or not task.outcome.success
        or n >= len(task.result_urls)
    ):
        return _sim_error(404, "file_not_found", "no such result file")
    return Response(
        gradient_png(f"{task.prompt}#{n}"),
        media_type="image/png",
        headers={"cache-control": "public, max-age=86400"},
    )


# --------------------------------------------------------------------------- control API


def _control_task(request: Request) -> SimTask | Response:
    task_id = request.path_params["task_id"]
    task = _state(request).tasks.get(task_id)
    if task is None:
        return _sim_error(404, "task_not_found", f"the simulator has no task {task_id!r}")
    return task


async def _control_post(state: SimState, task: SimTask, body: bytes) -> Response:
    # Explicit commands deliver exactly once: the drop/duplicate/out-of-order quirks apply only
    # to automatic completions, so a test driving the sim by hand gets what it asked for.
    if task.callback_url is None:
        return _json({"delivered": False, "status": None})
    status = await _post_callback(state, task, body)
    return _json({"delivered": status is not None and 200 <= status < 300, "status": status})


async def _list_tasks(request: Request) -> Response:
    tasks = reversed(list(_state(request).tasks.values()))
    return _json({"tasks": [_task_view(t) for t in tasks]})


async def _get_task(request: Request) -> Response:
    task = _control_task(request)
    return task if isinstance(task, Response) else _json(_task_view(task))


def _already_finished(task: SimTask) -> Response:
    message = (
        f"task {task.task_id} already finished ({_state_name(task)}); "
        "use /resend to post its callback again"
    )
    return _sim_error(409, "task_finished", message)


async def _complete(request: Request) -> Response:
    task = _control_task(request)
    if isinstance(task, Response):
        return task
    if task.outcome is not None:
        return _already_finished(task)
    state = _state(request)
    return await _control_post(state, task, _finish(state, task, success=True))


async def _fail(request: Request) -> Response:
    task = _control_task(request)
    if isinstance(task, Response):
        return task
    if task.outcome is not None:
        return _already_finished(task)
    code: int | None = None
    msg: str | None = None
    if await request.body():
        body = await _json_body(request)
        if not isinstance(body, dict):
            return _sim_error(
                400, "bad_request", 'expected a JSON object {"code": int, "msg": str}'
            )
        code, msg = body.get("code"), body.get("msg")
        if code is not None and (
            isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 999
        ):
            return _sim_error(400, "bad_request", "code must be an integer between 100 and 999")
        if msg is not None and not isinstance(msg, str):
            return _sim_error(400, "bad_request", "msg must be a string")
    state = _state(request)
    return await _control_post(state, task, _finish(state, task, success=False, code=code, msg=msg))


async def _resend(request: Request) -> Response:
    task = _control_task(request)
    if isinstance(task, Response):
        return task
    if task.last_callback is None:
        return _sim_error(409, "task_not_finished", "the task has not finished: nothing to resend")
    return await _control_post(_state(request), task, task.last_callback)


def _config_view(state: SimState) -> dict[str, Any]:
    # `credits` shows the live balance, so GET then PATCH of the same body changes nothing.
    return {**state.config.to_json(), "credits": state.credits}


async def _get_config(request: Request) -> Response:
    return _json(_config_view(_state(request)))


async def _patch_config(request: Request) -> Response:
    state = _state(request)
    changes = await _json_body(request)
    if not isinstance(changes, dict):
        return _sim_error(400, "invalid_config", "expected a JSON object of settings")
    try:
        state.config = state.config.updated(changes)
    except (ValueError, TypeError) as exc:
        return _sim_error(400, "invalid_config", str(exc))
    if "credits" in changes:
        state.credits = state.config.credits
    if "seed" in changes:
        state.rng.seed(state.config.seed)
    return _json(_config_view(state))


async def _reset(request: Request) -> Response:
    await _state(request).reset()
    return _json({"reset": True})


# --------------------------------------------------------------------------- app


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        body: object = {"code": exc.status_code, "msg": exc.detail, "data": None}
    else:
        slug = exc.detail.lower().replace(" ", "_")
        body = {"error": {"code": slug, "message": exc.detail}}
    return _json(body, exc.status_code, exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    return _sim_error(500, "internal_error", "the simulator failed; see its log")


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    state: SimState = app.state.sim
    # trust_env=False: the sim never reads the environment (no proxy variables for callbacks).
    async with httpx.AsyncClient(timeout=CALLBACK_TIMEOUT_SECONDS, trust_env=False) as client:
        state.http = client
        try:
            yield
        finally:
            await state.cancel_background()
            state.http = None


def create_sim_app(config: SimConfig) -> Starlette:
    """The simulator as an ASGI app; serve it with uvicorn (its lifespan must run)."""
    routes = [
        _kie_route("/api/v1/jobs/createTask", _create_handler("jobs"), "POST"),
        _kie_route("/api/v1/jobs/recordInfo", _record_handler("jobs"), "GET"),
        _kie_route("/api/v1/gpt4o-image/generate", _create_handler("gpt4o-image"), "POST"),
        _kie_route("/api/v1/gpt4o-image/record-info", _record_handler("gpt4o-image"), "GET"),
        _kie_route("/api/v1/flux/kontext/generate", _create_handler("flux-kontext"), "POST"),
        _kie_route("/api/v1/flux/kontext/record-info", _record_handler("flux-kontext"), "GET"),
        _kie_route("/api/v1/chat/credit", _credit, "GET"),
        Route("/files/{task_id}/{n:int}.png", _file, methods=["GET"]),
        Route("/sim/tasks", _list_tasks, methods=["GET"]),
        Route("/sim/tasks/{task_id}", _get_task, methods=["GET"]),
        Route("/sim/tasks/{task_id}/complete", _complete, methods=["POST"]),
        Route("/sim/tasks/{task_id}/fail", _fail, methods=["POST"]),
        Route("/sim/tasks/{task_id}/resend", _resend, methods=["POST"]),
        Route("/sim/config", _get_config, methods=["GET"]),
        Route("/sim/config", _patch_config, methods=["PATCH"]),
        Route("/sim/reset", _reset, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=_lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    app.state.sim = SimState(config)
    return app
