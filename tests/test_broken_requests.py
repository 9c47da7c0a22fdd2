"""Requests that never arrive whole: a client that hangs up mid-body, a chunked body with
a broken chunk, a callback URL with a trailing slash, a token pasted into the path.
None of them may be a 500, an error-level log line, a redirect, or a secret in the log."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx

from tests.conftest import StartRelay
from tests.servers import HOST, AppProcess


def send_raw(port: int, data: bytes) -> None:
    """Send `data` and hang up without reading the answer."""
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(data)


def broken_requests(path: str) -> list[bytes]:
    head = f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
    return [
        # Promised 1000 bytes, sent a few, hung up.
        (head + "Content-Length: 1000\r\n\r\n").encode() + b'{"prompt": "half',
        # Chunked, one good chunk, then a chunk size that is not hex.
        (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"5\r\n{\"pro\r\nzz\r\nmpt\r\n0\r\n\r\n",
        # Chunked, hung up inside a chunk.
        (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"40\r\n{\"prompt\": \"a",
    ]


def server_errors(relay: AppProcess) -> float:
    text = httpx.get(f"{relay.url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("relay_http_requests_total{") and 'status="5' in line
    )


def error_lines(relay: AppProcess) -> list[str]:
    lines = []
    for line in relay.log_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("level") in ("error", "critical"):
            lines.append(line)
    return lines


def test_hung_up_and_broken_bodies_are_never_500s(start_relay: StartRelay, sim: str, tmp_path: Path) -> None:
    relay = start_relay(RELAY_STORAGE_URL=f"file://{tmp_path}/files", RELAY_RATE_CREATE="100000")
    token = "n0nce-n0nce-n0nce.not-a-real-signature-but-long"
    paths = ["/api/tasks", f"/api/callbacks/kie?token={token}", "/api/uploads"]
    sent = 0
    while sent < 1000:
        for path in paths:
            for data in broken_requests(path):
                send_raw(relay.port, data)
                sent += 1
    # The server is still well, and nothing of the above counted as its own failure.
    assert httpx.get(f"{relay.url}/healthz", timeout=5).status_code == 200
    assert server_errors(relay) == 0
    assert error_lines(relay) == []


def test_callback_with_a_trailing_slash_is_answered_not_redirected(start_relay: StartRelay, sim: str) -> None:
    relay = start_relay()
    created = httpx.post(f"{relay.url}/api/tasks", json={"prompt": "a fox"}, timeout=10).json()
    view = httpx.get(f"{sim}/sim/tasks/{created['taskId']}", timeout=5).json()
    url = view["callBackUrl"].replace("/api/callbacks/kie?", "/api/callbacks/kie/?")
    payload = {"code": 200, "msg": "success", "data": {"taskId": created["taskId"], "state": "generating"}}
    answer = httpx.post(url, json=payload, timeout=5, follow_redirects=False)
    assert answer.status_code == 200, answer.text
    assert httpx.get(created["statusUrl"], timeout=5).json()["status"] == "processing"
    other = httpx.get(f"{relay.url}/api/tasks/", timeout=5, follow_redirects=False)
    assert other.status_code == 404 and other.headers["content-type"] == "application/json"


def test_a_token_in_the_path_is_not_logged(start_relay: StartRelay, sim: str) -> None:
    relay = start_relay()
    created = httpx.post(f"{relay.url}/api/tasks", json={"prompt": "a fox"}, timeout=10).json()
    token = created["token"]
    for path in (f"/api/tasks/{token}", f"/api/tasks/{created['taskId']}/{token}/events", f"/{token}"):
        httpx.get(relay.url + path, timeout=5)
    log = relay.log_text()
    assert token not in log and token.split(".", 1)[1] not in log
    assert "[token]" in log


def test_parked_callbacks_are_bounded_per_token(start_relay: StartRelay, sim: str, redis_url: str) -> None:
    import redis

    relay = start_relay(redis_url, RELAY_MAX_BODY=str(2 * 1024 * 1024))
    created = httpx.post(f"{relay.url}/api/tasks", json={"prompt": "a fox"}, timeout=10).json()
    url = httpx.get(f"{sim}/sim/tasks/{created['taskId']}", timeout=5).json()["callBackUrl"]
    padding = "x" * 1000

    def early(n: int, size: int = 1) -> httpx.Response:
        data = {"taskId": f"unknown{n}", "state": "generating", "pad": padding * size}
        return httpx.post(url, json={"code": 200, "msg": "success", "data": data}, timeout=5)

    big = early(0, size=1024)  # ~1 MiB for a task nobody stored
    assert big.status_code == 413
    answers = [early(n).status_code for n in range(1, 13)]
    assert answers == [200] * 8 + [503] * 4, answers
    client = redis.Redis.from_url(redis_url)
    parked = sum(client.memory_usage(k) or 0 for k in client.scan_iter("relay:early:*"))
    client.close()
    assert parked < 64 * 1024, parked


def test_the_shipped_proxy_bounds_header_size_and_time(start_relay: StartRelay, sim: str, tmp_path: Path) -> None:
    """deploy/nginx.conf in front of Relay: an 8 MB header line is refused at the proxy,
    and a sender trickling header lines is cut off within client_header_timeout."""
    import time

    from tests.deploy_nginx import LoadBalancer

    relay = start_relay()
    with LoadBalancer(tmp_path / "nginx", [relay.port]) as lb:
        with socket.create_connection((HOST, lb.port), timeout=15) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 * 1024 * 1024) + b"\r\n\r\n")
            answer = sock.recv(200)
        assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 494")), answer[:60]
        started = time.monotonic()
        with socket.create_connection((HOST, lb.port), timeout=30) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            closed = False
            for n in range(25):  # one header line a second, never finishing
                try:
                    sock.sendall(f"X-Slow-{n}: 1\r\n".encode())
                    sock.recv(1, socket.MSG_DONTWAIT)  # EOF or a 408: the proxy gave up on us
                    closed = True
                    break
                except BlockingIOError:
                    pass
                except OSError:
                    closed = True
                    break
                time.sleep(1)  # the trickle itself: what the proxy must not wait for
            assert closed, "the proxy kept a trickling sender"
        assert time.monotonic() - started < 15
