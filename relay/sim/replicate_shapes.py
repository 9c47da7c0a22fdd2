"""The prediction object the simulator's Replicate mode answers and calls back with, in
Replicate's recorded shape (tests/fixtures/replicate/get-succeeded-list-output.json,
cancel-200.json, get-starting.json; the README there lists the sources)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from relay.sim.state import SimTask

Json = dict[str, Any]
CANCELED = "canceled"  # the outcome message that marks a cancelled prediction


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def status(task: SimTask) -> str:
    o = task.outcome
    if o is None:
        return "starting" if task.phase()[0] == "waiting" else "processing"
    if o.success:
        return "succeeded"
    return "canceled" if o.msg == CANCELED else "failed"


def prediction(task: SimTask, base_url: str) -> Json:
    o = task.outcome
    state = status(task)
    started = task.created_ms + 300 if state != "starting" else None
    body: Json = {
        "id": task.task_id,
        "model": task.request.get("_model", task.model),
        "version": "dp-" + hashlib.sha256(task.model.encode()).hexdigest()[:32],
        "input": task.request.get("input", {}),
        "logs": "" if state != "succeeded" else f"Using seed: 42\nPrompt: {task.prompt}\n",
        "output": list(task.result_urls) if state == "succeeded" else None,
        "data_removed": False,
        "error": o.msg if o is not None and state == "failed" else None,
        "status": state,
        "created_at": _iso(task.created_ms),
        "started_at": _iso(started),
        "completed_at": _iso(o.completed_ms) if o is not None else None,
        "urls": {
            "cancel": f"{base_url}/v1/predictions/{task.task_id}/cancel",
            "get": f"{base_url}/v1/predictions/{task.task_id}",
            "web": f"https://replicate.com/p/{task.task_id}",
        },
    }
    if o is not None:
        seconds = max(o.completed_ms - task.created_ms, 1) / 1000
        body["metrics"] = {"predict_time": round(seconds * 0.9, 6), "total_time": round(seconds, 6)}
    return body
