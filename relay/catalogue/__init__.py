"""The model catalogue: what each model is, what it takes, and what it makes.

Provider knowledge that can be data lives in the `*.toml` files beside this module (one
per provider); the provider modules turn a `ModelSpec` into their create bodies. This
module only loads the data and checks a request against it, so a request that does not
fit a model is refused, naming the field, before any provider is paid.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Final

from relay.errors import BadRequest

KINDS: Final = ("image", "video", "audio")
OPTION_TYPES: Final = ("int", "number", "bool", "string", "url")
MAX_URL: Final = 2048


@dataclass(frozen=True, slots=True)
class Option:
    """One setting a client may pass in `options`."""

    name: str
    values: tuple[Any, ...] = ()  # allowed values, when it is a choice
    type: str = "choice"
    min: float | None = None
    max: float | None = None
    required: bool = False

    def check(self, value: object) -> object:
        where = f"options.{self.name}"
        if self.values:
            # Compared with the type too: JSON's true must not pass for 1, nor 5 for "5".
            if not any(type(value) is type(v) and value == v for v in self.values):
                allowed = ", ".join(repr(v) for v in self.values)
                raise BadRequest(f"{where} must be one of {allowed}", code="invalid_option")
            return value
        if self.type == "bool":
            if not isinstance(value, bool):
                raise BadRequest(f"{where} must be true or false", code="invalid_option")
            return value
        if self.type in ("int", "number"):
            ok = isinstance(value, int) if self.type == "int" else isinstance(value, int | float)
            if isinstance(value, bool) or not ok or not math.isfinite(float(value)):  # type: ignore[arg-type]
                raise BadRequest(f"{where} must be {'a whole number' if self.type == 'int' else 'a number'}", code="invalid_option")
            number = float(value)  # type: ignore[arg-type]
            if (self.min is not None and number < self.min) or (self.max is not None and number > self.max):
                raise BadRequest(f"{where} must be from {self.min:g} to {self.max:g}", code="invalid_option")
            return value
        if not isinstance(value, str):
            raise BadRequest(f"{where} must be a string", code="invalid_option")
        if self.type == "url":
            if len(value) > MAX_URL or not value.startswith(("https://", "http://")):
                raise BadRequest(f"{where} must be an http(s) URL of at most {MAX_URL} characters", code="invalid_option")
        elif self.max is not None and len(value) > self.max:
            raise BadRequest(f"{where} must be at most {self.max:g} characters", code="invalid_option")
        return value

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.values:
            out["values"] = list(self.values)
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.required:
            out["required"] = True
        return out


@dataclass(frozen=True, slots=True)
class Images:
    """Reference images: the provider's field, its shape and the count it accepts."""

    field: str
    shape: str  # "list" or "string" (one URL)
    min: int
    max: int


@dataclass(frozen=True, slots=True)
class ModelSpec:
    id: str
    provider: str
    family: str
    kind: str
    label: str
    upstream: str
    prompt_required: bool
    prompt_max: int
    images: Images | None
    parent: str | None
    fixed: Mapping[str, Any]
    with_images: Mapping[str, Any]
    options: Mapping[str, Option]
    defaults: Mapping[str, Any]
    progress: bool
    price: int | None  # credits per task (RELAY_CREDITS=on); None: RELAY_DEFAULT_PRICE
    source: str

    def check(
        self, prompt: str, image_urls: tuple[str, ...], options: Mapping[str, Any], parent: str | None
    ) -> dict[str, Any]:
        """Refuse what this model cannot take; return the options with defaults filled in."""
        if self.prompt_required and not prompt:
            raise BadRequest(f"prompt is required for {self.id}", code="invalid_request")
        if prompt and self.prompt_max == 0:
            raise BadRequest(f"{self.id} takes no prompt", code="invalid_request")
        if len(prompt) > self.prompt_max:
            raise BadRequest(f"prompt is longer than {self.prompt_max} characters, the limit of {self.id}", code="invalid_request")
        low, high = (self.images.min, self.images.max) if self.images else (0, 0)
        if len(image_urls) > high:
            what = "no reference images" if high == 0 else f"at most {high} reference image(s)"
            raise BadRequest(f"imageUrls has {len(image_urls)} entries; {self.id} takes {what}", code="invalid_request")
        if len(image_urls) < low:
            raise BadRequest(f"imageUrls needs at least {low} entry for {self.id}", code="invalid_request")
        if self.parent and not parent:
            raise BadRequest(f"parentTaskId is required for {self.id}: it names the task to work on", code="invalid_request")
        if parent and not self.parent:
            raise BadRequest(f"{self.id} does not take parentTaskId", code="invalid_request")
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            allowed = ", ".join(self.options) or "none"
            raise BadRequest(
                f"unknown option(s) for {self.id}: {', '.join(unknown)} (allowed: {allowed})", code="invalid_option"
            )
        checked = {name: self.options[name].check(value) for name, value in options.items()}
        for name, option in self.options.items():
            if option.required and name not in checked:
                raise BadRequest(f"options.{name} is required for {self.id}", code="invalid_option")
        return {**self.defaults, **checked}

    def describe(self) -> dict[str, Any]:
        """The public form served by `GET /api/models`."""
        return {
            "id": self.id,
            "provider": self.provider,
            "family": self.family,
            "kind": self.kind,
            "label": self.label,
            "prompt": {"required": self.prompt_required, "maxLength": self.prompt_max},
            "referenceImages": (
                {"min": self.images.min, "max": self.images.max, "field": self.images.field}
                if self.images
                else None
            ),
            "parentTask": self.parent is not None,
            "options": {name: option.describe() for name, option in self.options.items()},
            "defaults": dict(self.defaults),
            "progress": self.progress,
            "price": self.price,
            "source": self.source,
        }


class CatalogueError(ValueError):
    """A catalogue file that does not describe models correctly (a bug in the data)."""


def _option(name: str, raw: object) -> Option:
    if isinstance(raw, list):
        if not raw:
            raise CatalogueError(f"option {name} lists no values")
        return Option(name, values=tuple(raw))
    if not isinstance(raw, dict) or raw.get("type") not in OPTION_TYPES:
        raise CatalogueError(f"option {name} needs a list of values or a type in {OPTION_TYPES}")
    unknown = set(raw) - {"type", "min", "max", "required"}
    if unknown:
        raise CatalogueError(f"option {name} has unknown keys {sorted(unknown)}")
    return Option(name, type=raw["type"], min=raw.get("min"), max=raw.get("max"), required=bool(raw.get("required")))


_MODEL_KEYS: Final = frozenset(
    {"id", "family", "kind", "label", "upstream", "prompt", "images", "parent", "fixed", "with_images",
     "options", "defaults", "progress", "price", "source"}
)


def _model(provider: str, raw: dict[str, Any]) -> ModelSpec:
    name = raw.get("id", "?")
    unknown = set(raw) - _MODEL_KEYS
    if unknown:
        raise CatalogueError(f"model {name}: unknown keys {sorted(unknown)}")
    if raw.get("kind") not in KINDS:
        raise CatalogueError(f"model {name}: kind must be one of {KINDS}")
    prompt = raw.get("prompt", {"required": True, "max": 5000})
    images = raw.get("images")
    options = {key: _option(key, value) for key, value in raw.get("options", {}).items()}
    defaults = raw.get("defaults", {})
    for key, value in defaults.items():
        if key not in options:
            raise CatalogueError(f"model {name}: default for {key}, which is not an option")
        options[key].check(value)
    try:
        return ModelSpec(
            id=raw["id"],
            provider=provider,
            family=raw["family"],
            kind=raw["kind"],
            label=raw.get("label", raw["id"]),
            upstream=raw.get("upstream", raw["id"]),
            prompt_required=bool(prompt["required"]),
            prompt_max=int(prompt["max"]),
            images=Images(images["field"], images["shape"], int(images["min"]), int(images["max"])) if images else None,
            parent=raw.get("parent"),
            fixed=dict(raw.get("fixed", {})),
            with_images=dict(raw.get("with_images", {})),
            options=options,
            defaults=dict(defaults),
            progress=bool(raw.get("progress", False)),
            price=int(raw["price"]) if "price" in raw else None,
            source=raw.get("source", ""),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CatalogueError(f"model {name}: {exc!r}") from None


@dataclass(frozen=True)
class Catalogue:
    models: Mapping[str, ModelSpec] = field(default_factory=dict)

    def get(self, model_id: str) -> ModelSpec:
        spec = self.models.get(model_id)
        if spec is None:
            raise BadRequest(
                f"unknown model {model_id[:100]!r}; GET /api/models lists the {len(self.models)} models "
                "this service can create",
                code="unknown_model",
            )
        return spec

    def by_kind(self, kind: str) -> list[ModelSpec]:
        return [spec for spec in self.models.values() if spec.kind == kind]

    def describe(self) -> list[dict[str, Any]]:
        return [spec.describe() for spec in self.models.values()]


def parse(files: Mapping[str, str]) -> Catalogue:
    """Build a catalogue from TOML texts keyed by provider name."""
    models: dict[str, ModelSpec] = {}
    for provider, text in files.items():
        for raw in tomllib.loads(text).get("model", []):
            spec = _model(provider, raw)
            if spec.id in models:
                raise CatalogueError(f"model {spec.id} is listed twice")
            models[spec.id] = spec
    return Catalogue(models)


@cache
def builtin() -> Catalogue:
    """The catalogue shipped with Relay (every `*.toml` here; the file name is the provider)."""
    here = Path(__file__).parent
    return parse({path.stem: path.read_text("utf-8") for path in sorted(here.glob("*.toml"))})
