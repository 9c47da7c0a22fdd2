"""The README's "Try it with curl" block, run as written against a real Relay and the
simulator (only the address differs), so the walkthrough cannot rot."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import StartRelay

README = Path(__file__).resolve().parent.parent / "README.md"


def curl_block() -> str:
    text = README.read_text()
    section = text.split("## Try it with curl", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "the README lost its curl walkthrough"
    return match.group(1)


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="curl and jq are installed by scripts/test.sh")
def test_the_curl_walkthrough_works(start_relay: StartRelay, sim: str, tmp_path: Path) -> None:
    import httpx

    httpx.patch(f"{sim}/sim/config", json={"callback_delay": 1}, timeout=5).raise_for_status()
    relay = start_relay(RELAY_STORAGE_URL=f"file://{tmp_path}/files")
    script = curl_block().replace("localhost:8000", relay.url.removeprefix("http://"))
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert '"status": "pending"' in out or '"status": "processing"' in out
    data_lines = [line for line in out.splitlines() if line.startswith("data:")]
    assert '"status":"completed"' in data_lines[-1]
    assert out.strip().endswith("204")
