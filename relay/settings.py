"""Configuration: one frozen `Settings`, built from the environment once, passed down.

Nothing else in Relay reads `os.environ`. Every missing or malformed value is found in
one pass: `SettingsError` lists them all, one line each, naming the variable and what a
valid value looks like.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Literal, cast

from relay.env import Reader, is_whsec, mask_url

AuthMode = Literal["token", "jwt", "none"]
ProviderKind = Literal["kie", "sim"]
LogFormat = Literal["json", "console"]

KIE_BASE_URL = "https://api.kie.ai"
SECRET_FIELDS = frozenset(
    {
        "secret", "kie_api_key", "kie_webhook_hmac_key", "s3_secret_access_key", "jwt_secret", "webhook_secrets",
        "replicate_api_token", "replicate_webhook_secret",
    }
)
# KIE's result hosts, and Replicate's (tests/fixtures/replicate/README.md).
DEFAULT_RESULT_HOSTS = ("*.aiquickdraw.com", "*.redpandaai.co", "*.kie.ai", "replicate.delivery", "*.replicate.delivery")
REPLICATE_BASE_URL = "https://api.replicate.com"
# Svix's schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (then failed).
DEFAULT_WEBHOOK_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
WebhookEvents = Literal["terminal", "all"]


class SettingsError(Exception):
    """Configuration problems: `problems` has one line per problem, each naming its
    variable; `str()` is all of them, one per line."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


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
    replicate_api_token: str = ""
    replicate_base_url: str = REPLICATE_BASE_URL
    replicate_webhook_secret: str | None = None  # else fetched from Replicate once
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
    # Outbound webhooks to the app's own backend (relay/webhooks/).
    webhook_url: str | None = None
    webhook_secrets: tuple[str, ...] = ()  # whsec_...; the first signs, all during a rotation
    webhook_hosts: tuple[str, ...] = ()  # where a per-task webhookUrl may point
    webhook_events: WebhookEvents = "terminal"
    webhook_schedule: tuple[float, ...] = DEFAULT_WEBHOOK_SCHEDULE
    webhook_timeout: float = 15.0
    # The routes existing front ends call (relay/legacy/); `relay demo` turns them on.
    legacy_routes: bool = False
    # Users' credits (relay/credits.py): needs RELAY_AUTH=jwt.
    credits: bool = False
    default_price: int = 1
    welcome_credits: int = 0
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
        """`env` defaults to the process environment; `overrides` win over it. Raises
        `SettingsError` listing every problem."""
        settings, problems = cls.read(env, demo=demo, overrides=overrides)
        if problems:
            raise SettingsError(problems)
        return settings

    @classmethod
    def read(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        demo: bool = False,
        overrides: Mapping[str, str] | None = None,
    ) -> tuple[Settings, list[str]]:
        """The settings with each bad value replaced by its default, and the problems:
        what `relay check` needs to test every link it still can."""
        r = Reader({**(os.environ if env is None else env), **(overrides or {})}, ENV_NAMES)
        settings = cls(
            redis_url=r.url("redis_url", "memory://", schemes=("memory", "redis", "rediss", "redis+sentinel", "redis+cluster")),
            storage_url=r.url("storage_url", "file://./data/files", schemes=("file", "s3")),
            storage_public_url=r.opt_url("storage_public_url"),
            storage_fallback_url=r.url("storage_fallback_url", "", schemes=("file", "s3")) or None,
            s3_endpoint_url=r.opt_url("s3_endpoint_url"),
            s3_region=r.text("s3_region", "us-east-1"),
            s3_access_key_id=r.text("s3_access_key_id", "") or None,
            s3_secret_access_key=r.text("s3_secret_access_key", "") or None,
            result_hosts=r.items("result_hosts") or DEFAULT_RESULT_HOSTS,
            mirror=r.choice("mirror", "on", ("on", "off")) == "on",
            max_upload=int(r.number("max_upload", 10 * 1024 * 1024, low=1024)),
            max_download=int(r.number("max_download", 100 * 1024 * 1024, low=1024)),
            max_image_download=int(r.number("max_image_download", 40 * 1024 * 1024, low=1024)),
            max_audio_download=int(r.number("max_audio_download", 50 * 1024 * 1024, low=1024)),
            public_url=r.url("public_url", "", schemes=("http", "https")).rstrip("/"),
            provider=cast(ProviderKind, r.choice("provider", "kie", ("kie", "sim"))),
            kie_api_key=r.text("kie_api_key", ""),
            kie_base_url=r.url("kie_base_url", KIE_BASE_URL, schemes=("http", "https")).rstrip("/"),
            kie_webhook_hmac_key=r.text("kie_webhook_hmac_key", "") or None,
            replicate_api_token=r.text("replicate_api_token", ""),
            replicate_base_url=r.url("replicate_base_url", REPLICATE_BASE_URL, schemes=("http", "https")).rstrip("/"),
            replicate_webhook_secret=r.text("replicate_webhook_secret", "") or None,
            secret=r.text("secret", ""),
            auth=cast(AuthMode, r.choice("auth", "token", ("token", "jwt", "none"))),
            jwt_secret=r.text("jwt_secret", "") or None,
            jwt_public_key=r.text("jwt_public_key", "").replace("\\n", "\n") or None,
            jwt_audience=r.text("jwt_audience", "") or None,
            jwt_issuer=r.text("jwt_issuer", "") or None,
            cors_origins=r.items("cors_origins"),
            sse_ping=r.number("sse_ping", 15.0, low=0.05),
            sse_send_timeout=r.number("sse_send_timeout", 30.0, low=0.1),
            task_deadline=r.number("task_deadline", 900.0, low=1),
            reconcile_after=r.number("reconcile_after", 60.0, low=0.1),
            reconcile_interval=r.number("reconcile_interval", 5.0, low=0.05),
            reconcile_rate=r.number("reconcile_rate", 5.0, low=0.1),
            kie_timeout=r.number("kie_timeout", 15.0, low=0.1),
            kie_retry_budget=r.number("kie_retry_budget", 8.0, low=0),
            token_ttl=r.number("token_ttl", 7 * 24 * 3600.0, low=1),
            task_ttl=r.number("task_ttl", 30 * 24 * 3600.0, low=60),
            max_body=int(r.number("max_body", 1024 * 1024, low=1024)),
            read_timeout=r.number("read_timeout", 10.0, low=0.1),
            rate_create=int(r.number("rate_create", 30, low=1)),
            rate_callback=int(r.number("rate_callback", 120, low=1)),
            max_streams_per_client=int(r.number("max_streams_per_client", 32, low=1)),
            max_tasks_per_stream=int(r.number("max_tasks_per_stream", 50, low=1)),
            trusted_proxies=r.items("trusted_proxies") or ("127.0.0.1",),
            redis_max_connections=int(r.number("redis_max_connections", 200, low=2)),
            log_format=cast(LogFormat, r.choice("log_format", "console" if demo else "json", ("json", "console"))),
            log_level=r.choice("log_level", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            webhook_url=r.opt_url("webhook_url"),
            webhook_secrets=r.items("webhook_secrets"),
            webhook_hosts=r.items("webhook_hosts"),
            webhook_events=cast(WebhookEvents, r.choice("webhook_events", "terminal", ("terminal", "all"))),
            webhook_schedule=r.delays("webhook_schedule", DEFAULT_WEBHOOK_SCHEDULE),
            webhook_timeout=r.number("webhook_timeout", 15.0, low=0.1),
            credits=r.choice("credits", "off", ("on", "off")) == "on",
            default_price=int(r.number("default_price", 1, low=0)),
            welcome_credits=int(r.number("welcome_credits", 0, low=0)),
            legacy_routes=r.choice("legacy_routes", "on" if demo else "off", ("on", "off")) == "on",
            demo=demo,
        )
        return settings, r.problems + settings.problems()

    def problems(self) -> list[str]:
        """The checks that need several values at once, one line per problem."""
        out = []
        if not self.public_url:
            out.append(
                "RELAY_PUBLIC_URL is required: the https URL at which KIE reaches this service's "
                "callbacks, e.g. https://relay.example.com"
            )
        if self.provider == "kie" and not self.kie_api_key:
            out.append("KIE_API_KEY is required when RELAY_PROVIDER=kie: the key from https://kie.ai/api-key")
        if self.auth == "jwt" and not (self.jwt_secret or self.jwt_public_key):
            out.append("RELAY_JWT_SECRET or RELAY_JWT_PUBLIC_KEY is required when RELAY_AUTH=jwt")
        if self.jwt_secret and len(self.jwt_secret) < 32:
            out.append("RELAY_JWT_SECRET is too short: use at least 32 characters")
        if "*" in self.cors_origins and len(self.cors_origins) > 1:
            out.append("RELAY_CORS_ORIGINS: use either '*' alone or a list of origins like https://app.example.com")
        if not self.secret:
            if not self.demo:
                out.append(
                    "RELAY_SECRET is required: at least 32 random characters that sign task and callback "
                    "tokens (e.g. the output of `openssl rand -base64 32`)"
                )
        elif len(self.secret) < 32:
            out.append("RELAY_SECRET is too short: use at least 32 random characters")
        if self.credits and self.auth != "jwt":
            out.append("RELAY_CREDITS=on needs RELAY_AUTH=jwt: credits belong to signed-in users")
        if (self.webhook_url or self.webhook_hosts) and not self.webhook_secrets:
            out.append(
                "RELAY_WEBHOOK_SECRET is required when RELAY_WEBHOOK_URL or RELAY_WEBHOOK_HOSTS is set: "
                "whsec_ followed by base64 of at least 24 random bytes (e.g. whsec_$(openssl rand -base64 32))"
            )
        for n, secret in enumerate(self.webhook_secrets, 1):
            if not is_whsec(secret):
                out.append(
                    f"RELAY_WEBHOOK_SECRET entry {n} is not whsec_ followed by base64 of at least 24 bytes"
                )
        return out

    def with_demo_secret(self) -> Settings:
        return replace(self, secret=secrets.token_urlsafe(32)) if not self.secret else self

    def masked(self) -> dict[str, str]:
        """Every setting as text, secrets masked, keyed by its environment variable: safe
        to print or log."""
        out: dict[str, str] = {}
        for f in fields(self):
            name = ENV_NAMES.get(f.name)
            if name is None:
                continue  # not set from the environment
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS:
                out[name] = "(set)" if value else "(not set)"
            elif isinstance(value, tuple):
                out[name] = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
            elif isinstance(value, str) and "://" in value:
                out[name] = mask_url(value)
            else:
                out[name] = str(value)
        return out


# The environment variable behind each setting: the one place these names are written.
# Errors and `relay check` speak in these names, which are what an operator sets.
ENV_NAMES: Mapping[str, str] = {
    "redis_url": "RELAY_REDIS_URL",
    "storage_url": "RELAY_STORAGE_URL",
    "storage_public_url": "RELAY_STORAGE_PUBLIC_URL",
    "storage_fallback_url": "RELAY_STORAGE_FALLBACK_URL",
    "result_hosts": "RELAY_RESULT_HOSTS",
    "mirror": "RELAY_MIRROR",
    "max_upload": "RELAY_MAX_UPLOAD",
    "max_download": "RELAY_MAX_DOWNLOAD",
    "max_image_download": "RELAY_MAX_IMAGE_DOWNLOAD",
    "max_audio_download": "RELAY_MAX_AUDIO_DOWNLOAD",
    "public_url": "RELAY_PUBLIC_URL",
    "provider": "RELAY_PROVIDER",
    "kie_api_key": "KIE_API_KEY",
    "kie_base_url": "KIE_BASE_URL",
    "kie_webhook_hmac_key": "KIE_WEBHOOK_HMAC_KEY",
    "replicate_api_token": "REPLICATE_API_TOKEN",
    "replicate_base_url": "REPLICATE_BASE_URL",
    "replicate_webhook_secret": "REPLICATE_WEBHOOK_SECRET",
    "secret": "RELAY_SECRET",
    "auth": "RELAY_AUTH",
    "jwt_secret": "RELAY_JWT_SECRET",
    "jwt_public_key": "RELAY_JWT_PUBLIC_KEY",
    "jwt_audience": "RELAY_JWT_AUDIENCE",
    "jwt_issuer": "RELAY_JWT_ISSUER",
    "cors_origins": "RELAY_CORS_ORIGINS",
    "sse_ping": "RELAY_SSE_PING",
    "sse_send_timeout": "RELAY_SSE_SEND_TIMEOUT",
    "task_deadline": "RELAY_TASK_DEADLINE",
    "reconcile_after": "RELAY_RECONCILE_AFTER",
    "reconcile_interval": "RELAY_RECONCILE_INTERVAL",
    "reconcile_rate": "RELAY_RECONCILE_RATE",
    "kie_timeout": "KIE_TIMEOUT",
    "kie_retry_budget": "KIE_RETRY_BUDGET",
    "token_ttl": "RELAY_TOKEN_TTL",
    "task_ttl": "RELAY_TASK_TTL",
    "max_body": "RELAY_MAX_BODY",
    "read_timeout": "RELAY_READ_TIMEOUT",
    "rate_create": "RELAY_RATE_CREATE",
    "rate_callback": "RELAY_RATE_CALLBACK",
    "max_streams_per_client": "RELAY_MAX_STREAMS_PER_CLIENT",
    "max_tasks_per_stream": "RELAY_MAX_TASKS_PER_STREAM",
    "trusted_proxies": "RELAY_TRUSTED_PROXIES",
    "redis_max_connections": "RELAY_REDIS_MAX_CONNECTIONS",
    "log_format": "RELAY_LOG_FORMAT",
    "log_level": "RELAY_LOG_LEVEL",
    "s3_endpoint_url": "RELAY_S3_ENDPOINT_URL",
    "s3_region": "RELAY_S3_REGION",
    "s3_access_key_id": "RELAY_S3_ACCESS_KEY_ID",
    "s3_secret_access_key": "RELAY_S3_SECRET_ACCESS_KEY",
    "webhook_url": "RELAY_WEBHOOK_URL",
    "webhook_secrets": "RELAY_WEBHOOK_SECRET",
    "webhook_hosts": "RELAY_WEBHOOK_HOSTS",
    "webhook_events": "RELAY_WEBHOOK_EVENTS",
    "webhook_schedule": "RELAY_WEBHOOK_SCHEDULE",
    "webhook_timeout": "RELAY_WEBHOOK_TIMEOUT",
    "legacy_routes": "RELAY_LEGACY_ROUTES",
    "credits": "RELAY_CREDITS",
    "default_price": "RELAY_DEFAULT_PRICE",
    "welcome_credits": "RELAY_WELCOME_CREDITS",
}
