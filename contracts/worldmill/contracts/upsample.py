"""Prompt upsampling: the job, its outcome events, how an upsampled prompt was made, and the HTTP bodies.

A spec marked ``upsample`` is rewritten by a vision-language model; the rewrite becomes a new
version of the same spec (``previous_version`` = the version it was made from) that carries an
:class:`UpsampleInfo`. When no upsampler can do it, ``upsample.skipped`` says why, and the rest of
the pipeline goes on with the original prompt.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from worldmill.contracts.base import (
    Contract,
    Identifier,
    Message,
    ObjectLocation,
    ObjectRef,
    Requester,
    Resolution,
    Sha256,
)

UpsampleState = Literal["queued", "running", "done", "unavailable", "failed"]
SkipStatus = Literal["unavailable", "failed"]
#: States after which nothing more happens to an upsample request.
UPSAMPLE_FINAL_STATES: frozenset[str] = frozenset({"done", "unavailable", "failed"})


class UpsampleInfo(Contract):
    """How an upsampled prompt was made: model, inputs sent, token accounting, sampling, cache."""

    upsampler_model: str = Field(description="The model name the server answered with.")
    profile: str = Field(description="The token-counting profile the request was sized with.")
    source_version: int = Field(ge=1, description="The spec version whose prompt was rewritten.")
    original_prompt: str = Field(min_length=1, max_length=20000)
    tokens_estimated: int = Field(ge=0, description="Prompt tokens we estimated for the request that succeeded.")
    tokens_used: int | None = Field(default=None, ge=0, description="The server's usage.prompt_tokens.")
    completion_tokens: int | None = Field(default=None, ge=0)
    context_tokens: int = Field(gt=0)
    frames_sent: int = Field(ge=0)
    frame_resolution: Resolution | None = None
    hint: ObjectRef | None = Field(default=None, description="Where the hint frames were taken from.")
    hint_as_video: bool = False
    hints_sha256: Sha256 | None = Field(default=None, description="sha256 over the hint bytes sent.")
    temperature: float = Field(ge=0)
    top_p: float = Field(gt=0, le=1)
    max_tokens: int = Field(gt=0)
    seed: int | None = None
    attempts: int = Field(default=1, ge=1, description="Requests made, shrink-and-retry included.")
    context_retries: int = Field(default=0, ge=0, description="Retries after a context-length answer.")
    truncated: bool = Field(default=False, description="The answer hit max_tokens and was cut at a sentence.")
    calibration: float = Field(default=1.0, gt=0)
    cache_key: Sha256
    cached: bool = False
    created_at: datetime
    format: Literal["text", "cosmos3-json"] = Field(
        default="text",
        description="text: one paragraph; cosmos3-json: a Cosmos 3 structured JSON caption (the prompt is that JSON).",
    )


class UpsampleRequested(Message):
    """Job: rewrite one spec's prompt with a vision-language model."""

    TYPE: ClassVar[str] = "upsample"
    KIND: ClassVar[Literal["event", "job"]] = "job"

    prompt_id: Identifier
    version: int | None = Field(default=None, ge=1, description="Spec version to rewrite; None = the latest.")
    hint: ObjectLocation | None = Field(default=None, description="Image or video to take hint frames from.")
    force: bool = Field(default=False, description="Ask the model again even when a cached answer exists.")
    request_id: Identifier | None = None
    requested_by: Requester = "api"

    def entity_id(self) -> str | None:
        return self.prompt_id


class PromptUpsampled(Message):
    """A rewrite of a spec's prompt exists; the prompt service stores it as the spec's next version."""

    TYPE: ClassVar[str] = "prompt.upsampled"

    prompt_id: Identifier
    source_version: int = Field(ge=1)
    prompt: str = Field(min_length=1, max_length=20000)
    info: UpsampleInfo
    request_id: Identifier | None = None

    def entity_id(self) -> str | None:
        return self.prompt_id


class UpsampleSkipped(Message):
    """A spec marked for upsampling keeps its original prompt, and why (no server, or it failed)."""

    TYPE: ClassVar[str] = "upsample.skipped"

    prompt_id: Identifier
    version: int = Field(ge=1)
    status: SkipStatus
    reason: str = Field(min_length=1, max_length=2000)
    request_id: Identifier | None = None

    def entity_id(self) -> str | None:
        return self.prompt_id


# -- HTTP API bodies -------------------------------------------------------------------------


class UpsampleSubmission(Contract):
    """``POST /upsample``: rewrite these specs (their latest versions)."""

    prompt_ids: tuple[Identifier, ...] = Field(min_length=1, max_length=1000)
    force: bool = False
    hint: ObjectLocation | None = Field(default=None, description="Hint image/video for every listed spec.")
    request_id: Identifier | None = None
    requested_by: Requester = "api"


class UpsampleAccepted(Contract):
    """The answer to ``POST /upsample``: the request id to follow and what was queued."""

    request_id: Identifier
    queued: tuple[Identifier, ...]


class UpsampleStatus(Contract):
    """Where one spec's upsampling stands (``GET /upsample/{prompt_id}``)."""

    prompt_id: Identifier
    version: int = Field(ge=1, description="The spec version being rewritten.")
    state: UpsampleState
    request_id: Identifier | None = None
    reason: str | None = None
    prompt: str | None = Field(default=None, description="The rewrite, once done.")
    info: UpsampleInfo | None = None
    updated_at: datetime


class UpsampleStatusPage(Contract):
    """``GET /upsample?request_id=…``: the statuses of one request, with counts per state."""

    request_id: Identifier
    counts: dict[str, int]
    items: tuple[UpsampleStatus, ...]


class UpsamplerInfo(Contract):
    """``GET /upsample/server``: whether an upsampler is configured, and how requests are sized."""

    available: bool
    reason: str | None = None
    base_url: str | None = None
    model: str | None = None
    profile: str
    context_tokens: int
    max_new_tokens: int
    hint_frames: int
    hint_as_video: bool
    concurrency: int
    calibration: float
