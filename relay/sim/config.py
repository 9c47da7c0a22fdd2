"""The simulator's settings: every knob, from flags or from `PATCH /sim/config`."""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_IMAGES_PER_TASK = 16

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
    "link_ttl": _number,
    "file_delay": _number,
    "create_delay": _number,
    "seed": _optional_integer,
    "replicate_webhook_secret": _string,
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
    ("--file-delay", _non_negative_float_arg, "seconds before a result file is served (a slow host)"),
    ("--create-delay", _non_negative_float_arg, "seconds before a create is answered (a slow KIE)"),
    (
        "--link-ttl",
        _non_negative_float_arg,
        "seconds a result link works before it answers 403 (KIE: 20 minutes; 0 = forever)",
    ),
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
    link_ttl: float = 0.0  # result links expire this long after the task finished; 0 = never
    file_delay: float = 0.0  # a slow result host: seconds before a file is served
    create_delay: float = 0.0  # a slow KIE: seconds before a create is answered
    seed: int | None = None  # seeds the random quirks, for reproducible runs
    # Replicate mode signs its webhooks with this (GET /v1/webhooks/default/secret gives it).
    replicate_webhook_secret: str = "whsec_cmVsYXktc2ltdWxhdG9yLXJlcGxpY2F0ZS1zZWNyZXQ="

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
        for name in ("link_ttl", "file_delay", "create_delay"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                problems.append(f"{name} must be a non-negative number")
        if not (math.isfinite(self.record_null_seconds) and self.record_null_seconds >= 0):
            problems.append("record_null_seconds must be a non-negative number")
        if not 1 <= self.images_per_task <= MAX_IMAGES_PER_TASK:
            problems.append(f"images_per_task must be between 1 and {MAX_IMAGES_PER_TASK}")
        if not self.replicate_webhook_secret.startswith("whsec_"):
            problems.append("replicate_webhook_secret must start with whsec_")
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
