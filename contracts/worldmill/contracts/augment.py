"""Cosmos-Transfer augmentation: controls, requests, the augmentation record, its events and HTTP bodies.

An augmentation turns one input video (an upload to the inputs bucket, or an object named by the
API/CLI) into ``augmented/<input folder>/<name>_aug.mp4``: the same frames and frame rate, rendered
by Cosmos-Transfer from control videos (edge and blur computed on CPU; depth and segmentation
provided next to the input). Its id is derived from the input (bucket, key, etag) and the
parameters, so the same upload notified twice is one augmentation.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from worldmill.contracts.base import Contract, Identifier, Message, ObjectLocation, ObjectRef, Requester
from worldmill.contracts.cards import ControlType, Preset


class ControlSpec(Contract):
    """One control branch: its type, weight 0–1, optional preset and an optional provided video."""

    type: ControlType
    weight: float = Field(default=1.0, ge=0.0, le=1.0)
    preset: Preset | None = Field(default=None, description="Edge threshold or blur strength preset.")
    video: ObjectRef | None = Field(default=None, description="A provided control video; None = computed.")


class AugmentParams(Contract):
    """What an augmentation asks for; empty controls = the defaults (edge, plus any control files found)."""

    controls: tuple[ControlSpec, ...] = ()
    template: str | None = Field(default=None, description="Category template for the prompt (prompt service).")
    prompt: str | None = Field(default=None, max_length=20000, description="Explicit prompt: overrides the template.")
    negative_prompt: str | None = Field(default=None, max_length=20000)
    model: str = "cosmos-transfer2.5-2b"
    tier: str | None = Field(
        default=None,
        description="Resolution tier the input is mapped onto (720 or 480); None keeps the input's own size "
        "(Transfer2.5's keep_input_resolution), rounded to the model's multiple where it must be.",
    )
    # The per-video sidecar fields of docs/background.md#hand-videos. Left out of the JSON when unset, so the ids of
    # augmentations that do not set them are what they were before the fields existed.
    name: str | None = Field(
        default=None,
        pattern=r"^[^/\\\x00-\x1f.][^/\\\x00-\x1f]{0,119}$",
        exclude_if=lambda v: v is None,
        description="The sample's name: the output file is <name>_aug.mp4 (default: the input's file name); "
        "a file name, so no / or \\, not starting with a dot.",
    )
    seed: int | None = Field(
        default=None, ge=0, lt=2**32, exclude_if=lambda v: v is None, description="The spec's seed (default: derived)."
    )
    guidance: float | None = Field(
        default=None,
        ge=0.0,
        le=20.0,
        exclude_if=lambda v: v is None,
        description="Classifier-free guidance (default: the model card's); the card's range is checked.",
    )

    @model_validator(mode="after")
    def _controls_are_usable(self) -> AugmentParams:
        types = [c.type for c in self.controls]
        if len(set(types)) != len(types):
            raise ValueError("controls: each control type may be given once")
        if self.controls and all(c.weight == 0 for c in self.controls):
            raise ValueError("controls: at least one control needs a weight above 0")
        return self


class AugmentRequested(Message):
    """Someone (an upload, the API, the CLI, another system) asks for a Transfer augmentation of one input."""

    TYPE: ClassVar[str] = "augment.requested"

    request_id: Identifier
    augmentation_id: Identifier | None = Field(default=None, description="Set by the augment service itself.")
    input_bucket: str
    input_key: str = Field(min_length=1, max_length=1024)
    input_etag: str | None = Field(default=None, description="The upload's etag; looked up when not given.")
    params: AugmentParams = Field(default_factory=AugmentParams)
    force: bool = Field(default=False, description="Augment again even when a passing augmentation exists.")
    requested_by: Requester = "api"
    upload_event_id: str | None = Field(default=None, description="The object.created event that started it.")

    def entity_id(self) -> str | None:
        return self.request_id


class InputSpecRequested(Message):
    """Job for the prompt service: the Transfer spec of one probed input video, then its generation."""

    TYPE: ClassVar[str] = "input_spec"
    KIND: ClassVar[Literal["event", "job"]] = "job"

    augmentation_id: Identifier
    input: ObjectRef
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    fps: float = Field(gt=0, le=240)
    frames: int = Field(gt=0)
    params: AugmentParams
    controls: tuple[ControlSpec, ...] = Field(min_length=1, description="Every control with its video.")
    generation_request_id: Identifier
    requested_by: Requester

    def entity_id(self) -> str | None:
        return self.augmentation_id


AugmentState = Literal["received", "preparing", "queued", "generated", "passed", "failed", "rejected"]
#: States after which an augmentation changes no more (a QA regeneration may still move "failed").
AUGMENT_FINAL_STATES: frozenset[str] = frozenset({"passed", "failed", "rejected"})


class AugmentControl(Contract):
    """A control as used: where its video is, whether we computed it, and its share of the weight."""

    type: ControlType
    weight: float = Field(ge=0.0, le=1.0)
    normalized_weight: float = Field(ge=0.0, le=1.0, description="Weights scaled to sum to 1 when several.")
    preset: Preset | None = None
    source: Literal["computed", "provided"]
    video: ObjectRef


class Augmentation(Contract):
    """One augmentation and its lineage: upload → input → controls → spec → run → video → QA verdict."""

    augmentation_id: Identifier
    request_id: Identifier
    requested_by: Requester
    state: AugmentState
    reason: str | None = Field(default=None, description="Why it was rejected or failed.")
    input: ObjectLocation
    input_ref: ObjectRef | None = None
    input_frames: int | None = Field(default=None, ge=0)
    input_fps: float | None = Field(default=None, gt=0)
    input_width: int | None = Field(default=None, gt=0)
    input_height: int | None = Field(default=None, gt=0)
    params: AugmentParams
    controls: tuple[AugmentControl, ...] = ()
    prompt_id: Identifier | None = None
    generation_request_id: Identifier | None = None
    run_id: Identifier | None = None
    asset_id: Identifier | None = None
    output: ObjectRef | None = Field(default=None, description="augmented/<folder>/<name>_aug.mp4")
    provenance: ObjectRef | None = None
    qa_passed: bool | None = None
    qa_failed_checks: tuple[str, ...] = ()
    upload_event_id: str | None = None
    created_at: datetime
    updated_at: datetime


class AugmentRejected(Message):
    """An input (or a request) cannot be augmented; nothing reached a GPU. Names the field and the rule."""

    TYPE: ClassVar[str] = "augment.rejected"

    augmentation_id: Identifier
    request_id: Identifier
    input_bucket: str
    input_key: str
    field: str
    rule: str

    def entity_id(self) -> str | None:
        return self.augmentation_id


class AugmentCompleted(Message):
    """An augmentation reached its verdict: the output exists and QA passed or failed it."""

    TYPE: ClassVar[str] = "augment.completed"

    augmentation: Augmentation

    def entity_id(self) -> str | None:
        return self.augmentation.augmentation_id


# -- HTTP API bodies -------------------------------------------------------------------------


class BucketPrefix(Contract):
    """Everything under a key prefix of a bucket ("" = the whole bucket)."""

    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.\-]+[a-z0-9]$")
    prefix: str = Field(default="", max_length=1024)


class AugmentSubmission(Contract):
    """``POST /augmentations``: augment these objects (or everything under a prefix) with these parameters."""

    inputs: tuple[ObjectLocation, ...] = Field(default=(), max_length=1000)
    prefix: BucketPrefix | None = Field(
        default=None, description="Every video under the prefix not yet augmented with a passing verdict."
    )
    params: AugmentParams = Field(default_factory=AugmentParams)
    force: bool = False
    request_id: Identifier | None = None
    requested_by: Requester = "api"

    @model_validator(mode="after")
    def _something_to_do(self) -> AugmentSubmission:
        if not self.inputs and self.prefix is None:
            raise ValueError("inputs: give at least one input, or a prefix")
        return self


class AugmentOutcome(Contract):
    """What a submission did with one input."""

    input: ObjectLocation
    outcome: Literal["queued", "skipped", "in_progress", "rejected"]
    augmentation_id: Identifier | None = None
    reason: str = ""


class AugmentAccepted(Contract):
    """The answer to ``POST /augmentations``: follow it with ``GET /augmentations?request_id=…``."""

    request_id: Identifier
    outcomes: tuple[AugmentOutcome, ...]


class AugmentationPage(Contract):
    """``GET /augmentations``: augmentations with counts per state, and the next page's cursor."""

    counts: dict[str, int]
    items: tuple[Augmentation, ...]
    next_cursor: str | None = None
