"""Reading numbers out of untrusted text. `str.isdigit()` accepts "²" and other Unicode
digits that `int()` refuses, and `int()` of a 5000-digit string is slow or refused:
every number Relay reads from a request goes through here instead."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relay.errors import BadRequest


def ascii_int(text: str, *, max_digits: int = 18, signed: bool = False) -> int | None:
    """The integer `text` spells in plain ASCII digits, or None."""
    text = text.strip()
    digits = text[1:] if signed and text.startswith("-") else text
    if not digits or len(digits) > max_digits or not (digits.isascii() and digits.isdigit()):
        return None
    return int(text)


def optional_text(body: Mapping[str, Any], name: str, limit: int) -> str | None:
    """An optional string field of a JSON body, stripped (None when absent or blank);
    `BadRequest` naming the field when it is not a string of at most `limit` characters."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest(f"{name} must be a string of at most {limit} characters")
    return value.strip() or None
