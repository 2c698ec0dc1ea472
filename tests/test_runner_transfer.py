"""Cosmos-Transfer jobs on the GPU runner: chunk windows, controls per chunk, the synthetic transfer stand-in.

The runner tests use the real servers (NATS + SeaweedFS) and the runner app with the synthetic
backend: a Transfer job (a transfer-card plan, published straight onto the GPU job queue) whose
input and edge control video are in the object store.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from tests.helpers.generation import runner_client
from tests.helpers.video import write_video
from worldmill.contracts.augment import ControlSpec
from worldmill.contracts.base import ObjectRef, Resolution
from worldmill.contracts.cards import ControlType, GenerationMode, builtin_cards
from worldmill.contracts.envelope import wrap
from worldmill.contracts.generation import (
    ExecutionSignature,
    GenerationPlan,
    GpuJob,
    JobCompleted,
    JobFailed,
)
from worldmill.contracts.keys import video_key
from worldmill.contracts.prompts import PromptSpec, SamplingParams
from worldmill.contracts.subjects import EVENTS, event_subject
from worldmill.generate.planning import plan_generation
from worldmill.gpu_runner.backends import Canceled, ChunkRequest, SyntheticBackend
from worldmill.gpu_runner.backends.base import Frames, StepCallback
from worldmill.gpu_runner.jobwork import chunk_windows, generate_chunks, window
from worldmill.gpu_runner.video import assemble, encode_mp4
from worldmill.runtime.bus import Bus
from worldmill.runtime.errors import InvalidInputError
from worldmill.runtime.media import probe
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.store import ObjectStore

TRANSFER = "cosmos-transfer2.5-2b"
W, H = 64, 48
FAKE_SHA = "0" * 64

# --- building transfer plans and jobs ----------------------------------------------------------


def _card(**changes: Any):  # type: ignore[no-untyped-def]
    """The transfer card, allowing any multiple-of-16 size so plans can be tiny."""
    return builtin_cards()[TRANSFER].model_copy(update={"any_resolution": True, **changes})


def _ref(bucket: str = "wm-inputs", key: str = "in.mp4") -> ObjectRef:
    return ObjectRef(bucket=bucket, key=key, size=1, sha256=FAKE_SHA)


def _spec(
    frames: int,
    *,
    fps: float = 24,
    input_ref: ObjectRef | None = None,
    controls: tuple[ControlSpec, ...] | None = None,
    seed: int = 11,
) -> PromptSpec:
    return PromptSpec(
        prompt_id=f"p-{uuid.uuid4().hex[:8]}",
        version=1,
        scenario="S01",
        variant=0,
        duration_s=frames / fps,
        fps=fps,
        target_frames=frames,
        seed=seed,
        resolution=Resolution(width=W, height=H),
        model=TRANSFER,
        mode=GenerationMode.TRANSFER,
        prompt="the same street at dusk, wet asphalt",
        sampling=SamplingParams(guidance=3.0, steps=3),
        input=input_ref or _ref(),
        controls=controls if controls is not None else (ControlSpec(type=ControlType.EDGE, weight=0.8),),
        created_at=datetime.now(UTC),
    )


def _plan(frames: int, *, overlap: int | None = None, **spec: Any) -> GenerationPlan:
    return plan_generation(
        _spec(frames, **spec), _card(), plan_id=f"plan-{uuid.uuid4().hex[:8]}", overlap_frames=overlap
    )


def _job(
    plan: GenerationPlan, *, bucket: str, inputs: tuple[ObjectRef, ...], controls: tuple[ControlSpec, ...]
) -> GpuJob:
    run_id = f"run-{uuid.uuid4().hex[:10]}"
    signature = ExecutionSignature(
        model=TRANSFER, checkpoint=TRANSFER, controls=tuple(sorted({c.type for c in controls}))
    )
    return GpuJob(
        job_id=f"{run_id}-a1",
        run_id=run_id,
        attempt=1,
        signature=signature,
        plan=plan,
        prompt="the same street at dusk, wet asphalt",
        inputs=inputs,
        controls=controls,
        output_bucket=bucket,
        output_key=video_key(run_id, 1),
    )


def _ignore(step: int, steps: int) -> None:
    return None


def _ignore_chunk(chunk: int, chunks: int, step: int, steps: int) -> None:
    return None


# --- frames for the pure tests ------------------------------------------------------------------


def _scene(frames: int, *, width: int = W, height: int = H) -> Frames:
    """Smooth waves that move: frame i + 4 is nearly the negative of frame i."""
    ys, xs = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    out = [
        128
        + 100
        * np.stack(
            [
                np.sin(2 * np.pi * (2 * xs + i / 8)),
                np.sin(2 * np.pi * (2 * ys + i / 12)),
                np.sin(2 * np.pi * (xs + ys + i / 10)),
            ],
            axis=-1,
        )
        for i in range(frames)
    ]
    frames_out: Frames = np.rint(np.stack(out)).astype(np.uint8)
    return frames_out


def _edges(frames: int, *, width: int = W, height: int = H) -> Frames:
    """White edges on black, as Cosmos' Canny control: a vertical line moving right, a fixed horizontal line."""
    out = np.zeros((frames, height, width, 3), dtype=np.uint8)
    for i in range(frames):
        x = 8 + (i // 4) % (width - 16)
        out[i, :, x : x + 2] = 255
        out[i, height // 2 : height // 2 + 2, :] = 255
    return out


def _numbered(frames: int) -> Frames:
    """Tiny frames whose pixel (0, 0, 0) holds the frame index (mod 256)."""
    out = np.zeros((frames, 2, 2, 3), dtype=np.uint8)
    out[:, 0, 0, 0] = np.arange(frames) % 256
    return out


def _masks(edge_frame: Frames, *, threshold: int = 0, skip_rows: int = 1) -> tuple[npt.NDArray[np.bool_], ...]:
    """(edge pixels, other pixels) of a control frame, leaving out the top rows (the timecode's place)."""
    on = edge_frame[:, :, 0] > threshold
    off = ~on
    on[:skip_rows] = off[:skip_rows] = False
    return on, off


def _luma(frame: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    luma: npt.NDArray[np.float64] = np.asarray(frame, dtype=np.float64) @ np.array([0.299, 0.587, 0.114])
    return luma


def _corr(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    return float(np.corrcoef(np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64))[0, 1])


# --- chunk_windows --------------------------------------------------------------------------------


def test_one_chunk_plan_has_one_window_padded_past_the_end() -> None:
    """50 frames: one 93-frame chunk at 0; its window repeats the last frame for the 43 frames past the end."""
    plan = _plan(50)
    assert len(plan.chunks) == 1
    assert chunk_windows(plan) == [(0, 93)]
    taken = window(_numbered(50), 0, 93)
    assert [int(v) for v in taken[:, 0, 0, 0]] == [*range(50), *[49] * 43]


def test_two_chunk_plan_overlaps_by_the_conditioning_frame() -> None:
    """120 frames, 93-frame chunks, 1 conditional frame: chunk 1 starts on chunk 0's last frame (92)."""
    plan = _plan(120)
    assert [(c.frames, c.keep_from, c.keep_frames, c.condition_frames) for c in plan.chunks] == [
        (93, 0, 93, 0),
        (93, 1, 27, 1),
    ]
    assert chunk_windows(plan) == [(0, 93), (92, 93)]
    taken = window(_numbered(120), 92, 93)
    assert [int(v) for v in taken[:, 0, 0, 0]] == [*range(92, 120), *[119] * 65]


@pytest.mark.parametrize(
    ("frames", "overlap", "windows"),
    [
        (240, 1, [(0, 93), (92, 93), (184, 93)]),  # keeps 93 + 92 + 55
        (240, 2, [(0, 93), (91, 93), (182, 93)]),  # keeps 93 + 91 + 56
        (277, 1, [(0, 93), (92, 93), (184, 93)]),  # keeps 93 + 92 + 92: the last chunk ends exactly at 277
    ],
)
def test_three_chunk_plans(frames: int, overlap: int, windows: list[tuple[int, int]]) -> None:
    """Every later chunk starts ``keep_from`` frames before the frames kept so far; the last may run past the end."""
    plan = _plan(frames, overlap=overlap)
    assert len(plan.chunks) == 3
    got = chunk_windows(plan)
    assert got == windows
    kept = 0
    for (start, length), chunk in zip(got, plan.chunks, strict=True):
        assert start + chunk.keep_from == kept and length == chunk.frames
        kept += chunk.keep_frames
    assert kept == frames
    for (start, length), (nxt, _), chunk in zip(got, got[1:], plan.chunks[1:], strict=False):
        # the frames a chunk is conditioned on (the previous chunk's last ones) are its window's first frames
        assert nxt == start + length - chunk.condition_frames
    last_start, last_len = got[-1]
    taken = window(_numbered(frames), last_start, last_len)
    assert int(taken[0, 0, 0, 0]) == last_start % 256
    assert int(taken[-1, 0, 0, 0]) == (frames - 1) % 256  # padded with the last frame (or ends on it)


def test_window_refuses_an_empty_video() -> None:
    """A window of nothing is a bug, not a black video."""
    with pytest.raises(ValueError, match="without frames"):
        window(np.zeros((0, 2, 2, 3), dtype=np.uint8), 0, 3)


# --- generate_chunks: controls per chunk --------------------------------------------------------


class _Recorder(SyntheticBackend):
    """The synthetic backend, keeping every request it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[ChunkRequest] = []
        self.setup()

    def generate(self, request: ChunkRequest, on_step: StepCallback) -> Frames:
        self.requests.append(request)
        return super().generate(request, on_step)


def test_every_chunk_gets_its_window_of_the_input_and_controls_with_the_weights_as_given() -> None:
    """Chunk i gets frames [start_i, start_i + 93) of input and controls (padded), and the weights unnormalised."""
    controls = (
        ControlSpec(type=ControlType.EDGE, weight=0.9, video=_ref(key="edge.mp4")),
        ControlSpec(type=ControlType.VIS, weight=0.3, video=_ref(key="vis.mp4")),
    )
    plan = _plan(120, controls=controls)
    job = _job(plan, bucket="wm-artifacts", inputs=(_ref(),), controls=controls)
    source = _scene(120)
    edge, vis = _edges(120), _scene(120)[:, ::-1].copy()
    backend = _Recorder()
    progress: list[tuple[int, int, int, int]] = []
    generated = generate_chunks(
        job,
        backend,
        None,
        lambda *args: progress.append(args),
        input_video=source,
        controls={"edge": edge, "vis": vis},
    )
    first, second = backend.requests
    assert first.condition is None and second.condition is not None and len(second.condition) == 1
    for request, (start, length) in zip(backend.requests, [(0, 93), (92, 93)], strict=True):
        indices = np.minimum(np.arange(start, start + length), 119)
        assert request.input_video is not None and np.array_equal(request.input_video, source[indices])
        assert np.array_equal(request.controls["edge"], edge[indices])
        assert np.array_equal(request.controls["vis"], vis[indices])
        assert dict(request.control_weights) == {"edge": 0.9, "vis": 0.3}  # 1.2 in all: not renormalised
    assert [len(c) for c in generated.chunks] == [93, 93]
    assert progress[-1] == (1, 2, 3, 3)
    # chunk 1's first frame is chunk 0's last (its conditioning frame): the join is seamless
    assert np.array_equal(generated.chunks[1][0], generated.chunks[0][-1])
    assert len(assemble(generated.chunks, plan)) == 120


def test_a_job_without_controls_gets_plain_requests() -> None:
    """Text2world jobs are unchanged: no controls, no weights, no input video in the requests."""
    plan = _plan(120).model_copy(update={"mode": GenerationMode.TEXT2WORLD})
    job = _job(plan, bucket="wm-artifacts", inputs=(), controls=())
    backend = _Recorder()
    generate_chunks(job, backend, None, lambda *_: None)
    assert all(not r.controls and not r.control_weights and r.input_video is None for r in backend.requests)


def test_chunk_request_validates_the_input_video() -> None:
    """input_video is checked like the other frame fields."""
    with pytest.raises(InvalidInputError, match="input_video"):
        ChunkRequest(
            prompt="x",
            negative_prompt=None,
            seed=1,
            frames=4,
            width=8,
            height=8,
            guidance=3,
            steps=1,
            fps=24,
            input_video=np.zeros((4, 8, 8), dtype=np.uint8),
        )


# --- the synthetic transfer stand-in --------------------------------------------------------------


def _transfer(
    backend: SyntheticBackend,
    *,
    seed: int = 7,
    frames: int = 20,
    weight: float = 1.0,
    on_step: StepCallback = _ignore,
    **extra: Any,
) -> Frames:
    media: dict[str, Any] = {
        "input_video": _scene(frames),
        "controls": {"edge": _edges(frames)},
        "control_weights": {"edge": weight},
    }
    request = ChunkRequest(
        prompt="x",
        negative_prompt=None,
        seed=seed,
        frames=frames,
        width=W,
        height=H,
        guidance=3,
        steps=4,
        fps=24,
        **(media | extra),
    )
    return backend.generate(request, on_step)


@pytest.fixture
def synthetic() -> SyntheticBackend:
    backend = SyntheticBackend()
    backend.setup()
    return backend


def test_transfer_output_derives_from_the_input_and_the_edges(synthetic: SyntheticBackend) -> None:
    """Each frame is its input frame, re-graded (correlated, but clearly different), with the edges drawn on."""
    out = _transfer(synthetic)
    source, edges = _scene(20), _edges(20)
    assert out.shape == (20, H, W, 3) and out.dtype == np.uint8
    for i in (0, 7, 19):
        on, off = _masks(edges[i])
        assert _corr(_luma(out[i])[off], _luma(source[i])[off]) > 0.85
        other = i + 4 if i + 4 < 20 else i - 4
        assert _corr(_luma(out[i])[off], _luma(source[other])[off]) < 0  # this frame, not another
        line = out[i][on]
        assert (line == line[0]).all() and int(line[0].max()) >= 230  # one bright line colour on the edges
        assert (out[i][off] != line[0]).any(axis=-1).mean() > 0.9  # and (nearly) only there
    assert float(np.abs(out.astype(int) - source.astype(int)).mean()) > 15  # another rendering, not a copy


def test_transfer_is_deterministic_per_seed_and_weighted(synthetic: SyntheticBackend) -> None:
    """Same seed → same frames; another seed → another look; weight 0 → no edges drawn."""
    a, b, c = _transfer(synthetic, seed=3), _transfer(synthetic, seed=3), _transfer(synthetic, seed=4)
    assert np.array_equal(a, b)
    assert float(np.abs(a.astype(int) - c.astype(int)).mean()) > 5
    plain = _transfer(synthetic, seed=3, weight=0.0)
    on, off = _masks(_edges(20)[5])
    assert np.array_equal(plain[5][off], a[5][off])
    assert float(np.abs(plain[5][on].astype(int) - a[5][on].astype(int)).mean()) > 20
    half = _transfer(synthetic, seed=3, weight=0.5)[5][on].astype(int)
    assert np.abs(half - (a[5][on].astype(int) + plain[5][on].astype(int)) / 2).max() <= 1


def test_transfer_continues_the_look_across_chunks(synthetic: SyntheticBackend) -> None:
    """A chunk conditioned on a transfer frame repeats it and keeps its look, whatever its own seed."""
    first = _transfer(synthetic, seed=3, frames=20)
    source, edges = _scene(39), _edges(39)
    second = _transfer(
        synthetic,
        seed=4,
        frames=20,
        condition=first[-1:],
        input_video=source[19:],
        controls={"edge": edges[19:]},
        control_weights={"edge": 1.0},
    )
    assert np.array_equal(second[0], first[-1])
    same_look = _transfer(
        synthetic,
        seed=3,
        frames=20,
        input_video=source[19:],
        controls={"edge": edges[19:]},
        control_weights={"edge": 1.0},
    )
    assert np.array_equal(second[1:], same_look[1:])


def test_transfer_from_controls_alone_and_other_control_types(synthetic: SyntheticBackend) -> None:
    """Without an input the picture comes from the controls; depth, seg and vis each change it; unknown types are refused."""
    depth = np.repeat(np.linspace(0, 255, W, dtype=np.uint8)[None, None, :, None], H, axis=1)
    depth = np.repeat(np.repeat(depth, 3, axis=-1), 10, axis=0)
    only_depth = _transfer(synthetic, frames=10, input_video=None, controls={"depth": depth}, control_weights={})
    assert _corr(_luma(only_depth[3])[1:], _luma(depth[3])[1:]) > 0.9
    base = _transfer(synthetic, frames=10, controls={}, control_weights={})
    for kind, video in {"depth": depth, "seg": _edges(10)[:, :, ::-1], "vis": _scene(10)[:, ::-1]}.items():
        changed = _transfer(synthetic, frames=10, controls={kind: video}, control_weights={kind: 1.0})
        assert float(np.abs(changed.astype(int) - base.astype(int)).mean()) > 3, kind
    with pytest.raises(InvalidInputError, match="unknown control types"):
        _transfer(synthetic, frames=10, controls={"normals": depth}, control_weights={})


def test_transfer_pads_short_inputs_and_keeps_steps_and_cancel(synthetic: SyntheticBackend) -> None:
    """Shorter input/control videos repeat their last frame; on_step runs per step; Canceled stops at once."""
    out = _transfer(synthetic, frames=12, input_video=_scene(5), controls={"edge": _edges(5)})
    assert out.shape[0] == 12 and np.array_equal(out[5:, 1:], np.repeat(out[4:5, 1:], 7, axis=0))
    steps: list[tuple[int, int]] = []
    _transfer(synthetic, on_step=lambda s, n: steps.append((s, n)))
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]

    def cancel(step: int, steps: int) -> None:
        raise Canceled("run-1")

    with pytest.raises(Canceled):
        _transfer(synthetic, on_step=cancel)


# --- the runner, on the real servers ---------------------------------------------------------------


def _decode(path: Path) -> Frames:
    with av.open(str(path)) as container:
        return np.stack([np.asarray(f.to_ndarray(format="rgb24"), dtype=np.uint8) for f in container.decode(video=0)])


async def _outcomes(bus: Bus, job_ids: set[str], timeout_s: float = 120.0) -> dict[str, JobCompleted | JobFailed]:
    """Wait for job.completed / job.failed of each job."""
    found: dict[str, JobCompleted | JobFailed] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for fact in ("job.completed", "job.failed"):
            async for _, message in bus.replay(EVENTS.name, event_subject(fact)):
                if isinstance(message, JobCompleted | JobFailed) and message.job_id in job_ids:
                    found[message.job_id] = message
        if set(found) == job_ids:
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"no outcome within {timeout_s} s for {sorted(job_ids - set(found))}")


async def _upload_edges(store: ObjectStore, tmp: Path, name: str, frames: int) -> ObjectRef:
    path = tmp / f"{name}.mp4"
    encode_mp4(_edges(frames), path, fps=24, crf=12)
    return await store.put_file(store.test_bucket, f"transfer/{name}.mp4", path, content_type="video/mp4")  # type: ignore[attr-defined]


async def test_a_transfer_job_runs_with_its_control_and_keeps_the_input_timeline(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, store: ObjectStore, tmp_path: Path
) -> None:
    """120 frames at 24 fps in, 2 chunks of 93 (overlap 1): exactly 120 frames at 24 fps out, frame by frame from the input."""
    bucket = store.test_bucket  # type: ignore[attr-defined]
    source = write_video(tmp_path / "in.mp4", width=W, height=H, fps=24, frames=120, seed=5)
    input_ref = await store.put_file(bucket, "transfer/in.mp4", source, content_type="video/mp4")
    edge_ref = await _upload_edges(store, tmp_path, "edge", 120)
    controls = (ControlSpec(type=ControlType.EDGE, weight=1.0, video=edge_ref),)
    plan = _plan(120, input_ref=input_ref, controls=controls)
    assert chunk_windows(plan) == [(0, 93), (92, 93)]
    job = _job(plan, bucket=bucket, inputs=(input_ref,), controls=controls)
    with runner_client(nats, s3, tmp_path):
        await bus.publish(wrap(job, source="/test", event_id=job.job_id))
        outcome = (await _outcomes(bus, {job.job_id}))[job.job_id]
    assert isinstance(outcome, JobCompleted), outcome
    out_path = tmp_path / "out.mp4"
    await store.download(bucket, job.output_key, out_path)
    info = probe(out_path)
    assert (info.frames, info.fps, info.width, info.height) == (120, Fraction(24), W, H)
    out, given, edges = _decode(out_path), _decode(source), _decode(tmp_path / "edge.mp4")
    assert len(out) == len(given) == 120
    for i in (0, 50, 91, 92, 93, 119):  # both chunks, and both sides of the join
        on, off = _masks(edges[i], threshold=128, skip_rows=2)
        assert _corr(_luma(out[i])[off], _luma(given[i])[off]) > 0.9, i
        assert _luma(out[i])[on].std() < _luma(out[i])[off].std() / 4, i  # one line colour where the edges are
        assert np.median(out[i][on], axis=0).max() > 180, i  # a bright one
    # exactly what the synthetic backend makes of the right window of input and control for every chunk
    backend = SyntheticBackend()
    backend.setup()

    def encoded_reference(shift: int) -> Frames:
        moved = window(given, shift, 120)
        made = generate_chunks(job, backend, None, _ignore_chunk, input_video=moved, controls={"edge": edges})
        path = encode_mp4(assemble(made.chunks, plan), tmp_path / f"ref{shift}.mp4", fps=24).path
        return _decode(path)

    def distance(a: Frames, b: Frames) -> float:
        return float(np.abs(a.astype(int) - b.astype(int)).mean())

    # The right input window is much nearer than one a frame off. (Same encoder, same frames gave < 1.0 in most
    # runs, but 2.3 and 2.7 in two full-suite CI runs, unexplained: the gap to the shifted windows is the claim.)
    right = distance(out, encoded_reference(0))
    off_by_one = min(distance(out, encoded_reference(k)) for k in (1, -1))
    assert right < 3.0 and off_by_one > right + 1.0, (right, off_by_one)
    assert float(np.abs(out.astype(int) - given.astype(int)).mean()) > 15
    # no jump in the look at the chunk join: frame 92 → 93 changes as much as 91 → 92
    step = [distance(out[i + 1], out[i]) for i in (90, 91, 92, 93)]
    assert step[2] < 2 * max(step[0], step[1], step[3]) + 2, step
    prov = outcome.provenance
    assert prov.backend == "synthetic" and prov.extra["controls"][0]["type"] == "edge"
    assert prov.inputs == (input_ref,)


async def test_transfer_jobs_with_unusable_controls_fail_for_good(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, store: ObjectStore, tmp_path: Path
) -> None:
    """A control without a video, with another frame count, or not a video (or an input of another length):
    job.failed, not retryable, naming the control (the input) and the numbers."""
    bucket = store.test_bucket  # type: ignore[attr-defined]
    source = write_video(tmp_path / "in.mp4", width=W, height=H, fps=24, frames=120, seed=6)
    input_ref = await store.put_file(bucket, "transfer/in.mp4", source, content_type="video/mp4")
    short_input = write_video(tmp_path / "short-in.mp4", width=W, height=H, fps=24, frames=90, seed=6)
    short_input_ref = await store.put_file(bucket, "transfer/short-in.mp4", short_input, content_type="video/mp4")
    edge_ref = await _upload_edges(store, tmp_path, "edge", 120)
    short_ref = await _upload_edges(store, tmp_path, "short", 100)
    notes_ref = await store.put_bytes(bucket, "transfer/notes.mp4", b"not a video at all")
    cases = {
        "missing": (input_ref, ControlSpec(type=ControlType.DEPTH, weight=0.5)),
        "short": (input_ref, ControlSpec(type=ControlType.EDGE, weight=1.0, video=short_ref)),
        "unreadable": (input_ref, ControlSpec(type=ControlType.SEG, weight=1.0, video=notes_ref)),
        "short input": (short_input_ref, ControlSpec(type=ControlType.EDGE, weight=1.0, video=edge_ref)),
    }
    jobs = {
        name: _job(_plan(120, input_ref=ref, controls=(control,)), bucket=bucket, inputs=(ref,), controls=(control,))
        for name, (ref, control) in cases.items()
    }
    with runner_client(nats, s3, tmp_path):
        for job in jobs.values():
            await bus.publish(wrap(job, source="/test", event_id=job.job_id))
        outcomes = await _outcomes(bus, {j.job_id for j in jobs.values()})
    failed = {name: outcomes[job.job_id] for name, job in jobs.items()}
    assert all(isinstance(f, JobFailed) and f.retryable is False for f in failed.values()), failed
    errors = {name: f.error for name, f in failed.items() if isinstance(f, JobFailed)}
    assert "InvalidInputError: controls.depth" in errors["missing"] and "missing" in errors["missing"]
    assert "controls.edge" in errors["short"] and "100 frames" in errors["short"] and "expects 120" in errors["short"]
    assert short_ref.key in errors["short"]
    assert "controls.seg" in errors["unreadable"] and "not a readable" in errors["unreadable"]
    assert "InvalidInputError: input: the input video" in errors["short input"]
    assert "90 frames" in errors["short input"] and "expects 120" in errors["short input"]
    for job in jobs.values():
        assert not await store.exists(bucket, job.output_key)
