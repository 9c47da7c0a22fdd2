"""What the bench sends: KIE callbacks for Relay, task-shaped messages for nchan.

Both targets see the same sequence per task: version 1 at creation, then one new version per
update. For Relay an update is a jobs-API callback (`generating` with a strictly increasing
`progress`, or `success`); for nchan it is a publish of a JSON object shaped like Relay's task
object (same fields, similar size), so both servers move comparable bytes.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

RESULT_URL = "https://tempfile.aiquickdraw.com/h/bench.png"
MODEL = "google/nano-banana"


def progress_percent(version: int) -> float:
    """Jobs `progress` (0-100) for the update that makes `version`: strictly increasing in
    the version, so every update is a real change (up to version 99,999)."""
    return min(100.0, version / 1000)


def relay_update(task_id: str, version: int, *, final: bool) -> bytes:
    """The KIE jobs callback that moves a Relay task to `version`."""
    if final:
        data: dict[str, object] = {
            "taskId": task_id, "model": MODEL, "state": "success", "param": "{}",
            "resultJson": orjson.dumps({"resultUrls": [RESULT_URL]}).decode(),
            "failCode": "", "failMsg": "", "costTime": 8,
            "createTime": 1755599634000, "completeTime": 1755599644000, "updateTime": 1755599644000,
        }
        return orjson.dumps({"code": 200, "msg": "Playground task completed successfully.", "data": data})
    data = {
        "taskId": task_id, "model": MODEL, "state": "generating", "param": "{}",
        "progress": progress_percent(version),
    }
    return orjson.dumps({"code": 200, "msg": "ok", "data": data})


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def task_message(key: str, version: int, *, final: bool) -> bytes:
    """An nchan message shaped like Relay's task object at `version`."""
    status = "pending" if version == 1 else "completed" if final else "processing"
    now = _now()
    return orjson.dumps({
        "taskId": key,
        "provider": "kie",
        "model": MODEL,
        "mode": "text-to-image",
        "status": status,
        "prompt": f"bench {key}",
        "imageUrls": [],
        "providerResultUrls": [RESULT_URL] if final else [],
        "resultUrls": [RESULT_URL] if final else [],
        "error": None,
        "progress": 1.0 if final else None if version == 1 else progress_percent(version) / 100,
        "mirrorError": None,
        "createdAt": now,
        "updatedAt": now,
        "completedAt": now if final else None,
        "version": version,
    })


def update_body(kind: str, key: str, version: int, *, final: bool) -> bytes:
    """The body of the update that makes `version` on target `kind` ("relay", "peer" or
    "nchan"): a KIE callback for Relay, the task object for the others."""
    if kind == "relay":
        return relay_update(key, version, final=final)
    return task_message(key, version, final=final)


# nchan names the SSE event after this publisher header; Relay's events are `task`.
NCHAN_HEADERS = {"X-EventSource-Event": "task"}


def update_headers(kind: str) -> dict[str, str]:
    return NCHAN_HEADERS if kind == "nchan" else {}
