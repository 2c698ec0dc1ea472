"""From a prompt spec to a video: requests, plans, GPU jobs, progress, outcomes, provenance."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal, get_args

from pydantic import Field, model_validator

from worldmill.contracts.augment import ControlSpec
from worldmill.contracts.base import Contract, Identifier, Message, ObjectRef, Requester, Resolution, Sha256
from worldmill.contracts.cards import ControlType, GenerationMode
from worldmill.contracts.prompts import SamplingParams
from worldmill.contracts.qa import QaRequirements

#: The highest regeneration number a request may carry (QA asks for at most ``WM_QA_MAX_REGENERATIONS`` ≤ 10).
MAX_REGENERATION = 1000


class Regeneration(Contract):
    """This generation makes again a video that failed: which regeneration of the spec it is, and why.

    Planning gives a regeneration its own seed (``generate/planning.py`` ``regeneration_seed``): with
    the spec's seed a deterministic model would make the very video that failed, again.
    """

    number: int = Field(
        ge=1, le=MAX_REGENERATION, description="1 for the first regeneration of the spec, 2 for the next, …"
    )
    replaces: Identifier | None = Field(default=None, description="The failed asset this video is made to replace.")
    failed_checks: tuple[str, ...] = Field(
        default=(), max_length=64, description="The QA checks the replaced video failed (error severity)."
    )


def _check_regeneration(prompt_ids: tuple[str, ...], regeneration: Regeneration | None) -> None:
    """A regeneration that replaces one asset is for that asset's spec only."""
    if regeneration is not None and regeneration.replaces is not None and len(prompt_ids) != 1:
        raise ValueError("a regeneration that replaces an asset is for exactly one prompt id (the asset's spec)")


class GenerationRequested(Message):
    """Someone asks for videos of these prompt specs (HTTP, CLI, another system, auto-generation).

    ``regeneration`` is set when the request makes a failed video again (QA sets it): the plans get
    a new seed, recorded as an adaptation, and the runs' ids differ from those of the same request
    id without it.
    """

    TYPE: ClassVar[str] = "generation.requested"

    request_id: Identifier
    prompt_ids: tuple[Identifier, ...] = Field(min_length=1, max_length=10000)
    max_attempts: int = Field(default=3, ge=1, le=20)
    priority: int = Field(default=0, ge=-10, le=10)
    requested_by: Requester = "api"
    regeneration: Regeneration | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Set when these videos replace a failed one: reseeded (see Regeneration). Left out when unset, "
        "so a request without it is what it was before the field existed.",
    )

    @model_validator(mode="after")
    def _one_spec_per_replaced_asset(self) -> GenerationRequested:
        _check_regeneration(self.prompt_ids, self.regeneration)
        return self

    def entity_id(self) -> str | None:
        return self.request_id


class GenerationRejected(Message):
    """A generation request was refused before any job was queued: no configured backend can make these specs.

    ``problems`` maps each refused prompt id to the field and rule it breaks (and which backend could
    run it, where one could). Nothing of a refused request is queued (all or nothing).
    """

    TYPE: ClassVar[str] = "generation.rejected"

    request_id: Identifier
    prompt_ids: tuple[Identifier, ...] = Field(min_length=1, max_length=10000)
    problems: dict[str, str] = Field(description="prompt id → 'field: rule'")
    requested_by: Requester = "api"

    def entity_id(self) -> str | None:
        return self.request_id


class FpsConversion(Contract):
    """How the model's native frame rate becomes the target frame rate. Never silent."""

    source_fps: float = Field(gt=0)
    target_fps: float = Field(gt=0)
    method: Literal["none", "interpolate", "resample"]
    source_frames: int = Field(gt=0, description="Frames the model produces at source_fps.")
    target_frames: int = Field(gt=0, description="Frames delivered at target_fps.")


class Adaptation(Contract):
    """A recorded difference between what was asked and how it is delivered."""

    field: str
    requested: str
    delivered: str
    reason: str


class ChunkPlan(Contract):
    """One model call of an autoregressive generation."""

    index: int = Field(ge=0)
    seed: int = Field(ge=0, lt=2**32)
    frames: int = Field(gt=0, description="Frames this call generates (valid for the model).")
    condition: Literal["none", "input", "previous_chunk"]
    condition_frames: int = Field(ge=0, description="Frames taken from the input or previous chunk.")
    keep_from: int = Field(ge=0, description="First generated frame appended to the output.")
    keep_frames: int = Field(gt=0, description="Frames appended to the output.")


class ExpectedOutput(Contract):
    """Exactly what the delivered video must be."""

    frames: int = Field(gt=0)
    fps: float = Field(gt=0)
    duration_s: float = Field(gt=0)
    resolution: Resolution
    codec: str = "h264"
    container: str = "mp4"


class GenerationPlan(Contract):
    """A spec planned against a model card: every number the runner and QA need."""

    plan_id: Identifier
    prompt_id: Identifier
    prompt_version: int = Field(ge=1)
    model: str
    mode: GenerationMode
    resolution: Resolution
    native_fps: float = Field(gt=0)
    native_frames: int = Field(gt=0, description="Frames assembled at native fps before conversion.")
    chunks: tuple[ChunkPlan, ...] = Field(min_length=1)
    fps_conversion: FpsConversion
    expected: ExpectedOutput
    sampling: SamplingParams
    adaptations: tuple[Adaptation, ...] = ()
    estimated_gpu_seconds: float = Field(ge=0)
    backend: str | None = Field(default=None, description="The runner backend the plan was made for.")
    chunking: Literal["runner", "pipeline"] = Field(
        default="runner",
        description="runner: one model call per chunk, chained by the runner; pipeline: one call per video, the "
        "pipeline chunks (same boundaries) and conditions by itself.",
    )
    qa: QaRequirements | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="The spec's QA requirements (the VLM critic's gate), for the qa service, which reads the plan.",
    )
    regeneration: Regeneration | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Set when this plan makes a failed video again: its chunks use the regeneration's seed, not "
        "the spec's, and a 'seed' adaptation says so.",
    )

    @model_validator(mode="after")
    def _chunks_cover_output(self) -> GenerationPlan:
        kept = sum(c.keep_frames for c in self.chunks)
        if kept != self.native_frames:
            raise ValueError(f"chunks keep {kept} frames but native_frames is {self.native_frames}")
        return self


class ExecutionSignature(Contract):
    """What must be loaded on the GPU to run a job; jobs with equal signatures share a loaded model."""

    model: str
    checkpoint: str
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    controls: tuple[ControlType, ...] = ()
    backend: str | None = Field(
        default=None, description="The runner backend the plan was made for (None: by the model's family)."
    )


class GpuJob(Message):
    """Job: run one plan on a GPU runner. Its ``job_id`` is its event id, so a re-send is dropped."""

    TYPE: ClassVar[str] = "gpu"
    KIND: ClassVar[Literal["event", "job"]] = "job"

    job_id: Identifier
    run_id: Identifier
    attempt: int = Field(ge=1)
    signature: ExecutionSignature
    plan: GenerationPlan
    prompt: str = Field(min_length=1, max_length=20000)
    inputs: tuple[ObjectRef, ...] = ()
    controls: tuple[ControlSpec, ...] = ()
    output_bucket: str
    output_key: str

    def entity_id(self) -> str | None:
        return self.job_id


JobPhase = Literal["queued", "loading", "fetching", "generating", "encoding", "uploading"]


class JobProgress(Message):
    """Progress of a running job (throttled by the runner)."""

    TYPE: ClassVar[str] = "job.progress"

    job_id: Identifier
    run_id: Identifier
    attempt: int = Field(ge=1)
    phase: JobPhase
    chunk: int = Field(default=0, ge=0)
    chunks: int = Field(default=1, ge=1)
    step: int = Field(default=0, ge=0)
    steps: int = Field(default=1, ge=1)
    fraction: float = Field(ge=0.0, le=1.0)
    runner: str

    def entity_id(self) -> str | None:
        return self.run_id


class Timings(Contract):
    """Seconds spent per stage."""

    load_s: float = Field(ge=0)
    fetch_s: float = Field(ge=0)
    infer_s: float = Field(ge=0)
    encode_s: float = Field(ge=0)
    upload_s: float = Field(ge=0)


class Provenance(Contract):
    """Exactly how an artifact was made: enough to reproduce it or to explain it."""

    backend: str
    model: str
    checkpoint: str
    checkpoint_sha256: Sha256 | None = None
    plan: GenerationPlan
    prompt: str
    sampling: SamplingParams
    seeds: tuple[int, ...]
    inputs: tuple[ObjectRef, ...] = ()
    code_version: str
    library_versions: dict[str, str] = Field(default_factory=dict)
    device: str
    runner: str
    timings: Timings
    peak_memory_bytes: int | None = Field(default=None, ge=0)
    peak_memory_kind: Literal["cuda_max_allocated", "host_max_rss"] | None = Field(
        default=None,
        description="cuda_max_allocated: torch.cuda peak allocated during this job's generation; host_max_rss: the "
        "runner process's peak resident memory so far (the CPU has no per-job figure).",
    )
    started_at: datetime
    finished_at: datetime
    extra: dict[str, Any] = Field(default_factory=dict)


class JobCompleted(Message):
    """A GPU job produced its video."""

    TYPE: ClassVar[str] = "job.completed"

    job_id: Identifier
    run_id: Identifier
    attempt: int = Field(ge=1)
    video: ObjectRef
    provenance_ref: ObjectRef
    provenance: Provenance

    def entity_id(self) -> str | None:
        return self.run_id


class JobFailed(Message):
    """A GPU job failed; ``retryable`` says whether another attempt can help."""

    TYPE: ClassVar[str] = "job.failed"

    job_id: Identifier
    run_id: Identifier
    attempt: int = Field(ge=1)
    phase: JobPhase
    error: str = Field(max_length=4000)
    retryable: bool
    runner: str

    def entity_id(self) -> str | None:
        return self.run_id


class CancelRequested(Message):
    """Someone asks to cancel a run (queued or running)."""

    TYPE: ClassVar[str] = "run.cancel_requested"

    run_id: Identifier
    reason: str = Field(default="", max_length=1000)
    requested_by: Requester = "api"

    def entity_id(self) -> str | None:
        return self.run_id


class JobCanceled(Message):
    """A job stopped because its run was canceled."""

    TYPE: ClassVar[str] = "job.canceled"

    job_id: Identifier
    run_id: Identifier
    attempt: int = Field(ge=1)
    phase: JobPhase
    runner: str

    def entity_id(self) -> str | None:
        return self.run_id


class VideoReady(Message):
    """A finished video with its plan and provenance, ready for QA and the catalog."""

    TYPE: ClassVar[str] = "video.ready"

    asset_id: Identifier
    run_id: Identifier
    prompt_id: Identifier
    attempt: int = Field(ge=1)
    video: ObjectRef
    plan: GenerationPlan
    provenance: Provenance
    request_id: Identifier | None = Field(default=None, description="The generation request of the run.")
    requested_by: Requester | None = Field(
        default=None, description="Who asked for the run (auto, cli, qa:…, augment:…)."
    )

    def entity_id(self) -> str | None:
        return self.asset_id


# -- runs, as the generate service tracks and serves them ----------------------------------

RunState = Literal["queued", "running", "post_processing", "ready", "failed", "canceled", "lost"]
FINAL_STATES: frozenset[str] = frozenset({"ready", "failed", "canceled", "lost"})
#: The states of a run still being made (every other state is final), in their order.
ACTIVE_STATES: tuple[str, ...] = tuple(s for s in get_args(RunState) if s not in FINAL_STATES)


class AttemptRecord(Contract):
    """One attempt of a run: one GPU job."""

    attempt: int = Field(ge=1)
    job_id: Identifier
    state: RunState
    runner: str | None = None
    error: str | None = Field(default=None, max_length=4000)
    retryable: bool | None = None
    queued_at: datetime
    finished_at: datetime | None = None


class RunRecord(Contract):
    """A run: one spec made into one video, over one or more attempts. Every change is a new version."""

    run_id: Identifier
    request_id: Identifier
    prompt_id: Identifier
    prompt_version: int = Field(ge=1)
    state: RunState
    plan: GenerationPlan
    max_attempts: int = Field(ge=1)
    attempts: tuple[AttemptRecord, ...]
    asset_id: Identifier | None = None
    video: ObjectRef | None = None
    provenance_ref: ObjectRef | None = None
    error: str | None = Field(default=None, max_length=4000)
    cancel_reason: str | None = None
    requested_by: Requester = "api"
    created_at: datetime
    updated_at: datetime


class GenerationSubmission(Contract):
    """``POST /generations``: make videos of these specs (latest versions)."""

    prompt_ids: tuple[Identifier, ...] = Field(min_length=1, max_length=10000)
    request_id: Identifier | None = Field(default=None, description="Repeat it to make the request idempotent.")
    max_attempts: int = Field(default=3, ge=1, le=20)
    requested_by: Requester = "api"
    regeneration: Regeneration | None = Field(
        default=None, description="Set to make failed videos of these specs again, with a new seed."
    )

    @model_validator(mode="after")
    def _one_spec_per_replaced_asset(self) -> GenerationSubmission:
        _check_regeneration(self.prompt_ids, self.regeneration)
        return self


class RunUpdated(Message):
    """A run was stored in a new state (version ``version``): the catalog's view of runs and attempts."""

    TYPE: ClassVar[str] = "run.updated"

    run: RunRecord
    version: int = Field(ge=1, description="The run document's version; a higher one supersedes a lower.")

    def entity_id(self) -> str | None:
        return self.run.run_id


class RunPage(Contract):
    """``GET /runs``: runs, newest first by id, with the next cursor."""

    items: tuple[RunRecord, ...]
    next_cursor: str | None = None


class GenerationAccepted(Contract):
    """The answer to ``POST /generations``: one run per spec (existing runs of a repeated request)."""

    request_id: Identifier
    runs: tuple[RunRecord, ...]
