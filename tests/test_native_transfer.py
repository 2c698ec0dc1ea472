"""The native Cosmos-Transfer2.5 backend: NVIDIA's spec from a whole-video request, planning, and the
worker protocol end to end with a stand-in engine behind the real worker's HTTP layer
(docker/native_transfer_worker.py), plus one augmentation-shaped job through the Runner.

NVIDIA's own inference is not run here (no GPU, no NVIDIA image).
"""

from __future__ import annotations

import importlib.util
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests.helpers.generation import runner_client
from tests.helpers.video import write_video
from tests.test_runner_transfer import _job, _outcomes, _spec, _upload_edges
from worldmill.contracts.augment import ControlSpec
from worldmill.contracts.backends import builtin_backends
from worldmill.contracts.cards import ControlType, builtin_cards
from worldmill.contracts.envelope import wrap
from worldmill.contracts.generation import ExecutionSignature, JobCompleted
from worldmill.generate.planning import PlanningError, plan_on_backends
from worldmill.gpu_runner.backends.base import BackendConfig, Canceled, VideoRequest
from worldmill.gpu_runner.backends.native_transfer import (
    NativeTransferBackend,
    normalised_weights,
    nvidia_chunks,
    nvidia_spec,
)
from worldmill.gpu_runner.backends.registry import create_backend
from worldmill.runtime.bus import Bus
from worldmill.runtime.errors import InvalidInputError, PermanentError, TransientError
from worldmill.runtime.media import probe
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.store import ObjectStore

ROOT = Path(__file__).resolve().parents[1]
TRANSFER = "cosmos-transfer2.5-2b"
W, H = 64, 48
#: Every field of cosmos_transfer2.config.InferenceArguments (nvidia-cosmos/cosmos-transfer2.5 @ 2ff49d0).
NVIDIA_FIELDS = {
    "name", "prompt_path", "prompt", "negative_prompt", "seed", "guidance", "video_path", "max_frames",
    "context_frame_index", "image_context_path", "num_conditional_frames", "resolution", "sigma_max",
    "num_video_frames_per_chunk", "num_steps", "show_control_condition", "show_input", "keep_input_resolution",
    "edge", "depth", "vis", "seg", "guided_generation_mask", "guided_generation_step_threshold",
    "guided_generation_foreground_labels",
}  # fmt: skip
CONTROL_FIELDS = {"control_path", "control_weight", "mask_path", "mask_prompt"}


def _worker_module() -> Any:
    spec = importlib.util.spec_from_file_location("native_transfer_worker", ROOT / "docker/native_transfer_worker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


worker_mod = _worker_module()


def _frames(n: int, w: int = W, h: int = H, value: int = 0) -> np.ndarray:
    out = np.full((n, h, w, 3), value, dtype=np.uint8)
    out[:, :, : w // 2] = 200
    return out


def _ignore(*_progress: int) -> None:
    return None


def _request(frames: int = 120, **changes: Any) -> VideoRequest:
    fields: dict[str, Any] = dict(
        prompt="the same street at dusk",
        negative_prompt=None,
        seed=11,
        frames=frames,
        chunk_frames=93,
        overlap=1,
        chunks=nvidia_chunks(frames, 93, 1),
        width=W,
        height=H,
        guidance=3.0,
        steps=3,
        fps=24.0,
        controls={"edge": _frames(frames), "vis": _frames(frames, value=50)},
        control_weights={"edge": 0.8, "vis": 0.6},
        input_video=_frames(frames, value=90),
    )
    fields.update(changes)
    return VideoRequest(**fields)


# --- the spec -----------------------------------------------------------------------------------


def test_the_spec_has_nvidias_field_names_and_types() -> None:
    spec = nvidia_spec(_request(), presets={"edge": "low", "vis": "high"})
    assert set(spec) <= NVIDIA_FIELDS
    assert spec["name"] == "output" and spec["video_path"] == "input.mp4"
    assert spec["max_frames"] == 120 and isinstance(spec["max_frames"], int)
    assert spec["guidance"] == 3 and type(spec["guidance"]) is int  # Guidance = Annotated[int, ge=0, le=7]
    assert (spec["num_steps"], spec["seed"], spec["resolution"]) == (3, 11, "480")
    assert (spec["num_video_frames_per_chunk"], spec["num_conditional_frames"]) == (93, 1)
    assert spec["keep_input_resolution"] is True
    assert "negative_prompt" not in spec  # NVIDIA's default negative prompt
    assert spec["edge"] == {
        "control_path": "control_edge.mp4",
        "control_weight": pytest.approx(0.8 / 1.4),
        "preset_edge_threshold": "low",
    }
    assert spec["vis"]["preset_blur_strength"] == "high"
    assert set(spec["vis"]) - {"preset_blur_strength"} <= CONTROL_FIELDS
    assert "depth" not in spec and "seg" not in spec
    assert nvidia_spec(_request(negative_prompt="blurry"))["negative_prompt"] == "blurry"


def test_weights_are_capped_at_a_sum_of_one_never_scaled_up() -> None:
    assert normalised_weights({"edge": 0.8, "vis": 0.6}) == pytest.approx({"edge": 0.8 / 1.4, "vis": 0.6 / 1.4})
    assert normalised_weights({"edge": 0.3, "vis": 0.5}) == {"edge": 0.3, "vis": 0.5}
    assert sum(normalised_weights({"edge": 1.0, "vis": 1.0, "depth": 1.0}).values()) == pytest.approx(1.0)


def test_overlap_is_nvidias_pixel_conditional_frames_with_the_same_chunks() -> None:
    assert nvidia_chunks(120, 93, 1) == 2 and nvidia_chunks(93, 93, 1) == 1 and nvidia_chunks(186, 93, 2) == 3
    spec = nvidia_spec(_request(200, overlap=2, chunks=nvidia_chunks(200, 93, 2)))
    assert spec["num_conditional_frames"] == 2 and nvidia_chunks(200, 93, 2) == 3
    with pytest.raises(InvalidInputError) as bad:
        nvidia_spec(_request(200, overlap=5, chunks=nvidia_chunks(200, 93, 5)))
    assert bad.value.field == "overlap"
    with pytest.raises(InvalidInputError) as chunks:
        nvidia_spec(_request(120, chunks=3))
    assert chunks.value.field == "chunks"


@pytest.mark.parametrize(
    ("changes", "field", "distilled"),
    [
        ({"guidance": 3.5}, "guidance", False),
        ({"guidance": 8.0}, "guidance", False),
        ({"input_video": None}, "input_video", False),
        ({"steps": 35}, "steps", True),
        ({"steps": 4}, "controls", True),  # edge + vis on the edge-only distilled checkpoint
    ],
)
def test_what_nvidia_cannot_say_is_refused_by_field(changes: dict[str, Any], field: str, distilled: bool) -> None:
    with pytest.raises(InvalidInputError) as refused:
        nvidia_spec(_request(**changes), distilled=distilled)
    assert refused.value.field == field


def test_a_distilled_edge_spec_is_made() -> None:
    request = _request(93, steps=4, controls={"edge": _frames(93)}, control_weights={"edge": 1.0})
    spec = nvidia_spec(request, distilled=True)
    assert spec["num_steps"] == 4 and spec["edge"]["control_weight"] == 1.0


# --- planning -----------------------------------------------------------------------------------


def test_the_planner_routes_multi_control_transfer_to_native_transfer_and_refuses_without_it() -> None:
    known = builtin_backends()
    card = builtin_cards()[TRANSFER].model_copy(update={"any_resolution": True})
    controls = (ControlSpec(type=ControlType.EDGE, weight=0.6), ControlSpec(type=ControlType.VIS, weight=0.4))
    spec = _spec(120, controls=controls)
    with pytest.raises(PlanningError) as refused:
        plan_on_backends(spec, card, [known["diffusers"]], plan_id="p1", known=list(known.values()))
    assert refused.value.field == "controls" and "native-transfer" in str(refused.value)
    plan = plan_on_backends(spec, card, [known["diffusers"], known["native-transfer"]], plan_id="p2")
    assert plan.backend == "native-transfer" and plan.chunking == "pipeline"
    assert len(plan.chunks) == 2 and plan.chunks[1].condition_frames == 1
    one = plan_on_backends(_spec(120), card, [known["diffusers"], known["native-transfer"]], plan_id="p3")
    assert one.backend == "diffusers"  # one control: the first configured backend that runs it


# --- the protocol, end to end -------------------------------------------------------------------


class StandInEngine:
    """NVIDIA's place: records specs, makes a PyAV video of max_frames at the input's rate and size."""

    def __init__(self, *, delay_s: float = 0.05, refuse: tuple[str, str] | None = None) -> None:
        self.specs: list[dict[str, Any]] = []
        self.delay_s = delay_s
        self.refuse = refuse
        self.started = threading.Event()

    def info(self) -> dict[str, Any]:
        return {"nvidia_repo": "nvidia-cosmos/cosmos-transfer2.5", "nvidia_commit": "stand-in", "model": "edge",
                "distilled": False, "checkpoint": "stand-in", "gpus": 1, "guardrails": False}  # fmt: skip

    def validate(self, spec: dict[str, Any]) -> None:
        if self.refuse is not None:
            raise worker_mod.SpecError(*self.refuse)
        for key in ("edge", "vis", "depth", "seg"):
            if key in spec:
                assert Path(spec[key]["control_path"]).is_file()

    def run(self, spec: dict[str, Any], out_dir: Path, progress: Any, canceled: Callable[[], bool]) -> Path:
        self.specs.append(spec)
        self.started.set()
        with av.open(spec["video_path"]) as c:
            stream = c.streams.video[0]
            rate, width, height = stream.average_rate, stream.width, stream.height
        frames, chunk, overlap = spec["max_frames"], spec["num_video_frames_per_chunk"], spec["num_conditional_frames"]
        chunks = 1 if frames <= chunk else 1 + -(-(frames - chunk) // (chunk - overlap))
        for i in range(chunks):
            for step in range(1, spec["num_steps"] + 1):
                if canceled():
                    raise worker_mod.CanceledJob
                time.sleep(self.delay_s)
                progress(i, chunks, step, spec["num_steps"])
        out_dir.mkdir(parents=True, exist_ok=True)
        return write_video(out_dir / f"{spec['name']}.mp4", width=width, height=height, fps=rate, frames=frames)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Any]:
    engine = StandInEngine()
    server = worker_mod.WorkerServer(engine, tmp_path / "spool", "127.0.0.1", _free_port())
    server.start()
    yield server
    server.stop()


def _backend(url: str) -> NativeTransferBackend:
    signature = ExecutionSignature(model=TRANSFER, checkpoint=TRANSFER, backend="native-transfer")
    backend = create_backend(signature, BackendConfig(native_transfer_url=url))
    assert isinstance(backend, NativeTransferBackend)
    backend.poll_interval_s = 0.02
    backend.unreachable_grace_s = 1.0
    return backend


def test_a_two_control_video_through_the_worker(worker: Any) -> None:
    backend = _backend(f"http://127.0.0.1:{worker.port}")
    backend.setup()
    seen: list[tuple[int, int, int, int]] = []
    out = backend.generate_video(_request(120), lambda *p: seen.append(p))
    assert out.shape == (120, H, W, 3)
    [spec] = worker.engine.specs
    assert spec["edge"]["control_weight"] == pytest.approx(0.8 / 1.4) and spec["max_frames"] == 120
    assert {(c, n) for c, n, _, _ in seen} >= {(0, 2), (1, 2)} and seen[-1] == (1, 2, 3, 3)
    assert backend.describe()["nvidia_commit"] == "stand-in"
    again = backend.generate_video(_request(120), _ignore)  # the same request is the same job
    assert len(worker.engine.specs) == 1 and np.array_equal(again, out)
    backend.close()


def test_cancel_from_progress_cancels_the_worker_job(worker: Any) -> None:
    worker.engine.delay_s = 0.2
    backend = _backend(f"http://127.0.0.1:{worker.port}")
    backend.setup()

    def cancel(chunk: int, chunks: int, step: int, steps: int) -> None:
        if step >= 1:
            raise Canceled("run-x")

    with pytest.raises(Canceled):
        backend.generate_video(_request(120), cancel)
    [job] = worker.jobs.values()
    deadline = time.monotonic() + 5
    while job.state != "canceled" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.state == "canceled"


def test_a_worker_4xx_is_permanent_and_names_the_field(tmp_path: Path) -> None:
    server = worker_mod.WorkerServer(
        StandInEngine(refuse=("guidance", "Input should be less than or equal to 7")),
        tmp_path / "spool",
        "127.0.0.1",
        _free_port(),
    )
    server.start()
    try:
        backend = _backend(f"http://127.0.0.1:{server.port}")
        backend.setup()
        with pytest.raises(InvalidInputError) as refused:
            backend.generate_video(_request(120), _ignore)
        assert isinstance(refused.value, PermanentError) and refused.value.field == "guidance"
        assert "422" in str(refused.value)
    finally:
        server.stop()


def test_an_unreachable_worker_is_transient() -> None:
    backend = _backend(f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(TransientError):
        backend.setup()


def test_a_restarted_worker_gets_the_job_again_and_a_vanished_one_is_transient(tmp_path: Path) -> None:
    port = _free_port()
    first = StandInEngine(delay_s=0.3)
    server = worker_mod.WorkerServer(first, tmp_path / "a", "127.0.0.1", port)
    server.start()
    backend = _backend(f"http://127.0.0.1:{port}")
    backend.setup()
    second = StandInEngine()
    result: dict[str, Any] = {}

    def restart() -> None:
        first.started.wait(10)
        server.stop()  # the worker dies mid-job and comes back empty
        replacement = worker_mod.WorkerServer(second, tmp_path / "b", "127.0.0.1", port)
        replacement.start()
        result["server"] = replacement

    thread = threading.Thread(target=restart)
    thread.start()
    out = backend.generate_video(_request(120), _ignore)
    thread.join()
    assert out.shape == (120, H, W, 3) and len(second.specs) == 1 and second.specs[0]["max_frames"] == 120
    result["server"].stop()
    with pytest.raises(TransientError):  # now nobody answers: the grace runs out
        backend.generate_video(_request(93, chunks=1), _ignore)
    backend.close()


# --- through the Runner, on the real servers ----------------------------------------------------


async def test_a_two_control_augmentation_job_runs_on_native_transfer(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, store: ObjectStore, tmp_path: Path, worker: Any
) -> None:
    bucket = store.test_bucket  # type: ignore[attr-defined]
    source = write_video(tmp_path / "in.mp4", width=W, height=H, fps=24, frames=120, seed=5)
    input_ref = await store.put_file(bucket, "native/in.mp4", source, content_type="video/mp4")
    edge_ref = await _upload_edges(store, tmp_path, "edge", 120)
    vis_ref = await _upload_edges(store, tmp_path, "vis", 120)
    controls = (
        ControlSpec(type=ControlType.EDGE, weight=0.6, video=edge_ref),
        ControlSpec(type=ControlType.VIS, weight=0.4, video=vis_ref),
    )
    known = builtin_backends()
    card = builtin_cards()[TRANSFER].model_copy(update={"any_resolution": True})
    plan = plan_on_backends(
        _spec(120, input_ref=input_ref, controls=controls), card, [known["diffusers"], known["native-transfer"]],
        plan_id=f"plan-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    assert plan.backend == "native-transfer"
    job = _job(plan, bucket=bucket, inputs=(input_ref,), controls=controls)
    job = job.model_copy(update={"signature": job.signature.model_copy(update={"backend": "native-transfer"})})
    url = f"http://127.0.0.1:{worker.port}"
    with runner_client(nats, s3, tmp_path, backend="auto", device="cpu", native_transfer_url=url):
        await bus.publish(wrap(job, source="/test", event_id=job.job_id))
        outcome = (await _outcomes(bus, {job.job_id}))[job.job_id]
    assert isinstance(outcome, JobCompleted), outcome
    out_path = tmp_path / "out.mp4"
    await store.download(bucket, job.output_key, out_path)
    info = probe(out_path)
    assert (info.frames, info.fps, info.width, info.height) == (120, Fraction(24), W, H)
    [spec] = worker.engine.specs
    assert spec["edge"]["control_weight"] == pytest.approx(0.6) and spec["vis"]["control_weight"] == pytest.approx(0.4)
    assert spec["num_conditional_frames"] == 1 and spec["max_frames"] == 120
    assert outcome.provenance.backend == "native-transfer"
