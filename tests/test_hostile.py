"""Hostile input, property-based (hypothesis), against real Relay subprocesses: random and
malformed bodies (random JSON, deep nesting, huge strings, wrong types, invalid UTF-8, raw
bytes), random headers and random tokens, thrown at the task, callback and read/stream
endpoints.

The properties, for every request: never a 5xx; every error is JSON in the contract's shape
(validated against the OpenAPI document's Error schema); nothing from a refused request is
stored (the provider saw no new task, the task's version and status did not move).

The last section keeps one regression test for each server bug these tests found.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import auth
from relay.openapi import document
from relay.settings import Settings
from tests.conftest import StartRelay
from tests.helpers import HELPER, assert_contract, sim_task_ids, success_payload
from tests.servers import SECRET, AppProcess

pytestmark = pytest.mark.timeout(120)

DOC = document(Settings(public_url="http://relay.test", secret=SECRET))
SCHEMAS = DOC["components"]["schemas"]
TASK = jsonschema.Draft202012Validator({**SCHEMAS["Task"], "components": DOC["components"]})
REQUEST_ID = "^[A-Za-z0-9._-]{1,64}$"
MAX_BODY = 4096

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# --------------------------------------------------------------------------- helpers


def callback_token_of(sim: str, task_id: str) -> str:
    url = httpx.get(f"{sim}/sim/tasks/{task_id}", timeout=5).json()["callBackUrl"]
    token: str = parse_qs(urlsplit(url).query)["token"][0]
    return token


def create(relay: AppProcess, prompt: str, **headers: str) -> dict[str, Any]:
    response = httpx.post(f"{relay.url}/api/tasks", json={"prompt": prompt}, headers=headers, timeout=10)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def state_of(relay: AppProcess, task: dict[str, Any]) -> tuple[int, str]:
    response = HELPER.get(task["statusUrl"])
    assert response.status_code == 200, response.text
    body = response.json()
    return body["version"], body["status"]


# --------------------------------------------------------------------------- strategies

# Whatever JSON can hold, including what a typed field does not expect.
scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=25,
)
# Digits beyond ASCII ('²', '٣', '①'...) and huge numbers, in text where numbers are expected.
odd_digits = st.text(alphabet=st.characters(categories=["Nd", "No"]), min_size=1, max_size=6)
numberish = st.one_of(st.integers(), odd_digits, st.from_regex(r"\A-?[0-9]{1,30}\Z"), st.text(max_size=12))


def nested(kind: str, levels: int) -> str:
    opener, closer = {"list": ("[", "]"), "object": ('{"a":', "}")}[kind]
    return opener * levels + "1" + closer * levels


deep_json = st.builds(nested, st.sampled_from(["list", "object"]), st.integers(1, 3000))
invalid_utf8 = st.binary(min_size=1, max_size=20).filter(lambda b: not _is_utf8(b))


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def on_the_wire(raw: bytes) -> bytes:
    """The bytes of `raw` that h11 puts in a header value: visible (latin-1 too), inner blanks."""
    return bytes(c for c in raw if c in (0x20, 0x09) or 0x21 <= c <= 0x7E or c >= 0x80).strip(b" \t")


header_values = st.binary(max_size=60).map(on_the_wire)
random_headers = st.dictionaries(
    st.sampled_from(
        ["Content-Type", "Idempotency-Key", "Authorization", "X-Request-ID", "Last-Event-ID", "Accept",
         "X-Forwarded-For", "X-Webhook-Timestamp", "X-Webhook-Signature", "Origin", "Cookie"]
    ),
    header_values | st.sampled_from([b"application/json", b"text/plain", b"Bearer", b"Bearer x.y", b"\xff\xfe"]),
    max_size=4,
)


def create_bodies() -> st.SearchStrategy[bytes]:
    near_valid = st.fixed_dictionaries(
        {},
        optional={
            "prompt": st.text(max_size=30) | json_values | st.text(min_size=4990, max_size=5010),
            "imageUrls": st.lists(st.text(max_size=20) | st.just("https://example.com/a.png"), max_size=12) | json_values,
            "model": st.text(max_size=110) | json_values,
            "options": st.dictionaries(st.text(max_size=8), json_values, max_size=3) | json_values,
            "bogus": json_values,
        },
    )
    as_json = (near_valid | json_values).map(lambda v: json.dumps(v).encode())
    return st.one_of(
        as_json,
        deep_json.map(str.encode),
        deep_json.map(lambda d: f'{{"prompt": "x", "options": {{"o": {d}}}}}'.encode()),
        deep_json.map(lambda d: f'{{"prompt": {d}}}'.encode()),
        invalid_utf8.map(lambda b: b'{"prompt": "' + b + b'"}'),
        st.binary(max_size=200),
        st.integers(MAX_BODY - 20, MAX_BODY + 20).map(lambda n: b'{"prompt": "' + b"p" * (n - 14) + b'"}'),
    )


# --------------------------------------------------------------------------- creates


@pytest.fixture
def open_relay(start_relay: StartRelay, tmp_path: Path) -> AppProcess:
    return start_relay(
        RELAY_AUTH="none", RELAY_MAX_BODY=str(MAX_BODY), RELAY_RATE_CREATE="100000",
        RELAY_STORAGE_URL=f"file://{tmp_path}/files",
    )


def history_ids(relay: AppProcess) -> list[str]:
    response = HELPER.get(f"{relay.url}/api/tasks", params={"limit": 100})
    assert response.status_code == 200, response.text
    return [t["taskId"] for t in response.json()["items"]]


def test_random_create_requests(open_relay: AppProcess, sim: str) -> None:
    relay = open_relay
    client = httpx.Client(timeout=10)

    @FUZZ
    @given(body=create_bodies(), headers=random_headers, chunked=st.booleans())
    def attack(body: bytes, headers: dict[str, bytes], chunked: bool) -> None:
        before_sim, before_relay = sim_task_ids(sim), history_ids(relay)
        content: bytes | Iterator[bytes] = iter([body[:7], body[7:]]) if chunked else body
        response = client.post(f"{relay.url}/api/tasks", content=content, headers=headers)  # type: ignore[arg-type]  # raw bytes, on purpose
        sent.append(response.status_code)
        assert_contract(response)
        if response.status_code == 202:
            created = response.json()
            assert not list(TASK.iter_errors({k: v for k, v in created.items() if k not in ("statusUrl", "eventsUrl")}))
            assert created["taskId"] in history_ids(relay)
        else:
            assert sim_task_ids(sim) == before_sim, "a refused create reached the provider"
            assert history_ids(relay) == before_relay, "a refused create was stored"

    sent: list[int] = []
    attack()
    client.close()
    print(sorted(collections.Counter(sent).items()))
    assert len(sent) >= 100, "the filters for pinned bugs swallowed the run"


# --------------------------------------------------------------------------- callbacks


def callback_bodies(task_ids: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    data = st.fixed_dictionaries(
        {},
        optional={
            "taskId": task_ids | json_values,
            "task_id": task_ids,
            "state": st.sampled_from(["success", "fail", "generating", "waiting", "SUCCESS", ""]) | json_values,
            "resultJson": st.sampled_from(['{"resultUrls":["https://tempfile.aiquickdraw.com/h/a.png"]}', "{", "[]", ""])
            | json_values,
            "failCode": numberish,
            "failMsg": st.text(max_size=20),
            "successFlag": numberish,
            "errorCode": numberish,
            "progress": numberish | json_values,
            "info": json_values,
            "callbackType": st.sampled_from(["complete", "text", "first", "error"]) | json_values,
        },
    )
    envelope = st.fixed_dictionaries(
        {}, optional={"code": numberish | json_values, "msg": st.text(max_size=20), "data": data | json_values}
    )
    return st.one_of(
        envelope.map(lambda v: json.dumps(v).encode()),
        json_values.map(lambda v: json.dumps(v).encode()),
        deep_json.map(str.encode),
        deep_json.map(lambda d: f'{{"code": 200, "data": {{"taskId": "x", "state": {d}}}}}'.encode()),
        invalid_utf8.map(lambda b: b'{"data": {"taskId": "' + b + b'"}}'),
        st.binary(max_size=200),
        st.just(b"<html><body>502 Bad Gateway</body></html>"),
        st.integers(MAX_BODY - 20, MAX_BODY + 20).map(lambda n: b'{"msg": "' + b"m" * (n - 11) + b'"}'),
    )


@pytest.mark.parametrize("hmac_key", [None, "webhook-hmac-key-for-hostile-tests"])
def test_random_callbacks(start_relay: StartRelay, sim: str, tmp_path: Path, hmac_key: str | None) -> None:
    extra = {"KIE_WEBHOOK_HMAC_KEY": hmac_key} if hmac_key else {}
    relay = start_relay(
        RELAY_MAX_BODY=str(MAX_BODY), RELAY_RATE_CALLBACK="100000", RELAY_STORAGE_URL=f"file://{tmp_path}/files",
        RELAY_MIRROR="off", **extra,  # accepted success callbacks name outside hosts: never fetch them
    )
    target, bystander = create(relay, "target"), create(relay, "bystander")
    token = callback_token_of(sim, target["taskId"])
    bystander_token = callback_token_of(sim, bystander["taskId"])
    nonce, _, signature = token.partition(".")
    tokens = st.one_of(
        st.just(token), st.none(), st.text(max_size=40),
        st.just(f"{nonce}.{signature[::-1]}"), st.just(f"{nonce[::-1]}.{signature}"),
        st.builds(lambda s: f"{nonce}.{s}", st.text(max_size=8)),
        st.just(bystander_token), st.just(bystander_token + "x"),
    )
    ids = st.sampled_from([target["taskId"], bystander["taskId"], "never-created-1"]) | st.text(max_size=10)
    timestamps = st.one_of(
        st.builds(lambda: str(int(time.time()))), st.integers(0, 2**40).map(str), numberish.map(str), st.none()
    )
    client = httpx.Client(timeout=10)

    @FUZZ
    @given(
        body=callback_bodies(ids), token_value=tokens, headers=random_headers, timestamp=timestamps,
        signature_value=st.none() | st.text(max_size=50), path=st.sampled_from(["/api/callbacks/kie", "/api/callback"]),
    )
    def attack(
        body: bytes, token_value: str | None, headers: dict[str, bytes], timestamp: str | None,
        signature_value: str | None, path: str,
    ) -> None:
        sent_headers = dict(headers)
        if timestamp is not None:
            sent_headers["X-Webhook-Timestamp"] = on_the_wire(timestamp.encode())
        if signature_value is not None:
            sent_headers["X-Webhook-Signature"] = on_the_wire(signature_value.encode())
        before, before_bystander = state_of(relay, target), state_of(relay, bystander)
        url = f"{relay.url}{path}" + ("" if token_value is None else f"?token={quote(token_value)}")
        response = client.post(url, content=body, headers=sent_headers)  # type: ignore[arg-type]  # raw bytes, on purpose
        sent.append(response.status_code)
        assert_contract(response)
        if response.status_code != 200:
            assert state_of(relay, target) == before, "a refused callback changed the task"
        if token_value != bystander_token:
            assert state_of(relay, bystander) == before_bystander, "a callback without its token changed a task"

    sent: list[int] = []
    attack()
    print(sorted(collections.Counter(sent).items()))
    assert len(sent) >= 100, "the filters for pinned bugs swallowed the run"
    # The properties held for bodies that did get through: the target can still complete.
    good = client.post(f"{relay.url}/api/callbacks/kie?token={token}", json=success_payload(target["taskId"]), headers=_signed(hmac_key, target["taskId"]))
    assert good.status_code == 200, good.text
    client.close()


def _signed(key: str | None, task_id: str) -> dict[str, str]:
    if key is None:
        return {}
    from relay.sim import webhook_signature

    now = int(time.time())
    return {"X-Webhook-Timestamp": str(now), "X-Webhook-Signature": webhook_signature(key, task_id, now)}


# --------------------------------------------------------------------------- reads and streams


def test_random_reads_and_streams(start_relay: StartRelay, sim: str, tmp_path: Path) -> None:
    relay = start_relay(RELAY_MAX_STREAMS_PER_CLIENT="10000", RELAY_STORAGE_URL=f"file://{tmp_path}/files")
    task, other = create(relay, "read me"), create(relay, "other")
    task_id, token = task["taskId"], task["token"]
    expires, _, signature = token.partition(".")
    tokens = st.one_of(
        st.just(token), st.just(other["token"]), st.none(), st.text(max_size=40),
        st.just(f"{int(expires) + 1000}.{signature}"),  # a longer life, same signature
        st.just(f"{expires}.{signature[:-1]}"), st.just(token + "="), st.just(token.upper()),
        st.just(auth.task_token(SECRET, task_id, 60, now=time.time() - 3600)),  # expired
        st.just(auth.task_token("another-secret-0123456789-abcdefghijk", task_id, 3600)),
        st.builds(lambda s: f"{expires}.{s}", st.text(max_size=10)),
    )
    raw_ids = st.one_of(
        st.just(task_id), st.just(other["taskId"]), st.text(min_size=1, max_size=20).map(lambda s: quote(s, safe="")),
        st.binary(min_size=1, max_size=6).map(lambda b: "".join(f"%{c:02X}" for c in b)),
        st.just(task_id + "%0A"), st.just("a" * 129),
    )
    client = httpx.Client(timeout=10)

    @FUZZ
    @given(
        raw_id=raw_ids, token_value=tokens, where=st.sampled_from(["query", "bearer", "both"]),
        endpoint=st.sampled_from(["status", "task-status", "events", "multi"]), headers=random_headers,
        last_event_id=st.none() | numberish.map(str) | st.text(max_size=20),
    )
    def attack(
        raw_id: str, token_value: str | None, where: str, endpoint: str, headers: dict[str, bytes],
        last_event_id: str | None,
    ) -> None:
        sent_headers: dict[str, str | bytes] = dict(headers)
        query = ""
        if token_value is not None and where in ("query", "both"):
            query = f"token={quote(token_value, safe='')}"
        if token_value is not None and where in ("bearer", "both"):
            sent_headers["Authorization"] = on_the_wire(f"Bearer {token_value}".encode())
        if last_event_id is not None:
            query += f"&lastEventId={quote(last_event_id, safe='')}"
        url = {
            "status": f"{relay.url}/api/tasks/{raw_id}?{query}",
            "task-status": f"{relay.url}/api/task-status?taskId={raw_id}&{query}",
            "events": f"{relay.url}/api/tasks/{raw_id}/events?{query}",
            "multi": f"{relay.url}/api/events?taskId={raw_id}&{query}",
        }[endpoint]
        with client.stream("GET", url, headers=sent_headers) as response:  # type: ignore[arg-type]  # raw bytes, on purpose
            sent.append(response.status_code)
            if response.status_code == 200 and endpoint in ("events", "multi"):
                assert response.headers["content-type"].startswith("text/event-stream")
            else:
                response.read()
                assert_contract(response)
        valid = (raw_id, token_value) in ((task_id, token), (other["taskId"], other["token"]))
        if response.status_code == 200:
            assert valid, f"{url} answered 200 without the task's valid token"
            assert "x-request-id" in response.headers
        if not valid and token_value not in (None, ""):
            assert response.status_code in (400, 401, 404), response.status_code

    sent: list[int] = []
    attack()
    client.close()
    print(sorted(collections.Counter(sent).items()))
    assert len(sent) >= 100, "the filters for pinned bugs swallowed the run"
    assert state_of(relay, task) == (1, "pending")


# --------------------------------------------------------------------------- pinned server bugs


@pytest.fixture
def token_relay(start_relay: StartRelay, tmp_path: Path) -> AppProcess:
    return start_relay(RELAY_STORAGE_URL=f"file://{tmp_path}/files")


def test_non_ascii_callback_token_is_a_401(token_relay: AppProcess) -> None:
    response = httpx.post(f"{token_relay.url}/api/callbacks/kie?token=a.%C3%A9", json={}, timeout=5)
    assert response.status_code == 401, response.text


def test_non_ascii_task_token_is_a_401(token_relay: AppProcess) -> None:
    task = create(token_relay, "x")
    for path in (f"/api/tasks/{task['taskId']}", f"/api/tasks/{task['taskId']}/events"):
        response = httpx.get(f"{token_relay.url}{path}", params={"token": "1.é"}, timeout=5)
        assert response.status_code == 401, (path, response.text)
        bearer = httpx.get(f"{token_relay.url}{path}", headers={"Authorization": b"Bearer 1.\xe9"}, timeout=5)  # type: ignore[arg-type]  # raw bytes, on purpose
        assert bearer.status_code == 401, (path, bearer.text)


def test_callback_code_with_unicode_digits_is_a_400(token_relay: AppProcess, sim: str) -> None:
    task = create(token_relay, "x")
    token = callback_token_of(sim, task["taskId"])
    for code in ("²", "9" * 5000):
        body = {"code": code, "data": {"taskId": task["taskId"], "state": "fail", "failCode": code}}
        response = httpx.post(f"{token_relay.url}/api/callbacks/kie?token={token}", json=body, timeout=5)
        assert response.status_code in (200, 400), response.text
    assert state_of(token_relay, task)[0] >= 1


def test_webhook_timestamp_with_unicode_digits_is_a_401(start_relay: StartRelay, sim: str, tmp_path: Path) -> None:
    relay = start_relay(KIE_WEBHOOK_HMAC_KEY="hmac-key-0123456789", RELAY_STORAGE_URL=f"file://{tmp_path}/files")
    task = create(relay, "x")
    token = callback_token_of(sim, task["taskId"])
    response = httpx.post(
        f"{relay.url}/api/callbacks/kie?token={token}", json=success_payload(task["taskId"]),
        headers={"X-Webhook-Timestamp": b"\xb2", "X-Webhook-Signature": "c2ln"}, timeout=5,  # type: ignore[arg-type]  # raw bytes, on purpose
    )
    assert response.status_code == 401, response.text


def test_odd_last_event_id_is_ignored(token_relay: AppProcess) -> None:
    task = create(token_relay, "x")
    for value in (b"\xb2", b"9" * 5000):
        with httpx.stream("GET", task["eventsUrl"], headers={"Last-Event-ID": value}, timeout=5) as response:  # type: ignore[arg-type]  # raw bytes, on purpose
            assert response.status_code == 200, response.read()[:200]
    multi = f"{token_relay.url}/api/events?taskId={task['taskId']}&taskId=other&token={task['token']}"
    with httpx.stream("GET", multi + "&lastEventId=" + quote(f"{task['taskId']}:²"), timeout=5) as response:
        assert response.status_code in (200, 401), response.read()[:200]


def test_history_limit_with_odd_digits_is_a_400(open_relay: AppProcess) -> None:
    for limit in ("²", "9" * 5000):
        response = httpx.get(f"{open_relay.url}/api/tasks", params={"limit": limit}, timeout=5)
        assert response.status_code == 400, response.text


def test_history_cursor_with_odd_digits_is_a_400(start_relay: StartRelay, redis_url: str, tmp_path: Path) -> None:
    relay = start_relay(redis_url, RELAY_AUTH="none", RELAY_STORAGE_URL=f"file://{tmp_path}/files")
    create(relay, "x")
    response = httpx.get(f"{relay.url}/api/tasks", params={"cursor": "²:x"}, timeout=5)
    assert response.status_code in (200, 400), response.text


def test_deeply_nested_options_are_a_400(open_relay: AppProcess, sim: str) -> None:
    body = '{"prompt": "x", "options": ' + nested("object", 300) + "}"
    response = httpx.post(f"{open_relay.url}/api/tasks", content=body, timeout=5)
    assert response.status_code == 400, response.text
    assert sim_task_ids(sim) == []


def test_task_id_with_a_trailing_newline_is_a_400(open_relay: AppProcess) -> None:
    for path in ("/api/tasks/abc%0A", "/api/tasks/abc%0A/events", "/api/task-status?taskId=abc%0A"):
        response = httpx.get(f"{open_relay.url}{path}", timeout=5)
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_task_id", (path, response.text)


def test_create_is_strict_about_optional_fields(open_relay: AppProcess, sim: str) -> None:
    extras: tuple[dict[str, object], ...] = ({"options": None}, {"options": []}, {"model": False}, {"model": ""}, {"imageUrls": {}}, {"imageUrls": 0})
    for extra in extras:
        response = httpx.post(f"{open_relay.url}/api/tasks", json={"prompt": f"strict {extra}", **extra}, timeout=5)
        assert response.status_code == 400, (extra, response.status_code)
    assert sim_task_ids(sim) == []


def test_405_allow_lists_every_method(token_relay: AppProcess) -> None:
    response = httpx.request("DELETE", f"{token_relay.url}/api/tasks", timeout=5)
    assert response.status_code == 405
    assert_contract(response)
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert {"GET", "POST"} <= allowed, response.headers["allow"]
