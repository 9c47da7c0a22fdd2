"""`relay check` against a healthy configuration and against broken ones: it must name the
broken link (Redis down, a bucket that does not exist, a KIE key the provider refuses)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import StartRelay
from tests.s3server import ACCESS_KEY, REGION, SECRET_KEY, MotoServer, moto_server
from tests.servers import HOST, SECRET, free_port


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoServer]:
    with moto_server(tmp_path) as server:
        yield server


def run_check(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "KIE_"))}
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", "check"],
        env={**base, "RELAY_SECRET": SECRET, **env}, capture_output=True, text=True, timeout=90,
    )


def verdicts(output: str) -> dict[str, bool]:
    """{link: ok} from the report's 'Links:' lines."""
    found = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("ok", "FAILED"):
            name = "public url" if parts[1:3] == ["public", "url"] else parts[1]
            found[name] = parts[0] == "ok"
    return found


async def test_healthy_and_broken_configurations(
    start_relay: StartRelay, redis_url: str, sim: str, moto: MotoServer, tmp_path: Path
) -> None:
    relay = start_relay(redis_url)
    bucket = await moto.create_bucket()
    healthy = {
        "RELAY_REDIS_URL": redis_url,
        "RELAY_PROVIDER": "sim",
        "KIE_BASE_URL": sim,
        "KIE_API_KEY": "sim-key",
        "RELAY_PUBLIC_URL": relay.url,
        "RELAY_STORAGE_URL": f"s3://{bucket}/relay",
        "RELAY_S3_ENDPOINT_URL": moto.url,
        "RELAY_S3_REGION": REGION,
        "RELAY_S3_ACCESS_KEY_ID": ACCESS_KEY,
        "RELAY_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        "KIE_RETRY_BUDGET": "0.5",
        "RELAY_RESULT_HOSTS": sim,  # the simulator serves its result files over http
    }
    ok = run_check(**healthy)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert verdicts(ok.stdout) == {
        "store": True, "hub": True, "storage": True, "provider": True, "results": True, "public url": True,
        "webhooks": True,
    }
    assert "Topology:  instances sharing one Redis" in ok.stdout and "Providers: kie at" in ok.stdout
    assert "Verdict: all links ok" in ok.stdout
    # Secrets are masked in the printed configuration.
    assert SECRET not in ok.stdout and SECRET_KEY not in ok.stdout and "sim-key" not in ok.stdout

    broken = {
        "store": {"RELAY_REDIS_URL": f"redis://{HOST}:{free_port()}/0"},
        "storage": {"RELAY_STORAGE_URL": "s3://no-such-bucket/relay"},
        "provider": {"KIE_API_KEY": "a-key-kie-refuses"},
        "public url": {"RELAY_PUBLIC_URL": f"http://{HOST}:{free_port()}"},
        "results": {"RELAY_RESULT_HOSTS": "*.aiquickdraw.com"},
    }
    for link, change in broken.items():
        result = run_check(**{**healthy, **change})
        assert result.returncode == 1, (link, result.stdout)
        seen = verdicts(result.stdout)
        assert seen[link] is False, (link, result.stdout)
        assert f"broken: {link}" in result.stdout or link in result.stdout.rsplit("Verdict:", 1)[1], result.stdout
        # Only the link we broke (and the hub, which shares Redis with the store) fails.
        others = {name for name, good in seen.items() if not good} - {link, *(("hub", "webhooks") if link == "store" else ())}
        assert not others, (link, result.stdout)
    bad_key = run_check(**{**healthy, "KIE_API_KEY": "a-key-kie-refuses"})
    assert "KIE_API_KEY" in bad_key.stdout, "the provider link says which setting to fix"
    refused = run_check(**{**healthy, "RELAY_RESULT_HOSTS": "*.aiquickdraw.com"})
    assert f"results from {sim}/files/ would be refused: add its host to RELAY_RESULT_HOSTS" in refused.stdout
    unreachable = run_check(**{**healthy, **broken["public url"]})
    line = next(x for x in unreachable.stdout.splitlines() if "public url" in x)
    assert "RELAY_PUBLIC_URL=" in line and "could not be reached" in line, line

    # Three bad settings: one run names all three, and still tests every link it can.
    bad = run_check(**{**healthy, "RELAY_AUTH": "maybe", "RELAY_SSE_PING": "soon", "RELAY_STORAGE_URL": "ftp://x"})
    assert bad.returncode == 2
    for name in ("RELAY_AUTH", "RELAY_SSE_PING", "RELAY_STORAGE_URL"):
        assert name in bad.stdout, bad.stdout
    assert "Settings: 3 problems" in bad.stdout and verdicts(bad.stdout)["store"] is True


def test_bad_settings_are_named_all_at_once_by_serve() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "KIE_"))}
    env = {**base, "RELAY_SECRET": "short", "RELAY_AUTH": "maybe", "RELAY_SSE_PING": "soon"}
    result = subprocess.run(
        [sys.executable, "-m", "relay.cli", "serve", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    named = " ".join(lines)
    for name in ("RELAY_SECRET", "RELAY_AUTH", "RELAY_SSE_PING", "RELAY_PUBLIC_URL", "KIE_API_KEY"):
        assert name in named, result.stderr
    assert "relay: the configuration has 5 problems:" in result.stderr


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_busy_port_fails_fast_and_says_what_to_do(command: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        base = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "KIE_"))}
        env = {**base, "RELAY_SECRET": SECRET, "RELAY_PUBLIC_URL": "http://127.0.0.1:1", "RELAY_PROVIDER": "sim"}
        result = subprocess.run(
            [sys.executable, "-m", "relay.cli", command, "--host", HOST, "--port", str(port)],
            env=env, capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 2
    assert f"port {port} on {HOST} is already in use" in result.stderr and "--port" in result.stderr
    assert "relay ready" not in result.stdout + result.stderr and "open http" not in result.stdout


async def test_check_names_a_redis_cluster_and_round_trips_through_it(
    start_relay: StartRelay, cluster_url: str, sim: str, tmp_path: Path
) -> None:
    relay = start_relay(cluster_url)
    result = run_check(
        RELAY_REDIS_URL=cluster_url, RELAY_PROVIDER="sim", KIE_BASE_URL=sim, KIE_API_KEY="sim-key",
        RELAY_PUBLIC_URL=relay.url, RELAY_STORAGE_URL=f"file://{tmp_path}/files", RELAY_RESULT_HOSTS=sim,
        KIE_RETRY_BUDGET="0.5",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Topology:  instances sharing a Redis Cluster: 16 key shards over its nodes, sharded pub/sub" in result.stdout
    seen = verdicts(result.stdout)
    assert seen["store"] and seen["hub"], result.stdout
