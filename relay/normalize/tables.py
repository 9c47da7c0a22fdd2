"""KIE's state and error tables: what each family's states and failure codes mean."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from relay.models import ProviderState

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

# Longest provider text we copy into a TaskError / exception message.
MAX_MESSAGE: Final = 300
