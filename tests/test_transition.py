"""The status machine, in-process: `transition(task, update, now)` for every pair of
current status and requested change that matters. Pure: no server, no store."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from relay.models import Mode, Status, Task, TaskError, TaskUpdate, transition

pytestmark = pytest.mark.inprocess

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LATER = T0 + timedelta(seconds=5)
THEIRS = ("https://tempfile.aiquickdraw.com/a.png",)
OURS = ("https://relay.test/files/generated/t/0.png",)
FAILURE = TaskError("provider_failed", "KIE failed the task")


def task(status: Status = Status.PENDING, **changes: object) -> Task:
    base = Task("t", "kie", "google/nano-banana", Mode.TEXT_TO_IMAGE, status, "p", (), T0, T0)
    return replace(base, **changes)  # type: ignore[arg-type]


PROCESSING_WITH_RESULT = task(Status.PROCESSING, version=2, provider_result_urls=THEIRS)
COMPLETED = task(
    Status.COMPLETED, version=3, provider_result_urls=THEIRS, result_urls=OURS, completed_at=T0, progress=1.0
)
COMPLETED_UNMIRRORED = replace(COMPLETED, result_urls=THEIRS, mirror_error="storage down")
FAILED = task(Status.FAILED, version=2, error=FAILURE, completed_at=T0)

# (name, current task, update, expected status or None for "no change")
CASES: list[tuple[str, Task, TaskUpdate, Status | None]] = [
    ("pending -> processing", task(), TaskUpdate("t", Status.PROCESSING), Status.PROCESSING),
    ("pending -> completed", task(), TaskUpdate("t", Status.COMPLETED, result_urls=OURS), Status.COMPLETED),
    ("pending -> failed", task(), TaskUpdate("t", Status.FAILED, error=FAILURE), Status.FAILED),
    ("duplicate pending", task(), TaskUpdate("t", Status.PENDING), None),
    ("processing -> pending is backwards", task(Status.PROCESSING), TaskUpdate("t", Status.PENDING), None),
    ("progress rises", task(Status.PROCESSING, progress=0.2), TaskUpdate("t", Status.PROCESSING, progress=0.5), Status.PROCESSING),
    ("progress never falls", task(Status.PROCESSING, progress=0.5), TaskUpdate("t", Status.PROCESSING, progress=0.2), None),
    ("a paid result is not thrown away by a late failure", PROCESSING_WITH_RESULT,
     TaskUpdate("t", Status.FAILED, error=FAILURE), None),
    ("completed is final", COMPLETED, TaskUpdate("t", Status.FAILED, error=FAILURE), None),
    ("completed ignores a duplicate", COMPLETED, TaskUpdate("t", Status.COMPLETED, result_urls=OURS), None),
    ("failed is final", FAILED, TaskUpdate("t", Status.COMPLETED, result_urls=OURS), None),
    ("a late mirror swaps in our URLs", COMPLETED_UNMIRRORED,
     TaskUpdate("t", Status.COMPLETED, result_urls=OURS, mirrored=True), Status.COMPLETED),
    ("a mirror pass without `mirrored` cannot touch a terminal task", COMPLETED_UNMIRRORED,
     TaskUpdate("t", Status.COMPLETED, result_urls=OURS), None),
]


@pytest.mark.parametrize(("current", "update", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_transition(current: Task, update: TaskUpdate, expected: Status | None) -> None:
    after = transition(current, update, LATER)
    if expected is None:
        assert after is None
        return
    assert after is not None
    assert after.status is expected
    assert after.version == current.version + 1 and after.updated_at == LATER
    assert (after.completed_at is not None) == expected.terminal
    if expected is Status.COMPLETED:
        assert after.progress == 1.0


def test_a_swapped_in_mirror_clears_the_error_and_keeps_completed_at() -> None:
    after = transition(COMPLETED_UNMIRRORED, TaskUpdate("t", Status.COMPLETED, result_urls=OURS, mirrored=True), LATER)
    assert after is not None
    assert (after.result_urls, after.mirror_error, after.completed_at) == (OURS, None, T0)
