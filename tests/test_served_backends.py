"""Served engines as runner backends: NIM for Cosmos (``nim``) and vLLM-Omni (``vllm-omni``).

respx stands in for both servers (they need GPUs). Request bodies are checked against the
documented schemas: NIM's strict JSON (every field sent is a documented one; ``model_mode`` and
``prompt`` present), vLLM-Omni's multipart form (``prompt``, ``num_frames``, ``input_reference``…).
The videos the fake servers return are real small MP4s made with PyAV (VP9 for NIM, as NIM
returns; H.264 for vLLM-Omni). Two tests run jobs through the real ``Runner`` on the real NATS and
S3 fixtures and check the delivered video's exact frames and fps.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import json
import threading
import time
import uuid
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
import respx

from tests.helpers.runner import outcomes, run_jobs
from worldmill.contracts.backends import builtin_backends
from worldmill.contracts.base import Resolution
from worldmill.contracts.cards import FrameRule, GenerationMode, ModelCard, ResolutionTier, builtin_cards
from worldmill.contracts.generation import ExecutionSignature, GenerationPlan, GpuJob
from worldmill.contracts.keys import ARTIFACTS_BUCKET, video_key
from worldmill.contracts.prompts import PromptSpec, SamplingParams
from worldmill.generate.planning import plan_on_backends
from worldmill.gpu_runner.backends import BackendConfig, create_backend
from worldmill.gpu_runner.backends.base import Canceled, CheckpointError, ChunkRequest
from worldmill.gpu_runner.backends.nim_backend import NIM_FIELDS, NimBackend
from worldmill.gpu_runner.backends.served import ServedOutputRefused, ServedRejected, ServedUnavailable
from worldmill.gpu_runner.backends.vllm_omni_backend import VIDEOS_FIELDS, VllmOmniBackend
from worldmill.gpu_runner.cache import ModelCache
from worldmill.gpu_runner.worker import Runner
from worldmill.runtime.bus import Bus
from worldmill.runtime.errors import PermanentError, TransientError
from worldmill.runtime.store import ObjectStore

NIM = "http://nim.test"
OMNI = "http://omni.test"
W, H, FPS, CHUNK = 64, 48, 16, 17
MODEL = "cosmos3-nano"
SERVED_CHECKPOINT = "nvidia/Cosmos3-Nano"


def _card() -> ModelCard:
    """A Cosmos 3 card for the tests: Predict's rules, a short chunk and one small 4:3 tier."""
    return builtin_cards()["cosmos-predict2.5-2b"].model_copy(
        update={
            "id": MODEL,
            "display_name": "Cosmos3-Nano (test card)",
            "family": "cosmos3",
            "hub_id": SERVED_CHECKPOINT,
            "frames_per_chunk": CHUNK,
            "frame_rule": FrameRule(step=4, offset=1),
            "native_resolution": Resolution(width=W, height=H),
            "resolution_tiers": (ResolutionTier(name="256", sizes={"4,3": Resolution(width=W, height=H)}),),
            "resolution_multiple": 16,
            "deliverable_fps": frozenset({FPS}),
        }
    )


CARDS = {MODEL: _card()}


def mp4(frames: int, *, fps: int = FPS, width: int = W, height: int = H, codec: str = "libvpx-vp9") -> bytes:
    """A real MP4 of ``frames`` moving-gradient frames (VP9 like NIM's answer, or H.264)."""
    out = io.BytesIO()
    xs = np.arange(width, dtype=np.int32)[None, :, None]
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            img = np.broadcast_to((xs * 3 + i * 8) % 256, (height, width, 3)).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def config(**extra: Any) -> BackendConfig:
    fields: dict[str, Any] = dict(
        nim_base_url=NIM,
        vllm_omni_base_url=OMNI,
        served_poll_s=0.01,
        served_backoff_s=0.0,
        served_ready_timeout_s=5.0,
        safety_checker=False,
    )
    return BackendConfig(**(fields | extra))


def signature(backend: str) -> ExecutionSignature:
    return ExecutionSignature(model=MODEL, checkpoint=MODEL, backend=backend)


def chunk(condition_frames: int = 0, *, frames: int = CHUNK) -> ChunkRequest:
    rng = np.random.default_rng(1)
    cond = rng.integers(0, 255, (condition_frames, H, W, 3), dtype=np.uint8) if condition_frames else None
    return ChunkRequest(
        prompt="a forklift crosses a warehouse aisle",
        negative_prompt="blurry",
        seed=7,
        frames=frames,
        width=W,
        height=H,
        guidance=6.0,
        steps=4,
        fps=FPS,
        condition=cond,
    )


def nim_routes(mock: respx.MockRouter, *, checkpoint: str = SERVED_CHECKPOINT) -> None:
    mock.get(f"{NIM}/v1/health/ready").respond(200, json={"status": "ready"})
    mock.get(f"{NIM}/v1/metadata").respond(200, json={"checkpoint": checkpoint, "model_type": "generator"})


def omni_routes(mock: respx.MockRouter) -> None:
    mock.get(f"{OMNI}/health").respond(200)
    mock.get(f"{OMNI}/v1/models").respond(
        200, json={"object": "list", "data": [{"id": SERVED_CHECKPOINT, "object": "model", "root": SERVED_CHECKPOINT}]}
    )


def form_fields(request: httpx.Request) -> dict[str, tuple[str | None, bytes]]:
    """A multipart body as ``{name: (filename, bytes)}``."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.content)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        fields[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


def nim_answer(frames: int = CHUNK) -> httpx.Response:
    return httpx.Response(200, json={"b64_video": base64.b64encode(mp4(frames)).decode()})


# -- NIM ---------------------------------------------------------------------------------------


def test_nim_sends_exactly_the_documented_fields_and_decodes_the_vp9_answer() -> None:
    with respx.mock(assert_all_called=True) as mock:
        nim_routes(mock)
        infer = mock.post(f"{NIM}/v1/infer").mock(return_value=nim_answer())
        backend = NimBackend(signature("nim"), CARDS[MODEL], config())
        backend.setup()
        steps: list[tuple[int, int]] = []
        frames = backend.generate(chunk(1), lambda s, n: steps.append((s, n)))
    body = json.loads(infer.calls.last.request.content)
    assert set(body) <= NIM_FIELDS, f"fields NIM's strict schema rejects: {set(body) - NIM_FIELDS}"
    assert {"model_mode", "prompt"} <= set(body)
    assert body["model_mode"] == "image2video" and body["image"].startswith("data:image/png;base64,")
    assert (body["resolution"], body["num_output_frames"], body["fps"], body["steps"]) == ("256_4_3", CHUNK, 16.0, 4)
    assert (body["seed"], body["guidance_scale"], body["negative_prompt"]) == (7, 6.0, "blurry")
    assert frames.shape == (CHUNK, H, W, 3) and frames.dtype == np.uint8
    assert steps == [(0, 4), (4, 4)]
    assert backend.describe()["checkpoint"] == SERVED_CHECKPOINT


def test_nim_text2video_sends_no_image() -> None:
    with respx.mock(assert_all_called=False) as mock:
        nim_routes(mock)
        infer = mock.post(f"{NIM}/v1/infer").mock(return_value=nim_answer())
        backend = NimBackend(signature("nim"), CARDS[MODEL], config())
        backend.setup()
        backend.generate(chunk(0), lambda *_: None)
    body = json.loads(infer.calls.last.request.content)
    assert body["model_mode"] == "text2video" and "image" not in body


def test_a_422_is_permanent_and_names_the_field_the_server_names() -> None:
    detail = {"detail": [{"loc": ["body", "model_mode"], "msg": "Field required", "type": "missing"}]}
    with respx.mock(assert_all_called=False) as mock:
        nim_routes(mock)
        mock.post(f"{NIM}/v1/infer").respond(422, json=detail)
        backend = NimBackend(signature("nim"), CARDS[MODEL], config())
        backend.setup()
        with pytest.raises(ServedRejected) as caught:
            backend.generate(chunk(0), lambda *_: None)
    assert isinstance(caught.value, PermanentError)
    assert caught.value.field == "model_mode" and "Field required" in str(caught.value)


def test_setup_waits_through_503_until_ready() -> None:
    with respx.mock(assert_all_called=False) as mock:
        health = mock.get(f"{NIM}/v1/health/ready").mock(
            side_effect=[httpx.Response(503), httpx.Response(503), httpx.Response(200, json={"status": "ready"})]
        )
        mock.get(f"{NIM}/v1/metadata").respond(200, json={"checkpoint": SERVED_CHECKPOINT})
        backend = NimBackend(signature("nim"), CARDS[MODEL], config())
        backend.setup()
    assert health.call_count == 3 and backend.served_identity == SERVED_CHECKPOINT


def test_a_server_that_never_gets_ready_is_a_clear_transient_error() -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{NIM}/v1/health/ready").respond(503)
        backend = NimBackend(signature("nim"), CARDS[MODEL], config(served_ready_timeout_s=0.2))
        started = time.monotonic()
        with pytest.raises(ServedUnavailable, match="not ready after") as caught:
            backend.setup()
    assert time.monotonic() - started < 3
    assert isinstance(caught.value, TransientError) and "HTTP 503" in str(caught.value)


def test_a_timeout_is_transient_and_not_resent() -> None:
    with respx.mock(assert_all_called=False) as mock:
        nim_routes(mock)
        infer = mock.post(f"{NIM}/v1/infer").mock(side_effect=httpx.ReadTimeout("read timed out"))
        backend = NimBackend(signature("nim"), CARDS[MODEL], config())
        backend.setup()
        with pytest.raises(ServedUnavailable, match="timed out") as caught:
            backend.generate(chunk(0), lambda *_: None)
    assert isinstance(caught.value, TransientError) and not isinstance(caught.value, PermanentError)
    assert infer.call_count == 1  # a long generation is not started twice by the client


def test_a_wrong_frame_count_is_refused_with_the_reason() -> None:
    with respx.mock(assert_all_called=False) as mock:
        nim_routes(mock)
        mock.post(f"{NIM}/v1/infer").mock(return_value=nim_answer(13))
        backend = NimBackend(signature("nim"), CARDS[MODEL], config())
        backend.setup()
        with pytest.raises(ServedOutputRefused) as caught:
            backend.generate(chunk(0), lambda *_: None)
    assert "returned 13 frames at 16 fps" in str(caught.value) and f"exactly {CHUNK} frames" in str(caught.value)


def test_a_wrong_frame_rate_is_refused_with_the_reason() -> None:
    answer = {"b64_video": base64.b64encode(mp4(CHUNK, fps=24)).decode()}
    with respx.mock(assert_all_called=False) as mock:
        nim_routes(mock)
        mock.post(f"{NIM}/v1/infer").respond(200, json=answer)
        backend = NimBackend(signature("nim"), CARDS[MODEL], config())
        backend.setup()
        with pytest.raises(ServedOutputRefused, match="at 24 fps"):
            backend.generate(chunk(0), lambda *_: None)


def test_a_checkpoint_mismatch_names_both() -> None:
    with respx.mock(assert_all_called=False) as mock:
        nim_routes(mock, checkpoint="nvidia/Cosmos-Predict2.5-14B")
        backend = NimBackend(signature("nim"), CARDS[MODEL], config())
        with pytest.raises(CheckpointError) as caught:
            backend.setup()
    message = str(caught.value)
    assert "nvidia/Cosmos-Predict2.5-14B" in message and MODEL in message and SERVED_CHECKPOINT in message


# -- vLLM-Omni -----------------------------------------------------------------------------------


def test_vllm_omni_slow_async_job_is_polled_to_completion_with_progress() -> None:
    polls = [
        {"id": "video-1", "status": "queued", "progress": 0},
        {"id": "video-1", "status": "in_progress", "progress": 25},
        {"id": "video-1", "status": "in_progress", "progress": 75},
        {"id": "video-1", "status": "completed", "progress": 100},
    ]
    with respx.mock(assert_all_called=True) as mock:
        omni_routes(mock)
        create = mock.post(f"{OMNI}/v1/videos").respond(200, json={"id": "video-1", "status": "queued"})
        status = mock.get(f"{OMNI}/v1/videos/video-1").mock(side_effect=[httpx.Response(200, json=p) for p in polls])
        mock.get(f"{OMNI}/v1/videos/video-1/content").respond(200, content=mp4(CHUNK, codec="libx264"))
        delete = mock.delete(f"{OMNI}/v1/videos/video-1").respond(200, json={"id": "video-1", "deleted": True})
        backend = VllmOmniBackend(signature("vllm-omni"), CARDS[MODEL], config())
        backend.setup()
        steps: list[int] = []
        frames = backend.generate(chunk(5), lambda s, _n: steps.append(s))
    assert status.call_count == 4 and delete.called
    assert steps == [0, 0, 1, 3, 4]  # started, queued, 25 %, 75 % of 4 steps, done
    fields = form_fields(create.calls.last.request)
    assert set(fields) <= VIDEOS_FIELDS, set(fields) - VIDEOS_FIELDS
    values = {k: v.decode() for k, (name, v) in fields.items() if name is None}
    assert values["prompt"] == "a forklift crosses a warehouse aisle" and values["model"] == SERVED_CHECKPOINT
    assert (values["num_frames"], values["fps"], values["width"], values["height"]) == ("17", "16", "64", "48")
    assert (values["num_inference_steps"], values["seed"], values["negative_prompt"]) == ("4", "7", "blurry")
    filename, clip = fields["input_reference"]
    assert filename == "condition.mp4"
    with av.open(io.BytesIO(clip)) as sent:
        assert sum(1 for _ in sent.decode(video=0)) == 5  # the 5 conditioning frames, as a video
    assert frames.shape == (CHUNK, H, W, 3)


def test_vllm_omni_cancel_between_polls_stops_and_deletes_the_job() -> None:
    with respx.mock(assert_all_called=False) as mock:
        omni_routes(mock)
        mock.post(f"{OMNI}/v1/videos").respond(200, json={"id": "video-2", "status": "queued"})
        mock.get(f"{OMNI}/v1/videos/video-2").respond(200, json={"id": "video-2", "status": "in_progress"})
        content = mock.get(f"{OMNI}/v1/videos/video-2/content").respond(200, content=b"")
        delete = mock.delete(f"{OMNI}/v1/videos/video-2").respond(200, json={"deleted": True})
        backend = VllmOmniBackend(signature("vllm-omni"), CARDS[MODEL], config())
        backend.setup()
        calls: list[int] = []

        def on_step(step: int, _steps: int) -> None:
            calls.append(step)
            if len(calls) == 3:
                raise Canceled("run")

        with pytest.raises(Canceled):
            backend.generate(chunk(1), on_step)
    assert delete.called and not content.called


def test_vllm_omni_failed_job_and_400_are_reported() -> None:
    with respx.mock(assert_all_called=False) as mock:
        omni_routes(mock)
        mock.post(f"{OMNI}/v1/videos").respond(
            400,
            json={
                "error": {"message": "num_frames must be positive", "type": "invalid_request", "param": "num_frames"}
            },
        )
        backend = VllmOmniBackend(signature("vllm-omni"), CARDS[MODEL], config())
        backend.setup()
        with pytest.raises(ServedRejected) as caught:
            backend.generate(chunk(0), lambda *_: None)
    assert caught.value.field == "num_frames"


def test_the_registry_and_capabilities_know_both() -> None:
    caps = builtin_backends()
    for name, cls in (("nim", NimBackend), ("vllm-omni", VllmOmniBackend)):
        assert not caps[name].in_process and caps[name].max_controls == 0
        assert caps[name].chunking_for(GenerationMode.TEXT2WORLD) == "runner"
        assert isinstance(create_backend(signature(name), config(), cards=CARDS), cls)


# -- end to end through the runner ----------------------------------------------------------------


def _spec(frames: int) -> PromptSpec:
    return PromptSpec(
        prompt_id=f"p-{uuid.uuid4().hex[:10]}",
        version=1,
        series="S",
        scenario="S01",
        variant=0,
        duration_s=frames / FPS,
        fps=FPS,
        target_frames=frames,
        seed=21,
        resolution=Resolution(width=W, height=H),
        model=MODEL,
        mode=GenerationMode.TEXT2WORLD,
        prompt="a drone flies over a container port at dawn",
        sampling=SamplingParams(guidance=6.0, steps=3),
        created_at=datetime.now(UTC),
    )


def _job(plan: GenerationPlan, backend: str) -> GpuJob:
    run_id = f"run-{uuid.uuid4().hex[:10]}"
    return GpuJob(
        job_id=f"{run_id}-a1",
        run_id=run_id,
        attempt=1,
        signature=signature(backend),
        plan=plan,
        prompt="a drone flies over a container port at dawn",
        output_bucket=ARTIFACTS_BUCKET,
        output_key=video_key(run_id, 1),
    )


async def _run(bus: Bus, store: ObjectStore, jobs: list[GpuJob], *, concurrency: int = 1) -> list[Any]:
    cfg = config(served_concurrency=concurrency)
    cache = ModelCache(lambda sig: create_backend(sig, cfg, cards=CARDS), budget_bytes=10**10)
    runner = Runner(bus, store, cache, name=f"served-{uuid.uuid4().hex[:6]}", window=4, served_concurrency=concurrency)
    return await run_jobs(runner, cache, bus, jobs, timeout_s=60)


def _delivered(path: Path) -> tuple[int, Fraction, str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(video=0))
        return count, Fraction(stream.average_rate or 0), stream.codec_context.name


async def test_a_two_chunk_nim_job_runs_through_the_runner_and_delivers_exact_frames(
    bus: Bus, store: ObjectStore, tmp_path: Path
) -> None:
    """33 frames at 16 fps: two 17-frame NIM requests, the second conditioned on the first's last frame."""
    plan = plan_on_backends(
        _spec(33), CARDS[MODEL], [builtin_backends()["nim"]], plan_id=f"plan-{uuid.uuid4().hex[:8]}", overlap_frames=1
    )
    assert (len(plan.chunks), plan.native_frames, plan.expected.frames) == (2, 33, 33)
    job = _job(plan, "nim")
    with respx.mock(assert_all_mocked=False, assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        mock.route(host="localhost").pass_through()
        nim_routes(mock)
        infer = mock.post(f"{NIM}/v1/infer").mock(side_effect=lambda _req: nim_answer())
        events = await _run(bus, store, [job])
    assert outcomes(events) == {job.run_id: "JobCompleted"}, events
    bodies = [json.loads(call.request.content) for call in infer.calls]
    assert [b["model_mode"] for b in bodies] == ["text2video", "image2video"]
    assert [b["seed"] for b in bodies] == [c.seed for c in plan.chunks]
    assert all(set(b) <= NIM_FIELDS for b in bodies)
    out = tmp_path / "out.mp4"
    await store.download(ARTIFACTS_BUCKET, job.output_key, out)
    assert _delivered(out) == (33, Fraction(16), "h264")
    prov = json.loads(await store.get_bytes(ARTIFACTS_BUCKET, job.output_key.replace("video.mp4", "provenance.json")))
    assert prov["backend"] == "nim" and prov["checkpoint"] == SERVED_CHECKPOINT and prov["extra"]["model_calls"] == 2


async def test_served_concurrency_overlaps_jobs_on_the_engine(bus: Bus, store: ObjectStore) -> None:
    """Two one-chunk jobs with served_concurrency=2: the fake engine answers only once both requests are in."""
    plans = [
        plan_on_backends(
            _spec(CHUNK),
            CARDS[MODEL],
            [builtin_backends()["nim"]],
            plan_id=f"plan-{uuid.uuid4().hex[:8]}",
            overlap_frames=1,
        )
        for _ in range(2)
    ]
    jobs = [_job(p, "nim") for p in plans]
    both_in = threading.Barrier(2, timeout=10)

    def answer(_req: httpx.Request) -> httpx.Response:
        both_in.wait()  # breaks (and fails the job) unless the second request arrives meanwhile
        return nim_answer()

    with respx.mock(assert_all_mocked=False, assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        mock.route(host="localhost").pass_through()
        nim_routes(mock)
        mock.post(f"{NIM}/v1/infer").mock(side_effect=answer)
        events = await _run(bus, store, jobs, concurrency=2)
    assert outcomes(events) == dict.fromkeys((j.run_id for j in jobs), "JobCompleted"), events
