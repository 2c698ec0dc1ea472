"""One job's work, outside the event loop: generate its chunks, then assemble, convert and encode.

Plain functions run in worker threads by ``worker``: the GPU step (``generate_chunks``) and the
CPU step (``finish_video``) of different jobs overlap, so the model never waits for encoding.

Cosmos-Transfer jobs carry whole videos (the input and one control video per control type), all
on the plan's native timeline: :func:`chunk_windows` says which frames of them each chunk covers,
and :func:`generate_chunks` hands every chunk its window of each (padded past the end by
repeating the last frame, as Transfer pads an input shorter than a chunk).

:func:`generate_job` is the whole GPU step of one job: the guardrail's prompt check, then either
one ``generate_video`` call (plans with ``chunking="pipeline"`` on a backend whose pipeline chains
its own chunks: Transfer on diffusers) or the runner's chunk loop, the chunks joined into the
native video, and the guardrail's check of that video — once per video, as NVIDIA's CLI does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from worldmill.contracts.generation import GenerationPlan, GpuJob
from worldmill.gpu_runner.backends.base import Backend, ChunkRequest, Frames, VideoRequest
from worldmill.gpu_runner.video import EncodeResult, assemble, convert_fps_with, encode_mp4
from worldmill.runtime.errors import PermanentError

#: ``progress(chunk_index, chunks, step, steps)`` from the generating thread.
ChunkProgress = Callable[[int, int, int, int], None]


@dataclass(frozen=True)
class Generated:
    """The chunks of a job (or its whole native video) and the seconds the model spent on them.

    ``native``: the assembled native-rate video when the GPU step made it (``generate_job``);
    otherwise :func:`finish_video` assembles ``chunks``. ``calls``: model calls made.
    """

    chunks: list[Frames]
    seconds: float
    native: Frames | None = None
    calls: int = 0
    peak_memory_bytes: int | None = None
    peak_memory_kind: str | None = None


@dataclass(frozen=True)
class Delivered:
    """What :func:`finish_video` wrote, and how the frame rate was converted."""

    encoded: EncodeResult
    fps_method: str


@dataclass(frozen=True)
class JobInputs:
    """What a job's chunks are made from, besides the prompt: decoded at the plan's resolution.

    ``condition``: chunk 0's conditioning frames (image2world/video2world). ``input_video``: every
    frame of a Transfer job's input. ``controls``: every frame of each control video, by control
    type. The videos hold the plan's ``native_frames`` frames.
    """

    condition: Frames | None = None
    input_video: Frames | None = None
    controls: Mapping[str, Frames] = field(default_factory=dict)


def chunk_windows(plan: GenerationPlan) -> list[tuple[int, int]]:
    """``(start, frames)`` of every chunk on the plan's native timeline (frame 0 = the first output frame).

    A chunk's kept frames (from ``keep_from``) continue where the previous chunks' kept frames end,
    so its first frame sits ``keep_from`` frames earlier: on the overlap, i.e. the frames it is
    conditioned on. Chunk 0 starts at 0. A window may reach past the last native frame (the last
    chunk generates a whole chunk but keeps only what is still needed): see :func:`window`.
    """
    windows: list[tuple[int, int]] = []
    kept = 0
    for chunk in plan.chunks:
        windows.append((kept - chunk.keep_from, chunk.frames))
        kept += chunk.keep_frames
    return windows


def window(video: Frames, start: int, frames: int) -> Frames:
    """``video[start : start + frames]``, with frames past either end repeating the first/last frame."""
    if len(video) == 0:
        raise ValueError("a window of a video without frames")
    indices = np.clip(np.arange(start, start + frames), 0, len(video) - 1)
    taken: Frames = video[indices]
    return taken


def generate_chunks(
    job: GpuJob,
    backend: Backend,
    condition: Frames | None,
    progress: ChunkProgress,
    *,
    input_video: Frames | None = None,
    controls: Mapping[str, Frames] | None = None,
) -> Generated:
    """Run every chunk of the plan in order, each conditioned as the plan says.

    ``input_video`` and ``controls`` (Transfer) cover the whole native timeline; each chunk gets
    its :func:`chunk_windows` window of them, and the job's control weights as given.
    """
    plan = job.plan
    chunks: list[Frames] = []
    started = time.perf_counter()
    total = len(plan.chunks)
    given = dict(controls or {})
    weights: dict[str, float] = {c.type.value: c.weight for c in job.controls if c.type.value in given}
    for (start, length), chunk in zip(chunk_windows(plan), plan.chunks, strict=True):
        cond: Frames | None = None
        if chunk.condition == "previous_chunk":
            cond = chunks[-1][-chunk.condition_frames :]
        elif chunk.condition == "input" and condition is not None:
            cond = condition[-chunk.condition_frames :]
        request = ChunkRequest(
            prompt=job.prompt,
            negative_prompt=plan.sampling.negative_prompt,
            seed=chunk.seed,
            frames=chunk.frames,
            width=plan.resolution.width,
            height=plan.resolution.height,
            guidance=plan.sampling.guidance,
            steps=plan.sampling.steps,
            fps=plan.native_fps,
            condition=cond,
            controls={kind: window(video, start, length) for kind, video in given.items()},
            control_weights=weights,
            input_video=None if input_video is None else window(input_video, start, length),
        )
        index = chunk.index

        def on_step(step: int, steps: int, index: int = index) -> None:
            progress(index, total, step, steps)

        chunks.append(backend.generate(request, on_step))
    return Generated(chunks=chunks, seconds=time.perf_counter() - started)


def generate_job(
    job: GpuJob,
    backend: Backend,
    inputs: JobInputs,
    progress: ChunkProgress,
) -> Generated:
    """The GPU step of one job: guardrail on the prompt, the model calls, the native video, guardrail on it."""
    plan = job.plan
    started = time.perf_counter()
    backend.screen_prompt(job.prompt)
    if plan.chunking == "pipeline" and backend.capabilities.chunking_for(plan.mode) == "pipeline":
        native = backend.generate_video(_video_request(job, inputs), progress)
        calls = 1
        if len(native) != plan.native_frames:
            raise PermanentError(f"the backend returned {len(native)} frames; the plan needs {plan.native_frames}")
    else:
        made = generate_chunks(
            job, backend, inputs.condition, progress, input_video=inputs.input_video, controls=inputs.controls
        )
        native, calls = assemble(made.chunks, plan), len(made.chunks)
    native = backend.screen_video(native)
    return Generated(chunks=[], seconds=time.perf_counter() - started, native=native, calls=calls)


def _video_request(job: GpuJob, inputs: JobInputs) -> VideoRequest:
    """One whole-video call with the plan's chunk length, overlap and (single) seed."""
    plan = job.plan
    given = dict(inputs.controls)
    overlap = plan.chunks[1].condition_frames if len(plan.chunks) > 1 else 0
    return VideoRequest(
        prompt=job.prompt,
        negative_prompt=plan.sampling.negative_prompt,
        seed=plan.chunks[0].seed,
        frames=plan.native_frames,
        chunk_frames=plan.chunks[0].frames,
        overlap=overlap,
        chunks=len(plan.chunks),
        width=plan.resolution.width,
        height=plan.resolution.height,
        guidance=plan.sampling.guidance,
        steps=plan.sampling.steps,
        fps=plan.native_fps,
        controls=given,
        control_weights={c.type.value: c.weight for c in job.controls if c.type.value in given},
        input_video=inputs.input_video,
    )


def finish_video(
    job: GpuJob, generated: Generated, path: Path, *, interpolation: Literal["flow", "blend"] = "flow"
) -> Delivered:
    """Join the chunks (unless joined already), convert to the target fps, encode: the planned frames and fps."""
    frames = generated.native if generated.native is not None else assemble(generated.chunks, job.plan)
    frames, method = convert_fps_with(frames, job.plan.fps_conversion, interpolation=interpolation)
    result = encode_mp4(frames, path, fps=job.plan.expected.fps)
    if result.frames != job.plan.expected.frames:
        raise RuntimeError(
            f"encoded {result.frames} frames but the plan expects {job.plan.expected.frames}: refusing to deliver"
        )
    return Delivered(encoded=result, fps_method=method)


def read_video(path: Path, width: int, height: int) -> Frames:
    """Every frame of a video (an image: its one frame), decoded as RGB at ``width`` × ``height``.

    :class:`InvalidInputError` named after the file when it has no video stream or frames, or is
    not a readable image or video. Memory: frames × height × width × 3 bytes.
    """
    import av  # noqa: PLC0415 - the video extra, loaded on use

    from worldmill.runtime.errors import InvalidInputError  # noqa: PLC0415

    decoded: list[Frames] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InvalidInputError(path.name, "has no video stream or image")
            for frame in container.decode(video=0):
                decoded.append(np.asarray(frame.to_ndarray(format="rgb24", width=width, height=height), dtype=np.uint8))
    except av.error.FFmpegError as exc:
        raise InvalidInputError(path.name, f"is not a readable image or video ({exc})") from exc
    if not decoded:
        raise InvalidInputError(path.name, "has no frames")
    return np.stack(decoded)


def read_condition(path: Path, frames: int, width: int, height: int) -> Frames:
    """The last ``frames`` frames of an input video (or the image, repeated), at the plan's size.

    Decodes the whole file once, keeping only a ring of the last frames, so memory stays bounded.
    """
    import av  # noqa: PLC0415 - the video extra, loaded on use

    from worldmill.runtime.errors import InvalidInputError  # noqa: PLC0415

    tail: list[Frames] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InvalidInputError(path.name, "has no video stream or image")
            for frame in container.decode(video=0):
                tail.append(np.asarray(frame.to_ndarray(format="rgb24", width=width, height=height), dtype=np.uint8))
                if len(tail) > frames:
                    tail.pop(0)
    except av.error.FFmpegError as exc:
        raise InvalidInputError(path.name, f"is not a readable image or video ({exc})") from exc
    if not tail:
        raise InvalidInputError(path.name, "has no frames")
    while len(tail) < frames:  # an image, or a video shorter than the conditioning
        tail.insert(0, tail[0])
    return np.stack(tail)
