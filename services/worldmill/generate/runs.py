"""Run bookkeeping as pure functions: ids, jobs, and how each job event moves a run's state.

    queued ──job.progress──> running ──(post-processing)──> post_processing ──job.completed──> ready
       │                        │ job.failed: retryable and attempts left → new attempt, queued
       │                        │ job.failed otherwise → failed;  job.canceled → canceled
       └── cancel while queued → canceled;   dead-lettered job → lost (never shown as done)

Every function returns a new ``RunRecord`` (contracts are immutable); the service stores each as a
new version, so a run's history is its list of versions.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from worldmill.contracts.cards import ModelCard
from worldmill.contracts.generation import (
    FINAL_STATES,
    AttemptRecord,
    ExecutionSignature,
    GenerationPlan,
    GpuJob,
    JobCanceled,
    JobCompleted,
    JobFailed,
    JobProgress,
    RunRecord,
    RunState,
)
from worldmill.contracts.keys import ARTIFACTS_BUCKET, video_key
from worldmill.contracts.prompts import PromptSpec


def run_id_for(request_id: str, prompt_id: str, regeneration: int = 0) -> str:
    """Stable per (request, spec, regeneration): repeating a request finds its runs instead of making new ones.

    A regeneration (``regeneration`` ≥ 1) gets other ids than a run of the same request id without
    one, so a reused request id can never answer a regeneration with the video it is to replace;
    runs without a regeneration keep the ids they always had.
    """
    material = f"{request_id}\x1f{prompt_id}" + (f"\x1fregeneration-{regeneration}" if regeneration else "")
    return "run-" + hashlib.sha256(material.encode()).hexdigest()[:24]


def job_id_for(run_id: str, attempt: int) -> str:
    """The job id of one attempt (also its Nats-Msg-Id, so a re-send is dropped)."""
    return f"{run_id}-a{attempt}"


def asset_id_for(run_id: str, attempt: int) -> str:
    """The id of the video an attempt produced."""
    return f"asset-{run_id.removeprefix('run-')}-a{attempt}"


def signature_for(card: ModelCard, spec: PromptSpec, backend: str | None = None) -> ExecutionSignature:
    """What a runner must have loaded: the backend, the model, its checkpoint, dtype and control set."""
    dtype = "float32" if card.family == "synthetic" else "bfloat16"
    controls = tuple(sorted({c.type for c in spec.controls}))
    return ExecutionSignature(model=card.id, checkpoint=card.id, dtype=dtype, controls=controls, backend=backend)


def new_run(
    spec: PromptSpec, plan: GenerationPlan, *, request_id: str, max_attempts: int, requested_by: str, now: datetime
) -> RunRecord:
    """A queued run with its first attempt (a regeneration's id comes from the plan's regeneration number)."""
    run_id = run_id_for(request_id, spec.prompt_id, plan.regeneration.number if plan.regeneration else 0)
    first = AttemptRecord(attempt=1, job_id=job_id_for(run_id, 1), state="queued", queued_at=now)
    return RunRecord(
        run_id=run_id,
        request_id=request_id,
        prompt_id=spec.prompt_id,
        prompt_version=spec.version,
        state="queued",
        plan=plan,
        max_attempts=max_attempts,
        attempts=(first,),
        requested_by=requested_by,
        created_at=now,
        updated_at=now,
    )


def job_for(run: RunRecord, spec: PromptSpec, card: ModelCard) -> GpuJob:
    """The GPU job of the run's current attempt."""
    attempt = run.attempts[-1]
    return GpuJob(
        job_id=attempt.job_id,
        run_id=run.run_id,
        attempt=attempt.attempt,
        signature=signature_for(card, spec, run.plan.backend),
        plan=run.plan,
        prompt=spec.prompt,
        inputs=(spec.input,) if spec.input else (),
        controls=spec.controls,
        output_bucket=ARTIFACTS_BUCKET,
        output_key=video_key(run.run_id, attempt.attempt),
    )


def _with_attempt(run: RunRecord, attempt: int, state: RunState, now: datetime, **changes: object) -> RunRecord:
    attempts = tuple(
        a.model_copy(update={"state": state, **({"finished_at": now} if state in FINAL_STATES else {}), **changes})
        if a.attempt == attempt
        else a
        for a in run.attempts
    )
    return run.model_copy(update={"attempts": attempts, "updated_at": now})


def current(run: RunRecord, attempt: int) -> bool:
    """True when an event about ``attempt`` concerns the run's latest attempt (older ones are history)."""
    return run.attempts[-1].attempt == attempt


def on_progress(run: RunRecord, event: JobProgress, now: datetime) -> RunRecord | None:
    """A queued run starts running (post-processing on encoding/uploading); None when nothing changes."""
    if run.state in FINAL_STATES or not current(run, event.attempt):
        return None
    state: RunState = "post_processing" if event.phase in ("encoding", "uploading") else "running"
    if run.state == state:
        return None
    updated = _with_attempt(run, event.attempt, state, now, runner=event.runner)
    return updated.model_copy(update={"state": state})


def on_completed(run: RunRecord, event: JobCompleted, now: datetime) -> RunRecord | None:
    """The attempt produced its video: the run is ready (idempotent: a repeat changes nothing)."""
    if run.state == "ready" or not current(run, event.attempt):
        return None
    updated = _with_attempt(run, event.attempt, "ready", now, runner=event.provenance.runner)
    return updated.model_copy(
        update={
            "state": "ready",
            "video": event.video,
            "provenance_ref": event.provenance_ref,
            "asset_id": asset_id_for(run.run_id, event.attempt),
            "error": None,
        }
    )


def on_failed(run: RunRecord, event: JobFailed, now: datetime) -> RunRecord | None:
    """Retry with a new attempt when the failure may pass and attempts remain; else the run failed."""
    if run.state in FINAL_STATES or not current(run, event.attempt):
        return None
    failed = _with_attempt(
        run, event.attempt, "failed", now, runner=event.runner, error=event.error, retryable=event.retryable
    )
    if event.retryable and event.attempt < run.max_attempts and run.cancel_reason is None:
        nxt = event.attempt + 1
        attempt = AttemptRecord(attempt=nxt, job_id=job_id_for(run.run_id, nxt), state="queued", queued_at=now)
        return failed.model_copy(
            update={"state": "queued", "attempts": (*failed.attempts, attempt), "error": event.error}
        )
    return failed.model_copy(update={"state": "failed", "error": event.error})


def on_canceled(run: RunRecord, event: JobCanceled, now: datetime) -> RunRecord | None:
    """The runner stopped the attempt because the run was canceled."""
    if run.state in FINAL_STATES or not current(run, event.attempt):
        return None
    updated = _with_attempt(run, event.attempt, "canceled", now, runner=event.runner)
    return updated.model_copy(update={"state": "canceled"})


def on_lost(run: RunRecord, attempt: int, reason: str, now: datetime) -> RunRecord | None:
    """The attempt's job was given up by the queue (dead-lettered): shown as lost, never as done."""
    if run.state in FINAL_STATES or not current(run, attempt):
        return None
    updated = _with_attempt(run, attempt, "lost", now, error=reason)
    return updated.model_copy(update={"state": "lost", "error": reason})


def request_cancel(run: RunRecord, reason: str, now: datetime) -> RunRecord:
    """Queued runs are canceled at once; running ones when their runner stops between two steps."""
    if run.state == "queued":
        updated = _with_attempt(run, run.attempts[-1].attempt, "canceled", now)
        return updated.model_copy(update={"state": "canceled", "cancel_reason": reason})
    return run.model_copy(update={"cancel_reason": reason, "updated_at": now})
