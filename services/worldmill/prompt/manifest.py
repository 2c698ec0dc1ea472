"""The manifest format: a dataset described once (see docs/manifests.md).

These models check the *shape* of a manifest (types, required fields, no unknown keys, simple
bounds). Rules that need more than one field or a model card (durations × fps, templates, ids,
models, resolutions, prompt length) are checked by ``expand``, so every problem is reported at once.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from worldmill.contracts.base import Resolution
from worldmill.contracts.cards import GenerationMode
from worldmill.contracts.qa import CriticGate, CriticKind

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$"
#: Manifest names become part of every prompt id, so they are lower-case slugs (no two names collide).
NAME_PATTERN = r"^[a-z0-9][a-z0-9\-]{0,47}$"
Scalar = str | int | float | bool | None


def _resolution(value: Any) -> Any:
    """Accept ``"1280x704"`` as well as ``{width: 1280, height: 704}``."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", value)
        if not m:
            raise ValueError(f"resolution {value!r} must look like '1280x704' (width x height)")
        return {"width": int(m.group(1)), "height": int(m.group(2))}
    return value


ResolutionField = Annotated[Resolution, BeforeValidator(_resolution)]
Duration = Annotated[float, Field(gt=0, le=3600, description="Seconds.")]
#: Expected risk level of what a clip shows (docs/background.md#security-cameras: NONE for false alarms … HIGH for
#: threats).
RiskLevel = Annotated[
    Literal["none", "low", "medium", "high", "critical"],
    BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v),
]
VariantCount = Annotated[int, Field(ge=1, le=100)]
#: Variants per duration: one number for every duration, or a map duration → number.
Variants = VariantCount | dict[float, VariantCount]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Settings(_Strict):
    """Generation settings. All optional here: unset values come from the enclosing level."""

    model: str | None = None
    fps: int | None = None  # checked against the model cards, with the list of rates they deliver
    resolution: ResolutionField | None = None
    guidance: float | None = None  # checked against the model card's range
    steps: int | None = Field(default=None, ge=1, le=1000)
    negative_prompt: str | None = Field(default=None, max_length=20000)
    upsample: bool | None = None
    auto_generate: bool | None = None
    mode: GenerationMode | None = None


def _gate(value: Any) -> Any:
    """Gates in any case; a bare YAML ``off`` loads as ``false``, which means ``off`` too."""
    if value is False:
        return "off"
    return value.lower() if isinstance(value, str) else value


class CriticOptions(_Strict):
    """What the VLM critic must do for these videos; unset keys come from the enclosing level, then qa settings.

    The threshold's range depends on the kind, which may be set at another level: ``expand`` checks it.
    """

    gate: Annotated[CriticGate, BeforeValidator(_gate)] | None = None
    kind: Annotated[CriticKind, BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v)] | None = None
    threshold: float | None = Field(default=None, allow_inf_nan=False)


class QaOptions(_Strict):
    """QA requirements of a manifest, a series or a scenario (``qa:``)."""

    critic: CriticOptions | None = None


class Scenario(_Strict):
    """One scenario: a prompt (or a template with variables) and its overrides."""

    id: str = Field(pattern=ID_PATTERN)
    prompt: str | None = Field(default=None, min_length=1)
    template: str | None = None
    vars: dict[str, Scalar] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    risk_level: RiskLevel | None = None
    durations: list[Duration] | None = Field(default=None, min_length=1)
    variants: Variants | None = None
    overrides: Settings | None = None
    metadata: dict[str, Scalar] = Field(default_factory=dict)
    qa: QaOptions | None = None

    @model_validator(mode="after")
    def _one_prompt_source(self) -> Scenario:
        if (self.prompt is None) == (self.template is None):
            raise ValueError("give exactly one of 'prompt' or 'template'")
        if self.prompt is not None and self.vars:
            raise ValueError("'vars' only go with a 'template'")
        return self


class Series(_Strict):
    """A group of scenarios sharing a risk level, tags and settings (docs/background.md#security-cameras: C, E, F, R,
    P, T)."""

    id: str = Field(pattern=ID_PATTERN)
    name: str | None = None
    description: str | None = None
    risk_level: RiskLevel | None = None
    tags: list[str] = Field(default_factory=list)
    durations: list[Duration] | None = Field(default=None, min_length=1)
    variants: Variants | None = None
    overrides: Settings | None = None
    metadata: dict[str, Scalar] = Field(default_factory=dict)
    qa: QaOptions | None = None
    scenarios: list[Scenario] = Field(min_length=1)


class Manifest(_Strict):
    """A whole dataset: defaults, durations, variants, templates and series of scenarios."""

    format: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN, description="Lower-case letters, digits and dashes.")
    description: str = ""
    defaults: Settings = Field(default_factory=Settings)
    durations: list[Duration] = Field(min_length=1)
    variants: Variants = 1
    templates: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, Scalar] = Field(default_factory=dict)
    seed_salt: str = Field(default="", max_length=200, description="Change it to re-roll every seed.")
    qa: QaOptions | None = None
    series: list[Series] = Field(min_length=1)
