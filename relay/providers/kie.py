"""The KIE AI client: the only module that speaks KIE's HTTP API.

KIE reports errors two ways (the body's `code` with HTTP 200, or the HTTP status with a
matching body) and sometimes answers with an HTML page from a gateway. Every answer is
checked both ways and turned into either a parsed body or a `ProviderError` that says in
plain words what went wrong.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from relay import metrics
from relay.errors import ProviderError
from relay.models import ProviderReport
from relay.normalize import normalize_status
from relay.providers.base import CreateRequest, ProviderTask

log = logging.getLogger("relay.kie")

# family -> (create path, status path)
FAMILIES: dict[str, tuple[str, str]] = {
    "jobs": ("/api/v1/jobs/createTask", "/api/v1/jobs/recordInfo"),
    "4o": ("/api/v1/gpt4o-image/generate", "/api/v1/gpt4o-image/record-info"),
    "flux": ("/api/v1/flux/kontext/generate", "/api/v1/flux/kontext/record-info"),
}

# Answers after which a create was certainly not accepted, so retrying cannot pay twice.
RETRYABLE_CODES = frozenset({429, 455, 500, 502, 503, 504, 550})


def family_of(model: str) -> str:
    name = model.lower()
    if name in ("gpt-4o-image", "gpt4o-image", "4o-image", "4o"):
        return "4o"
    if name.startswith("flux-kontext"):
        return "flux"
    return "jobs"


def create_body(request: CreateRequest) -> dict[str, Any]:
    """The create request in the shape the model's family expects."""
    family = family_of(request.model)
    opts = dict(request.options)
    if family == "4o":
        body: dict[str, Any] = {"prompt": request.prompt, "size": opts.pop("size", "1:1"), **opts}
        if request.image_urls:
            body["filesUrl"] = list(request.image_urls)
    elif family == "flux":
        body = {"prompt": request.prompt, "model": request.model, **opts}
        if request.image_urls:
            body["inputImage"] = request.image_urls[0]
    else:
        inputs: dict[str, Any] = {"prompt": request.prompt, **opts}
        if request.image_urls:
            inputs["image_urls"] = list(request.image_urls)
        body = {"model": request.model, "input": inputs}
    body["callBackUrl"] = request.callback_url
    return body


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
    ):
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=5.0),
            transport=transport,
        )
        self._retry_budget = retry_budget

    async def create(self, request: CreateRequest) -> str:
        path = FAMILIES[family_of(request.model)][0]
        body = await self._call("POST", path, json=create_body(request), idempotent=False)
        data = body.get("data")
        task_id = data.get("taskId") if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise ProviderError(
                "KIE accepted the task but returned no data.taskId", code="provider_bad_response"
            )
        return task_id

    async def status(self, task_id: str, model: str) -> ProviderReport:
        family = family_of(model)
        body = await self._call("GET", FAMILIES[family][1], params={"taskId": task_id}, idempotent=True)
        return normalize_status(body, family=family, task_id=task_id)

    async def describe(self, task_id: str) -> ProviderTask | None:
        # Which family a lost task belonged to is unknown: ask each status endpoint.
        for family, (_, path) in FAMILIES.items():
            body = await self._call("GET", path, params={"taskId": task_id}, idempotent=True)
            if isinstance(body.get("data"), dict):
                return describe_record(body, family=family, task_id=task_id)
        return None

    async def credits(self) -> float:
        body = await self._call("GET", "/api/v1/chat/credit", idempotent=True)
        data = body.get("data")
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise ProviderError("KIE's credit answer has no numeric data", code="provider_bad_response")
        return float(data)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, *, idempotent: bool, **kwargs: Any) -> dict[str, Any]:
        """One KIE request with bounded retries (exponential backoff, full jitter).

        A create is retried only when KIE certainly did not accept it (connection refused,
        429, 5xx): a read timeout might mean it did, and a second create would pay twice.
        """
        deadline = time.monotonic() + self._retry_budget
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._once(method, path, **kwargs)
            except _Retryable as exc:
                wait = min(exc.retry_after or random.uniform(0, 0.25 * 2**attempt), 4.0)
                if time.monotonic() + wait >= deadline or attempt >= 6:
                    raise exc.final from None
                log.warning("KIE %s %s: %s; retrying in %.2fs", method, path, exc.final.message, wait)
                await asyncio.sleep(wait)
            except httpx.TimeoutException as exc:
                error = ProviderError(
                    f"KIE did not answer in time ({type(exc).__name__})", status=504, code="provider_timeout"
                )
                if not idempotent or time.monotonic() >= deadline or attempt >= 6:
                    raise error from None

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


def describe_record(body: dict[str, Any], *, family: str, task_id: str) -> ProviderTask:
    """A status answer's copy of the create request (`param` / `paramJson`, a JSON string)
    plus the task's state."""
    data: dict[str, Any] = body["data"]
    raw = data.get("param") or data.get("paramJson") or "{}"
    try:
        param = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    except orjson.JSONDecodeError:
        param = {}
    if not isinstance(param, dict):
        param = {}
    inputs = param.get("input") if isinstance(param.get("input"), dict) else param
    assert isinstance(inputs, dict)
    urls = inputs.get("image_urls") or inputs.get("filesUrl") or ([inputs["inputImage"]] if inputs.get("inputImage") else [])
    default_model = {"4o": "gpt-4o-image", "flux": "flux-kontext-pro"}.get(family, "")
    created = data.get("createTime")
    return ProviderTask(
        model=str(param.get("model") or data.get("model") or default_model),
        prompt=str(inputs.get("prompt") or ""),
        image_urls=tuple(u for u in urls if isinstance(u, str)) if isinstance(urls, list) else (),
        callback_url=param.get("callBackUrl") if isinstance(param.get("callBackUrl"), str) else None,
        created_at=datetime.fromtimestamp(created / 1000, UTC) if isinstance(created, int | float) else None,
        report=normalize_status(body, family=family, task_id=task_id),
    )


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
    if code == 422 and "recordinfo is null" in message.lower():
        return body  # not yet visible: the caller treats it as pending
    log.warning("KIE refused a request: code %s (HTTP %s): %s", code, http, message)
    metrics.KIE_ERRORS.labels(str(code)).inc()
    raise _error_for(code, message, response)


def _error_for(code: int, message: str, response: httpx.Response) -> Exception:
    said = f"KIE said: {message}"
    if code == 401:
        return ProviderError(
            f"KIE rejected the API key (401): check KIE_API_KEY. {said}",
            status=502, code="provider_auth_failed", provider_code=code,
        )
    if code == 402:
        return ProviderError(
            f"the KIE account is out of credits (402): top it up at kie.ai. {said}",
            status=402, code="provider_out_of_credits", provider_code=code,
        )
    if code in (400, 422):
        return ProviderError(
            f"KIE rejected the request as invalid ({code}). {said}",
            status=400, code="provider_rejected_input", provider_code=code,
        )
    if code == 404:
        return ProviderError(
            f"KIE does not know this endpoint, model or task (404). {said}",
            status=400, code="provider_not_found", provider_code=code,
        )
    if code in RETRYABLE_CODES:
        retry_after = _retry_after(response)
        name = "rate limited us" if code == 429 else "is unavailable"
        final = ProviderError(
            f"KIE {name} ({code}) and kept failing after retries. {said}",
            status=503, code="provider_rate_limited" if code == 429 else "provider_unavailable",
            provider_code=code, headers={"Retry-After": str(int(retry_after or 10))},
        )
        return _Retryable(final, retry_after)
    return ProviderError(
        f"KIE failed the request ({code}). {said}", status=502, code="provider_error", provider_code=code
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return min(float(value), 30.0) if value.replace(".", "", 1).isdigit() else None
