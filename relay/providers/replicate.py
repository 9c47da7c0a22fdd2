"""Replicate (api.replicate.com): predictions created with our webhook, webhooks verified
the Standard Webhooks way, predictions read and cancelled.

Shapes and rules come from Replicate's recorded traffic and documentation
(tests/fixtures/replicate/README.md): a create answers 201 with the prediction; statuses
are starting, processing, succeeded, failed, canceled (and aborted); `output` is a URL,
a list of URLs, or null; errors are RFC 7807 bodies (`detail`, `status`, `title`); a
webhook POSTs the prediction itself with `webhook-id`, `webhook-timestamp` and
`webhook-signature` over `id.timestamp.body`, keyed by the account's `whsec_` secret
(`GET /v1/webhooks/default/secret`). API outputs are deleted after an hour, so the
mirror copies them at once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from relay.catalogue import Catalogue, ModelSpec
from relay.errors import BadRequest, InvalidPayload, ProviderError, Unauthorized
from relay.httpclient import AsyncClient
from relay.models import ProviderReport, ProviderState, TaskError
from relay.providers.base import CreateRequest, ProviderTask
from relay.retry import Backoff, retry

log = logging.getLogger("relay.replicate")

OFFICIAL_BASE_URL = "https://api.replicate.com"
RESULT_HOSTS = ("replicate.delivery", "*.replicate.delivery")
# Replicate sends `start` and `completed` always when asked; `output`/`logs` are throttled
# partial results we would only overwrite.
EVENTS = ["start", "completed"]
_STATES = {
    "starting": ProviderState.PENDING,
    "processing": ProviderState.RUNNING,
    "succeeded": ProviderState.SUCCEEDED,
    "failed": ProviderState.FAILED,
    "canceled": ProviderState.FAILED,
    "aborted": ProviderState.FAILED,
}


def outputs(value: Any) -> tuple[str, ...]:
    """`output` as Replicate gives it (a URL, a list of URLs, null) -> the result URLs."""
    items = value if isinstance(value, list) else [value]
    return tuple(v for v in items if isinstance(v, str) and v.startswith(("https://", "http://")))


def normalize_prediction(body: Any) -> ProviderReport:
    """A prediction object (create/get answers and webhook bodies) -> ProviderReport."""
    if not isinstance(body, dict):
        raise InvalidPayload("a Replicate prediction must be a JSON object")
    pid, status = body.get("id"), body.get("status")
    if not isinstance(pid, str) or not pid:
        raise InvalidPayload("the prediction has no id")
    state = _STATES.get(status) if isinstance(status, str) else None
    if state is None:
        raise InvalidPayload(f"unknown prediction status {str(status)[:40]!r}")
    if state is ProviderState.SUCCEEDED:
        urls = outputs(body.get("output"))
        if not urls:
            error = TaskError("no_output", "the prediction succeeded without any output URL")
            return ProviderReport(pid, ProviderState.FAILED, "replicate", error=error)
        return ProviderReport(pid, state, "replicate", result_urls=urls)
    if state is ProviderState.FAILED:
        if status == "failed":
            error = TaskError("provider_failed", str(body.get("error") or "the prediction failed")[:500])
        else:
            error = TaskError("cancelled", f"the prediction was {status} at Replicate")
        return ProviderReport(pid, state, "replicate", error=error)
    return ProviderReport(pid, state, "replicate")


def _input(spec: ModelSpec, request: CreateRequest) -> dict[str, Any]:
    body: dict[str, Any] = {**spec.fixed, **request.options}
    if request.prompt:
        body["prompt"] = request.prompt
    if request.image_urls and spec.images is not None:
        body.update(spec.with_images)
        images = list(request.image_urls)
        body[spec.images.field] = images if spec.images.shape == "list" else images[0]
    return body


def _problem(response: httpx.Response) -> str:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return f"HTTP {response.status_code}"
    if not isinstance(body, dict):
        return f"HTTP {response.status_code}"
    parts = [str(body.get(k)) for k in ("title", "detail") if body.get(k)]
    return ": ".join(parts) or f"HTTP {response.status_code}"


class _Retryable(Exception):
    def __init__(self, final: ProviderError, retry_after: float | None = None):
        super().__init__(final.message)
        self.final = final
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


class ReplicateClient:
    name = "replicate"
    callback_paths: tuple[str, ...] = ("/api/callbacks/replicate", "/api/callbacks/replicate/")

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        catalogue: Catalogue,
        webhook_secret: str | None = None,
        timeout: float = 15.0,
        retry_budget: float = 8.0,
    ):
        self._catalogue = catalogue
        self._secret = webhook_secret
        self._retry_budget = retry_budget
        self._http = AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=5.0),
        )

    def callback_url(self, public_url: str, token: str) -> str:
        return f"{public_url}/api/callbacks/replicate?token={quote(token)}"

    async def create(self, request: CreateRequest) -> str:
        spec = self._catalogue.get(request.model)
        body = {
            "input": _input(spec, request),
            "webhook": request.callback_url,
            "webhook_events_filter": EVENTS,
        }
        owner_name, _, version = spec.upstream.partition(":")
        if version:
            answer = await self._call("POST", "/v1/predictions", idempotent=False, json={**body, "version": version})
        else:
            answer = await self._call("POST", f"/v1/models/{owner_name}/predictions", idempotent=False, json=body)
        pid = answer.get("id")
        if not isinstance(pid, str) or not pid:
            raise ProviderError("Replicate accepted the prediction but returned no id", code="provider_bad_response")
        return pid

    async def status(self, task_id: str, model: str) -> ProviderReport:
        return normalize_prediction(await self._call("GET", f"/v1/predictions/{quote(task_id)}", idempotent=True))

    async def describe(self, task_id: str) -> ProviderTask | None:
        try:
            body = await self._call("GET", f"/v1/predictions/{quote(task_id)}", idempotent=True)
        except ProviderError as exc:
            if exc.status == 404:
                return None
            raise
        raw_input = body.get("input")
        if not isinstance(raw_input, dict):
            raw_input = {}
        created = body.get("created_at")
        model = str(body.get("model") or "")
        spec = next((s for s in self._catalogue.models.values() if s.upstream.split(":")[0] == model), None)
        images = raw_input.get(spec.images.field) if spec and spec.images else None
        return ProviderTask(
            model=spec.id if spec else model,
            prompt=str(raw_input.get("prompt") or ""),
            image_urls=tuple(images if isinstance(images, list) else [images] if isinstance(images, str) else []),
            callback_url=body.get("webhook") if isinstance(body.get("webhook"), str) else None,
            created_at=datetime.fromisoformat(created.replace("Z", "+00:00")) if isinstance(created, str) else None,
            report=normalize_prediction(body),
            provider=self.name,
        )

    async def cancel(self, task_id: str, model: str) -> bool:
        await self._call("POST", f"/v1/predictions/{quote(task_id)}/cancel", idempotent=True)
        return True

    async def credits(self) -> float:
        raise ProviderError("Replicate has no credit balance API", status=501, code="not_supported")

    def result_locations(self) -> tuple[str, ...]:
        return ()

    async def fresh_url(self, url: str) -> str | None:
        return None  # outputs are gone after an hour; there is no way to a new link

    async def verify_callback(self, headers: Mapping[str, str], raw: bytes, payload: dict[str, Any]) -> str:
        """Check the Standard Webhooks signature and timestamp (5 minutes either way);
        return the delivery's `webhook-id` (a replay of it changes nothing)."""
        secret = self._secret or await self._default_secret()
        wanted = {k: headers.get(k, "") for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
        try:
            Webhook(secret).verify(raw, wanted, json_parse=False)
        except WebhookVerificationError as exc:
            text = str(exc)
            code = "stale_signature" if "too old" in text or "too new" in text else "invalid_signature"
            raise Unauthorized(f"the Replicate webhook does not verify: {text}", code=code) from None
        return wanted["webhook-id"]

    def read_callback(self, payload: dict[str, Any]) -> ProviderReport:
        return normalize_prediction(payload)

    async def _default_secret(self) -> str:
        body = await self._call("GET", "/v1/webhooks/default/secret", idempotent=True)
        key = body.get("key")
        if not isinstance(key, str) or not key.startswith("whsec_"):
            raise ProviderError("Replicate's default webhook secret answer has no whsec_ key", code="provider_bad_response")
        self._secret = key  # one per account: Replicate's docs say to cache it
        return key

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, *, idempotent: bool, **kwargs: Any) -> dict[str, Any]:
        """One request, retried on 429/5xx/refused connections (a create only when it
        certainly did not arrive: a timeout may have created it)."""

        def worth_retrying(exc: Exception) -> bool:
            return isinstance(exc, _Retryable) or (idempotent and isinstance(exc, httpx.TimeoutException))

        def wait_hint(exc: Exception) -> float | None:
            return exc.retry_after if isinstance(exc, _Retryable) else 0.0

        try:
            return await retry(
                lambda: self._once(method, path, **kwargs),
                should_retry=worth_retrying,
                backoff=Backoff(0.25, 5.0),
                attempts=6,
                budget=self._retry_budget,
                wait_hint=wait_hint,
            )
        except _Retryable as exc:
            raise exc.final from None
        except httpx.TimeoutException as exc:
            raise ProviderError(
                f"Replicate did not answer in time ({type(exc).__name__})", status=504, code="provider_timeout"
            ) from None

    async def _once(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise
        except httpx.HTTPError as exc:
            raise _Retryable(
                ProviderError(f"could not reach Replicate: {type(exc).__name__}", status=502, code="provider_unreachable")
            ) from None
        status = response.status_code
        if 200 <= status < 300:
            try:
                body = orjson.loads(response.content)
            except orjson.JSONDecodeError:
                raise ProviderError(f"Replicate answered {status} with a body that is not JSON", code="provider_bad_response") from None
            if not isinstance(body, dict):
                raise ProviderError("Replicate answered with JSON that is not an object", code="provider_bad_response")
            return body
        why = _problem(response)
        log.warning("Replicate refused %s %s: HTTP %d %s", method, path, status, why)
        if status == 429 or status >= 500:
            final = ProviderError(f"Replicate is busy or failing (HTTP {status}: {why})", status=503,
                                  code="provider_unavailable", headers={"Retry-After": "10"})
            raise _Retryable(final, _retry_after(response))
        if status == 401:
            raise ProviderError(f"Replicate refused the API token: {why}", status=502, code="provider_auth_failed")
        if status == 402:
            raise ProviderError(f"the Replicate account is out of credit: {why}", status=402, code="provider_out_of_credits")
        if status == 404:
            raise ProviderError(f"Replicate has no such resource: {why}", status=404, code="provider_not_found")
        if status == 422:
            raise BadRequest(f"Replicate refused the input: {why}", code="invalid_request")
        raise ProviderError(f"Replicate refused the request: HTTP {status} {why}")
