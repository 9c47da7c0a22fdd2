"""Reading settings from the environment (relay/settings.py builds `Settings` with it):
one pass that records every bad value, naming its variable, instead of stopping at the
first."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from urllib.parse import urlsplit


def is_whsec(secret: str) -> bool:
    if not secret.startswith("whsec_"):
        return False
    try:
        return len(base64.b64decode(secret[6:] + "==", validate=False)) >= 24
    except (ValueError, binascii.Error):
        return False


def mask_url(url: str) -> str:
    """A URL with any password replaced, for logs and `relay check`."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


class Reader:
    """Reads settings by field name from the variables in ENV_NAMES. A bad value is
    recorded in `problems` (naming the variable and what would be valid) and the default
    is used, so one pass finds every problem."""

    def __init__(self, env: Mapping[str, str], names: Mapping[str, str]):
        self.env = env
        self.names = names
        self.problems: list[str] = []

    def _raw(self, field_name: str) -> tuple[str, str | None]:
        name = self.names[field_name]
        return name, self.env.get(name)

    def text(self, field_name: str, default: str) -> str:
        _, raw = self._raw(field_name)
        return (raw if raw is not None else default).strip()

    def choice(self, field_name: str, default: str, allowed: tuple[str, ...]) -> str:
        name, _ = self._raw(field_name)
        value = self.text(field_name, default)
        if value not in allowed:
            self.problems.append(f"{name}={value!r} is not one of: {', '.join(allowed)}")
            return default
        return value

    def number(self, field_name: str, default: float, *, low: float) -> float:
        name, raw = self._raw(field_name)
        if raw is None or not raw.strip():
            return float(default)
        try:
            value = float(raw)
        except ValueError:
            self.problems.append(f"{name}={raw!r} is not a number (e.g. {name}={default:g})")
            return float(default)
        if value < low:
            self.problems.append(f"{name}={raw!r} must be at least {low:g}")
            return float(default)
        return value

    def url(self, field_name: str, default: str, *, schemes: tuple[str, ...]) -> str:
        name, _ = self._raw(field_name)
        value = self.text(field_name, default)
        if not value:
            return value
        if urlsplit(value).scheme not in schemes:
            self.problems.append(
                f"{name}={mask_url(value)!r} must start with one of: {', '.join(s + '://' for s in schemes)}"
            )
            return default
        return value

    def opt_url(self, field_name: str) -> str | None:
        value = self.url(field_name, "", schemes=("http", "https"))
        return value.rstrip("/") or None

    def items(self, field_name: str) -> tuple[str, ...]:
        return tuple(v.strip() for v in self.text(field_name, "").split(",") if v.strip())

    def delays(self, field_name: str, default: tuple[float, ...]) -> tuple[float, ...]:
        """Comma-separated seconds, e.g. 0,5,300."""
        name, _ = self._raw(field_name)
        raw = self.items(field_name)
        if not raw:
            return default
        try:
            values = tuple(float(v) for v in raw)
        except ValueError:
            values = ()
        if not values or any(v < 0 for v in values):
            self.problems.append(f"{name}={','.join(raw)!r} must be seconds >= 0, comma-separated (e.g. 0,5,300)")
            return default
        return values
