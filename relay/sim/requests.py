"""The simulator's checks of create requests: what KIE's documentation says each family
requires (sources in tests/fixtures/kie/MODELS.md). Like the real service, a field a
model does not know is dropped without a word; the request is kept as received, so
tests can see exactly what Relay sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from relay.catalogue import Catalogue
from relay.providers.kie_families import model_for
from relay.sim.state import SimState, SimTask

MAX_PROMPT_CHARS = 20000


class Invalid(Exception):
    def __init__(self, msg: str, code: int = 422) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


@dataclass(frozen=True, slots=True)
class CreateSpec:
    model: str
    kind: str
    prompt: str
    callback_url: str | None
    parent: SimTask | None = None
    progress_url: str | None = None  # jobs: Sora 2 reports progress here


def callback_url(body: Mapping[str, Any], name: str = "callBackUrl") -> str | None:
    url = body.get(name)
    if url is None or url == "":
        return None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise Invalid(f"{name} must be an http(s) URL")
    return url


def _prompt(value: object, name: str, *, required: bool) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise Invalid(f"{name} is required")
        return ""
    if not isinstance(value, str):
        raise Invalid(f"{name} must be a string")
    if len(value) > MAX_PROMPT_CHARS:
        raise Invalid(f"{name} must be at most {MAX_PROMPT_CHARS} characters")
    return value


def _url_list(value: object, name: str, limit: int) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(u, str) and u for u in value):
        raise Invalid(f"{name} must be a list of URLs")
    if len(value) > limit:
        raise Invalid(f"{name} accepts at most {limit} URLs")
    return value


def _kind(catalogue: Catalogue, model: str, default: str) -> str:
    spec = catalogue.models.get(model)
    return spec.kind if spec else default


def _parent(state: SimState, body: Mapping[str, Any], families: tuple[str, ...]) -> SimTask:
    task_id = body.get("taskId")
    if not isinstance(task_id, str) or not task_id:
        raise Invalid("taskId is required")
    parent = state.tasks.get(task_id)
    if parent is None or parent.family not in families:
        raise Invalid("recordInfo is null")
    if parent.outcome is None or not parent.outcome.success:
        raise Invalid("the task has not finished successfully", 400)
    return parent


def jobs(state: SimState, body: Mapping[str, Any], catalogue: Catalogue) -> CreateSpec:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise Invalid("model is required")
    task_input = body.get("input")
    if not isinstance(task_input, dict):
        raise Invalid("input is required")
    spec = catalogue.models.get(model)
    # Recorded (jobs-create-gpt-image-edit-apicity.json): a required input field that is
    # missing, e.g. under another model's name, is code 500 "This field is required".
    required = ["prompt"] if spec is None or spec.prompt_required else []
    if spec is not None and spec.images is not None and spec.images.min > 0:
        required.append(spec.images.field)
    if any(task_input.get(name) in (None, "", []) for name in required):
        raise Invalid("This field is required", 500)
    prompt = _prompt(task_input.get("prompt"), "input.prompt", required=False)
    if isinstance(task_input.get("image_urls"), list):
        _url_list(task_input["image_urls"], "input.image_urls", 16)
    return CreateSpec(
        model, _kind(catalogue, model, "image"), prompt, callback_url(body),
        progress_url=callback_url(body, "progressCallBackUrl"),
    )


GPT4O_SIZES = ("1:1", "3:2", "2:3")


def gpt4o(state: SimState, body: Mapping[str, Any], catalogue: Catalogue) -> CreateSpec:
    size = body.get("size")
    if size is None or size == "":
        raise Invalid("size is required")
    if size not in GPT4O_SIZES:
        raise Invalid(f"size must be one of {', '.join(GPT4O_SIZES)}")
    prompt = _prompt(body.get("prompt"), "prompt", required=False)
    files = _url_list(body.get("filesUrl"), "filesUrl", 5)
    legacy_file = body.get("fileUrl")  # deprecated single-URL form, still accepted
    if not prompt and not files and not (isinstance(legacy_file, str) and legacy_file):
        raise Invalid("prompt or filesUrl is required")
    return CreateSpec("gpt-4o-image", "image", prompt, callback_url(body))


FLUX_MODELS = ("flux-kontext-pro", "flux-kontext-max")


def flux(state: SimState, body: Mapping[str, Any], catalogue: Catalogue) -> CreateSpec:
    prompt = _prompt(body.get("prompt"), "prompt", required=True)
    model = body.get("model") or FLUX_MODELS[0]
    if model not in FLUX_MODELS:
        raise Invalid(f"model must be one of {', '.join(FLUX_MODELS)}")
    image = body.get("inputImage")
    if image is not None and not isinstance(image, str):
        raise Invalid("inputImage must be a URL")
    return CreateSpec(str(model), "image", prompt, callback_url(body))


MJ_TASK_TYPES = ("mj_txt2img", "mj_img2img", "mj_style_reference", "mj_omni_reference", "mj_video", "mj_video_hd")


def mj(state: SimState, body: Mapping[str, Any], catalogue: Catalogue) -> CreateSpec:
    task_type = body.get("taskType")
    if task_type not in MJ_TASK_TYPES:
        raise Invalid(f"taskType must be one of {', '.join(MJ_TASK_TYPES)}")
    video = str(task_type).startswith("mj_video")
    prompt = _prompt(body.get("prompt"), "prompt", required=not video)
    files = _url_list(body.get("fileUrls"), "fileUrls", 5)
    if task_type != "mj_txt2img" and not files and not body.get("fileUrl"):
        raise Invalid("fileUrls is required for this taskType")
    model = model_for("mj", dict(body), {}, catalogue)
    return CreateSpec(model, "video" if video else "image", prompt, callback_url(body))


VEO_MODELS = ("veo3", "veo3_fast", "veo3_lite")


def veo(state: SimState, body: Mapping[str, Any], catalogue: Catalogue) -> CreateSpec:
    prompt = _prompt(body.get("prompt"), "prompt", required=True)
    if body.get("model", "veo3_fast") not in VEO_MODELS:
        raise Invalid(f"model must be one of {', '.join(VEO_MODELS)}")
    _url_list(body.get("imageUrls"), "imageUrls", 3)
    return CreateSpec(model_for("veo", dict(body), {}, catalogue), "video", prompt, callback_url(body))


def veo_extend(state: SimState, body: Mapping[str, Any], catalogue: Catalogue) -> CreateSpec:
    parent = _parent(state, body, ("veo", "veo-extend"))
    prompt = _prompt(body.get("prompt"), "prompt", required=True)
    return CreateSpec("veo3.1-extend", "video", prompt, callback_url(body), parent)


def veo_4k(state: SimState, body: Mapping[str, Any], catalogue: Catalogue) -> CreateSpec:
    parent = _parent(state, body, ("veo", "veo-extend"))
    return CreateSpec("veo3.1-4k", "video", "", callback_url(body), parent)


def veo_1080p(state: SimState, body: Mapping[str, Any], catalogue: Catalogue) -> CreateSpec:
    parent = _parent(state, body, ("veo", "veo-extend"))
    return CreateSpec("veo3.1-1080p", "video", "", None, parent)


RUNWAY_RATIOS = ("16:9", "4:3", "1:1", "3:4", "9:16")


def runway(state: SimState, body: Mapping[str, Any], catalogue: Catalogue) -> CreateSpec:
    prompt = _prompt(body.get("prompt"), "prompt", required=True)
    duration, quality = body.get("duration"), body.get("quality")
    if str(duration) not in ("5", "10"):
        raise Invalid("duration is required and must be 5 or 10")
    if quality not in ("720p", "1080p"):
        raise Invalid("quality is required and must be 720p or 1080p")
    if str(duration) == "10" and quality == "1080p":
        raise Invalid("a 10-second video cannot be 1080p")
    if not body.get("imageUrl") and body.get("aspectRatio") not in RUNWAY_RATIOS:
        raise Invalid("aspectRatio is required without imageUrl")
    return CreateSpec("runway", "video", prompt, callback_url(body))


def runway_extend(state: SimState, body: Mapping[str, Any], catalogue: Catalogue) -> CreateSpec:
    parent = _parent(state, body, ("runway", "runway-extend"))
    prompt = _prompt(body.get("prompt"), "prompt", required=True)
    if body.get("quality") not in ("720p", "1080p"):
        raise Invalid("quality is required and must be 720p or 1080p")
    return CreateSpec("runway-extend", "video", prompt, callback_url(body), parent)


def aleph(state: SimState, body: Mapping[str, Any], catalogue: Catalogue) -> CreateSpec:
    prompt = _prompt(body.get("prompt"), "prompt", required=True)
    video = body.get("videoUrl")
    if not isinstance(video, str) or not video.startswith(("http://", "https://")):
        raise Invalid("videoUrl is required")
    return CreateSpec("runway-aleph", "video", prompt, callback_url(body))


SUNO_MODELS = ("V3_5", "V4", "V4_5", "V4_5PLUS", "V4_5ALL", "V5", "V5_5")


def suno(state: SimState, body: Mapping[str, Any], catalogue: Catalogue) -> CreateSpec:
    # Recorded: Suno's create without a callBackUrl is 422 "Please enter callBackUrl."
    url = callback_url(body)
    if url is None:
        raise Invalid("Please enter callBackUrl.")
    for name in ("customMode", "instrumental"):
        if not isinstance(body.get(name), bool):
            raise Invalid(f"{name} is required")
    if body.get("model") not in SUNO_MODELS:
        raise Invalid(f"model must be one of {', '.join(SUNO_MODELS)}")
    instrumental_custom = body["customMode"] and body["instrumental"]
    prompt = _prompt(body.get("prompt"), "prompt", required=not instrumental_custom)
    return CreateSpec(model_for("suno", dict(body), {}, catalogue), "audio", prompt, url)


CreateCheck = Callable[[SimState, Mapping[str, Any], Catalogue], CreateSpec]

CHECKS: Mapping[str, CreateCheck] = {
    "jobs": jobs,
    "4o": gpt4o,
    "flux": flux,
    "mj": mj,
    "veo": veo,
    "veo-extend": veo_extend,
    "veo-4k": veo_4k,
    "veo-1080p": veo_1080p,
    "runway": runway,
    "runway-extend": runway_extend,
    "aleph": aleph,
    "suno": suno,
}
