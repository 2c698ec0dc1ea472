"""Realistic event families for catalog tests: one spec's life, from prompt.created to its QA verdict."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.helpers.generation import specs
from worldmill.contracts.base import Message, ObjectRef, Resolution
from worldmill.contracts.envelope import EnvelopeAttributes, TypedEnvelope, wrap
from worldmill.contracts.generation import (
    AttemptRecord,
    ExpectedOutput,
    GenerationPlan,
    JobProgress,
    Provenance,
    RunRecord,
    RunUpdated,
    Timings,
    VideoReady,
)
from worldmill.contracts.prompts import ManifestAccepted, PromptCreated, PromptSpec
from worldmill.contracts.qa import Finding, QaFailed, QaPassed, Severity

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
BUCKET = "wm-artifacts"


def ref(key: str, data: bytes | None = None, content_type: str = "video/mp4") -> ObjectRef:
    """An object reference (sha256 of ``data``, or of the key when there are no bytes)."""
    payload = data if data is not None else key.encode()
    return ObjectRef(
        bucket=BUCKET, key=key, size=len(payload), sha256=hashlib.sha256(payload).hexdigest(), content_type=content_type
    )


def plan_for(spec: PromptSpec, plan_id: str) -> GenerationPlan:
    """A plan with exactly the spec's numbers (one chunk, no fps conversion)."""
    return GenerationPlan.model_validate(
        {
            "plan_id": plan_id,
            "prompt_id": spec.prompt_id,
            "prompt_version": spec.version,
            "model": spec.model,
            "mode": spec.mode,
            "resolution": spec.resolution.model_dump(),
            "native_fps": spec.fps,
            "native_frames": spec.target_frames,
            "chunks": [
                {
                    "index": 0,
                    "seed": spec.seed,
                    "frames": spec.target_frames,
                    "condition": "none",
                    "condition_frames": 0,
                    "keep_from": 0,
                    "keep_frames": spec.target_frames,
                }
            ],
            "fps_conversion": {
                "source_fps": spec.fps,
                "target_fps": spec.fps,
                "method": "none",
                "source_frames": spec.target_frames,
                "target_frames": spec.target_frames,
            },
            "expected": ExpectedOutput(
                frames=spec.target_frames,
                fps=spec.fps,
                duration_s=spec.duration_s,
                resolution=Resolution(width=spec.resolution.width, height=spec.resolution.height),
            ),
            "sampling": spec.sampling.model_dump(),
            "estimated_gpu_seconds": 1.0,
        }
    )


def family(
    spec: PromptSpec,
    *,
    passed: bool = True,
    at: datetime = T0,
    video: ObjectRef | None = None,
    screenshots: tuple[ObjectRef, ...] = (),
) -> list[TypedEnvelope[Any]]:
    """The events of one spec made into one video, in the order the pipeline emits them."""
    run_id = f"run-{spec.prompt_id}"[:120]
    asset_id = f"asset-{spec.prompt_id}-a1"[:120]
    job_id = f"{run_id}-a1"
    plan = plan_for(spec, f"plan-{run_id}")
    video = video or ref(f"runs/{run_id}/a1/video.mp4")
    queued = AttemptRecord(attempt=1, job_id=job_id, state="queued", queued_at=at)
    run1 = RunRecord(
        run_id=run_id,
        request_id=f"req-{spec.prompt_id}"[:120],
        prompt_id=spec.prompt_id,
        prompt_version=spec.version,
        state="queued",
        plan=plan,
        max_attempts=3,
        attempts=(queued,),
        requested_by="auto",
        created_at=at,
        updated_at=at,
    )
    running = run1.model_copy(
        update={
            "state": "running",
            "updated_at": at + timedelta(seconds=1),
            "attempts": (queued.model_copy(update={"state": "running", "runner": "r1"}),),
        }
    )
    ready = running.model_copy(
        update={
            "state": "ready",
            "asset_id": asset_id,
            "video": video,
            "updated_at": at + timedelta(seconds=3),
            "attempts": (
                queued.model_copy(update={"state": "ready", "runner": "r1", "finished_at": at + timedelta(seconds=3)}),
            ),
        }
    )
    provenance = Provenance(
        backend="synthetic",
        model=spec.model,
        checkpoint="synthetic-v1",
        plan=plan,
        prompt=spec.prompt,
        sampling=spec.sampling,
        seeds=(spec.seed,),
        code_version="test",
        device="cpu",
        runner="r1",
        timings=Timings(load_s=0, fetch_s=0, infer_s=1, encode_s=0, upload_s=0),
        started_at=at,
        finished_at=at + timedelta(seconds=2),
    )
    findings = (
        Finding(
            check="frame_count",
            passed=True,
            severity=Severity.ERROR,
            measured=spec.target_frames,
            expected=spec.target_frames,
            message="exact",
        ),
        Finding(
            check="black_frames",
            passed=passed,
            severity=Severity.ERROR,
            measured=0 if passed else 12,
            expected=0,
            message="" if passed else "12 black frames at the end",
        ),
    )
    verdict_cls = QaPassed if passed else QaFailed
    verdict = verdict_cls(
        asset_id=asset_id,
        prompt_id=spec.prompt_id,
        video=video,
        findings=findings,
        screenshots=screenshots,
        checked_at=at + timedelta(seconds=5),
        checker_version="qa-test",
        attempt=1,
    )
    messages: list[tuple[Message, datetime, str]] = [
        (PromptCreated(spec=spec), at - timedelta(minutes=1), f"prompt.created-{spec.prompt_id}-v{spec.version}"),
        (RunUpdated(run=run1, version=1), at, f"run-{run_id}-v1"),
        (
            JobProgress(
                job_id=job_id, run_id=run_id, attempt=1, phase="generating", step=1, steps=4, fraction=0.25, runner="r1"
            ),
            at + timedelta(seconds=1),
            f"progress-{job_id}-1",
        ),
        (RunUpdated(run=running, version=2), at + timedelta(seconds=1), f"run-{run_id}-v2"),
        (
            JobProgress(
                job_id=job_id, run_id=run_id, attempt=1, phase="encoding", step=4, steps=4, fraction=0.9, runner="r1"
            ),
            at + timedelta(seconds=2),
            f"progress-{job_id}-2",
        ),
        (RunUpdated(run=ready, version=3), at + timedelta(seconds=3), f"run-{run_id}-v3"),
        (
            VideoReady(
                asset_id=asset_id,
                run_id=run_id,
                prompt_id=spec.prompt_id,
                attempt=1,
                video=video,
                plan=plan,
                provenance=provenance,
                request_id=run1.request_id,
                requested_by="auto",
            ),
            at + timedelta(seconds=3),
            f"video.ready-{job_id}",
        ),
        (verdict, at + timedelta(seconds=5), f"qa-{asset_id}-1"),
    ]
    return [wrap(m, source="/test", event_id=eid, time=when) for m, when, eid in messages]


def manifest_accepted(name: str, items: list[PromptSpec], at: datetime = T0) -> TypedEnvelope[Any]:
    """The prompt service's manifest.accepted for these specs."""
    message = ManifestAccepted(
        manifest=name,
        manifest_sha256="a" * 64,
        prompt_ids=tuple(s.prompt_id for s in items),
        created=len(items),
        unchanged=0,
    )
    return wrap(message, source="/test", event_id=f"manifest-{name}", time=at - timedelta(minutes=2))


def dataset(name: str, count: int = 3, *, fail_every: int = 0) -> list[TypedEnvelope[Any]]:
    """A manifest of ``count`` specs (5 s, 10 s, 30 s, …) and every event of it; every n-th video fails QA."""
    scenarios = max(1, (count + 2) // 3)
    items = specs(name, scenarios=scenarios)[:count]
    events: list[TypedEnvelope[Any]] = [manifest_accepted(name, items)]
    for i, spec in enumerate(items):
        failed = bool(fail_every) and (i + 1) % fail_every == 0
        events += family(spec, passed=not failed, at=T0 + timedelta(minutes=i))
    return events


def attrs_and_message(envelope: TypedEnvelope[Any]) -> tuple[EnvelopeAttributes, Message]:
    """What ``CatalogDatabase.apply`` takes."""
    return envelope, envelope.data
