"""KIE's error codes and what Relay answers for each: the one table, used for create
calls, status queries and anything else KIE refuses (KIE-API.md §6 and §11)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from relay.errors import ProviderError

# Answers after which a request was certainly not accepted, so retrying cannot pay twice.
RETRYABLE_CODES: Final = frozenset({429, 455, 500, 502, 503, 504, 550})


@dataclass(frozen=True, slots=True)
class Meaning:
    status: int  # what Relay answers its own caller
    code: str  # Relay's error code
    says: str  # what went wrong and what to do, in words


MEANINGS: Final[dict[int, Meaning]] = {
    401: Meaning(502, "provider_auth_failed", "KIE rejected the API key (401): check KIE_API_KEY."),
    402: Meaning(402, "provider_out_of_credits", "the KIE account is out of credits (402): top it up at kie.ai."),
    400: Meaning(400, "provider_rejected_input", "KIE rejected the request as invalid (400)."),
    422: Meaning(400, "provider_rejected_input", "KIE rejected the request as invalid (422)."),
    404: Meaning(400, "provider_not_found", "KIE does not know this endpoint, model or task (404)."),
    429: Meaning(503, "provider_rate_limited", "KIE rate limited us (429)."),
}
UNAVAILABLE: Final = Meaning(503, "provider_unavailable", "KIE is unavailable")
OTHER: Final = Meaning(502, "provider_error", "KIE failed the request")


def meaning(code: int, message: str) -> Meaning:
    # KIE answers a missing input field with code 500 "This field is required" (recorded:
    # tests/fixtures/kie/jobs-create-gpt-image-edit-apicity.json): the request is wrong,
    # and retrying it cannot help.
    if code == 500 and "required" in message.lower():
        return Meaning(400, "provider_rejected_input", "KIE rejected the request as invalid (500).")
    if code in MEANINGS:
        return MEANINGS[code]
    if code in RETRYABLE_CODES:
        return Meaning(UNAVAILABLE.status, UNAVAILABLE.code, f"{UNAVAILABLE.says} ({code}).")
    return Meaning(OTHER.status, OTHER.code, f"{OTHER.says} ({code}).")


def retryable(code: int, message: str) -> bool:
    return code in RETRYABLE_CODES and meaning(code, message).status >= 500


def provider_error(code: int, message: str | None, *, headers: dict[str, str] | None = None) -> ProviderError:
    said = message or "no message"
    m = meaning(code, said)
    return ProviderError(f"{m.says} KIE said: {said}", status=m.status, code=m.code, provider_code=code, headers=headers)
