"""The KIE simulator over real HTTP: the sim and a callback receiver both run on uvicorn on
127.0.0.1, so every byte goes through the same stack Relay's KIE client will use."""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import re
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.sim import SimConfig, SimState, create_sim_app, webhook_signature
from relay.sim.png import PNG_SIGNATURE, encode_png, gradient_png, png_dimensions

pytestmark = pytest.mark.timeout(30)

API_KEY = "test-key"
JOBS_CREATE = "/api/v1/jobs/createTask"
JOBS_RECORD = "/api/v1/jobs/recordInfo"
GPT4O_CREATE = "/api/v1/gpt4o-image/generate"
GPT4O_RECORD = "/api/v1/gpt4o-image/record-info"
FLUX_CREATE = "/api/v1/flux/kontext/generate"
FLUX_RECORD = "/api/v1/flux/kontext/record-info"


# --------------------------------------------------------------------------- servers


@dataclass
class Served:
    server: uvicorn.Server
    task: asyncio.Task[None]
    url: str


async def serve(app: Starlette) -> Served:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                task.result()  # surface a failed start-up instead of timing out
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return Served(server, task, f"http://127.0.0.1:{port}")


async def stop(served: Served) -> None:
    served.server.should_exit = True
    await asyncio.wait_for(served.task, 10)


@dataclass
class Received:
    path: str
    query: str
    headers: dict[str, str]
    raw: bytes
    body: Any


@dataclass
class Receiver:
    """A callback endpoint that records every POST it gets."""

    url: str = ""
    fail_next: int = 0  # answer this many deliveries with HTTP 500 first
    queue: asyncio.Queue[Received] = field(default_factory=asyncio.Queue)

    def app(self) -> Starlette:
        async def receive(request: Request) -> Response:
            raw = await request.body()
            await self.queue.put(
                Received(
                    path=request.url.path,
                    query=request.url.query,
                    headers=dict(request.headers),
                    raw=raw,
                    body=orjson.loads(raw),
                )
            )
            if self.fail_next > 0:
                self.fail_next -= 1
                return Response(status_code=500)
            return JSONResponse({"status": "received"})

        return Starlette(routes=[Route("/{path:path}", receive, methods=["POST"])])

    def callback_url(self, path: str = "/kie/callback?token=abc&n=1") -> str:
        return self.url + path

    async def next(self, wait: float = 5.0) -> Received:
        return await asyncio.wait_for(self.queue.get(), wait)


@dataclass
class Sim:
    app: Starlette
    url: str
    client: httpx.AsyncClient

    @property
    def state(self) -> SimState:
        state: SimState = self.app.state.sim
        return state

    async def create(self, path: str, body: dict[str, Any]) -> str:
        answer = (await self.client.post(path, json=body)).json()
        assert answer["code"] == 200, answer
        task_id: str = answer["data"]["taskId"]
        return task_id

    async def record(self, path: str, task_id: str) -> Any:
        return (await self.client.get(path, params={"taskId": task_id})).json()

    async def view(self, task_id: str) -> Any:
        return (await self.client.get(f"/sim/tasks/{task_id}")).json()


MakeSim = Callable[..., Awaitable[Sim]]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    served = await serve(recv.app())
    recv.url = served.url
    yield recv
    await stop(served)


@pytest.fixture
async def make_sim() -> AsyncIterator[MakeSim]:
    started: list[tuple[Served, httpx.AsyncClient]] = []

    async def make(**overrides: Any) -> Sim:
        settings: dict[str, Any] = {"api_key": API_KEY, "callback_delay": 0.05, **overrides}
        app = create_sim_app(SimConfig(**settings))
        served = await serve(app)
        client = httpx.AsyncClient(
            base_url=served.url,
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=10,
            trust_env=False,
        )
        started.append((served, client))
        return Sim(app, served.url, client)

    yield make
    for served, client in reversed(started):
        await client.aclose()
        await stop(served)


async def eventually(check: Callable[[], Awaitable[bool]], limit: float = 5.0) -> None:
    """Poll `check` until it holds; for state that only the sim's HTTP API can show."""
    async with asyncio.timeout(limit):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


def jobs_body(callback: str | None = None, prompt: str = "a red fox") -> dict[str, Any]:
    body: dict[str, Any] = {"model": "google/nano-banana", "input": {"prompt": prompt}}
    if callback:
        body["callBackUrl"] = callback
    return body


def assert_png(data: bytes, size: tuple[int, int] = (256, 256)) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == size


# --------------------------------------------------------------------------- KIE API


async def test_bearer_auth_required(make_sim: MakeSim) -> None:
    sim = await make_sim()
    denied = {"code": 401, "msg": "You do not have access permissions", "data": None}
    async with httpx.AsyncClient(base_url=sim.url, trust_env=False) as anonymous:
        missing = await anonymous.get("/api/v1/chat/credit")
        wrong = await anonymous.post(
            JOBS_CREATE, json=jobs_body(), headers={"Authorization": "Bearer nope"}
        )
        assert (missing.status_code, missing.json()) == (200, denied)
        assert (wrong.status_code, wrong.json()) == (200, denied)

        await sim.client.patch("/sim/config", json={"http_errors": True})
        strict = await anonymous.get("/api/v1/chat/credit")
        assert (strict.status_code, strict.json()) == (401, denied)

    ok = await sim.client.get("/api/v1/chat/credit")
    assert ok.json() == {"code": 200, "msg": "success", "data": 10000}


async def test_jobs_create_record_callback_and_png(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim()
    body = {
        "model": "google/nano-banana-edit",
        "callBackUrl": receiver.callback_url(),
        "input": {"prompt": "make the sky a warm sunset", "image_urls": ["https://x.test/a.png"]},
    }
    created = await sim.client.post(JOBS_CREATE, json=body)
    assert created.status_code == 200
    answer = created.json()
    assert answer["code"] == 200 and answer["msg"] == "success"
    task_id = answer["data"]["taskId"]
    assert re.fullmatch(r"[0-9a-f]{32}", task_id)

    got = await receiver.next()
    assert (got.path, got.query) == ("/kie/callback", "token=abc&n=1")
    assert got.headers["content-type"] == "application/json"
    assert "x-webhook-signature" not in got.headers
    assert got.body["code"] == 200
    assert got.body["msg"] == "Playground task completed successfully."
    data = got.body["data"]
    # The fields of a real jobs callback (tests/fixtures/kie/jobs-callback-success-real-z-image.json).
    assert set(data) == {
        "taskId", "model", "state", "param", "resultJson", "failCode", "failMsg", "costTime",
        "completeTime", "createTime", "updateTime", "creditsConsumed",
    }  # fmt: skip
    assert data["taskId"] == task_id and data["model"] == "google/nano-banana-edit"
    assert data["state"] == "success" and data["failCode"] is None and data["failMsg"] is None
    # Real `param`: JSON text whose `input` is JSON text again.
    param = orjson.loads(data["param"])
    assert orjson.loads(param.pop("input")) == body["input"] and param == {k: body[k] for k in ("model", "callBackUrl")}
    assert isinstance(data["resultJson"], str)
    urls = orjson.loads(data["resultJson"])["resultUrls"]
    assert urls == [f"{sim.url}/files/{task_id}/0.png"]
    assert data["creditsConsumed"] == 4 and isinstance(data["costTime"], int)
    assert data["createTime"] <= data["completeTime"] == data["updateTime"]

    record = await sim.record(JOBS_RECORD, task_id)
    assert record["code"] == 200 and record["msg"] == "success"
    expected = {k: v for k, v in data.items() if k not in ("creditsConsumed", "updateTime")}
    assert record["data"] == expected

    async with httpx.AsyncClient(trust_env=False) as anonymous:
        image = await anonymous.get(urls[0])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert_png(image.content)
    assert (await sim.client.get(f"/files/{task_id}/1.png")).status_code == 404


async def test_gpt4o_create_record_callback(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim()
    body = {"prompt": "a red fox", "size": "1:1", "callBackUrl": receiver.callback_url()}
    task_id = await sim.create(GPT4O_CREATE, body)

    got = await receiver.next()
    url = f"{sim.url}/files/{task_id}/0.png"
    assert got.body == {
        "code": 200,
        "msg": "success",
        "data": {"taskId": task_id, "info": {"result_urls": [url]}},
    }
    record = await sim.record(GPT4O_RECORD, task_id)
    data = record["data"]
    assert record["code"] == 200
    assert orjson.loads(data["paramJson"]) == body
    assert data["response"] == {"resultUrls": [url]}
    assert (data["successFlag"], data["status"], data["progress"]) == (1, "SUCCESS", "1.00")
    assert (data["errorCode"], data["errorMessage"]) == (None, "")
    assert isinstance(data["createTime"], int) and isinstance(data["completeTime"], int)
    # A task of one family is invisible to another family's status endpoint, as on KIE.
    assert (await sim.record(JOBS_RECORD, task_id))["msg"] == "recordInfo is null"


async def test_flux_create_record_callback(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim(images_per_task=3)  # Flux has a single resultImageUrl regardless
    body = {
        "prompt": "a lighthouse at dusk",
        "inputImage": "https://x.test/in.png",
        "callBackUrl": receiver.callback_url(),
    }
    task_id = await sim.create(FLUX_CREATE, body)

    got = await receiver.next()
    url = f"{sim.url}/files/{task_id}/0.png"
    assert got.body == {
        "code": 200,
        "msg": "BFL image generated successfully.",
        "data": {"taskId": task_id, "info": {"originImageUrl": url, "resultImageUrl": url}},
    }
    data = (await sim.record(FLUX_RECORD, task_id))["data"]
    assert data["successFlag"] == 1
    assert data["response"] == {"originImageUrl": url, "resultImageUrl": url}
    assert orjson.loads(data["paramJson"]) == body
    # ISO seconds, as in tests/fixtures/kie/flux-status-success-docs.json.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["createTime"])


async def test_create_validation_and_record_errors(make_sim: MakeSim) -> None:
    sim = await make_sim(callback_delay=None)
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        (JOBS_CREATE, {"input": {"prompt": "x"}}, 422, "model is required"),
        (JOBS_CREATE, {"model": "", "input": {"prompt": "x"}}, 422, "model is required"),
        # As recorded (tests/fixtures/kie/jobs-create-gpt-image-edit-apicity.json): code 500.
        (JOBS_CREATE, {"model": "google/nano-banana", "input": {}}, 500, "This field is required"),
        (
            JOBS_CREATE,
            {"model": "google/nano-banana-edit", "input": {"prompt": "x", "image_url": "https://x.test/a.png"}},
            500,
            "This field is required",
        ),
        (GPT4O_CREATE, {"prompt": "x"}, 422, "size is required"),
        (GPT4O_CREATE, {"size": "1:1"}, 422, "prompt or filesUrl is required"),
        (FLUX_CREATE, {"inputImage": "https://x.test/a.png"}, 422, "prompt is required"),
    ]
    for path, body, code, msg in cases:
        response = await sim.client.post(path, json=body)
        assert response.status_code == 200
        assert response.json() == {"code": code, "msg": msg, "data": None}, body
    bad_json = await sim.client.post(JOBS_CREATE, content=b"{nope")
    assert bad_json.json()["code"] == 400
    # Any non-empty model is accepted, and the edit model is fine with image_urls.
    await sim.create(JOBS_CREATE, {"model": "whatever/new-model", "input": {"prompt": "x"}})
    await sim.create(GPT4O_CREATE, {"size": "2:3", "filesUrl": ["https://x.test/a.png"]})

    missing = await sim.client.get(JOBS_RECORD)
    assert missing.json() == {"code": 400, "msg": "taskId parameter is required", "data": None}
    unknown = await sim.record(JOBS_RECORD, "0" * 32)
    assert unknown == {"code": 422, "msg": "recordInfo is null", "data": None}

    await sim.client.patch("/sim/config", json={"http_errors": True})
    strict = await sim.client.post(JOBS_CREATE, json={"input": {"prompt": "x"}})
    assert strict.status_code == 422 and strict.json()["msg"] == "model is required"


async def test_unknown_routes_answer_json(make_sim: MakeSim) -> None:
    sim = await make_sim()
    api = await sim.client.get("/api/v1/nope")
    assert api.status_code == 404
    assert api.json() == {"code": 404, "msg": "Not Found", "data": None}
    other = await sim.client.get("/nope")
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"


# --------------------------------------------------------------------------- control API


async def test_manual_mode_complete_resend_and_fail(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim(callback_delay=None)
    jobs_id = await sim.create(JOBS_CREATE, jobs_body(receiver.callback_url()))
    gpt_id = await sim.create(
        GPT4O_CREATE, {"prompt": "p", "size": "3:2", "callBackUrl": receiver.callback_url("/4o")}
    )

    record = await sim.record(JOBS_RECORD, jobs_id)
    assert record["data"]["state"] in ("waiting", "queuing", "generating")
    assert record["data"]["resultJson"] == "" and record["data"]["completeTime"] is None
    assert (await sim.record(GPT4O_RECORD, gpt_id))["data"]["successFlag"] == 0
    view = await sim.view(jobs_id)
    assert view["family"] == "jobs" and view["model"] == "google/nano-banana"
    assert view["callBackUrl"] == receiver.callback_url()
    assert view["input"] == {"prompt": "a red fox"} and view["callbacksSent"] == 0
    listed = (await sim.client.get("/sim/tasks")).json()["tasks"]
    assert [t["taskId"] for t in listed] == [gpt_id, jobs_id]  # newest first
    assert (await sim.client.post(f"/sim/tasks/{jobs_id}/resend")).status_code == 409

    done = await sim.client.post(f"/sim/tasks/{jobs_id}/complete")
    assert done.json() == {"delivered": True, "status": 200}
    first = await receiver.next()
    assert first.body["data"]["taskId"] == jobs_id and first.body["data"]["state"] == "success"
    assert (await sim.record(JOBS_RECORD, jobs_id))["data"]["state"] == "success"

    again = await sim.client.post(f"/sim/tasks/{jobs_id}/resend")
    assert again.json() == {"delivered": True, "status": 200}
    assert (await receiver.next()).raw == first.raw
    assert (await sim.client.post(f"/sim/tasks/{jobs_id}/complete")).status_code == 409
    assert (await sim.view(jobs_id))["callbacksSent"] == 2

    failed = await sim.client.post(
        f"/sim/tasks/{gpt_id}/fail", json={"code": 400, "msg": "Prompt flagged"}
    )
    assert failed.json() == {"delivered": True, "status": 200}
    got = await receiver.next()
    assert got.path == "/4o"
    assert got.body == {
        "code": 400,
        "msg": "Prompt flagged",
        "data": {"taskId": gpt_id, "info": None},
    }
    data = (await sim.record(GPT4O_RECORD, gpt_id))["data"]
    assert (data["successFlag"], data["status"]) == (3, "GENERATE_FAILED")
    assert (data["errorCode"], data["errorMessage"], data["response"]) == (
        400,
        "Prompt flagged",
        None,
    )

    missing = await sim.client.post("/sim/tasks/nope/complete")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "task_not_found"


async def test_control_fail_jobs_shape_and_no_callback_url(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(callback_delay=None)
    task_id = await sim.create(JOBS_CREATE, jobs_body(receiver.callback_url()))
    silent_id = await sim.create(JOBS_CREATE, jobs_body())
    assert (await sim.client.get("/api/v1/chat/credit")).json()["data"] == 9992

    bad = await sim.client.post(f"/sim/tasks/{task_id}/fail", json={"code": True})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
    assert (await sim.client.post(f"/sim/tasks/{task_id}/fail")).json()["delivered"] is True
    got = await receiver.next()
    assert (got.body["code"], got.body["msg"]) == (501, "Playground task failed.")
    data = got.body["data"]
    assert (data["state"], data["failCode"], data["failMsg"]) == (
        "fail",
        "500",
        "Internal server error",
    )
    assert (data["resultJson"], data["creditsConsumed"]) == ("", 0)
    assert (await sim.client.get("/api/v1/chat/credit")).json()["data"] == 9996  # refunded

    quiet = await sim.client.post(f"/sim/tasks/{silent_id}/complete")
    assert quiet.json() == {"delivered": False, "status": None}
    assert (await sim.record(JOBS_RECORD, silent_id))["data"]["state"] == "success"


async def test_reset_drops_tasks_and_restores_credits(make_sim: MakeSim) -> None:
    sim = await make_sim(callback_delay=30.0)
    task_id = await sim.create(JOBS_CREATE, jobs_body())
    assert len(sim.state.background) == 1
    assert (await sim.client.post("/sim/reset")).json() == {"reset": True}
    assert (await sim.client.get("/sim/tasks")).json() == {"tasks": []}
    assert (await sim.client.get(f"/sim/tasks/{task_id}")).status_code == 404
    assert not sim.state.background
    assert (await sim.client.get("/api/v1/chat/credit")).json()["data"] == 10000


async def test_patch_config_validates(make_sim: MakeSim) -> None:
    sim = await make_sim()
    bad_patches: list[Any] = [
        {"failure_rate": 2},
        {"failure_rate": "0.5"},
        {"duplicate_callbacks": -1},
        {"duplicate_callbacks": 1.5},
        {"out_of_order": "yes"},
        {"callback_delay": "soon"},
        {"callback_delay": -1},
        {"images_per_task": 0},
        {"public_url": "ftp://x"},
        {"api_key": ""},
        {"no_such_setting": 1},
        [1, 2],
    ]
    before = (await sim.client.get("/sim/config")).json()
    for patch in bad_patches:
        response = await sim.client.patch("/sim/config", json=patch)
        assert response.status_code == 400, patch
        assert response.json()["error"]["code"] == "invalid_config"
    assert (await sim.client.get("/sim/config")).json() == before

    good = await sim.client.patch(
        "/sim/config",
        json={"failure_rate": 0.5, "callback_delay": "manual", "out_of_order": True, "seed": 7},
    )
    assert good.status_code == 200
    config = (await sim.client.get("/sim/config")).json()
    assert config == {**before, **good.json()}
    assert (config["failure_rate"], config["callback_delay"], config["seed"]) == (0.5, None, 7)
    assert config["out_of_order"] is True
    assert sim.state.config.failure_rate == 0.5


# --------------------------------------------------------------------------- quirks


async def test_duplicate_callbacks(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim(duplicate_callbacks=2)
    task_id = await sim.create(JOBS_CREATE, jobs_body(receiver.callback_url()))
    deliveries = [await receiver.next() for _ in range(3)]
    assert {d.raw for d in deliveries} == {deliveries[0].raw}
    assert deliveries[0].body["data"]["taskId"] == task_id
    assert (await sim.view(task_id))["callbacksSent"] == 3


async def test_out_of_order_sends_failure_after_success(
    make_sim: MakeSim, receiver: Receiver
) -> None:
    sim = await make_sim(out_of_order=True)
    task_id = await sim.create(JOBS_CREATE, jobs_body(receiver.callback_url()))
    first, second = await receiver.next(), await receiver.next()
    assert (first.body["code"], first.body["data"]["state"]) == (200, "success")
    assert (second.body["code"], second.body["data"]["state"]) == (501, "fail")
    assert second.body["data"]["taskId"] == task_id
    assert (await sim.record(JOBS_RECORD, task_id))["data"]["state"] == "success"


async def test_dropped_callback_still_finishes(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim(drop_callbacks=1.0)
    task_id = await sim.create(JOBS_CREATE, jobs_body(receiver.callback_url()))

    async def finished() -> bool:
        return bool((await sim.record(JOBS_RECORD, task_id))["data"]["state"] == "success")

    await eventually(finished)
    # The drop decision is taken when the task finishes, so nothing can still be on its way.
    assert (await sim.view(task_id))["callbacksSent"] == 0
    assert receiver.queue.empty()


async def test_failure_rate_one_fails_every_family(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim(failure_rate=1.0, seed=1)
    await sim.create(JOBS_CREATE, jobs_body(receiver.callback_url("/jobs")))
    gpt_id = await sim.create(
        GPT4O_CREATE, {"prompt": "p", "size": "1:1", "callBackUrl": receiver.callback_url("/4o")}
    )
    flux_id = await sim.create(
        FLUX_CREATE, {"prompt": "p", "callBackUrl": receiver.callback_url("/flux")}
    )
    by_path = {}
    for _ in range(3):
        got = await receiver.next()
        by_path[got.path] = got.body
    assert by_path["/jobs"]["code"] == 501 and by_path["/jobs"]["data"]["state"] == "fail"
    assert by_path["/4o"] == {
        "code": 500,
        "msg": "Generation failed, please try again later.",
        "data": {"taskId": gpt_id, "info": None},
    }
    assert by_path["/flux"] == {
        "code": 501,
        "msg": "Image generation failed.",
        "data": {"taskId": flux_id, "info": {"originImageUrl": "", "resultImageUrl": ""}},
    }
    flux = (await sim.record(FLUX_RECORD, flux_id))["data"]
    assert (flux["successFlag"], flux["errorCode"], flux["response"]) == (3, 501, None)


async def test_callback_retried_after_error(make_sim: MakeSim, receiver: Receiver) -> None:
    sim = await make_sim()
    receiver.fail_next = 1
    task_id = await sim.create(JOBS_CREATE, jobs_body(receiver.callback_url()))
    first, second = await receiver.next(), await receiver.next()
    assert first.raw == second.raw

    async def delivered() -> bool:
        return bool((await sim.view(task_id))["lastCallbackStatus"] == 200)

    await eventually(delivered)
    assert (await sim.view(task_id))["callbacksSent"] == 1  # one callback, two HTTP attempts


async def test_html_error_pages(make_sim: MakeSim) -> None:
    sim = await make_sim(html_error_rate=1.0)
    for response in (
        await sim.client.post(JOBS_CREATE, json=jobs_body()),
        await sim.client.get("/api/v1/chat/credit"),
    ):
        assert response.status_code == 502
        assert response.headers["content-type"].startswith("text/html")
        assert response.text.startswith("<!DOCTYPE html>") and "502 Bad Gateway" in response.text
    # The control API is not KIE and never plays this trick.
    assert (await sim.client.get("/sim/config")).json()["html_error_rate"] == 1.0


async def test_rate_limit_burst(make_sim: MakeSim) -> None:
    sim = await make_sim(rate_limit_burst=3, callback_delay=None)
    for _ in range(3):
        await sim.create(JOBS_CREATE, jobs_body())
    limited = await sim.client.post(JOBS_CREATE, json=jobs_body())
    assert limited.status_code == 200
    assert limited.json() == {"code": 429, "msg": "Rate limit exceeded", "data": None}
    await sim.client.patch("/sim/config", json={"http_errors": True})
    strict = await sim.client.post(GPT4O_CREATE, json={"prompt": "p", "size": "1:1"})
    assert strict.status_code == 429 and strict.json()["code"] == 429
    assert len((await sim.client.get("/sim/tasks")).json()["tasks"]) == 3


async def test_record_null_seconds(make_sim: MakeSim) -> None:
    sim = await make_sim(record_null_seconds=60.0, callback_delay=None)
    task_id = await sim.create(JOBS_CREATE, jobs_body())
    gpt_id = await sim.create(GPT4O_CREATE, {"prompt": "p", "size": "1:1"})
    null = {"code": 422, "msg": "recordInfo is null", "data": None}
    assert await sim.record(JOBS_RECORD, task_id) == null
    assert await sim.record(GPT4O_RECORD, gpt_id) == null
    await sim.client.patch("/sim/config", json={"record_null_seconds": 0})
    assert (await sim.record(JOBS_RECORD, task_id))["data"]["taskId"] == task_id


async def test_hmac_headers_verify(make_sim: MakeSim, receiver: Receiver) -> None:
    key = "whk_test_secret"
    sim = await make_sim(webhook_hmac_key=key)
    task_id = await sim.create(FLUX_CREATE, {"prompt": "p", "callBackUrl": receiver.callback_url()})
    got = await receiver.next()
    timestamp = got.headers["x-webhook-timestamp"]
    assert abs(int(timestamp) - time.time()) < 60  # unix seconds, not milliseconds
    expected = base64.b64encode(
        hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    ).decode()
    assert hmac.compare_digest(got.headers["x-webhook-signature"], expected)
    assert webhook_signature(key, task_id, int(timestamp)) == expected
    assert webhook_signature("other", task_id, int(timestamp)) != expected


async def test_credits_decrement_then_402(make_sim: MakeSim) -> None:
    sim = await make_sim(credits=8, callback_delay=None)
    assert (await sim.client.get("/api/v1/chat/credit")).json()["data"] == 8
    await sim.create(JOBS_CREATE, jobs_body())
    await sim.create(FLUX_CREATE, {"prompt": "p"})
    assert (await sim.client.get("/api/v1/chat/credit")).json()["data"] == 0
    broke = await sim.client.post(GPT4O_CREATE, json={"prompt": "p", "size": "1:1"})
    assert broke.json() == {"code": 402, "msg": "insufficient credits", "data": None}
    await sim.client.patch("/sim/config", json={"credits": 4})
    await sim.create(JOBS_CREATE, jobs_body())


async def test_public_url_and_images_per_task(make_sim: MakeSim) -> None:
    sim = await make_sim(
        callback_delay=None, public_url="https://cdn.example.test/kie/", images_per_task=2
    )
    task_id = await sim.create(JOBS_CREATE, jobs_body())
    await sim.client.post(f"/sim/tasks/{task_id}/complete")
    urls = orjson.loads((await sim.record(JOBS_RECORD, task_id))["data"]["resultJson"])[
        "resultUrls"
    ]
    assert urls == [f"https://cdn.example.test/kie/files/{task_id}/{n}.png" for n in range(2)]
    second = await sim.client.get(f"/files/{task_id}/1.png")
    assert second.status_code == 200
    assert_png(second.content)


async def test_shutdown_cancels_pending_work() -> None:
    app = create_sim_app(SimConfig(api_key=API_KEY, callback_delay=30.0))
    served = await serve(app)
    async with httpx.AsyncClient(base_url=served.url, trust_env=False) as client:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        created = await client.post(JOBS_CREATE, json=jobs_body(), headers=headers)
        assert created.json()["code"] == 200
    state: SimState = app.state.sim
    assert len(state.background) == 1
    await stop(served)
    assert not state.background and state.http is None


# --------------------------------------------------------------------------- config and PNG


def test_cli_flags_round_trip() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8001)  # the CLI's own flag, ignored
    SimConfig.add_arguments(parser)
    assert SimConfig.from_namespace(parser.parse_args([])) == SimConfig()

    ns = parser.parse_args(
        [
            "--api-key", "k", "--callback-delay", "manual", "--failure-rate", "0.25",
            "--duplicate-callbacks", "2", "--drop-callbacks", "0.5", "--out-of-order",
            "--html-error-rate", "0.1", "--rate-limit-burst", "20", "--record-null-seconds", "3",
            "--webhook-hmac-key", "h", "--http-errors", "--credits", "50",
            "--images-per-task", "2", "--public-url", "http://sim.test/", "--seed", "42",
        ]
    )  # fmt: skip
    assert SimConfig.from_namespace(ns) == SimConfig(
        api_key="k",
        callback_delay=None,
        failure_rate=0.25,
        duplicate_callbacks=2,
        drop_callbacks=0.5,
        out_of_order=True,
        html_error_rate=0.1,
        rate_limit_burst=20,
        record_null_seconds=3.0,
        webhook_hmac_key="h",
        http_errors=True,
        credits=50,
        images_per_task=2,
        public_url="http://sim.test",
        seed=42,
    )
    assert (
        SimConfig.from_namespace(parser.parse_args(["--callback-delay", "0"])).callback_delay
        is None
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["--failure-rate", "2"])


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="failure_rate"):
        SimConfig(failure_rate=1.5)
    with pytest.raises(ValueError, match="unknown setting"):
        SimConfig().updated({"bogus": 1})
    assert SimConfig(callback_delay=0).callback_delay is None
    assert SimConfig().updated({"callback_delay": 0.5}).callback_delay == 0.5


def test_png_encoder() -> None:
    fox = gradient_png("a red fox")
    assert fox.startswith(PNG_SIGNATURE) and png_dimensions(fox) == (256, 256)
    assert gradient_png("a red fox") == fox
    assert gradient_png("a blue whale") != fox
    assert png_dimensions(gradient_png("x", size=16)) == (16, 16)

    tiny = encode_png(2, 1, [bytes([255, 0, 0, 0, 0, 255])])
    idat_len = struct.unpack(">I", tiny[33:37])[0]
    assert tiny[37:41] == b"IDAT"
    assert zlib.decompress(tiny[41 : 41 + idat_len]) == b"\x00" + bytes([255, 0, 0, 0, 0, 255])
    assert tiny.endswith(b"IEND\xaeB`\x82")
    with pytest.raises(ValueError):
        encode_png(2, 1, [b"\x00"])
    with pytest.raises(ValueError):
        png_dimensions(b"GIF89a")
