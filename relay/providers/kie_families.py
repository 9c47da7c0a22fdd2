"""KIE's API families: which endpoint creates a model's task, which one reports on it, and
how a catalogue entry becomes a create body. Pure: no I/O.

Sources: ../shared/KIE-API.md §2, §3 and §11 (endpoints checked against recorded traffic),
and the docs.kie.ai pages named in relay/catalogue/kie.toml.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from relay.catalogue import Catalogue, ModelSpec
from relay.models import ProviderReport
from relay.providers.base import CreateRequest, ProviderTask


@dataclass(frozen=True, slots=True)
class Family:
    create: str  # path of the create call
    status: str  # path of the status query (GET ?taskId=)
    shape: str  # which normalizer table reads its status answers and callbacks
    nested: bool = False  # market models put their fields under `input`
    create_method: str = "POST"
    status_method: str = "GET"
    # Families that work on an earlier task and answer under that task's id (Veo's 1080p
    # and 4K): Relay names the new task `{parent}-{suffix}{index}`, and its callback URL
    # names it too, since KIE's callback carries the parent's id.
    derived: str | None = None


FAMILIES: Final[dict[str, Family]] = {
    "jobs": Family("/api/v1/jobs/createTask", "/api/v1/jobs/recordInfo", "jobs", nested=True),
    "4o": Family("/api/v1/gpt4o-image/generate", "/api/v1/gpt4o-image/record-info", "4o"),
    "flux": Family("/api/v1/flux/kontext/generate", "/api/v1/flux/kontext/record-info", "flux"),
    "mj": Family("/api/v1/mj/generate", "/api/v1/mj/record-info", "mj"),
    "veo": Family("/api/v1/veo/generate", "/api/v1/veo/record-info", "veo"),
    "veo-extend": Family("/api/v1/veo/extend", "/api/v1/veo/record-info", "veo"),
    # Both answer with the link once the file is ready (1080p at once, by GET; 4K by
    # callback, and a repeated POST shows the links: tests/fixtures/kie/veo-*-docs.json).
    "veo-1080p": Family(
        "/api/v1/veo/get-1080p-video", "/api/v1/veo/get-1080p-video", "veo-upscale",
        create_method="GET", derived="1080p",
    ),
    "veo-4k": Family(
        "/api/v1/veo/get-4k-video", "/api/v1/veo/get-4k-video", "veo-upscale",
        status_method="POST", derived="4k",
    ),
    "runway": Family("/api/v1/runway/generate", "/api/v1/runway/record-detail", "runway"),
    "runway-extend": Family("/api/v1/runway/extend", "/api/v1/runway/record-detail", "runway"),
    # KIE-API.md §11 says record-detail; KIE's page and every client seen use record-info.
    "aleph": Family("/api/v1/aleph/generate", "/api/v1/aleph/record-info", "aleph"),
    "suno": Family("/api/v1/generate", "/api/v1/generate/record-info", "suno"),
}

# Where a lost task is looked for, in order (each status endpoint once).
LOOKUP_ORDER: Final = ("jobs", "4o", "flux", "mj", "veo", "runway", "aleph", "suno")

# Every field under which a create request carries reference media, across families.
IMAGE_FIELDS: Final = (
    "image_urls", "image_input", "input_urls", "image_url", "filesUrl", "fileUrls",
    "imageUrls", "imageUrl", "inputImage", "fileUrl",
)


def create_body(spec: ModelSpec, request: CreateRequest) -> dict[str, Any]:
    """The create request in the shape the model's family expects."""
    fields: dict[str, Any] = dict(spec.fixed)
    if request.prompt:
        fields["prompt"] = request.prompt
    if request.image_urls and spec.images is not None:
        urls = list(request.image_urls)
        fields[spec.images.field] = urls[0] if spec.images.shape == "string" else urls
        fields.update(spec.with_images)
    if spec.parent and request.parent_task_id:
        fields[spec.parent] = request.parent_task_id
    fields.update(request.options)
    family = FAMILIES[spec.family]
    callback_url = request.callback_url
    if family.derived and request.parent_task_id:
        callback_url += f"&task={derived_id(family, request)}"
    if family.nested:
        body: dict[str, Any] = {"model": spec.upstream, "input": fields}
    else:
        body = fields
    if family.create_method == "POST":
        body["callBackUrl"] = callback_url
        if spec.progress:
            body["progressCallBackUrl"] = callback_url
    return body


def derived_id(family: Family, request: CreateRequest) -> str:
    index = request.options.get("index") or ""
    return f"{request.parent_task_id}-{family.derived}{index}"


def derived_query(family: Family, task_id: str) -> dict[str, Any]:
    """The status query of a derived task: its parent's id and the index."""
    parent, _, index = task_id.rpartition(f"-{family.derived}")
    return {"taskId": parent, **({"index": int(index)} if index.isdigit() else {})}


# A backslash that starts no JSON escape: KIE's own Veo example has `"\\https://..."`.
_STRAY_BACKSLASH = re.compile(r'\\(?!["\\/bfnrtu])')


def _loads(raw: object) -> object:
    """A value KIE may send as JSON text, sometimes twice over (§11: `param.input`)."""
    for _ in range(2):
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        if not isinstance(raw, str):
            break
        text: str = raw
        try:
            raw = orjson.loads(text)
        except orjson.JSONDecodeError:
            try:
                raw = orjson.loads(_STRAY_BACKSLASH.sub(r"\\\\", text))
            except orjson.JSONDecodeError:
                return None
    return raw


def recorded_request(
    data: dict[str, Any], family: str, catalogue: Catalogue, report: ProviderReport
) -> ProviderTask:
    """A status answer's `data` as the task KIE holds: the create request read back from
    `param` (jobs: a JSON string whose `input` is itself a JSON string) or `paramJson`
    (dedicated families), with `report`, the task's state."""
    param = _loads(data.get("param") or data.get("paramJson"))
    param = param if isinstance(param, dict) else {}
    nested = _loads(param.get("input")) if "input" in param else None
    inputs = nested if isinstance(nested, dict) else param
    urls: list[str] = []
    for name in IMAGE_FIELDS:
        value = inputs.get(name)
        values = value if isinstance(value, list) else [value]
        urls.extend(v for v in values if isinstance(v, str) and v)
        if urls:
            break
    created = data.get("createTime")
    created_at = None
    if isinstance(created, int | float) and not isinstance(created, bool):
        created_at = datetime.fromtimestamp(created / 1000, UTC)
    callback = param.get("callBackUrl")
    return ProviderTask(
        model=model_for(family, param, data, catalogue),
        prompt=str(inputs.get("prompt") or ""),
        image_urls=tuple(urls),
        callback_url=callback if isinstance(callback, str) else None,
        created_at=created_at,
        report=report,
    )


def model_for(family: str, param: dict[str, Any], data: dict[str, Any], catalogue: Catalogue) -> str:
    """The catalogue id of a recorded request: jobs name their model; dedicated families
    are told apart by their fixed fields (Veo's `model`, Midjourney's `taskType`, ...)."""
    if family == "jobs":
        return str(param.get("model") or data.get("model") or "")
    candidates = [
        spec for spec in catalogue.models.values()
        if FAMILIES.get(spec.family, FAMILIES["jobs"]).shape == family and not spec.parent
    ]
    with_images = any(param.get(k) for k in IMAGE_FIELDS)
    best, best_score = None, -1
    for spec in candidates:
        wanted = {**spec.fixed, **(spec.with_images if with_images else {})}
        # Only the fields the record kept count (KIE's copies leave some out).
        present = {k: v for k, v in wanted.items() if k in param}
        if any(param[k] != v for k, v in present.items()):
            continue
        if len(present) > best_score:
            best, best_score = spec, len(present)
    if best is None or (best_score == 0 and len(candidates) > 1):
        return family
    return best.id


def family_of(model: str, catalogue: Catalogue) -> Family:
    spec = catalogue.models.get(model)
    return FAMILIES[spec.family] if spec else FAMILIES["jobs"]
