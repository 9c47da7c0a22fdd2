"""A paid provider task is never orphaned and never paid twice: Redis killed (SIGKILL,
append-only file) while KIE is creating the task, then restarted; the retry with the
same Idempotency-Key gets the task KIE made. And a claim whose request failed never
blocks the key for long."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.conftest import StartRelay
from tests.servers import RedisServer
from tests.waiting import until


async def sim_tasks(client: httpx.AsyncClient, sim: str) -> list[dict[str, object]]:
    tasks: list[dict[str, object]] = (await client.get(f"{sim}/sim/tasks")).json()["tasks"]
    return tasks


async def test_redis_killed_mid_create_the_retry_gets_the_paid_task(
    start_relay: StartRelay, private_redis: RedisServer, sim: str, client: httpx.AsyncClient
) -> None:
    await client.patch(f"{sim}/sim/config", json={"create_delay": 2})
    relay = start_relay(private_redis.url, KIE_RETRY_BUDGET="0")
    headers = {"Idempotency-Key": "order-42"}
    body = {"prompt": "a paid fox"}
    first = asyncio.create_task(client.post(f"{relay.url}/api/tasks", json=body, headers=headers, timeout=30))

    async def claimed() -> bool:
        redis = private_redis.client()
        try:
            return bool(list(redis.scan_iter("relay:idem:*")))
        finally:
            redis.close()

    await until(claimed, timeout=10, what="the Idempotency-Key claimed, KIE creating")
    private_redis.kill()  # while KIE is still creating the task
    answer = await first
    assert answer.status_code == 503, answer.text
    assert len(await sim_tasks(client, sim)) == 1, "KIE made (and charged for) the task"
    private_redis.start()  # the same port and append-only file

    started = time.monotonic()

    async def retried() -> httpx.Response | None:
        response = await client.post(f"{relay.url}/api/tasks", json=body, headers=headers, timeout=30)
        return response if response.status_code == 202 else None

    retry = await until(retried, timeout=30, what="the retry accepted")
    assert time.monotonic() - started < 10
    task = retry.json()
    paid = await sim_tasks(client, sim)
    assert [t["taskId"] for t in paid] == [task["taskId"]], "the retry got the paid task, not a second one"
    assert retry.headers.get("idempotent-replayed") == "true"
    again = await client.post(f"{relay.url}/api/tasks", json=body, headers=headers)
    assert again.status_code == 202 and again.json()["taskId"] == task["taskId"]


async def test_a_failed_create_does_not_block_its_retry(
    start_relay: StartRelay, redis_url: str, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay(redis_url, KIE_RETRY_BUDGET="0")
    headers = {"Idempotency-Key": "order-43"}
    await client.patch(f"{sim}/sim/config", json={"html_error_rate": 1.0})
    failed = await client.post(f"{relay.url}/api/tasks", json={"prompt": "x"}, headers=headers)
    assert failed.status_code == 502
    await client.patch(f"{sim}/sim/config", json={"html_error_rate": 0})
    retry = await client.post(f"{relay.url}/api/tasks", json={"prompt": "x"}, headers=headers)
    assert retry.status_code == 202, retry.text
    assert len(await sim_tasks(client, sim)) == 1
