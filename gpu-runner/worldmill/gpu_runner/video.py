"""From generated chunks to the delivered MP4, with every frame accounted for.

A model generates a video as chunks of frames at its native frame rate; the plan says which frames
of each chunk are kept, how the native rate becomes the target rate, and exactly how many frames
the delivered file has. This module does those three steps and nothing else:

1. :func:`assemble` concatenates the kept frames of each chunk (``keep_from``/``keep_frames``),
2. :func:`convert_fps` turns ``source_frames`` native frames into ``target_frames`` target frames,
3. :func:`encode_mp4` writes them as H.264 (yuv420p) MP4 with an exact frame rate and timestamps.

Why so strict: an earlier pipeline ignored frame counts and delivered 93-frame 16 fps clips under
the names "10 s" and "30 s" (seeds/000). Here every count is checked against the plan, each
step raises :class:`ValueError` naming the chunk or frame and the numbers when they disagree, and
:func:`deliver` chains the steps and refuses to produce a file that is not exactly
``plan.expected`` (frames, fps, resolution). The file is written to a ``.part`` sibling and
renamed only when complete, so a half-written video never carries the final name.

numpy and PyAV only (PyAV bundles libx264); no torch, so it can be tested on any machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from av.video.reformatter import ColorRange, Colorspace

from worldmill.contracts.generation import FpsConversion, GenerationPlan

Frames = npt.NDArray[np.uint8]

#: Elements (not bytes) of one float32 working array in :func:`convert_fps`: 2**24 × 4 B = 64 MiB.
_BLEND_ELEMENTS = 1 << 24
#: Frame rates this close (in fps) to an integer or to an NTSC rate (N × 1000/1001) snap to it.
_RATE_SNAP = 0.005
#: Positions this close (in source frames) to a whole or half frame are taken as exactly on it, so
#: float noise in ``i / target_fps × source_fps`` cannot move a frame or flip a rounding tie.
_POSITION_SNAP = 1e-6
#: ffmpeg's value for BT.709 in the colour primaries/transfer/matrix tags; MPEG = limited range.
_BT709 = 1


def _frame_size(array: npt.NDArray[np.generic]) -> str:
    return f"{array.shape[-2]}x{array.shape[-3]}" if array.ndim >= 3 else f"shape {array.shape}"


def assemble(chunks: Sequence[Frames], plan: GenerationPlan) -> Frames:
    """Concatenate ``chunks[i][keep_from : keep_from + keep_frames]``: ``plan.native_frames`` frames.

    Each chunk must be a uint8 array ``(frames, height, width, 3)`` with exactly the frames its
    :class:`ChunkPlan` says the model generates, at ``plan.resolution``. Anything else raises
    :class:`ValueError` naming the chunk index and the numbers.
    """
    if len(chunks) != len(plan.chunks):
        raise ValueError(f"got {len(chunks)} chunks but the plan has {len(plan.chunks)}")
    height, width = plan.resolution.height, plan.resolution.width
    for i, (chunk, spec) in enumerate(zip(chunks, plan.chunks, strict=True)):
        if chunk.dtype != np.uint8 or chunk.ndim != 4 or chunk.shape[3] != 3:
            raise ValueError(
                f"chunk {i}: expected uint8 frames shaped (frames, height, width, 3), "
                f"got {chunk.dtype} shaped {chunk.shape}"
            )
        if chunk.shape[0] != spec.frames:
            raise ValueError(f"chunk {i}: has {chunk.shape[0]} frames, the plan says the model generates {spec.frames}")
        if chunk.shape[1:3] != (height, width):
            raise ValueError(f"chunk {i}: frames are {_frame_size(chunk)}, the plan's resolution is {plan.resolution}")
        if spec.keep_from + spec.keep_frames > chunk.shape[0]:
            raise ValueError(
                f"chunk {i}: keeping frames {spec.keep_from}..{spec.keep_from + spec.keep_frames - 1} "
                f"needs {spec.keep_from + spec.keep_frames} frames, the chunk has {chunk.shape[0]}"
            )
    out: Frames = np.empty((plan.native_frames, height, width, 3), dtype=np.uint8)
    at = 0
    for chunk, spec in zip(chunks, plan.chunks, strict=True):
        out[at : at + spec.keep_frames] = chunk[spec.keep_from : spec.keep_from + spec.keep_frames]
        at += spec.keep_frames
    if at != plan.native_frames:  # the plan's own validator makes this impossible; keep it explicit
        raise ValueError(f"chunks kept {at} frames but the plan's native_frames is {plan.native_frames}")
    return out


def _source_positions(conversion: FpsConversion) -> npt.NDArray[np.float64]:
    """Where each target frame falls, in source frames: target i at i/target_fps, source j at j/source_fps."""
    positions = np.arange(conversion.target_frames, dtype=np.float64) / conversion.target_fps * conversion.source_fps
    halves = np.rint(positions * 2.0)
    snapped: npt.NDArray[np.float64] = np.where(
        np.abs(positions * 2.0 - halves) < 2 * _POSITION_SNAP, halves / 2.0, positions
    )
    return snapped


def convert_fps(frames: Frames, conversion: FpsConversion) -> Frames:
    """Turn ``source_frames`` frames at ``source_fps`` into exactly ``target_frames`` at ``target_fps``.

    Target frame i is shown at time i/target_fps and source frame j at j/source_fps.

    * ``"none"``: the frames unchanged; the rates must be equal and the counts too.
    * ``"resample"``: for each target time, the nearest source frame (ties go to the later frame).
    * ``"interpolate"``: a linear blend of the two source frames around each target time, computed
      in float32 in batches of bounded size and rounded to uint8.

    Target times past the last source frame hold the last frame, but the target must not outlast
    the source (its last frame must start before the source ends): that would be stretching the
    video, not converting its rate, and raises :class:`ValueError`.
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"expected uint8 frames shaped (frames, height, width, 3), got {frames.dtype} {frames.shape}")
    count = frames.shape[0]
    if count != conversion.source_frames:
        raise ValueError(f"got {count} frames but the conversion expects source_frames={conversion.source_frames}")
    if conversion.method == "none":
        if to_rate(conversion.source_fps) != to_rate(conversion.target_fps):
            raise ValueError(
                f"method 'none' cannot turn {conversion.source_fps} fps into {conversion.target_fps} fps; "
                "use 'interpolate' or 'resample'"
            )
        if conversion.target_frames != count:
            raise ValueError(f"method 'none' keeps {count} frames but target_frames is {conversion.target_frames}")
        return frames
    last_target_s = (conversion.target_frames - 1) / conversion.target_fps
    source_s = count / conversion.source_fps
    if last_target_s > source_s * (1 + 1e-9):
        raise ValueError(
            f"{conversion.target_frames} frames at {conversion.target_fps} fps need {last_target_s:.6f} s of source, "
            f"but {count} frames at {conversion.source_fps} fps last {source_s:.6f} s"
        )
    positions = _source_positions(conversion)
    if conversion.method == "resample":
        nearest = np.clip(np.floor(positions + 0.5).astype(np.int64), 0, count - 1)
        resampled: Frames = frames[nearest]
        return resampled
    return _interpolate(frames, positions)


def _interpolate(frames: Frames, positions: npt.NDArray[np.float64]) -> Frames:
    count = frames.shape[0]
    lower = np.clip(np.floor(positions).astype(np.int64), 0, count - 1)
    upper = np.minimum(lower + 1, count - 1)
    weight = np.clip(positions - lower, 0.0, 1.0).astype(np.float32)
    weight[upper == lower] = 0.0
    out: Frames = np.empty((positions.shape[0], *frames.shape[1:]), dtype=np.uint8)
    batch = max(1, _BLEND_ELEMENTS // math.prod(frames.shape[1:]))
    for start in range(0, positions.shape[0], batch):
        stop = min(start + batch, positions.shape[0])
        a = frames[lower[start:stop]].astype(np.float32)
        b = frames[upper[start:stop]].astype(np.float32)
        b -= a
        b *= weight[start:stop, None, None, None]
        a += b
        np.rint(a, out=a)
        np.clip(a, 0.0, 255.0, out=a)
        out[start:stop] = a.astype(np.uint8)
    return out


def to_rate(fps: float) -> Fraction:
    """The exact frame rate meant by ``fps``: 24 → 24/1, 29.97 or 29.97002997 → 30000/1001.

    Rates within 0.005 fps of an integer or of an NTSC rate (N × 1000/1001: 23.976, 29.97, 59.94)
    snap to it; any other rate is ``Fraction(fps).limit_denominator(1001)``.
    """
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"a frame rate must be a positive number, got {fps}")
    whole = round(fps)
    if whole >= 1 and abs(fps - whole) <= _RATE_SNAP:
        return Fraction(whole)
    ntsc = round(fps * 1.001)
    if ntsc >= 1 and abs(fps - ntsc * 1000 / 1001) <= _RATE_SNAP:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


@dataclass(frozen=True)
class EncodeResult:
    """A written video: what it holds (exact frames written, exact rate) and what it cost."""

    path: Path
    frames: int
    fps: Fraction
    width: int
    height: int
    bytes: int
    seconds: float  # wall-clock time spent encoding

    @property
    def duration_s(self) -> float:
        """Playing time: frames / fps."""
        return float(self.frames / self.fps)


def _check_frame(index: int, frame: npt.NDArray[np.generic], size: tuple[int, int] | None) -> Frames:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        raise ValueError(
            f"frame {index}: expected a uint8 array (height, width, 3), got {type(frame).__name__} {shape}"
        )
    height, width = frame.shape[0], frame.shape[1]
    if size is None:
        if width % 2 or height % 2:
            raise ValueError(f"H.264 yuv420p needs an even width and height, frame {index} is {width}x{height}")
    elif (width, height) != size:
        raise ValueError(
            f"frame {index} is {width}x{height} but frame 0 is {size[0]}x{size[1]}; every frame must have the same size"
        )
    return np.ascontiguousarray(frame)


def encode_mp4(
    frames: Iterable[Frames],
    path: Path,
    *,
    fps: float,
    crf: int = 20,
    preset: str = "veryfast",
) -> EncodeResult:
    """Encode RGB uint8 frames ``(height, width, 3)`` as H.264 yuv420p MP4 at exactly ``to_rate(fps)``.

    Frame i gets the timestamp i / rate (codec time base 1/rate), so the file's duration is exactly
    frames / rate. Colours are converted with BT.709 into limited range and tagged as such. The file
    is written to ``path.with_suffix('.part')`` and renamed to ``path`` when complete; on any error
    the ``.part`` file is removed and ``path`` is left as it was.

    :class:`ValueError` when there are no frames, the size is odd (yuv420p halves it) or a frame's
    size differs from the first frame's (naming the frame index).
    """
    rate = to_rate(fps)
    part = path.with_suffix(".part")
    if part == path:
        raise ValueError(f"{path}: the output must not itself end in .part")
    started = time.perf_counter()
    source = iter(frames)
    try:
        first = next(source)
    except StopIteration:
        raise ValueError(f"{path}: no frames to encode") from None
    first = _check_frame(0, first, None)
    height, width = first.shape[0], first.shape[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with av.open(str(part), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.time_base = 1 / rate
            stream.codec_context.color_range = ColorRange.MPEG
            stream.codec_context.colorspace = _BT709
            stream.codec_context.color_primaries = _BT709
            stream.codec_context.color_trc = _BT709
            stream.options = {"crf": str(crf), "preset": preset}
            frame: Frames | None = first
            while frame is not None:
                picture = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
                    format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
                )
                picture.pts = written
                picture.time_base = stream.codec_context.time_base
                container.mux(stream.encode(picture))
                written += 1
                nxt = next(source, None)
                frame = None if nxt is None else _check_frame(written, nxt, (width, height))
            container.mux(stream.encode(None))
        part.replace(path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return EncodeResult(
        path=path,
        frames=written,
        fps=rate,
        width=width,
        height=height,
        bytes=path.stat().st_size,
        seconds=time.perf_counter() - started,
    )


def deliver(
    chunks: Sequence[Frames],
    plan: GenerationPlan,
    path: Path,
    *,
    crf: int = 20,
    preset: str = "veryfast",
) -> EncodeResult:
    """Assemble, convert and encode the chunks of ``plan``: a file of exactly ``plan.expected``.

    Before anything is written, the plan's numbers must agree with each other (native frames and fps
    with the conversion's source, the conversion's target with the expected output, the generation
    resolution with the expected one); :class:`ValueError` names the first that does not.
    """
    conversion, expected = plan.fps_conversion, plan.expected
    mismatches = [
        ("fps_conversion.source_frames", conversion.source_frames, "native_frames", plan.native_frames),
        ("fps_conversion.target_frames", conversion.target_frames, "expected.frames", expected.frames),
        ("fps_conversion.source_fps", to_rate(conversion.source_fps), "native_fps", to_rate(plan.native_fps)),
        ("fps_conversion.target_fps", to_rate(conversion.target_fps), "expected.fps", to_rate(expected.fps)),
        ("resolution", str(plan.resolution), "expected.resolution", str(expected.resolution)),
    ]
    for left, left_value, right, right_value in mismatches:
        if left_value != right_value:
            raise ValueError(f"plan {plan.plan_id}: {left} is {left_value} but {right} is {right_value}")
    video = convert_fps(assemble(chunks, plan), conversion)
    if video.shape[0] != expected.frames:  # convert_fps guarantees it; checked again before writing
        raise ValueError(f"plan {plan.plan_id}: {video.shape[0]} frames to write, expected {expected.frames}")
    result = encode_mp4(video, path, fps=expected.fps, crf=crf, preset=preset)
    if result.frames != expected.frames:
        path.unlink(missing_ok=True)
        raise ValueError(f"plan {plan.plan_id}: wrote {result.frames} frames, expected {expected.frames}")
    return result
