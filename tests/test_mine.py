"""`GET /api/events?mine=1` (issue #14): one stream of every task of the signed-in user,
tasks created after it opened included; nobody else's."""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt as pyjwt

from tests.conftest import StartRelay
from tests.sse import iter_events
from tests.waiting import until

JWT_SECRET = "jwt-secret-for-mine-tests-0123456789abcdefghij"


def token(user: str) -> str:
    return pyjwt.encode({"sub": user, "exp": int(time.time()) + 3600}, JWT_SECRET, algorithm="HS256")


async def follow(client: httpx.AsyncClient, url: str, user: str, seen: dict[str, str], ready: asyncio.Event) -> None:
    async with client.stream("GET", f"{url}/api/events", params={"mine": "1", "token": token(user)}) as response:
        assert response.status_code == 200, await response.aread()
        ready.set()
        async for event in iter_events(response):
            if event.event == "task":
                task = event.json()
                seen[task["taskId"]] = task["status"]
                assert event.id == f"{task['taskId']}:{task['version']}"


async def test_a_users_stream_sees_their_new_tasks_and_nobody_elses(
    start_relay: StartRelay, backend: str, sim: str, client: httpx.AsyncClient
) -> None:
    relay = start_relay(backend, RELAY_AUTH="jwt", RELAY_JWT_SECRET=JWT_SECRET, RELAY_MIRROR="off")
    headers = {"Authorization": f"Bearer {token('alice')}"}
    before = (await client.post(f"{relay.url}/api/tasks", json={"prompt": "older"}, headers=headers)).json()
    mine: dict[str, str] = {}
    theirs: dict[str, str] = {}
    alice_ready, bob_ready = asyncio.Event(), asyncio.Event()
    async with httpx.AsyncClient(timeout=30) as streams:
        watchers = [
            asyncio.create_task(follow(streams, relay.url, "alice", mine, alice_ready)),
            asyncio.create_task(follow(streams, relay.url, "bob", theirs, bob_ready)),
        ]
        await asyncio.wait_for(asyncio.gather(alice_ready.wait(), bob_ready.wait()), 10)
        created = [
            (await client.post(f"{relay.url}/api/tasks", json={"prompt": f"new {n}"}, headers=headers)).json()
            for n in range(3)
        ]
        for n, task in enumerate(created):
            outcome = "fail" if n == 2 else "complete"
            (await client.post(f"{sim}/sim/tasks/{task['taskId']}/{outcome}")).raise_for_status()

        async def all_finished() -> bool:
            return all(mine.get(t["taskId"]) in ("completed", "failed") for t in created)

        try:
            await until(all_finished, timeout=15, what="alice's stream to see all three finish")
        finally:
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
    assert [mine[t["taskId"]] for t in created] == ["completed", "completed", "failed"]
    assert mine[before["taskId"]] == "pending", "the snapshot holds the tasks from before the stream"
    assert theirs == {}, "another user's stream sees none of them"
    without_jwt = await client.get(f"{relay.url}/api/events", params={"mine": "1"})
    assert without_jwt.status_code == 401


async def test_mine_needs_users(start_relay: StartRelay, client: httpx.AsyncClient) -> None:
    relay = start_relay("memory://")
    answer = await client.get(f"{relay.url}/api/events", params={"mine": "1"})
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "users_disabled"
    # The usual multi-task stream is unchanged.
    assert (await client.get(f"{relay.url}/api/events")).status_code == 400


