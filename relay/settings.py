"""Configuration: one frozen `Settings`, built from the environment once, passed down.

Nothing else in Relay reads `os.environ`. A missing or malformed value raises
`SettingsError`, whose message is one line naming the variable.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Literal, cast
from urllib.parse import urlsplit

AuthMode = Literal["token", "jwt", "none"]
ProviderKind = Literal["kie", "sim"]
LogFormat = Literal["json", "console"]

KIE_BASE_URL = "https://api.kie.ai"
SECRET_FIELDS = frozenset(
    {"secret", "kie_api_key", "kie_webhook_hmac_key", "s3_secret_access_key", "jwt_secret"}
)
DEFAULT_RESULT_HOSTS = ("*.aiquickdraw.com", "*.redpandaai.co", "*.kie.ai")


class SettingsError(Exception):
    """A configuration problem; `str()` is one line that names the variable."""


@dataclass(frozen=True)
class Settings:
    redis_url: str = "memory://"
    storage_url: str = "file://./data/files"
    storage_public_url: str | None = None
    storage_fallback_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    # Hosts result files may be downloaded from: "host", "*.domain", or "http://host:port"
    # to allow plain http for that exact host (the simulator).
    result_hosts: tuple[str, ...] = DEFAULT_RESULT_HOSTS
    mirror: bool = True
    max_upload: int = 10 * 1024 * 1024
    max_download: int = 100 * 1024 * 1024  # videos, and the cap for every kind
    max_image_download: int = 40 * 1024 * 1024
    max_audio_download: int = 50 * 1024 * 1024
    public_url: str = "http://127.0.0.1:8000"
    provider: ProviderKind = "kie"
    kie_api_key: str = ""
    kie_base_url: str = KIE_BASE_URL
    kie_webhook_hmac_key: str | None = None
    secret: str = ""
    auth: AuthMode = "token"
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    cors_origins: tuple[str, ...] = ()
    sse_ping: float = 15.0
    sse_retry_ms: int = 3000
    sse_send_timeout: float = 30.0
    task_deadline: float = 900.0
    reconcile_after: float = 60.0
    reconcile_interval: float = 5.0
    reconcile_rate: float = 5.0
    kie_timeout: float = 15.0
    kie_retry_budget: float = 8.0
    token_ttl: float = 7 * 24 * 3600.0
    task_ttl: float = 30 * 24 * 3600.0
    max_body: int = 1024 * 1024
    read_timeout: float = 10.0
    rate_create: int = 30  # task creations per client per minute
    rate_callback: int = 120  # refused callbacks per client address per minute
    max_streams_per_client: int = 32
    max_tasks_per_stream: int = 50
    trusted_proxies: tuple[str, ...] = ("127.0.0.1",)
    redis_max_connections: int = 200
    log_format: LogFormat = "json"
    log_level: str = "INFO"
    # Set by `relay demo` only: a throwaway secret was generated, and start-up says so.
    demo: bool = field(default=False)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        demo: bool = False,
        overrides: Mapping[str, str] | None = None,
    ) -> Settings:
        """`env` defaults to the process environment; `overrides` win over it."""
        r = _Reader({**(os.environ if env is None else env), **(overrides or {})})
        settings = cls(
            redis_url=r.url("RELAY_REDIS_URL", "memory://", schemes=("memory", "redis", "rediss")),
            storage_url=r.url("RELAY_STORAGE_URL", "file://./data/files", schemes=("file", "s3")),
            storage_public_url=r.opt_url("RELAY_STORAGE_PUBLIC_URL"),
            storage_fallback_url=r.url("RELAY_STORAGE_FALLBACK_URL", "", schemes=("file", "s3")) or None,
            s3_endpoint_url=r.opt_url("RELAY_S3_ENDPOINT_URL"),
            s3_region=r.text("RELAY_S3_REGION", "us-east-1"),
            s3_access_key_id=r.text("RELAY_S3_ACCESS_KEY_ID", "") or None,
            s3_secret_access_key=r.text("RELAY_S3_SECRET_ACCESS_KEY", "") or None,
            result_hosts=r.items("RELAY_RESULT_HOSTS") or DEFAULT_RESULT_HOSTS,
            mirror=r.choice("RELAY_MIRROR", "on", ("on", "off")) == "on",
            max_upload=int(r.number("RELAY_MAX_UPLOAD", 10 * 1024 * 1024, low=1024)),
            max_download=int(r.number("RELAY_MAX_DOWNLOAD", 100 * 1024 * 1024, low=1024)),
            max_image_download=int(r.number("RELAY_MAX_IMAGE_DOWNLOAD", 40 * 1024 * 1024, low=1024)),
            max_audio_download=int(r.number("RELAY_MAX_AUDIO_DOWNLOAD", 50 * 1024 * 1024, low=1024)),
            public_url=r.url("RELAY_PUBLIC_URL", "", schemes=("http", "https")).rstrip("/"),
            provider=cast(ProviderKind, r.choice("RELAY_PROVIDER", "kie", ("kie", "sim"))),
            kie_api_key=r.text("KIE_API_KEY", ""),
            kie_base_url=r.url("KIE_BASE_URL", KIE_BASE_URL, schemes=("http", "https")).rstrip("/"),
            kie_webhook_hmac_key=r.text("KIE_WEBHOOK_HMAC_KEY", "") or None,
            secret=r.text("RELAY_SECRET", ""),
            auth=cast(AuthMode, r.choice("RELAY_AUTH", "token", ("token", "jwt", "none"))),
            jwt_secret=r.text("RELAY_JWT_SECRET", "") or None,
            jwt_public_key=r.text("RELAY_JWT_PUBLIC_KEY", "").replace("\\n", "\n") or None,
            jwt_audience=r.text("RELAY_JWT_AUDIENCE", "") or None,
            jwt_issuer=r.text("RELAY_JWT_ISSUER", "") or None,
            cors_origins=r.items("RELAY_CORS_ORIGINS"),
            sse_ping=r.number("RELAY_SSE_PING", 15.0, low=0.05),
            sse_send_timeout=r.number("RELAY_SSE_SEND_TIMEOUT", 30.0, low=0.1),
            task_deadline=r.number("RELAY_TASK_DEADLINE", 900.0, low=1),
            reconcile_after=r.number("RELAY_RECONCILE_AFTER", 60.0, low=0.1),
            reconcile_interval=r.number("RELAY_RECONCILE_INTERVAL", 5.0, low=0.05),
            reconcile_rate=r.number("RELAY_RECONCILE_RATE", 5.0, low=0.1),
            kie_timeout=r.number("KIE_TIMEOUT", 15.0, low=0.1),
            kie_retry_budget=r.number("KIE_RETRY_BUDGET", 8.0, low=0),
            token_ttl=r.number("RELAY_TOKEN_TTL", 7 * 24 * 3600.0, low=1),
            task_ttl=r.number("RELAY_TASK_TTL", 30 * 24 * 3600.0, low=60),
            max_body=int(r.number("RELAY_MAX_BODY", 1024 * 1024, low=1024)),
            read_timeout=r.number("RELAY_READ_TIMEOUT", 10.0, low=0.1),
            rate_create=int(r.number("RELAY_RATE_CREATE", 30, low=1)),
            rate_callback=int(r.number("RELAY_RATE_CALLBACK", 120, low=1)),
            max_streams_per_client=int(r.number("RELAY_MAX_STREAMS_PER_CLIENT", 32, low=1)),
            max_tasks_per_stream=int(r.number("RELAY_MAX_TASKS_PER_STREAM", 50, low=1)),
            trusted_proxies=r.items("RELAY_TRUSTED_PROXIES") or ("127.0.0.1",),
            redis_max_connections=int(r.number("RELAY_REDIS_MAX_CONNECTIONS", 200, low=2)),
            log_format=cast(LogFormat, r.choice("RELAY_LOG_FORMAT", "console" if demo else "json", ("json", "console"))),
            log_level=r.choice("RELAY_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            demo=demo,
        )
        return settings.validated()

    def validated(self) -> Settings:
        """The checks that need several values at once. Raises `SettingsError`."""
        if not self.public_url:
            raise SettingsError(
                "RELAY_PUBLIC_URL is required: the URL at which KIE can reach this service's callbacks"
            )
        if self.provider == "kie" and not self.kie_api_key:
            raise SettingsError("KIE_API_KEY is required when RELAY_PROVIDER=kie")
        if self.auth == "jwt" and not (self.jwt_secret or self.jwt_public_key):
            raise SettingsError("RELAY_JWT_SECRET or RELAY_JWT_PUBLIC_KEY is required when RELAY_AUTH=jwt")
        if self.jwt_secret and len(self.jwt_secret) < 32:
            raise SettingsError("RELAY_JWT_SECRET is too short: use at least 32 characters")
        if "*" in self.cors_origins and len(self.cors_origins) > 1:
            raise SettingsError("RELAY_CORS_ORIGINS: use either '*' alone or a list of origins")
        if not self.secret:
            if not self.demo:
                raise SettingsError(
                    "RELAY_SECRET is required: at least 32 random characters that sign task and callback tokens"
                )
        elif len(self.secret) < 32:
            raise SettingsError("RELAY_SECRET is too short: use at least 32 random characters")
        return self

    def with_demo_secret(self) -> Settings:
        return replace(self, secret=secrets.token_urlsafe(32)) if not self.secret else self

    def masked(self) -> dict[str, str]:
        """Every setting as text, secrets masked: safe to print or log."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS:
                out[f.name] = "(set)" if value else "(not set)"
            elif isinstance(value, str) and "://" in value:
                out[f.name] = mask_url(value)
            else:
                out[f.name] = str(value)
        return out


def mask_url(url: str) -> str:
    """A URL with any password replaced, for logs and `relay check`."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


class _Reader:
    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def text(self, name: str, default: str) -> str:
        return self.env.get(name, default).strip()

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in allowed:
            raise SettingsError(f"{name}={value!r} is not one of: {', '.join(allowed)}")
        return value

    def number(self, name: str, default: float, *, low: float) -> float:
        raw = self.env.get(name)
        if raw is None or not raw.strip():
            return float(default)
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number") from None
        if value < low:
            raise SettingsError(f"{name}={raw!r} must be at least {low}")
        return value

    def url(self, name: str, default: str, *, schemes: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if not value:
            return value
        scheme = urlsplit(value).scheme
        if scheme not in schemes:
            raise SettingsError(f"{name}={mask_url(value)!r} must start with one of: {', '.join(s + '://' for s in schemes)}")
        return value

    def opt_url(self, name: str) -> str | None:
        value = self.url(name, "", schemes=("http", "https"))
        return value.rstrip("/") or None

    def items(self, name: str) -> tuple[str, ...]:
        return tuple(v.strip() for v in self.text(name, "").split(",") if v.strip())
