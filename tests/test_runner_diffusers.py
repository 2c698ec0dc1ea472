"""The real model path through the runner: tiny Cosmos-Predict2.5 pipelines, loaded from folders on CPU."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.helpers.runner import outcomes, run_jobs
from worldmill.contracts.base import Resolution
from worldmill.contracts.cards import GenerationMode
from worldmill.contracts.generation import (
    ChunkPlan,
    ExecutionSignature,
    ExpectedOutput,
    FpsConversion,
    GenerationPlan,
    GpuJob,
)
from worldmill.contracts.keys import ARTIFACTS_BUCKET, video_key
from worldmill.contracts.prompts import SamplingParams
from worldmill.gpu_runner.backends import BackendConfig, create_backend
from worldmill.gpu_runner.cache import ModelCache
from worldmill.gpu_runner.worker import Runner
from worldmill.runtime.bus import Bus
from worldmill.runtime.media import probe
from worldmill.runtime.store import ObjectStore

PREDICT = "cosmos-predict2.5-2b"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint root holding tiny random Predict and Transfer pipelines saved with save_pretrained."""
    from tests.helpers.tiny_cosmos import build_tiny_predict, build_tiny_transfer  # noqa: PLC0415 - imports diffusers

    root = tmp_path_factory.mktemp("ckpt")
    build_tiny_predict(root / "tiny-predict")
    build_tiny_transfer(root / "tiny-transfer")
    return root


def _job(run_id: str, dtype: str, seed: int) -> GpuJob:
    res = Resolution(width=32, height=32)
    plan = GenerationPlan(
        plan_id=f"plan-{run_id}",
        prompt_id=f"p-{run_id}",
        prompt_version=1,
        model=PREDICT,
        mode=GenerationMode.TEXT2WORLD,
        resolution=res,
        native_fps=16,
        native_frames=9,
        chunks=(
            ChunkPlan(index=0, seed=seed, frames=9, condition="none", condition_frames=0, keep_from=0, keep_frames=9),
        ),
        fps_conversion=FpsConversion(source_fps=16, target_fps=16, method="none", source_frames=9, target_frames=9),
        expected=ExpectedOutput(frames=9, fps=16, duration_s=9 / 16, resolution=res),
        sampling=SamplingParams(guidance=3, steps=2, negative_prompt="blurry"),
        estimated_gpu_seconds=0.1,
    )
    signature = ExecutionSignature(model=PREDICT, checkpoint="tiny-predict", dtype=dtype)  # type: ignore[arg-type]
    return GpuJob(
        job_id=f"{run_id}-a1",
        run_id=run_id,
        attempt=1,
        signature=signature,
        plan=plan,
        prompt="a robot arm stacks two red cubes",
        output_bucket=ARTIFACTS_BUCKET,
        output_key=video_key(run_id, 1),
    )


async def test_the_tiny_pipeline_runs_through_the_runner_loaded_once_per_signature(
    bus: Bus, store: ObjectStore, checkpoints: Path, tmp_path: Path
) -> None:
    """Jobs A, A, B, A (B = another dtype): two loads, every video exact, provenance names the checkpoint."""
    tag = uuid.uuid4().hex[:8]
    jobs = [
        _job(f"run-{tag}-{i}", dtype, seed=10 + i)
        for i, dtype in enumerate(["float32", "float32", "bfloat16", "float32"])
    ]
    config = BackendConfig(checkpoint_root=checkpoints, safety_checker=False)
    cache = ModelCache(lambda sig: create_backend(sig, config), budget_bytes=10**10)
    runner = Runner(bus, store, cache, name=f"tiny-{tag}", window=1)
    events = await run_jobs(runner, cache, bus, jobs)
    assert set(outcomes(events).values()) == {"JobCompleted"} and len(outcomes(events)) == len(jobs)
    assert cache.stats.loads == 2
    assert [s.dtype for s in cache.stats.loaded_signatures] == ["float32", "bfloat16"]
    for job in jobs:
        path = tmp_path / f"{job.job_id}.mp4"
        await store.download(ARTIFACTS_BUCKET, job.output_key, path)
        assert probe(path).frames == 9
        prov = await store.get_bytes(ARTIFACTS_BUCKET, job.output_key.replace("video.mp4", "provenance.json"))
        assert b'"checkpoint_sha256"' in prov and b"tiny-predict" in prov and b'"diffusers"' in prov


async def test_a_transfer_job_with_a_cpu_edge_control_runs_on_the_tiny_transfer_pipeline(
    bus: Bus, store: ObjectStore, checkpoints: Path, tmp_path: Path
) -> None:
    """The augment path's CPU edge control (Canny, medium) drives a tiny Transfer pipeline through the runner."""
    from tests.helpers.video import write_video  # noqa: PLC0415
    from worldmill.augment.controls import ControlRequest, compute_controls  # noqa: PLC0415
    from worldmill.contracts.augment import ControlSpec  # noqa: PLC0415
    from worldmill.contracts.cards import ControlType  # noqa: PLC0415

    tag = uuid.uuid4().hex[:8]
    source = write_video(tmp_path / "in.mp4", width=32, height=32, fps=16, frames=9, seed=5)
    [edge] = compute_controls(source, [ControlRequest(type=ControlType.EDGE)], tmp_path, stem="in")
    input_ref = await store.put_file(ARTIFACTS_BUCKET, f"tests/{tag}/in.mp4", source, content_type="video/mp4")
    edge_ref = await store.put_file(ARTIFACTS_BUCKET, f"tests/{tag}/in_control_edge.mp4", edge.path)
    job = _job(f"run-{tag}-t", "float32", seed=3)
    plan = job.plan.model_copy(update={"model": "cosmos-transfer2.5-2b", "mode": GenerationMode.TRANSFER})
    job = job.model_copy(
        update={
            "plan": plan,
            "signature": ExecutionSignature(
                model="cosmos-transfer2.5-2b", checkpoint="tiny-transfer", dtype="float32", controls=(ControlType.EDGE,)
            ),
            "inputs": (input_ref,),
            "controls": (ControlSpec(type=ControlType.EDGE, weight=0.8, video=edge_ref),),
        }
    )
    config = BackendConfig(checkpoint_root=checkpoints, safety_checker=False)
    cache = ModelCache(lambda sig: create_backend(sig, config), budget_bytes=10**10)
    runner = Runner(bus, store, cache, name=f"tiny-t-{tag}", window=1)
    events = await run_jobs(runner, cache, bus, [job])
    assert outcomes(events) == {job.run_id: "JobCompleted"}, events
    path = tmp_path / "out.mp4"
    await store.download(ARTIFACTS_BUCKET, job.output_key, path)
    assert probe(path).frames == 9
    prov = await store.get_bytes(ARTIFACTS_BUCKET, job.output_key.replace("video.mp4", "provenance.json"))
    assert b"tiny-transfer" in prov and b"Cosmos2_5_TransferPipeline" in prov and b"in_control_edge.mp4" in prov
