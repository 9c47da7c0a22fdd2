"""A private nginx reverse proxy for the browser tests: Debian's /usr/sbin/nginx in the
foreground, with its own config, prefix, pid, logs and temp paths under a test directory,
listening on a free 127.0.0.1 port. It stands in for a CDN or load balancer: an idle
timeout (`proxy_read_timeout`) and, optionally, a proxy that buffers the stream."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.servers import HOST, free_port, stop_process

NGINX = "/usr/sbin/nginx"

TEMPLATE = """\
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log info;

events {{
    worker_connections 256;
}}

http {{
    # What the tests read: each request with the Last-Event-ID it carried.
    log_format relay '$request_method $uri $status last_event_id="$http_last_event_id" '
                     'time=$request_time';
    access_log {prefix}/logs/access.log relay;
    client_body_temp_path {prefix}/temp/client_body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    client_max_body_size 20m;
    gzip off;

    server {{
        listen {host}:{port};

        location / {{
            proxy_pass {upstream};
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_read_timeout {read_timeout};
            proxy_send_timeout {read_timeout};
{proxy}
        }}
    }}
}}
"""

# What SSE guides tell you to set, and what Relay's `X-Accel-Buffering: no` asks for:
# HTTP/1.1 with keep-alive to the upstream, no buffering, no cache.
STREAMING = """\
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_cache off;"""

# A proxy that holds the stream back, as CDNs and misconfigured proxies do: buffering on,
# buffers far larger than a few events, Relay's `X-Accel-Buffering: no` ignored, and the
# stream compressed. Checked with nginx 1.22.1: proxy_buffering on alone does not hold an
# SSE stream (nginx forwards each complete chunk of uvicorn's chunked body at once); with
# gzip on top, nothing reaches the browser, not even the headers, until the compressor's
# buffers fill or the stream ends. Honouring Relay's X-Accel-Buffering (no
# proxy_ignore_headers) or proxy_buffering off makes the same proxy stream again.
BUFFERING = """\
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
            proxy_ignore_headers X-Accel-Buffering;
            proxy_buffer_size 256k;
            proxy_buffers 8 256k;
            proxy_busy_buffers_size 512k;
            gzip on;
            gzip_types text/event-stream;
            gzip_min_length 0;"""


class Nginx:
    """`Nginx(workdir, upstream_url, read_timeout="3s", buffering=False).start()` ... `.stop()`."""

    def __init__(self, workdir: Path, upstream: str, *, read_timeout: str = "60s", buffering: bool = False):
        self.binary = NGINX if Path(NGINX).exists() else (shutil.which("nginx") or NGINX)
        self.prefix = workdir
        self.upstream = upstream.rstrip("/")
        self.read_timeout = read_timeout
        self.buffering = buffering
        self.port = free_port()
        self.conf = workdir / "nginx.conf"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def write_config(self) -> Path:
        for sub in ("logs", "temp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            TEMPLATE.format(
                prefix=self.prefix,
                host=HOST,
                port=self.port,
                upstream=self.upstream,
                read_timeout=self.read_timeout,
                proxy=BUFFERING if self.buffering else STREAMING,
            )
        )
        return self.conf

    def start(self, timeout: float = 10) -> Nginx:
        if not Path(self.binary).exists():
            raise RuntimeError(f"nginx is not installed ({self.binary}): apt-get install nginx-light")
        self.write_config()
        self._log = (self.prefix / "logs" / "stderr.log").open("ab")
        self.proc = subprocess.Popen(
            [self.binary, "-p", str(self.prefix), "-c", str(self.conf), "-e", "stderr"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with code {self.proc.returncode}: {self.log_text()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"nginx did not listen on {HOST}:{self.port} within {timeout}s: {self.log_text()}")

    def log_text(self) -> str:
        parts = []
        for name in ("stderr.log", "error.log"):
            path = self.prefix / "logs" / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def access_log(self) -> list[str]:
        path = self.prefix / "logs" / "access.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def stop(self) -> None:
        stop_process(self.proc, timeout=5)
        self.proc = None
        if hasattr(self, "_log"):
            self._log.close()

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
