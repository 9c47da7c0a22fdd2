"""Every object-storage key Relay writes, in one place (Redis keys live in keys.py)."""

from __future__ import annotations

import secrets

# Served under /files/ (relay/backends/objects.py: SERVED_PREFIXES).
GENERATED = "generated/"
UPLOADS = "uploads/"
# Not served: task metadata carries prompts, and reading a task needs its token.
TASK_METADATA = "kie-tasks/"


def result_key(task_id: str, n: int, ext: str) -> str:
    """Result `n` of a task: deterministic, so a retried copy overwrites, never duplicates."""
    return f"{GENERATED}{task_id}/{n}.{ext}"


def metadata_key(task_id: str) -> str:
    """A terminal task's record, from which a lost task is rebuilt."""
    return f"{TASK_METADATA}{task_id}.json"


def upload_key(ext: str) -> str:
    """A reference image a browser uploaded: unguessable, never reused."""
    return f"{UPLOADS}{secrets.token_urlsafe(16)}.{ext}"


def check_probe_key() -> str:
    """A throwaway object `relay check` writes, reads back and deletes."""
    return f"{GENERATED}relay-check/{secrets.token_hex(6)}.txt"
