"""The real model path end to end on CPU: tiny random Cosmos 2.5 pipelines, planned for the diffusers backend.

Plans come from the generate service's own planner (``plan_on_backends``) against copies of the
real cards that allow 32x32 (the tiny pipelines' size); chunk lengths, overlaps, frame rates and
the backend's capabilities are the real ones. Jobs run through the runner on the real servers;
the delivered videos are checked by QA's own format checks (frames, fps, duration, codec,
container, resolution). Random weights make meaningless pictures, so QA's content checks (black,
frozen) are not asserted here.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.generation import AUTH, announce, generate_client
from tests.helpers.runner import outcomes, run_jobs
from worldmill.contracts.augment import ControlSpec
from worldmill.contracts.backends import builtin_backends
from worldmill.contracts.base import ObjectRef, Resolution
from worldmill.contracts.cards import ControlType, GenerationMode, ModelCard, builtin_cards
from worldmill.contracts.generation import (
    ExecutionSignature,
    GenerationPlan,
    GenerationRejected,
    GpuJob,
    JobFailed,
)
from worldmill.contracts.keys import ARTIFACTS_BUCKET, video_key
from worldmill.contracts.prompts import PromptSpec, SamplingParams
from worldmill.contracts.subjects import EVENTS, event_subject
from worldmill.generate.planning import PlanningError, plan_on_backends
from worldmill.gpu_runner.backends import BackendConfig, create_backend
from worldmill.gpu_runner.cache import ModelCache
from worldmill.gpu_runner.worker import Runner
from worldmill.qa.criteria import Expectation
from worldmill.qa.judge import check
from worldmill.qa.measure import analyze
from worldmill.runtime.bus import Bus
from worldmill.runtime.decode import parse
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.store import ObjectStore

PREDICT = "cosmos-predict2.5-2b"
TRANSFER = "cosmos-transfer2.5-2b"
SIZE = 32
FORMAT_CHECKS = {"decodes", "container", "codec", "frames", "fps", "duration", "resolution"}
DIFFUSERS = builtin_backends()["diffusers"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cosmos-predict2.5-2b and cosmos-transfer2.5-2b folders holding tiny random pipelines (controlnets per type)."""
    from tests.helpers.tiny_cosmos import build_tiny_predict, build_tiny_transfer  # noqa: PLC0415 - imports diffusers

    root = tmp_path_factory.mktemp("cosmos")
    build_tiny_predict(root / PREDICT)
    build_tiny_transfer(root / TRANSFER)
    return root


def _card(model: str) -> ModelCard:
    """The real card, allowing the tiny pipelines' 32x32 (nothing else changed)."""
    return builtin_cards()[model].model_copy(update={"any_resolution": True})


def _spec(model: str, *, frames: int, fps: int, mode: GenerationMode, **extra: Any) -> PromptSpec:
    pid = f"p-{uuid.uuid4().hex[:10]}"
    fields: dict[str, Any] = dict(
        prompt_id=pid,
        version=1,
        series="T",
        scenario="T01",
        variant=0,
        duration_s=frames / fps,
        fps=fps,
        target_frames=frames,
        seed=11,
        resolution=Resolution(width=SIZE, height=SIZE),
        model=model,
        mode=mode,
        prompt="a delivery robot crosses a wet street at night",
        sampling=SamplingParams(guidance=3.0, steps=2, negative_prompt="blurry"),
        created_at=datetime.now(UTC),
    )
    return PromptSpec(**(fields | extra))


def _job(spec: PromptSpec, plan: GenerationPlan, **extra: Any) -> GpuJob:
    run_id = f"run-{uuid.uuid4().hex[:10]}"
    controls = tuple(sorted({c.type for c in extra.get("controls", ())}))
    return GpuJob(
        job_id=f"{run_id}-a1",
        run_id=run_id,
        attempt=1,
        signature=ExecutionSignature(model=spec.model, checkpoint=spec.model, dtype="float32", controls=controls),
        plan=plan,
        prompt=spec.prompt,
        output_bucket=ARTIFACTS_BUCKET,
        output_key=video_key(run_id, 1),
        **extra,
    )


async def _run(bus: Bus, store: ObjectStore, config: BackendConfig, jobs: list[GpuJob]) -> list[Any]:
    """Run the jobs on a fresh runner with these backends; every event of their runs."""
    cache = ModelCache(lambda sig: create_backend(sig, config), budget_bytes=10**10)
    runner = Runner(bus, store, cache, name=f"tiny-{uuid.uuid4().hex[:6]}", window=1, progress_interval_s=0.01)
    return await run_jobs(runner, cache, bus, jobs)


async def _qa_format(store: ObjectStore, job: GpuJob, tmp: Path) -> dict[str, bool]:
    path = tmp / f"{job.job_id}.mp4"
    await store.download(ARTIFACTS_BUCKET, job.output_key, path)
    findings = check(analyze(path), Expectation.from_plan(job.plan))
    return {f.check: f.passed for f in findings if f.check in FORMAT_CHECKS}


async def _delivered(bus: Bus, store: ObjectStore, checkpoints: Path, job: GpuJob, tmp: Path) -> dict[str, Any]:
    """Run one job on the tiny checkpoints (no guardrail); assert it completed and passes QA's format checks."""
    events = await _run(bus, store, BackendConfig(checkpoint_root=checkpoints, safety_checker=False), [job])
    assert outcomes(events) == {job.run_id: "JobCompleted"}, events
    qa = await _qa_format(store, job, tmp)
    assert qa == dict.fromkeys(FORMAT_CHECKS, True), qa
    return await _provenance(store, job)


async def _provenance(store: ObjectStore, job: GpuJob) -> dict[str, Any]:
    raw = await store.get_bytes(ARTIFACTS_BUCKET, job.output_key.replace("video.mp4", "provenance.json"))
    out: dict[str, Any] = json.loads(raw)
    return out


async def test_a_long_edge_transfer_runs_as_one_pipeline_call(
    bus: Bus, store: ObjectStore, checkpoints: Path, tmp_path: Path
) -> None:
    """120 frames at 24 fps (over 93): planned as 2 chunks on the pipeline, made in ONE call, exact, QA format passes."""
    from tests.helpers.video import write_video  # noqa: PLC0415
    from worldmill.augment.controls import ControlRequest, compute_controls  # noqa: PLC0415

    tag = uuid.uuid4().hex[:8]
    source = write_video(tmp_path / "in.mp4", width=SIZE, height=SIZE, fps=24, frames=120, seed=5)
    [edge] = compute_controls(source, [ControlRequest(type=ControlType.EDGE)], tmp_path, stem="in")
    input_ref = await store.put_file(ARTIFACTS_BUCKET, f"tests/{tag}/in.mp4", source, content_type="video/mp4")
    edge_ref = await store.put_file(ARTIFACTS_BUCKET, f"tests/{tag}/in_control_edge.mp4", edge.path)
    controls = (ControlSpec(type=ControlType.EDGE, weight=0.8, video=edge_ref),)
    spec = _spec(TRANSFER, frames=120, fps=24, mode=GenerationMode.TRANSFER, input=input_ref, controls=controls)
    plan = plan_on_backends(spec, _card(TRANSFER), [DIFFUSERS], plan_id=f"plan-{tag}")
    assert (plan.backend, plan.chunking, len(plan.chunks)) == ("diffusers", "pipeline", 2)
    assert [c.frames for c in plan.chunks] == [93, 93] and plan.chunks[1].condition_frames == 1
    job = _job(spec, plan, inputs=(input_ref,), controls=controls)
    config = BackendConfig(checkpoint_root=checkpoints, safety_checker=False)
    events = await _run(bus, store, config, [job])
    assert outcomes(events) == {job.run_id: "JobCompleted"}, events
    qa = await _qa_format(store, job, tmp_path)
    assert qa == dict.fromkeys(FORMAT_CHECKS, True), qa
    prov = await _provenance(store, job)
    assert prov["extra"]["model_calls"] == 1 and prov["extra"]["chunking"] == "pipeline"
    assert prov["extra"]["control"] == "edge" and prov["extra"]["controlnet"].endswith("controlnets/edge")
    assert prov["peak_memory_kind"] == "host_max_rss" and prov["peak_memory_bytes"] > 0
    assert prov["extra"]["gpu.device"] == "cpu"
    steps = {(e.chunk, e.step) for e in events if type(e).__name__ == "JobProgress" and e.phase == "generating"}
    assert {c for c, _ in steps} == {0, 1}, steps  # progress per chunk, from the one call's callback


async def test_a_three_chunk_text2world_video_is_exact_and_interpolated_by_flow(
    bus: Bus, store: ObjectStore, checkpoints: Path, tmp_path: Path
) -> None:
    """12 s at 24 fps on Predict (16 fps native): 193 native frames in 3 runner-chained chunks, 288 frames out."""
    spec = _spec(PREDICT, frames=288, fps=24, mode=GenerationMode.TEXT2WORLD)
    plan = plan_on_backends(spec, _card(PREDICT), [DIFFUSERS], plan_id=f"plan-{uuid.uuid4().hex[:8]}")
    assert (plan.chunking, len(plan.chunks), plan.native_frames) == ("runner", 3, 193)
    assert [c.seed for c in plan.chunks] == [11, 12, 13]
    prov = await _delivered(bus, store, checkpoints, _job(spec, plan), tmp_path)
    assert prov["extra"]["model_calls"] == 3 and prov["seeds"] == [11, 12, 13]
    assert prov["extra"]["fps_conversion"].startswith("flow"), prov["extra"]["fps_conversion"]
    assert prov["extra"]["attention_backend"] == "native" and prov["extra"]["compile"] == "off"


class _BlockingGuardrail:
    """A test guardrail: blocks every prompt that mentions a weapon."""

    def check_text_safety(self, prompt: str) -> bool:
        return "weapon" not in prompt

    def check_video_safety(self, frames: np.ndarray) -> np.ndarray:
        return frames


async def test_a_guardrail_block_fails_for_good_with_its_reason(
    bus: Bus, store: ObjectStore, checkpoints: Path
) -> None:
    """A blocked prompt: job.failed not retryable, naming the guardrail and the prompt; no frames made."""
    spec = _spec(PREDICT, frames=16, fps=16, mode=GenerationMode.TEXT2WORLD, prompt="a man waves a weapon")
    plan = plan_on_backends(spec, _card(PREDICT), [DIFFUSERS], plan_id=f"plan-{uuid.uuid4().hex[:8]}")
    job = _job(spec, plan)
    config = BackendConfig(checkpoint_root=checkpoints, safety_checker=True, guardrail_loader=_BlockingGuardrail)
    events = await _run(bus, store, config, [job])
    assert outcomes(events) == {job.run_id: "JobFailed"}
    [failed] = [e for e in events if isinstance(e, JobFailed)]
    assert failed.retryable is False
    assert "blocked by the _BlockingGuardrail guardrail: the prompt 'a man waves a weapon'" in failed.error
    generating = [e for e in events if type(e).__name__ == "JobProgress" and e.phase == "generating"]
    assert generating == []  # refused before any denoising step


def test_planning_refuses_what_diffusers_cannot_run() -> None:
    """Multi-control Transfer, overlaps of 2-4 and 0 over several chunks are refused at planning, with the reason."""
    ref = ObjectRef(bucket="wm-inputs", key="in.mp4", size=1, sha256="0" * 64)
    two = (ControlSpec(type=ControlType.EDGE, weight=0.5), ControlSpec(type=ControlType.DEPTH, weight=0.5))
    spec = _spec(TRANSFER, frames=120, fps=24, mode=GenerationMode.TRANSFER, input=ref, controls=two)
    with pytest.raises(PlanningError) as err:
        plan_on_backends(spec, _card(TRANSFER), [DIFFUSERS], plan_id="p", known=list(builtin_backends().values()))
    assert err.value.field == "controls"
    assert "2 controls (depth+edge)" in err.value.rule and "mixes at most 1" in err.value.rule
    assert "the native-transfer backend can run it" in err.value.rule  # named, though not configured
    long = _spec(PREDICT, frames=288, fps=24, mode=GenerationMode.TEXT2WORLD)
    for overlap in (2, 3, 4):
        with pytest.raises(PlanningError, match=r"overlap \d: the diffusers backend conditions .* on 1 or 5") as err:
            plan_on_backends(long, _card(PREDICT), [DIFFUSERS], plan_id="p", overlap_frames=overlap)
        assert err.value.field == "overlap_frames"
    with pytest.raises(PlanningError, match="hard cut") as err:
        plan_on_backends(long, _card(PREDICT), [DIFFUSERS], plan_id="p", overlap_frames=0)
    for overlap in (1, 5):
        assert len(plan_on_backends(long, _card(PREDICT), [DIFFUSERS], plan_id="p", overlap_frames=overlap).chunks) > 1
    # the stand-in runs what diffusers cannot, but only where it is the configured backend
    assert (
        plan_on_backends(spec, _card(TRANSFER), [builtin_backends()["synthetic"]], plan_id="p").backend == "synthetic"
    )
    with pytest.raises(PlanningError):
        plan_on_backends(spec, _card(TRANSFER), [DIFFUSERS, builtin_backends()["synthetic"]], plan_id="p")


async def test_the_generate_service_refuses_multi_control_on_diffusers_before_queueing(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, tmp_path: Path
) -> None:
    """HTTP 422 naming the spec and the rule, generation.rejected on the bus, no run and no job."""
    ref = ObjectRef(bucket="wm-inputs", key="in.mp4", size=1, sha256="0" * 64)
    two = (ControlSpec(type=ControlType.EDGE, weight=0.5), ControlSpec(type=ControlType.VIS, weight=0.5))
    spec = _spec(
        TRANSFER, frames=120, fps=24, mode=GenerationMode.TRANSFER, input=ref, controls=two,
        resolution=Resolution(width=1280, height=704),
    )  # fmt: skip
    await announce(bus, [spec])
    with generate_client(nats, s3, tmp_path, backends=("diffusers", "synthetic")) as gen:
        time.sleep(0.5)
        answer = gen.post("/generations", json={"prompt_ids": [spec.prompt_id]}, headers=AUTH)
        assert answer.status_code == 422, answer.text
        assert spec.prompt_id in answer.text and "mixes at most 1" in answer.text
        assert gen.get("/runs", params={"prompt_id": spec.prompt_id}, headers=AUTH).json()["items"] == []
    stored = await bus.js.get_last_msg(EVENTS.name, event_subject("generation.rejected"))
    _, event = parse(stored.data, None)
    assert isinstance(event, GenerationRejected) and event.prompt_ids == (spec.prompt_id,)
    assert "controls:" in event.problems[spec.prompt_id]


def test_the_default_overlap_is_one_the_backend_takes() -> None:
    """Predict's default overlap is 5 frames; on a backend that conditions on 1 frame only (NIM), 1 is planned."""
    nim = builtin_backends()["nim"]
    assert nim.overlaps is not None and 5 not in nim.overlaps
    long = _spec(PREDICT, frames=288, fps=24, mode=GenerationMode.TEXT2WORLD)
    plan = plan_on_backends(long, _card(PREDICT), [nim], plan_id="p")
    assert {c.condition_frames for c in plan.chunks[1:]} == {1}
    assert plan_on_backends(long, _card(PREDICT), [DIFFUSERS], plan_id="p").chunks[1].condition_frames == 5
