"""Access control, limits and hygiene, against real Relay subprocesses (uvicorn), the KIE
simulator and, where named, a real redis-server; loopback only.

- Task tokens: another task's, expired, tampered, foreign-secret and missing tokens get the
  documented 401 for status reads and streams; RELAY_TOKEN_TTL really ends a token.
- JWT users (HS256 and RS256): another user's task is a 404 and absent from history; bad
  JWTs (signature, expiry, sub, exp, audience, issuer, alg none, alg confusion) are 401.
- RELAY_AUTH=none is open.
- Limits: 413 with and without Content-Length (and for an endless chunked body), 429 with
  Retry-After, the slow-loris deadline (408), the per-client stream cap, task ids per stream.
- CORS allowed and refused, never `*` with credentials; security headers on HTML.
- Forwarded client addresses count only from trusted proxies.
- Secrets, tokens and the callback URL's token never reach the logs or /readyz.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import secrets
import select
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relay import auth
from tests.conftest import StartRelay
from tests.helpers import assert_contract, sim_task_ids, success_payload
from tests.servers import HOST, SECRET, AppProcess
from tests.sse import Stream
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)

JWT_SECRET = "jwt-secret-for-security-tests-0123456789abcdef"
AUDIENCE = "relay-tests"
ISSUER = "https://issuer.test"


@pytest.fixture
def relay_for(start_relay: StartRelay, tmp_path: Path) -> Any:
    """`start_relay` with storage in this test's folder and result mirroring off (callbacks
    here name outside hosts, which are never fetched)."""

    def start(redis_url: str = "memory://", **extra: str) -> AppProcess:
        extra.setdefault("RELAY_STORAGE_URL", f"file://{tmp_path}/files")
        extra.setdefault("RELAY_MIRROR", "off")
        return start_relay(redis_url, **extra)

    return start


async def create(client: httpx.AsyncClient, relay: AppProcess, prompt: str = "a fox", **headers: str) -> dict[str, Any]:
    response = await client.post(f"{relay.url}/api/tasks", json={"prompt": prompt}, headers=headers)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def error_code(response: httpx.Response) -> str:
    assert_contract(response)
    code: str = response.json()["error"]["code"]
    return code


def with_token(url: str, token: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}token={quote(token, safe='')}"


async def get_stream_status(client: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    """The answer to an SSE GET, closed at once if it is a stream."""
    async with client.stream("GET", url, **kwargs) as response:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            await response.aread()
    return response


# --------------------------------------------------------------------------- task tokens


async def test_task_tokens_are_checked_for_reads_and_streams(relay_for: Any, sim: str, client: httpx.AsyncClient) -> None:
    relay = relay_for()
    a, b = await create(client, relay, "a"), await create(client, relay, "b")
    a_id, token = a["taskId"], a["token"]
    expires, _, signature = token.partition(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    cases = {
        "missing": (None, "token_required"),
        "another task's": (b["token"], "invalid_token"),
        "expired": (auth.task_token(SECRET, a_id, 60, now=time.time() - 3600), "token_expired"),
        "tampered signature": (f"{expires}.{flipped}", "invalid_token"),
        "extended expiry": (f"{int(expires) + 86400}.{signature}", "invalid_token"),
        "another secret's": (auth.task_token("another-secret-0123456789-abcdefghijkl", a_id, 3600), "invalid_token"),
        "malformed": ("not-a-token", "invalid_token"),
        "empty signature": (f"{expires}.", "invalid_token"),
    }
    urls = {
        "status": f"{relay.url}/api/tasks/{a_id}",
        "task-status": f"{relay.url}/api/task-status?taskId={a_id}",
        "stream": f"{relay.url}/api/tasks/{a_id}/events",
        "multi-stream": f"{relay.url}/api/events?taskId={a_id}&taskId={b['taskId']}",
    }
    for case, (bad, expected) in cases.items():
        for name, url in urls.items():
            for where in ("query", "bearer"):
                kwargs: dict[str, Any] = {}
                target = url
                if bad is not None and where == "query":
                    target = with_token(url, bad)
                elif bad is not None:
                    kwargs["headers"] = {"Authorization": f"Bearer {bad}"}
                response = await get_stream_status(client, target, **kwargs)
                assert response.status_code == 401, (case, name, where, response.status_code)
                assert error_code(response) == expected, (case, name, where, response.text)
    # The right token works both ways; for the multi stream, one token per task in order.
    for url in (urls["status"], urls["task-status"], urls["stream"]):
        assert (await get_stream_status(client, with_token(url, token))).status_code == 200, url
        bearer = {"Authorization": f"Bearer {token}"}
        assert (await get_stream_status(client, url, headers=bearer)).status_code == 200, url
    both = f"{urls['multi-stream']}&token={token}&token={b['token']}"
    assert (await get_stream_status(client, both)).status_code == 200
    swapped = f"{urls['multi-stream']}&token={b['token']}&token={token}"
    assert (await get_stream_status(client, swapped)).status_code == 401
    assert (await client.get(urls["status"], params={"token": token})).json()["version"] == 1


async def test_token_ttl_ends_access(relay_for: Any, sim: str, client: httpx.AsyncClient) -> None:
    relay = relay_for(RELAY_TOKEN_TTL="1")
    task = await create(client, relay)
    assert (await client.get(task["statusUrl"])).status_code == 200

    async def expired() -> bool:
        response = await client.get(task["statusUrl"])
        return response.status_code == 401 and error_code(response) == "token_expired"

    await until(expired, timeout=5, what="the 1 s task token to expire")
    stream = await get_stream_status(client, task["eventsUrl"])
    assert stream.status_code == 401 and error_code(stream) == "token_expired"


# --------------------------------------------------------------------------- JWT users


def hs256(sub: str | None = "alice", *, key: str = JWT_SECRET, **claims: Any) -> str:
    payload: dict[str, Any] = {"exp": int(time.time()) + 600, "aud": AUDIENCE, "iss": ISSUER, **claims}
    if sub is not None:
        payload["sub"] = sub
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm="HS256")


def unsigned(payload: dict[str, Any], header: dict[str, Any]) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}."


def hmac_signed(payload: dict[str, Any], key: bytes) -> str:
    """An HS256 JWT made by hand (PyJWT refuses a PEM as an HMAC key): alg confusion."""
    head = unsigned(payload, {"alg": "HS256", "typ": "JWT"}).rstrip(".")
    mac = hmac.new(key, head.encode(), hashlib.sha256).digest()
    return f"{head}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


async def check_users(client: httpx.AsyncClient, relay: AppProcess, alice: str, bob: str) -> dict[str, Any]:
    """Alice's task is hers: Bob gets 404 for status and stream and does not see it listed."""
    as_alice = {"Authorization": f"Bearer {alice}"}
    as_bob = {"Authorization": f"Bearer {bob}"}
    task = await create(client, relay, "alice's secret prompt", **as_alice)
    assert "token" not in task
    task_id = task["taskId"]
    status, events = f"{relay.url}/api/tasks/{task_id}", f"{relay.url}/api/tasks/{task_id}/events"
    assert (await client.get(status, headers=as_alice)).status_code == 200
    assert (await get_stream_status(client, events, params={"token": alice})).status_code == 200
    assert (await get_stream_status(client, events, headers=as_alice)).status_code == 200
    for response in (
        await client.get(status, headers=as_bob),
        await client.get(f"{relay.url}/api/task-status", params={"taskId": task_id}, headers=as_bob),
        await get_stream_status(client, events, params={"token": bob}),
        await get_stream_status(client, f"{relay.url}/api/events?taskId={task_id}", headers=as_bob),
    ):
        assert response.status_code == 404 and error_code(response) == "task_not_found", response.text
    # ...exactly like a task that does not exist.
    missing = await client.get(f"{relay.url}/api/tasks/no-such-task", headers=as_bob)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "task_not_found"
    alice_history = (await client.get(f"{relay.url}/api/tasks", headers=as_alice)).json()["items"]
    bob_history = (await client.get(f"{relay.url}/api/tasks", headers=as_bob)).json()["items"]
    assert [t["taskId"] for t in alice_history] == [task_id]
    assert bob_history == []
    return task


async def check_bad_jwts(client: httpx.AsyncClient, relay: AppProcess, task_id: str, bad: dict[str, tuple[str, str]]) -> None:
    for case, (token, expected) in bad.items():
        for method, url in (
            ("GET", f"{relay.url}/api/tasks/{task_id}"),
            ("GET", f"{relay.url}/api/tasks/{task_id}/events"),
            ("GET", f"{relay.url}/api/tasks"),
            ("POST", f"{relay.url}/api/tasks"),
        ):
            headers = {"Authorization": f"Bearer {token}"}
            if method == "POST":
                response = await client.post(url, json={"prompt": f"as {case}"}, headers=headers)
            else:
                response = await get_stream_status(client, url, headers=headers)
            assert response.status_code == 401, (case, url, response.status_code)
            assert error_code(response) == expected, (case, url, response.text)


async def test_jwt_hs256_users_see_only_their_tasks(relay_for: Any, sim: str, client: httpx.AsyncClient) -> None:
    relay = relay_for(RELAY_AUTH="jwt", RELAY_JWT_SECRET=JWT_SECRET, RELAY_JWT_AUDIENCE=AUDIENCE, RELAY_JWT_ISSUER=ISSUER)
    task = await check_users(client, relay, hs256("alice"), hs256("bob"))
    now = int(time.time())
    claims = {"sub": "alice", "exp": now + 600, "aud": AUDIENCE, "iss": ISSUER}
    await check_bad_jwts(client, relay, task["taskId"], {
        "wrong signature": (hs256("alice", key="another-secret-0123456789-abcdefghijkl"), "invalid_token"),
        "expired": (hs256("alice", exp=now - 120), "token_expired"),
        "no sub": (hs256(None), "invalid_token"),
        "empty sub": (hs256(""), "invalid_token"),
        "no exp": (jwt.encode({k: v for k, v in claims.items() if k != "exp"}, JWT_SECRET, algorithm="HS256"), "invalid_token"),
        "wrong audience": (hs256("alice", aud="someone-else"), "invalid_token"),
        "wrong issuer": (hs256("alice", iss="https://evil.test"), "invalid_token"),
        "alg none": (unsigned(claims, {"alg": "none", "typ": "JWT"}), "invalid_token"),
        "garbage": ("not.a.jwt", "invalid_token"),
    })
    no_token = await client.post(f"{relay.url}/api/tasks", json={"prompt": "anonymous"})
    assert no_token.status_code == 401 and error_code(no_token) == "token_required"
    assert len(sim_task_ids(sim)) == 1, "only alice's task reached the provider"


async def test_jwt_rs256(relay_for: Any, sim: str, client: httpx.AsyncClient) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    relay = relay_for(RELAY_AUTH="jwt", RELAY_JWT_PUBLIC_KEY=public_pem.decode())

    def rs256(sub: str, signer: rsa.RSAPrivateKey = key, **claims: Any) -> str:
        return jwt.encode({"sub": sub, "exp": int(time.time()) + 600, **claims}, signer, algorithm="RS256")

    task = await check_users(client, relay, rs256("alice"), rs256("bob"))
    claims = {"sub": "alice", "exp": int(time.time()) + 600}
    await check_bad_jwts(client, relay, task["taskId"], {
        "another key": (rs256("alice", other), "invalid_token"),
        "expired": (rs256("alice", exp=int(time.time()) - 120), "token_expired"),
        "HS256 with the public key as secret": (hmac_signed(claims, public_pem), "invalid_token"),
        "HS256 with a guessable secret": (jwt.encode(claims, "x" * 32, algorithm="HS256"), "invalid_token"),
    })


async def test_auth_none_is_open(relay_for: Any, sim: str, client: httpx.AsyncClient) -> None:
    relay = relay_for(RELAY_AUTH="none")
    task = await create(client, relay)
    assert "token" not in task and "token=" not in task["statusUrl"]
    assert (await client.get(f"{relay.url}/api/tasks/{task['taskId']}")).status_code == 200
    assert (await get_stream_status(client, task["eventsUrl"])).status_code == 200
    listed = (await client.get(f"{relay.url}/api/tasks")).json()["items"]
    assert [t["taskId"] for t in listed] == [task["taskId"]]


# --------------------------------------------------------------------------- raw HTTP helpers


def read_answer(sock: socket.socket, timeout: float) -> bytes:
    """One HTTP response (head and Content-Length body), or what came before the close."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def send_slowly(port: int, head: bytes, parts: Iterable[bytes], *, pause: float, timeout: float = 10) -> tuple[int, dict[str, str], bytes, float, int]:
    """Send `head`, then each of `parts`, waiting up to `pause` between parts for the server
    to answer (its answer ends the sending). Returns status, headers, body, the seconds from
    the first body byte to the answer, and how many body bytes were sent."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(head)
        started = time.monotonic()
        sent = 0
        for part in parts:
            readable, _, _ = select.select([sock], [], [], pause)
            if readable:
                break
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(part)
        select.select([sock], [], [], timeout)
        elapsed = time.monotonic() - started
        raw = read_answer(sock, timeout)
    head_bytes, _, body = raw.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body, elapsed, sent


def request_head(method: str, target: str, *, length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"{method} {target} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    ).encode()


def chunked(parts: Iterable[bytes]) -> Iterator[bytes]:
    for part in parts:
        yield f"{len(part):x}\r\n".encode() + part + b"\r\n"


def assert_json_error(status: int, headers: dict[str, str], body: bytes, expected_status: int, code: str) -> None:
    assert status == expected_status, (status, body[:200])
    assert headers["content-type"].startswith("application/json"), headers
    assert json.loads(body)["error"]["code"] == code, body


# --------------------------------------------------------------------------- body limits


async def test_oversized_bodies_get_413_with_and_without_content_length(relay_for: Any, sim: str, client: httpx.AsyncClient) -> None:
    relay = relay_for(RELAY_MAX_BODY="2048")
    task = await create(client, relay)
    callback = (await client.get(f"{sim}/sim/tasks/{task['taskId']}")).json()["callBackUrl"]
    big = json.dumps({"prompt": "p" * 4000}).encode()

    async def endless() -> Any:  # an async body: httpx sends it chunked, without Content-Length
        for _ in range(8):
            yield b" " * 512
        yield big

    for url in (f"{relay.url}/api/tasks", callback):
        with_length = await client.post(url, content=big)
        assert with_length.status_code == 413 and error_code(with_length) == "payload_too_large"
        without = await client.post(url, content=endless())
        assert without.status_code == 413 and error_code(without) == "payload_too_large"
        assert "content-length" not in without.request.headers
    assert sim_task_ids(sim) == [task["taskId"]], "no oversized create reached the provider"
    assert (await client.get(task["statusUrl"])).json()["version"] == 1

    # A chunked body that never ends is refused without being read to its end.
    port = urlsplit(relay.url).port
    assert port is not None
    forever = chunked(itertools.repeat(b"x" * 1024, 50_000))  # 50 MB, far more than will be sent
    status, headers, body, _, sent = await asyncio.to_thread(
        send_slowly, port, request_head("POST", "/api/tasks", length=None), forever, pause=0
    )
    assert_json_error(status, headers, body, 413, "payload_too_large")
    assert sent < 50_000 * 1024


async def test_slow_loris_bodies_get_408(relay_for: Any, sim: str, client: httpx.AsyncClient) -> None:
    relay = relay_for(RELAY_READ_TIMEOUT="1")
    task = await create(client, relay)
    callback = urlsplit((await client.get(f"{sim}/sim/tasks/{task['taskId']}")).json()["callBackUrl"])
    port = urlsplit(relay.url).port
    assert port is not None
    body = json.dumps({"prompt": "slowly"}).encode().ljust(60)
    for target in ("/api/tasks", f"{callback.path}?{callback.query}"):
        for length in (len(body), None):
            parts: Iterable[bytes] = (body[i : i + 1] for i in range(len(body)))
            if length is None:
                parts = chunked(parts)
            status, headers, answer, elapsed, sent = await asyncio.to_thread(
                send_slowly, port, request_head("POST", target, length=length), parts, pause=0.25
            )
            assert_json_error(status, headers, answer, 408, "request_timeout")
            assert 0.9 <= elapsed < 4, elapsed  # RELAY_READ_TIMEOUT=1, not the whole trickle
            assert sent < len(body) * 8
    assert sim_task_ids(sim) == [task["taskId"]]


async def test_slow_loris_upload_gets_408(relay_for: Any, sim: str) -> None:
    relay = relay_for(RELAY_READ_TIMEOUT="1")
    port = urlsplit(relay.url).port
    assert port is not None
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + b"x" * 40 + b"\r\n--b--\r\n"
    head = (
        f"POST /api/uploads HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    trickle = (body[i : i + 1] for i in range(12))  # 3 s of trickling at most, then wait 2 s
    status, headers, answer, elapsed, _ = await asyncio.to_thread(send_slowly, port, head, trickle, pause=0.25, timeout=2)
    assert_json_error(status, headers, answer, 408, "request_timeout")
    assert elapsed < 4


# --------------------------------------------------------------------------- rate limits and caps


async def test_create_rate_limit_says_when_to_retry(relay_for: Any, sim: str, client: httpx.AsyncClient) -> None:
    relay = relay_for(RELAY_RATE_CREATE="2")
    answers = [await client.post(f"{relay.url}/api/tasks", json={"prompt": f"p{i}"}) for i in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429]
    limited = answers[-1]
    assert error_code(limited) == "rate_limited"
    assert limited.headers["retry-after"].isdigit() and 1 <= int(limited.headers["retry-after"]) <= 61
    assert len(sim_task_ids(sim)) == 2


async def test_callback_rate_limit_counts_refusals(relay_for: Any, sim: str, client: httpx.AsyncClient) -> None:
    """Genuine callbacks never meet a 429; refused ones count, and past the limit the sender
    gets 429 with Retry-After."""
    relay = relay_for(RELAY_RATE_CALLBACK="2")
    task = await create(client, relay)
    callback = (await client.get(f"{sim}/sim/tasks/{task['taskId']}")).json()["callBackUrl"]
    genuine = [await client.post(callback, json=success_payload(task["taskId"])) for _ in range(4)]
    assert [a.status_code for a in genuine] == [200] * 4
    forged_url = f"{relay.url}/api/callbacks/kie?token=forged.token"
    forged = [await client.post(forged_url, json=success_payload(task["taskId"])) for _ in range(3)]
    assert [a.status_code for a in forged] == [401, 401, 429]
    assert error_code(forged[-1]) == "rate_limited" and forged[-1].headers["retry-after"].isdigit()


async def test_stream_cap_per_client(relay_for: Any, sim: str, client: httpx.AsyncClient) -> None:
    relay = relay_for(RELAY_MAX_STREAMS_PER_CLIENT="2")
    task = await create(client, relay)
    async with Stream(client, task["eventsUrl"]) as first:
        assert first.status == 200
        async with Stream(client, task["eventsUrl"]) as second:
            assert second.status == 200
            third = await get_stream_status(client, task["eventsUrl"])
            assert third.status_code == 429 and error_code(third) == "too_many_streams"
            assert third.headers["retry-after"].isdigit()
    # Closing streams gives their places back.

    async def reopened() -> bool:
        return (await get_stream_status(client, task["eventsUrl"])).status_code == 200

    await until(reopened, timeout=5, what="a closed stream to free its place")


async def test_task_ids_per_stream_are_capped(relay_for: Any, sim: str, client: httpx.AsyncClient) -> None:
    relay = relay_for(RELAY_AUTH="none", RELAY_MAX_TASKS_PER_STREAM="3")
    tasks = [await create(client, relay, f"p{i}") for i in range(4)]
    ids = [t["taskId"] for t in tasks]
    url = f"{relay.url}/api/events?" + "&".join(f"taskId={i}" for i in ids)
    too_many = await get_stream_status(client, url)
    assert too_many.status_code == 400 and error_code(too_many) == "bad_request"
    assert "at most 3" in too_many.json()["error"]["message"]
    three = f"{relay.url}/api/events?" + "&".join(f"taskId={i}" for i in ids[:3])
    assert (await get_stream_status(client, three)).status_code == 200
    none = await get_stream_status(client, f"{relay.url}/api/events")
    assert none.status_code == 400 and error_code(none) == "bad_request"
    mismatch = await get_stream_status(client, three + "&token=a&token=b")
    assert mismatch.status_code == 400 and error_code(mismatch) == "bad_request"


# --------------------------------------------------------------------------- CORS, headers


async def test_cors_allows_configured_origins_only(relay_for: Any, sim: str, client: httpx.AsyncClient) -> None:
    allowed, evil = "https://app.example.com", "https://evil.example.com"
    relay = relay_for(RELAY_CORS_ORIGINS=allowed)
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,idempotency-key"}
    ok = await client.options(f"{relay.url}/api/tasks", headers={"Origin": allowed, **preflight})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == allowed
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert "idempotency-key" in ok.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in ok.headers
    refused = await client.options(f"{relay.url}/api/tasks", headers={"Origin": evil, **preflight})
    assert refused.status_code >= 400
    assert "access-control-allow-origin" not in refused.headers
    simple = await client.get(f"{relay.url}/healthz", headers={"Origin": allowed})
    assert simple.headers["access-control-allow-origin"] == allowed
    assert "retry-after" in simple.headers["access-control-expose-headers"].lower()
    other = await client.get(f"{relay.url}/healthz", headers={"Origin": evil})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
    for response in (ok, refused, simple, other):
        assert response.headers.get("access-control-allow-credentials") != "true"


async def test_cors_wildcard_never_with_credentials(relay_for: Any, sim: str, client: httpx.AsyncClient) -> None:
    relay = relay_for(RELAY_CORS_ORIGINS="*")
    origin = "https://anywhere.example"
    for headers in ({"Origin": origin}, {"Origin": origin, "Cookie": "session=1"}):
        response = await client.get(f"{relay.url}/healthz", headers=headers)
        assert response.headers["access-control-allow-origin"] in ("*", origin)
        assert "access-control-allow-credentials" not in response.headers
    preflight = await client.options(
        f"{relay.url}/api/tasks", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.headers["access-control-allow-origin"] in ("*", origin)
    assert "access-control-allow-credentials" not in preflight.headers
    plain = relay_for()  # no RELAY_CORS_ORIGINS: no CORS headers at all
    response = await client.get(f"{plain.url}/healthz", headers={"Origin": origin})
    assert "access-control-allow-origin" not in response.headers


async def test_refused_preflight_is_a_json_error(relay_for: Any, sim: str, client: httpx.AsyncClient) -> None:
    relay = relay_for(RELAY_CORS_ORIGINS="https://app.example.com")
    refused = await client.options(
        f"{relay.url}/api/tasks", headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"}
    )
    assert_contract(refused)


async def test_security_headers(relay_for: Any, sim: str, client: httpx.AsyncClient) -> None:
    relay = relay_for()
    page = await client.get(f"{relay.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp and "object-src 'none'" in csp
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    for path in ("/healthz", "/api/nope", "/api/tasks/x"):
        response = await client.get(f"{relay.url}{path}")
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-type"].startswith("application/json"), path


# --------------------------------------------------------------------------- forwarded addresses


async def test_forwarded_for_counts_only_from_trusted_proxies(relay_for: Any, sim: str, client: httpx.AsyncClient) -> None:
    # 10.255.255.1 is never contacted: it only makes the test client (127.0.0.1) untrusted.
    untrusted = relay_for(RELAY_RATE_CREATE="1", RELAY_TRUSTED_PROXIES="10.255.255.1")
    first = await client.post(f"{untrusted.url}/api/tasks", json={"prompt": "a"}, headers={"X-Forwarded-For": "203.0.113.1"})
    second = await client.post(f"{untrusted.url}/api/tasks", json={"prompt": "b"}, headers={"X-Forwarded-For": "203.0.113.2"})
    assert (first.status_code, second.status_code) == (202, 429), "a spoofed X-Forwarded-For escaped the limit"

    trusted = relay_for(RELAY_RATE_CREATE="1")  # default: 127.0.0.1 is a trusted proxy
    answers = [
        await client.post(f"{trusted.url}/api/tasks", json={"prompt": f"t{i}"}, headers={"X-Forwarded-For": ip})
        for i, ip in enumerate(["203.0.113.1", "203.0.113.2", "203.0.113.1"])
    ]
    assert [a.status_code for a in answers] == [202, 202, 429]


# --------------------------------------------------------------------------- secrets in logs


async def test_no_secret_reaches_the_logs(relay_for: Any, redis_url: str, tmp_path: Path, client: httpx.AsyncClient) -> None:
    api_key = "kie-api-key-" + secrets.token_hex(20)
    hmac_key = "kie-webhook-hmac-" + secrets.token_hex(20)
    relay_secret = "relay-secret-" + secrets.token_hex(20)
    jwt_secret = "relay-jwt-secret-" + secrets.token_hex(20)
    sim = AppProcess(
        ["kie-sim", "--callback-delay", "manual", "--api-key", api_key, "--webhook-hmac-key", hmac_key],
        {}, ready_path="/sim/tasks", log_path=tmp_path / "own-sim.log",
    ).start()
    try:
        sim_port = urlsplit(sim.url).port
        common = {
            "KIE_BASE_URL": sim.url, "KIE_API_KEY": api_key, "KIE_WEBHOOK_HMAC_KEY": hmac_key,
            "RELAY_SECRET": relay_secret, "RELAY_LOG_LEVEL": "DEBUG", "RELAY_MIRROR": "on",
            "RELAY_RESULT_HOSTS": f"http://127.0.0.1:{sim_port}", "KIE_RETRY_BUDGET": "0.5",
        }
        token_relay = relay_for(redis_url, **common)
        jwt_relay = relay_for(redis_url, RELAY_AUTH="jwt", RELAY_JWT_SECRET=jwt_secret, **common)
        user_jwt = jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, jwt_secret, algorithm="HS256")
        watched: list[str] = [api_key, hmac_key, relay_secret, jwt_secret, user_jwt]

        for relay, headers in ((token_relay, {}), (jwt_relay, {"Authorization": f"Bearer {user_jwt}"})):
            task = await create(client, relay, "a secret-free prompt", **headers)
            if "token" in task:
                watched += [task["token"], task["token"].partition(".")[2]]
            callback_url = (await client.get(f"{sim.url}/sim/tasks/{task['taskId']}")).json()["callBackUrl"]
            callback_token = parse_qs(urlsplit(callback_url).query)["token"][0]
            nonce, _, signature = callback_token.partition(".")
            watched += [callback_token, nonce, signature]
            events_url = task["eventsUrl"] + ("" if "token" in task else f"?token={user_jwt}")
            async with Stream(client, events_url) as stream:
                (await client.post(f"{sim.url}/sim/tasks/{task['taskId']}/complete")).raise_for_status()
                await stream.until_status("completed")
                await asyncio.wait_for(stream.closed.wait(), 10)
            # Refusals and failures that log: forged and crossed callbacks, a bad signature,
            # a stale token, a provider error page, an unhandled error.
            await client.post(callback_url, json=success_payload(task["taskId"]), headers={"X-Webhook-Timestamp": "1", "X-Webhook-Signature": "x"})
            await client.post(callback_url.split("?")[0] + f"?token={nonce}.{signature[::-1]}", json={})
            async with httpx.AsyncClient(timeout=10) as once:  # a 500 closes its connection
                await once.post(callback_url.split("?")[0] + f"?token={nonce}.%C3%A9", json={})
            await client.get(task["statusUrl"].split("?")[0], params={"token": auth.task_token(relay_secret, task["taskId"], 1, now=1)})
            await client.get(f"{relay.url}/api/tasks/{task['taskId']}", headers={"Authorization": f"Bearer {user_jwt}x"})
            await client.patch(f"{sim.url}/sim/config", json={"html_error_rate": 1})
            failed = await client.post(f"{relay.url}/api/tasks", json={"prompt": "provider down"}, headers=headers)
            assert failed.status_code >= 500
            await client.patch(f"{sim.url}/sim/config", json={"html_error_rate": 0})
            ready = await client.get(f"{relay.url}/readyz")
            assert ready.status_code == 200
            for secret in watched:
                assert secret not in ready.text
    finally:
        sim.stop()
    logs = {"token relay": token_relay.log_text(), "jwt relay": jwt_relay.log_text()}
    for name, text in logs.items():
        assert "POST /api/tasks 202" in text and "/api/callbacks/kie" in text, f"{name} logged nothing useful"
        for line in text.splitlines():
            for secret in watched:
                assert secret not in line, f"{name} logged a secret ({secret[:6]}...): {line[:300]}"
