"""deploy/nginx.conf, filled in for loopback: the file operators use is the file tests run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.servers import HOST, free_port, wait_until

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"


def nginx_binary() -> str:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise RuntimeError("nginx is not installed: run `bash scripts/test.sh`")
    return binary


def render(prefix: Path, listen_port: int, upstream_ports: list[int]) -> Path:
    prefix.mkdir(parents=True, exist_ok=True)
    text = TEMPLATE.read_text()
    text = text.replace("{{prefix}}", str(prefix)).replace("{{listen}}", f"{HOST}:{listen_port}")
    text = text.replace("{{upstreams}}", "\n        ".join(f"server {HOST}:{p} max_fails=1 fail_timeout=2s;" for p in upstream_ports))
    # Tests run as root in a sandbox; the template's worker count suits a real machine.
    text = text.replace("worker_processes auto;", "worker_processes 1;\ndaemon off;\nuser root;")
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    return conf


class LoadBalancer:
    def __init__(self, prefix: Path, upstream_ports: list[int]):
        self.port = free_port()
        self.conf = render(prefix, self.port, upstream_ports)
        self.prefix = prefix
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def test_config(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [nginx_binary(), "-t", "-p", str(self.prefix), "-c", str(self.conf)], capture_output=True, text=True, timeout=30
        )

    def start(self) -> LoadBalancer:
        self.proc = subprocess.Popen(
            [nginx_binary(), "-p", str(self.prefix), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL, stderr=(self.prefix / "stderr.log").open("wb"),
        )
        import socket

        def listening() -> bool:
            with socket.create_connection((HOST, self.port), timeout=0.5):
                return True

        wait_until(listening, 10, f"nginx on port {self.port}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None
