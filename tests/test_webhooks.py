"""Outbound webhooks (issue #15): signed the Standard Webhooks way, retried on a schedule,
never lost, never sent where they may not go. Real `relay serve` processes, a real
receiver on loopback, the simulator finishing tasks; signatures checked with the
`standardwebhooks` package, as an app backend would."""

from __future__ import annotations

import asyncio
import base64
import signal
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from relay import keys
from tests.conftest import StartRelay
from tests.helpers import create, metric, run_cli, wait_status
from tests.servers import RedisServer
from tests.waiting import until
from tests.webhook_receiver import Received, connection_counter, receiver

SECRET = "whsec_" + base64.b64encode(b"relay-test-webhook-secret-0123456789").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"an-older-webhook-secret-from-before").decode()
FAST = "0,0.2,0.2,0.2,0.2,0.2"  # six attempts, 200 ms apart


def hooks_env(url: str, **extra: str) -> dict[str, str]:
    return {
        "RELAY_WEBHOOK_URL": url, "RELAY_WEBHOOK_SECRET": SECRET, "RELAY_WEBHOOK_SCHEDULE": FAST,
        "RELAY_MIRROR": "off", **extra,
    }


def verified(record: Received, secret: str = SECRET) -> Any:
    """The body, once `standardwebhooks` has verified its signature (raises otherwise)."""
    return Webhook(secret).verify(record.body, record.headers)


async def finish(client: httpx.AsyncClient, sim: str, task_id: str, outcome: str = "complete") -> None:
    (await client.post(f"{sim}/sim/tasks/{task_id}/{outcome}")).raise_for_status()


async def deliveries(client: httpx.AsyncClient, task: dict[str, Any]) -> list[dict[str, Any]]:
    url = task["statusUrl"].replace(f"/api/tasks/{task['taskId']}", f"/api/tasks/{task['taskId']}/deliveries")
    answer = await client.get(url)
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["deliveries"]
    return found


async def test_retried_until_acknowledged_with_one_stable_id(
    start_relay: StartRelay, backend: str, sim: str, client: httpx.AsyncClient
) -> None:
    # The receiver fails the first three attempts of every message, then accepts.
    async with receiver(lambda request, seen: 500 if seen < 3 else 200) as rx:
        relay = start_relay(backend, **hooks_env(rx.url))
        done = await create(client, relay.url, "to complete")
        failed = await create(client, relay.url, "to fail")
        await finish(client, sim, done["taskId"])
        await finish(client, sim, failed["taskId"], "fail")

        async def both_processed() -> bool:
            return len(rx.processed) == 2

        await until(both_processed, timeout=20, what="both terminal changes acknowledged")
        for task, kind in ((done, "task.completed"), (failed, "task.failed")):
            seen = rx.for_task(task["taskId"])
            assert [r.status for r in seen] == [500, 500, 500, 200]
            assert len({r.id for r in seen}) == 1, "every attempt carries the same webhook-id"
            bodies = [verified(r) for r in seen]
            assert all(b == bodies[0] for b in bodies), "every attempt sends the same body"
            assert bodies[0]["type"] == kind
            assert bodies[0]["data"]["taskId"] == task["taskId"]
            assert bodies[0]["data"]["status"] == kind.removeprefix("task.")
            assert len({r.headers["webhook-timestamp"] for r in seen}) >= 1

            async def recorded(task: dict[str, Any] = task) -> list[dict[str, Any]] | None:
                # The receiver has answered; Relay records the attempt a moment later.
                found = await deliveries(client, task)
                return found if [d["state"] for d in found] == ["delivered"] else None

            listed = await until(recorded, timeout=10, what="the delivery recorded")
            assert [a["status"] for a in listed[0]["attempts"]] == [500, 500, 500, 200]
            assert listed[0]["id"] == seen[0].id and listed[0]["nextAttemptAt"] is None
        # Only terminal changes are sent by default; nothing more arrives.
        assert len(rx.requests) == 8 and rx.duplicates == 0
        label = rx.url.removesuffix("/hook")
        await until(
            lambda: _metric_is(client, relay.url, "relay_webhook_deliveries_total", 2, endpoint=label, outcome="delivered"),
            timeout=10, what="the delivered counter",
        )
        assert await metric(client, relay.url, "relay_webhook_deliveries_total", endpoint=label, outcome="retried") == 6


async def test_every_change_and_a_rotation(
    start_relay: StartRelay, redis_url: str, sim: str, client: httpx.AsyncClient
) -> None:
    async with receiver() as rx:
        relay = start_relay(
            redis_url, **hooks_env(rx.url, RELAY_WEBHOOK_EVENTS="all", RELAY_WEBHOOK_SECRET=f"{SECRET},{OLD_SECRET}")
        )
        task = await create(client, relay.url)
        await finish(client, sim, task["taskId"])

        async def two() -> bool:
            return len(rx.processed) == 2

        await until(two, timeout=10, what="the created and completed versions")
        by_version = sorted(rx.processed.values(), key=lambda r: verified(r)["data"]["version"])
        assert [verified(r)["type"] for r in by_version] == ["task.updated", "task.completed"]
        # Both secrets sign during a rotation: receivers on either side verify.
        for record in by_version:
            assert len(record.headers["webhook-signature"].split(" ")) == 2
            verified(record, OLD_SECRET)
        with pytest.raises(Exception, match="signature"):
            Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(by_version[0].body, by_version[0].headers)


async def test_task_webhook_url_is_checked(
    start_relay: StartRelay, sim: str, client: httpx.AsyncClient
) -> None:
    async with receiver() as rx, connection_counter() as (port, contacted):
        relay = start_relay(
            "memory://",
            **hooks_env("", RELAY_WEBHOOK_HOSTS=f"{rx.url.removesuffix('/hook')},localhost"),
        )
        # A host that is not allowed, and a scheme that is not http(s): 400, nothing created.
        for url in ("https://evil.example/hook", "http://localhost:1/hook", "ftp://localhost/x", "not a url"):
            answer = await client.post(f"{relay.url}/api/tasks", json={"prompt": "p", "webhookUrl": url})
            assert answer.status_code == 400, (url, answer.text)
            assert answer.json()["error"]["code"] == "webhook_refused"
        # An allowed name that resolves to loopback: accepted, never contacted.
        sneaky = (
            await client.post(
                f"{relay.url}/api/tasks",
                json={"prompt": "p", "webhookUrl": f"https://localhost:{port}/hook"},
            )
        ).json()
        # An allowed origin (the explicit http://host:port entry): delivered.
        own = (await client.post(f"{relay.url}/api/tasks", json={"prompt": "q", "webhookUrl": f"{rx.url}/own"})).json()
        for task in (sneaky, own):
            await finish(client, sim, task["taskId"])

        async def settled() -> list[dict[str, Any]] | None:
            found = await deliveries(client, sneaky)
            return found if found and found[0]["state"] == "failed" else None

        refused = await until(settled, timeout=10, what="the loopback delivery refused")
        assert "loopback" in refused[0]["attempts"][0]["error"]
        assert len(refused[0]["attempts"]) == 1, "a refusal by policy is not retried"
        assert contacted[0] == 0
        await until(lambda: _processed(rx, 1), timeout=10, what="the allowed per-task webhook")
        assert rx.requests[0].path == "/hook/own"
        verified(rx.requests[0])


async def _processed(rx: Any, n: int) -> bool:
    return len(rx.processed) >= n


async def test_gone_disables_and_redirects_are_not_followed(
    start_relay: StartRelay, redis_url: str, sim: str, client: httpx.AsyncClient, tmp_path: Any
) -> None:
    answers = {"status": 302}
    async with receiver(lambda request, seen: answers["status"] if request.url.path == "/hook" else 200) as rx:
        env = hooks_env(rx.url)
        relay = start_relay(redis_url, **env)
        first = await create(client, relay.url, "redirected")
        await finish(client, sim, first["taskId"])

        async def failed_after_schedule() -> list[dict[str, Any]] | None:
            found = await deliveries(client, first)
            return found if found and found[0]["state"] == "failed" else None

        listed = await until(failed_after_schedule, timeout=15, what="the schedule used up")
        assert [a["status"] for a in listed[0]["attempts"]] == [302] * 6
        assert all(r.path == "/hook" for r in rx.requests), "the redirect target was never requested"

        answers["status"] = 410
        second = await create(client, relay.url, "gone")
        await finish(client, sim, second["taskId"])
        await until(lambda: _requests(rx, 7), timeout=10, what="the 410 answer")

        async def second_failed() -> bool:
            # The endpoint is disabled before that attempt is recorded as failed.
            return [d["state"] for d in await deliveries(client, second)] == ["failed"]

        await until(second_failed, timeout=10, what="the 410 recorded")
        third = await create(client, relay.url, "after gone")
        await finish(client, sim, third["taskId"])

        async def third_failed() -> list[dict[str, Any]] | None:
            found = await deliveries(client, third)
            return found if found and found[0]["state"] == "failed" else None

        listed = await until(third_failed, timeout=10, what="the disabled endpoint skipped")
        assert "disabled" in listed[0]["attempts"][0]["error"]
        assert len(rx.requests) == 7, "nothing is sent to a disabled endpoint"
        label = rx.url.removesuffix("/hook")
        await until(
            lambda: _metric_is(client, relay.url, "relay_webhook_endpoint_disabled", 1, endpoint=label),
            timeout=10, what="the disabled gauge",
        )
        check = await run_cli(relay.env, "check")
        assert "FAILED webhooks" in check and "410 Gone" in check, check

        # Enabled again by the operator, and redelivered by the task's owner: it arrives.
        answers["status"] = 200
        enable = await run_cli(relay.env, "webhooks", "enable", rx.url)
        assert "enabled again" in enable, enable
        redo = third["statusUrl"].replace(f"/api/tasks/{third['taskId']}", f"/api/tasks/{third['taskId']}/deliveries/redeliver")
        answer = await client.post(redo)
        assert answer.status_code == 202 and answer.json()["queued"] == 1
        await until(lambda: _processed(rx, 1), timeout=15, what="the redelivered message")
        assert next(iter(rx.processed.values())).id.startswith(f"msg_{third['taskId']}_v")


async def _requests(rx: Any, n: int) -> bool:
    return len(rx.requests) >= n


async def _metric_is(client: httpx.AsyncClient, url: str, name: str, value: float, **labels: str) -> bool:
    return await metric(client, url, name, **labels) == value


async def test_deliveries_are_private(start_relay: StartRelay, sim: str, client: httpx.AsyncClient) -> None:
    async with receiver() as rx:
        relay = start_relay("memory://", **hooks_env(rx.url))
        task = await create(client, relay.url)
        await finish(client, sim, task["taskId"])
        await wait_status(client, task["statusUrl"], "completed")
        bare = f"{relay.url}/api/tasks/{task['taskId']}/deliveries"
        assert (await client.get(bare)).status_code == 401
        assert (await client.post(f"{bare}/redeliver")).status_code == 401
        assert len(await deliveries(client, task)) == 1


async def test_never_lost_across_an_instance_kill_and_a_redis_restart(
    start_relay: StartRelay, private_redis: RedisServer, sim: str, client: httpx.AsyncClient
) -> None:
    """200 tasks finish while one of two instances is SIGKILLed and Redis (AOF) is
    restarted: every terminal change is acknowledged once by the receiver's dedupe, and
    the outbox ends empty."""
    total = 200
    async with receiver() as rx:
        env = hooks_env(
            rx.url,
            RELAY_WEBHOOK_SCHEDULE="0,0.2,0.5,1,1,2,2,2,2,2,2,2",
            RELAY_RECONCILE_AFTER="1", RELAY_RECONCILE_INTERVAL="0.5", RELAY_RATE_CREATE="10000",
            RELAY_WEBHOOK_TIMEOUT="2",
        )
        rx.delay = 0.05  # so the victim is holding messages in flight when it dies
        victim = start_relay(private_redis.url, **env)
        survivor = start_relay(private_redis.url, **env)
        await client.patch(f"{sim}/sim/config", json={"callback_delay": 0.5, "failure_rate": 0.2})
        tasks: list[dict[str, Any]] = []

        async def create_on(relay_url: str, n: int) -> None:
            for _ in range(50):  # bounded: a create may meet Redis restarting
                try:
                    answer = await client.post(f"{relay_url}/api/tasks", json={"prompt": f"ledger {n}"})
                except httpx.HTTPError:
                    answer = None
                if answer is not None and answer.status_code == 202:
                    tasks.append(answer.json())
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"task {n} could not be created")

        await asyncio.gather(*(create_on(victim.url if n % 2 else survivor.url, n) for n in range(total // 2)))
        await until(lambda: _processed(rx, 20), timeout=20, what="deliveries under way")
        victim.stop(signal.SIGKILL)
        private_redis.restart()
        await asyncio.gather(*(create_on(survivor.url, n) for n in range(total // 2, total)))

        async def all_terminal() -> list[dict[str, Any]] | None:
            finals = []
            for task in tasks:
                url = task["statusUrl"].replace(victim.url, survivor.url)
                answer = await client.get(url)
                if answer.status_code != 200 or answer.json()["status"] not in ("completed", "failed"):
                    return None
                finals.append(answer.json())
            return finals

        finals = await until(all_terminal, timeout=60, what="every task terminal", interval=0.5)
        terminal = {f["taskId"]: f for f in finals}

        async def all_acknowledged() -> bool:
            acked = {verified(r)["data"]["taskId"] for r in rx.processed.values()}
            return set(terminal) <= acked

        await until(all_acknowledged, timeout=40, what="every terminal change acknowledged", interval=0.2)
        redis = private_redis.client()
        try:
            await until(
                lambda: _empty(redis), timeout=15, what="the outbox to drain"
            )
        finally:
            redis.close()
        by_task: dict[str, list[Any]] = {}
        for record in rx.processed.values():
            body = verified(record)
            by_task.setdefault(body["data"]["taskId"], []).append(body)
        for task_id, final in terminal.items():
            bodies = by_task[task_id]
            assert len(bodies) == 1, f"{task_id}: one terminal version, one message"
            assert bodies[0]["type"] == f"task.{final['status']}"
            assert bodies[0]["data"]["version"] == final["version"]
        print(f"\n{total} tasks: {len(rx.requests)} requests, {len(rx.processed)} processed, "
              f"{rx.duplicates} duplicates acknowledged again (deduplicated by webhook-id)")


async def _empty(redis: Any) -> bool:
    return int(redis.zcard(keys.SINGLE.outbox_due(""))) == 0
