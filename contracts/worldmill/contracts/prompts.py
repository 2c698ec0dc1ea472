"""Manifests and prompt specs: a dataset described once, expanded into exact, reproducible specs."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from worldmill.contracts.augment import ControlSpec
from worldmill.contracts.base import Contract, Identifier, Message, ObjectRef, Resolution, Sha256
from worldmill.contracts.cards import GenerationMode
from worldmill.contracts.qa import QaRequirements
from worldmill.contracts.upsample import UpsampleInfo

#: Values allowed in a spec's metadata map (JSON scalars).
MetadataValue = str | int | float | bool | None


class SamplingParams(Contract):
    """Sampling parameters passed to the model, all of them, explicitly."""

    guidance: float = Field(ge=0.0, le=20.0)
    steps: int = Field(ge=1, le=1000)
    negative_prompt: str | None = Field(default=None, max_length=20000)


class PromptSpec(Contract):
    """One immutable, versioned request for one video: (scenario, duration, variant) made exact.

    ``target_frames`` is always ``duration_s × fps`` exactly; ``seed`` is derived from stable ids,
    so expanding the same manifest again gives the same specs.
    """

    prompt_id: Identifier
    version: int = Field(ge=1)
    previous_version: int | None = Field(default=None, ge=1, description="The version this one replaces.")
    manifest: str | None = None
    manifest_sha256: Sha256 | None = None
    series: str | None = None
    scenario: str
    variant: int = Field(ge=0)
    duration_s: float = Field(gt=0)
    fps: float = Field(gt=0, le=240, description="Frames per second (an input video's may be 29.97…).")
    target_frames: int = Field(gt=0)
    seed: int = Field(ge=0, lt=2**32)
    resolution: Resolution
    model: str
    mode: GenerationMode = GenerationMode.TEXT2WORLD
    prompt: str = Field(min_length=1, max_length=20000)
    sampling: SamplingParams
    upsample: bool = False
    upsampled: UpsampleInfo | None = Field(default=None, description="Set on a version written by the upsampler.")
    auto_generate: bool = False
    input: ObjectRef | None = Field(default=None, description="Conditioning image/video.")
    input_resolution: Resolution | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Transfer keeping the input's resolution: the input's own size. ``resolution`` is this size "
        "rounded to the model's multiple (the planner records any rounding as an adaptation).",
    )
    controls: tuple[ControlSpec, ...] = ()
    tags: tuple[str, ...] = ()
    risk_level: str | None = None
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    # Left out of the JSON when unset, so the content hash (and "unchanged" on re-submit) of a spec
    # that asks nothing of QA is what it was before the field existed.
    qa: QaRequirements | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="What QA must check beyond the plan's numbers (the VLM critic's gate); copied onto the plan.",
    )
    created_at: datetime

    @model_validator(mode="after")
    def _frames_match_duration(self) -> PromptSpec:
        exact = self.duration_s * self.fps
        if abs(exact - self.target_frames) > 1e-6:
            raise ValueError(
                f"target_frames must equal duration_s × fps exactly: "
                f"{self.duration_s} × {self.fps} = {exact}, got {self.target_frames}"
            )
        return self


class ManifestProblem(Contract):
    """One thing wrong with a manifest: where (path, line, column) and which rule."""

    path: str
    rule: str
    message: str
    line: int | None = None
    column: int | None = None


class ManifestAccepted(Message):
    """A manifest was validated and its specs stored."""

    TYPE: ClassVar[str] = "manifest.accepted"

    manifest: str
    manifest_sha256: Sha256
    prompt_ids: tuple[Identifier, ...]
    created: int = Field(ge=0)
    unchanged: int = Field(ge=0)

    def entity_id(self) -> str | None:
        return self.manifest


class ManifestRejected(Message):
    """A manifest was refused; nothing was created. Every problem is listed, not just the first."""

    TYPE: ClassVar[str] = "manifest.rejected"

    manifest: str
    manifest_sha256: Sha256 | None = None
    problems: tuple[ManifestProblem, ...] = Field(min_length=1)

    def entity_id(self) -> str | None:
        return self.manifest


class PromptCreated(Message):
    """A new prompt spec (or a new version of one) exists."""

    TYPE: ClassVar[str] = "prompt.created"

    spec: PromptSpec

    def entity_id(self) -> str | None:
        return self.spec.prompt_id


# -- HTTP API bodies -------------------------------------------------------------------------


class ManifestSubmission(Contract):
    """``POST /manifests``: a manifest document (YAML or JSON text)."""

    content: str = Field(min_length=1, max_length=1024 * 1024)
    dry_run: bool = False


class ExpansionCounts(Contract):
    """What a manifest expands to: specs per series and duration, frames to generate."""

    specs: int = Field(ge=0)
    frames: int = Field(ge=0)
    by_series: dict[str, dict[str, int]]
    frames_by_series: dict[str, int]


class ManifestResult(Contract):
    """The answer to a manifest submission (or a dry run)."""

    manifest: str
    sha256: Sha256
    dry_run: bool
    counts: ExpansionCounts
    created: tuple[Identifier, ...] = ()
    unchanged: int = Field(default=0, ge=0)
    specs: tuple[PromptSpec, ...] = Field(default=(), description="The expansion (dry runs only).")


class InputSpecRequest(Contract):
    """``POST /input-specs``: make a Transfer spec for every video under a prefix of a bucket."""

    bucket: str = "wm-inputs"
    prefix: str = Field(default="", max_length=1024)
    template: str = "generic"
    model: str = "cosmos-transfer2.5-2b"
    tier: str = Field(default="720", description="Resolution tier to map the input onto (720 or 480).")
    controls: tuple[ControlSpec, ...] = ()
    new_version: bool = Field(default=False, description="Add a new version even where a spec exists.")
    upsample: bool = Field(default=False, description="Have each prompt rewritten from the video's own frames.")


class InputSpecOutcome(Contract):
    """What happened to one input video."""

    key: str
    prompt_id: Identifier | None = None
    outcome: Literal["created", "kept", "skipped"]
    reason: str = ""


class InputSpecResult(Contract):
    """The answer to ``POST /input-specs``."""

    bucket: str
    prefix: str
    outcomes: tuple[InputSpecOutcome, ...]


class PromptPage(Contract):
    """``GET /prompts``: one page of the latest versions, and the cursor of the next page."""

    items: tuple[PromptSpec, ...]
    next_cursor: str | None = None


class PromptDetail(Contract):
    """``GET /prompts/{id}``: the latest version and every version, oldest first."""

    latest: PromptSpec
    history: tuple[PromptSpec, ...]
