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
    }
    ok = run_check(**healthy)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert verdicts(ok.stdout) == {"store": True, "hub": True, "storage": True, "provider": True, "public url": True}
    assert "Verdict: all links ok" in ok.stdout
    # Secrets are masked in the printed configuration.
    assert SECRET not in ok.stdout and SECRET_KEY not in ok.stdout and "sim-key" not in ok.stdout

    broken = {
        "store": {"RELAY_REDIS_URL": f"redis://{HOST}:{free_port()}/0"},
        "storage": {"RELAY_STORAGE_URL": "s3://no-such-bucket/relay"},
        "provider": {"KIE_API_KEY": "a-key-kie-refuses"},
        "public url": {"RELAY_PUBLIC_URL": f"http://{HOST}:{free_port()}"},
    }
    for link, change in broken.items():
        result = run_check(**{**healthy, **change})
        assert result.returncode == 1, (link, result.stdout)
        seen = verdicts(result.stdout)
        assert seen[link] is False, (link, result.stdout)
        assert f"broken: {link}" in result.stdout or link in result.stdout.rsplit("Verdict:", 1)[1], result.stdout
        # Only the link we broke (and the hub, which shares Redis with the store) fails.
        others = {name for name, good in seen.items() if not good} - {link, "hub" if link == "store" else ""}
        assert not others, (link, result.stdout)
    bad_key = run_check(**{**healthy, "KIE_API_KEY": "a-key-kie-refuses"})
    assert "KIE_API_KEY" in bad_key.stdout, "the provider link says which setting to fix"


def test_bad_settings_exit_2_naming_the_variable() -> None:
    result = run_check(RELAY_PUBLIC_URL="http://127.0.0.1:9", RELAY_AUTH="maybe")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "RELAY_AUTH" in result.stderr
