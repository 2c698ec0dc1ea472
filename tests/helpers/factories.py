"""Small builders of valid contracts for tests (realistic values, nothing hard-coded as a result)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from worldmill.contracts.base import ObjectRef, Resolution
from worldmill.contracts.cards import GenerationMode
from worldmill.contracts.generation import (
    ChunkPlan,
    ExecutionSignature,
    ExpectedOutput,
    FpsConversion,
    GenerationPlan,
    GpuJob,
    Provenance,
    Timings,
    VideoReady,
)
from worldmill.contracts.keys import ARTIFACTS_BUCKET, video_key
from worldmill.contracts.prompts import SamplingParams
from worldmill.contracts.qa import Finding, QaFailed, QaPassed, Severity

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def object_ref(key: str, data: bytes = b"video") -> ObjectRef:
    """A reference to an object in the artifacts bucket."""
    return ObjectRef(
        bucket="wm-artifacts",
        key=key,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="video/mp4",
    )


def plan(
    prompt_id: str,
    frames: int = 120,
    fps: int = 24,
    *,
    width: int = 320,
    height: int = 192,
    seed: int = 7,
    steps: int = 35,
) -> GenerationPlan:
    """A one-chunk plan for the synthetic model."""
    res = Resolution(width=width, height=height)
    return GenerationPlan(
        plan_id=f"plan-{prompt_id}",
        prompt_id=prompt_id,
        prompt_version=1,
        model="synthetic",
        mode=GenerationMode.TEXT2WORLD,
        resolution=res,
        native_fps=fps,
        native_frames=frames,
        chunks=(
            ChunkPlan(
                index=0, seed=seed, frames=frames, condition="none", condition_frames=0, keep_from=0, keep_frames=frames
            ),
        ),
        fps_conversion=FpsConversion(
            source_fps=fps, target_fps=fps, method="none", source_frames=frames, target_frames=frames
        ),
        expected=ExpectedOutput(frames=frames, fps=fps, duration_s=frames / fps, resolution=res),
        sampling=SamplingParams(guidance=7, steps=steps),
        estimated_gpu_seconds=1.0,
    )


def video_ready(prompt_id: str, asset_id: str) -> VideoReady:
    """A finished video of ``prompt_id``."""
    p = plan(prompt_id)
    prov = Provenance(
        backend="synthetic",
        model="synthetic",
        checkpoint="none",
        plan=p,
        prompt="x",
        sampling=p.sampling,
        seeds=(7,),
        code_version="test",
        device="cpu",
        runner="r1",
        timings=Timings(load_s=0, fetch_s=0, infer_s=1, encode_s=0, upload_s=0),
        started_at=NOW,
        finished_at=NOW,
    )
    return VideoReady(
        asset_id=asset_id,
        run_id=f"run-{asset_id}",
        prompt_id=prompt_id,
        attempt=1,
        video=object_ref(f"runs/{asset_id}/video.mp4"),
        plan=p,
        provenance=prov,
    )


def verdict(prompt_id: str, asset_id: str, *, passed: bool) -> QaPassed | QaFailed:
    """A QA verdict with one finding."""
    finding = Finding(
        check="frames", passed=passed, severity=Severity.ERROR, measured=120 if passed else 93, expected=120
    )
    cls = QaPassed if passed else QaFailed
    return cls(
        asset_id=asset_id,
        prompt_id=prompt_id,
        video=object_ref(f"runs/{asset_id}/video.mp4"),
        findings=(finding,),
        checked_at=NOW,
        checker_version="test",
    )


def synthetic_job(run_id: str, i: int, *, frames: int = 24, steps: int = 4, prompt: str | None = None) -> GpuJob:
    """Attempt 1 of run ``run_id``: a small synthetic-backend job (64x48) with its own plan, as generate queues it."""
    return GpuJob(
        job_id=f"{run_id}-a1",
        run_id=run_id,
        attempt=1,
        signature=ExecutionSignature(model="synthetic", checkpoint="synthetic", dtype="float32", backend="synthetic"),
        plan=plan(f"p{run_id}", frames=frames, width=64, height=48, steps=steps),
        prompt=prompt or f"scene {i}: a parcel at a door",
        output_bucket=ARTIFACTS_BUCKET,
        output_key=video_key(run_id, 1),
    )
