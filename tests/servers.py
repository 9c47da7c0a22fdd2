"""Real servers for the tests, each on a free loopback port: redis-server, the KIE
simulator and Relay itself (uvicorn in a subprocess, so it can be killed like in production)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

HOST = "127.0.0.1"
SECRET = "test-secret-0123456789-abcdefghijklmnop"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
    """Stop a server politely, then firmly; its exit code (None if it was not running)."""
    if proc is None or proc.poll() is not None:
        return None
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def wait_until(predicate: object, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except Exception:
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class RedisServer:
    """A private redis-server with append-only persistence (what production must run)."""

    def __init__(self, workdir: Path, *, appendonly: bool = True):
        self.port = free_port()
        self.workdir = workdir
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `bash scripts/test.sh`")
        args = [
            binary, "--port", str(self.port), "--bind", HOST, "--dir", str(self.workdir),
            "--save", "", "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning",
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.ping, 10, f"redis-server on port {self.port}")
        return self

    def ping(self) -> bool:
        client = redis.Redis(host=HOST, port=self.port, socket_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, socket_timeout=5)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


class AppProcess:
    """`relay serve` or `relay kie-sim` in a subprocess on a free port."""

    def __init__(self, args: list[str], env: dict[str, str], *, ready_path: str, log_path: Path):
        self.port = free_port()
        self.args = args
        self.env = env
        self.ready_path = ready_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> AppProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "KIE_"))}
        env.update(self.env)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", *self.args, "--host", HOST, "--port", str(self.port)],
            env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, 20, f"{self.args[0]} on port {self.port} (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.args[0]} exited early; see {self.log_path}")
        return httpx.get(self.url + self.ready_path, timeout=1).status_code == 200

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        code = stop_process(self.proc, sig, timeout)
        self.proc = None
        if hasattr(self, "_log"):
            self._log.close()
        return code


def relay_env(*, redis_url: str, sim_url: str, public_url: str, **extra: str) -> dict[str, str]:
    return {
        "RELAY_REDIS_URL": redis_url,
        "RELAY_PROVIDER": "sim",
        "KIE_BASE_URL": sim_url,
        "KIE_API_KEY": "sim-key",
        "RELAY_PUBLIC_URL": public_url,
        "RELAY_SECRET": SECRET,
        "RELAY_LOG_FORMAT": "json",
        # The simulator serves result images over http on loopback: allow exactly it.
        "RELAY_RESULT_HOSTS": sim_url,
        **extra,
    }
