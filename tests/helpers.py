"""Helpers the test modules share (no test module imports another)."""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Any

import httpx
import jsonschema

from relay.openapi import document
from relay.settings import Settings
from tests.servers import SECRET
from tests.sse import Event
from tests.waiting import until


async def create(client: httpx.AsyncClient, relay_url: str, prompt: str = "a red fox") -> dict[str, Any]:
    response = await client.post(f"{relay_url}/api/tasks", json={"prompt": prompt})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def sim_task(client: httpx.AsyncClient, sim: str, task_id: str) -> dict[str, Any]:
    response = await client.get(f"{sim}/sim/tasks/{task_id}")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def success_payload(task_id: str, url: str = "https://tempfile.aiquickdraw.com/h/abc.png") -> dict[str, Any]:
    """A jobs-API success callback in KIE's real shape (resultJson is a string, failCode
    null; tests/fixtures/kie/jobs-callback-success-real-z-image.json)."""
    return {
        "code": 200,
        "msg": "Playground task completed successfully.",
        "data": {
            "taskId": task_id, "model": "google/nano-banana", "state": "success", "param": "{}",
            "resultJson": f'{{"resultUrls":["{url}"]}}', "failCode": None, "failMsg": None,
            "creditsConsumed": 4, "costTime": 8,
            "createTime": 1755599634000, "completeTime": 1755599644000, "updateTime": 1755599644000,
        },
    }


async def wait_status(
    client: httpx.AsyncClient, status_url: str, status: str, timeout: float = 10, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(status_url, headers=headers)).json()
        return body if body["status"] == status else None

    return await until(reached, timeout=timeout, what=f"status {status}")


TERMINAL = ("completed", "failed")


async def metric(client: httpx.AsyncClient, base_url: str, name: str, **labels: str) -> float:
    """The sum of one Prometheus metric's samples whose labels include `labels`."""
    text = (await client.get(f"{base_url}/metrics")).text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


async def open_streams(client: httpx.AsyncClient, base_url: str) -> int:
    return int(await metric(client, base_url, "relay_open_streams"))


def versions(events: list[Event]) -> list[int]:
    return [e.json()["version"] for e in events]


def assert_strictly_increasing(seen: list[int]) -> None:
    assert seen == sorted(set(seen)), f"versions repeat or go back: {seen}"


# The contract's error body, from the OpenAPI document itself.
ERROR = jsonschema.Draft202012Validator(
    document(Settings(public_url="http://relay.test", secret=SECRET))["components"]["schemas"]["Error"]
)


def assert_contract(response: httpx.Response) -> None:
    """No 5xx; an error is the contract's JSON; every response has a sane request id."""
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    rid = response.headers.get("x-request-id", "")
    assert rid and len(rid) <= 64 and all(c.isalnum() or c in "._-" for c in rid), (
        f"{response.request.method} {response.request.url} -> {response.status_code} {response.headers} {response.text[:200]}"
    )
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), response.headers
        errors = list(ERROR.iter_errors(response.json()))
        assert not errors, f"{response.text[:300]}: {errors[0].message}"


# One pooled client for the helpers: a new httpx client per call costs ~40 ms (TLS context).
HELPER = httpx.Client(timeout=10)


def sim_task_ids(sim: str) -> list[str]:
    return [t["taskId"] for t in HELPER.get(f"{sim}/sim/tasks").json()["tasks"]]



async def run_cli(env: dict[str, str], *args: str) -> str:
    """`relay ARGS...` with an instance's environment; its output, stdout then stderr."""
    proc = await asyncio.create_subprocess_exec(
        f"{sys.prefix}/bin/relay", *args, env={**env, "PATH": f"{sys.prefix}/bin:/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return out.decode() + err.decode()
