"""The KIE AI client: the only module that speaks KIE's HTTP API.

KIE reports errors two ways (the body's `code` with HTTP 200, or the HTTP status with a
matching body) and sometimes answers with an HTML page from a gateway. Every answer is
checked both ways and turned into either a parsed body or a `ProviderError` that says in
plain words what went wrong.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from relay import metrics
from relay.catalogue import Catalogue, builtin
from relay.errors import ProviderError
from relay.httpclient import AsyncClient
from relay.models import ProviderReport
from relay.normalize import is_record_pending, normalize_status
from relay.providers import kie_callbacks
from relay.providers.base import CreateRequest, ProviderTask
from relay.providers.kie_errors import provider_error, retryable
from relay.providers.kie_families import (
    FAMILIES,
    LOOKUP_ORDER,
    create_body,
    derived_id,
    derived_query,
    family_of,
    recorded_request,
)
from relay.retry import Backoff, retry

log = logging.getLogger("relay.kie")

DOWNLOAD_URL = "/api/v1/common/download-url"
MAX_WAIT = 4.0  # the longest wait between two tries, whatever KIE's Retry-After says
OFFICIAL_BASE_URL = "https://api.kie.ai"
# Hosts of every result URL in KIE's recorded answers (tests/fixtures/kie/*-real*.json,
# *-apicity.json): images, video and audio alike.
REAL_RESULT_LOCATIONS = ("https://tempfile.aiquickdraw.com/", "https://file.aiquickdraw.com/")

class KieClient:
    name = "kie"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 15.0,
        retry_budget: float = 8.0,
        transport: httpx.AsyncBaseTransport | None = None,
        catalogue: Catalogue | None = None,
        webhook_hmac_key: str | None = None,
    ):
        self._catalogue = catalogue or builtin()
        self._hmac_key = webhook_hmac_key
        self._http = AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=5.0),
            transport=transport,
        )
        self._retry_budget = retry_budget

    async def create(self, request: CreateRequest) -> str:
        spec = self._catalogue.get(request.model)
        family = FAMILIES[spec.family]
        body = create_body(spec, request)
        if family.create_method == "GET":
            answer = await self._call("GET", family.create, params=body, idempotent=False)
        else:
            answer = await self._call("POST", family.create, json=body, idempotent=False)
        if family.derived and request.parent_task_id:
            # No id of its own (1080p, 4K of an earlier video): named after its parent.
            return derived_id(family, request)
        data = answer.get("data")
        task_id = data.get("taskId") if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise ProviderError(
                "KIE accepted the task but returned no data.taskId", code="provider_bad_response"
            )
        return task_id

    async def status(self, task_id: str, model: str) -> ProviderReport:
        family = family_of(model, self._catalogue)
        query = derived_query(family, task_id) if family.derived else {"taskId": task_id}
        if family.status_method == "POST":
            body = await self._call("POST", family.status, json=query, idempotent=True)
        else:
            body = await self._call("GET", family.status, params=query, idempotent=True)
        report = normalize_status(body, family=family.shape, task_id=query["taskId"])
        return dataclasses.replace(report, task_id=task_id)

    async def describe(self, task_id: str) -> ProviderTask | None:
        # Which family a lost task belonged to is unknown: ask each status endpoint.
        for name in LOOKUP_ORDER:
            family = FAMILIES[name]
            body = await self._call("GET", family.status, params={"taskId": task_id}, idempotent=True)
            data = body.get("data")
            if isinstance(data, dict):
                report = normalize_status(body, family=family.shape, task_id=task_id)
                return recorded_request(data, family.shape, self._catalogue, report)
        return None

    def result_locations(self) -> tuple[str, ...]:
        if str(self._http.base_url).rstrip("/") == OFFICIAL_BASE_URL:
            return REAL_RESULT_LOCATIONS
        # Anything else speaking KIE's API (the simulator) serves results itself.
        return (f"{str(self._http.base_url).rstrip('/')}/files/",)

    async def fresh_url(self, url: str) -> str | None:
        """KIE's download-url: a new 20-minute link for a KIE result URL (422 for others)."""
        try:
            body = await self._call("POST", DOWNLOAD_URL, json={"url": url}, idempotent=True)
        except ProviderError as exc:
            log.info("KIE gave no fresh link: %s", exc.message)
            return None
        data = body.get("data")
        return data if isinstance(data, str) and data.startswith(("https://", "http://")) else None

    # `/api/callback` is the path older front ends' KIE set-ups already send callbacks to.
    callback_paths: tuple[str, ...] = ("/api/callbacks/kie", "/api/callbacks/kie/", "/api/callback", "/api/callback/")

    def callback_url(self, public_url: str, token: str) -> str:
        return f"{public_url}/api/callbacks/kie?token={token}"

    async def verify_callback(self, headers: Mapping[str, str], raw: bytes, payload: dict[str, Any]) -> str | None:
        kie_callbacks.verify(self._hmac_key, headers, payload)
        return None  # KIE sends no delivery id: duplicates are judged by the task's version

    def read_callback(self, payload: dict[str, Any]) -> ProviderReport:
        return kie_callbacks.read(payload)

    async def cancel(self, task_id: str, model: str) -> bool:
        return False  # KIE has no cancel endpoint (KIE-API.md): the task runs to its end

    async def credits(self) -> float:
        body = await self._call("GET", "/api/v1/chat/credit", idempotent=True)
        data = body.get("data")
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise ProviderError("KIE's credit answer has no numeric data", code="provider_bad_response")
        return float(data)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, *, idempotent: bool, **kwargs: Any) -> dict[str, Any]:
        """One KIE request with bounded retries (exponential backoff, jitter).

        A create is retried only when KIE certainly did not accept it (connection refused,
        429, 5xx): a read timeout might mean it did, and a second create would pay twice.
        """

        def worth_retrying(exc: Exception) -> bool:
            return isinstance(exc, _Retryable) or (idempotent and isinstance(exc, httpx.TimeoutException))

        def wait_hint(exc: Exception) -> float | None:
            if isinstance(exc, _Retryable):
                return min(exc.retry_after, MAX_WAIT) if exc.retry_after else None
            return 0.0  # a timeout already waited

        def note(exc: Exception, wait: float) -> None:
            reason = exc.final.message if isinstance(exc, _Retryable) else type(exc).__name__
            log.warning("KIE %s %s: %s; retrying in %.2fs", method, path, reason, wait)

        try:
            return await retry(
                lambda: self._once(method, path, **kwargs),
                should_retry=worth_retrying,
                backoff=Backoff(0.25, MAX_WAIT),
                attempts=6,
                budget=self._retry_budget,
                wait_hint=wait_hint,
                on_retry=note,
            )
        except _Retryable as exc:
            raise exc.final from None
        except httpx.TimeoutException as exc:
            raise ProviderError(
                f"KIE did not answer in time ({type(exc).__name__})", status=504, code="provider_timeout"
            ) from None

    async def _once(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _Retryable(
                ProviderError(
                    f"could not connect to KIE at {self._http.base_url}: {exc}",
                    status=502,
                    code="provider_unreachable",
                )
            ) from None
        except httpx.TimeoutException:
            raise
        except httpx.HTTPError as exc:
            raise _Retryable(
                ProviderError(f"KIE request failed: {type(exc).__name__}", code="provider_unreachable")
            ) from None
        return _check(response)


class _Retryable(Exception):
    def __init__(self, final: ProviderError, retry_after: float | None = None):
        super().__init__(final.message)
        self.final = final
        self.retry_after = retry_after


def _check(response: httpx.Response) -> dict[str, Any]:
    """Parse and judge one KIE answer: the body's `code` and the HTTP status both count."""
    http = response.status_code
    text = response.content.lstrip()[:1]
    if text == b"<" or "html" in response.headers.get("content-type", ""):
        metrics.KIE_ERRORS.labels("html").inc()
        error = ProviderError(
            f"KIE answered with HTML, status {http} (a gateway or error page, not the API)",
            code="provider_bad_response",
        )
        if http >= 500 or http == 429:
            raise _Retryable(error)
        raise error
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise ProviderError(
            f"KIE answered with a body that is not JSON, status {http}: {response.content[:60]!r}",
            code="provider_bad_response",
        ) from None
    if not isinstance(body, dict):
        raise ProviderError(f"KIE answered with JSON that is not an object, status {http}", code="provider_bad_response")
    code = body.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        code = http
    message = str(body.get("msg") or body.get("message") or "").strip() or "no message"
    if code == 200 and 200 <= http < 300:
        return body
    if is_record_pending(code, message):
        return body  # not yet visible: the caller treats it as pending
    log.warning("KIE refused a request: code %s (HTTP %s): %s", code, http, message)
    metrics.KIE_ERRORS.labels(str(code)).inc()
    raise _error_for(code, message, response)


def _error_for(code: int, message: str, response: httpx.Response) -> Exception:
    if not retryable(code, message):
        return provider_error(code, message)
    retry_after = _retry_after(response)
    final = provider_error(code, f"{message} (still failing after retries)",
                           headers={"Retry-After": str(int(retry_after or 10))})
    return _Retryable(final, retry_after)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return min(float(value), 30.0) if value.replace(".", "", 1).isdigit() else None
