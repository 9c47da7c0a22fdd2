"""deploy/nginx.conf, filled in for loopback: the file operators use is the file tests run.

The load balancer's port is chosen at construction, so its URL is known before anything
else starts (Relay instances need it as RELAY_PUBLIC_URL); the upstream ports can be given
later, to `render` or `start`, once the instances are up:

    lb = LoadBalancer(tmp_path / "nginx")
    relays = [start_relay(redis_url, RELAY_PUBLIC_URL=lb.url) for _ in range(2)]
    lb.start([r.port for r in relays])
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

from tests.servers import HOST, free_port, stop_process

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"


def nginx_binary() -> str:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise RuntimeError("nginx is not installed: run `bash scripts/test.sh`")
    return binary


def render(prefix: Path, listen_port: int, upstream_ports: list[int]) -> Path:
    if not upstream_ports:
        raise ValueError("an upstream block needs at least one server")
    prefix.mkdir(parents=True, exist_ok=True)
    text = TEMPLATE.read_text()
    placeholders = ("{{prefix}}", "{{listen}}", "{{upstreams}}")
    missing = [p for p in placeholders if p not in text]
    if missing:
        raise ValueError(f"{TEMPLATE} lost its placeholder(s) {missing}")
    text = text.replace("{{prefix}}", str(prefix)).replace("{{listen}}", f"{HOST}:{listen_port}")
    text = text.replace(
        "{{upstreams}}",
        "\n        ".join(f"server {HOST}:{p} max_fails=1 fail_timeout=2s;" for p in upstream_ports),
    )
    # Tests run as root in a sandbox; the template's worker count suits a real machine.
    text = text.replace("worker_processes auto;", "worker_processes 1;\ndaemon off;\nuser root;")
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    return conf


class LoadBalancer:
    """Debian's nginx running deploy/nginx.conf on a free loopback port."""

    def __init__(self, prefix: Path, upstream_ports: list[int] | None = None):
        self.port = free_port()
        self.prefix = prefix
        self.conf = prefix / "nginx.conf"
        self.upstream_ports: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        if upstream_ports is not None:
            self.render(upstream_ports)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def render(self, upstream_ports: list[int]) -> Path:
        self.upstream_ports = list(upstream_ports)
        self.conf = render(self.prefix, self.port, self.upstream_ports)
        return self.conf

    def test_config(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [nginx_binary(), "-t", "-p", str(self.prefix), "-c", str(self.conf)], capture_output=True, text=True, timeout=30
        )

    def start(self, upstream_ports: list[int] | None = None) -> LoadBalancer:
        if upstream_ports is not None:
            self.render(upstream_ports)
        if not self.upstream_ports:
            raise ValueError("give the upstream ports (to the constructor, render or start) before starting nginx")
        self._stderr = (self.prefix / "stderr.log").open("ab")
        self.proc = subprocess.Popen(
            [nginx_binary(), "-p", str(self.prefix), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL, stderr=self._stderr,
        )
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise RuntimeError(f"nginx exited with code {code}: {self.log_text()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"nginx did not listen on port {self.port} within 10s: {self.log_text()}") from None
                time.sleep(0.05)
        return self

    def log_text(self) -> str:
        parts = []
        for name in ("stderr.log", "error.log"):
            path = self.prefix / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> LoadBalancer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
