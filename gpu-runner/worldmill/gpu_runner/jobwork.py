"""One job's work, outside the event loop: generate its chunks, then assemble, convert and encode.

Plain functions run in worker threads by ``worker``: the GPU step (``generate_chunks``) and the
CPU step (``finish_video``) of different jobs overlap, so the model never waits for encoding.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from worldmill.contracts.generation import GpuJob
from worldmill.gpu_runner.backends.base import Backend, ChunkRequest, Frames
from worldmill.gpu_runner.video import EncodeResult, assemble, convert_fps, encode_mp4

#: ``progress(chunk_index, chunks, step, steps)`` from the generating thread.
ChunkProgress = Callable[[int, int, int, int], None]


@dataclass(frozen=True)
class Generated:
    """The chunks of a job and the seconds the model spent on them."""

    chunks: list[Frames]
    seconds: float


def generate_chunks(job: GpuJob, backend: Backend, condition: Frames | None, progress: ChunkProgress) -> Generated:
    """Run every chunk of the plan in order, each conditioned as the plan says."""
    plan = job.plan
    chunks: list[Frames] = []
    started = time.perf_counter()
    total = len(plan.chunks)
    for chunk in plan.chunks:
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
        )
        index = chunk.index

        def on_step(step: int, steps: int, index: int = index) -> None:
            progress(index, total, step, steps)

        chunks.append(backend.generate(request, on_step))
    return Generated(chunks=chunks, seconds=time.perf_counter() - started)


def finish_video(job: GpuJob, generated: Generated, path: Path) -> EncodeResult:
    """Join the chunks, convert to the target fps, encode: exactly the planned frames and fps."""
    frames = assemble(generated.chunks, job.plan)
    frames = convert_fps(frames, job.plan.fps_conversion)
    result = encode_mp4(frames, path, fps=job.plan.expected.fps)
    if result.frames != job.plan.expected.frames:
        raise RuntimeError(
            f"encoded {result.frames} frames but the plan expects {job.plan.expected.frames}: refusing to deliver"
        )
    return result


def read_condition(path: Path, frames: int, width: int, height: int) -> Frames:
    """The last ``frames`` frames of an input video (or the image, repeated), at the plan's size.

    Decodes the whole file once, keeping only a ring of the last frames, so memory stays bounded.
    """
    import av  # noqa: PLC0415 - the video extra, loaded on use
    import numpy as np  # noqa: PLC0415

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
