"""Reading numbers out of untrusted text. `str.isdigit()` accepts "²" and other Unicode
digits that `int()` refuses, and `int()` of a 5000-digit string is slow or refused:
every number Relay reads from a request goes through here instead."""

from __future__ import annotations


def ascii_int(text: str, *, max_digits: int = 18, signed: bool = False) -> int | None:
    """The integer `text` spells in plain ASCII digits, or None."""
    text = text.strip()
    digits = text[1:] if signed and text.startswith("-") else text
    if not digits or len(digits) > max_digits or not (digits.isascii() and digits.isdigit()):
        return None
    return int(text)
