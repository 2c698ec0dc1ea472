"""Measure a video in one decode pass: what a file is and what it shows (no judgement).

Why: an earlier pipeline delivered 496 videos that nobody checked: the 5 s, 10 s and 30 s variants
were byte-identical 93-frame 16 fps clips, some variants were missing, and the only QA was three
screenshots per video (docs/background.md#security-cameras). Here :func:`analyze` decodes a file once and measures
everything the checks need into an :class:`Analysis`; :func:`worldmill.qa.judge.check` turns the
measurements into findings against what the plan said the file must be.

Decoding is the cost, so the pass does as little per frame as it can: each frame becomes a small
gray image about :data:`SMALL_WIDTH` pixels wide (sampled straight from the decoded luma plane, or
through swscale for other pixel formats; see :class:`_Pass`), and the statistics (inter-frame
difference, mean luma, contrast, dHash) are computed on blocks of 64 small images with numpy, in
full-range gray levels. Full-size RGB conversions happen only for the three screenshots and the
contact-sheet thumbnails. The file's SHA-256 is computed in a second thread while the main
thread decodes, reading the file in 1 MiB chunks (never whole). Measured on a 720-frame 320x192
H.264 file, the whole pass costs 1.1-1.45 × a plain PyAV decode of the same file.

Nothing here raises for a bad file: a missing, empty, truncated, corrupt, non-video or audio-only
file gives an :class:`Analysis` whose ``status`` and ``decode_error`` say why.

PyAV, numpy and Pillow only; no bus, no object store (the caller fetches the file).
"""

from __future__ import annotations

import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
import numpy.typing as npt
from av.video.reformatter import ColorRange, Interpolation, VideoReformatter

from worldmill.qa.containers import container_kind, container_name, read_head
from worldmill.qa.criteria import Thresholds
from worldmill.qa.fingerprint import Fingerprint, area_weights, phash_batch, sample_indices
from worldmill.runtime.digest import sha256_file as digest_sha256_file

__all__ = [
    "Analysis",
    "Status",
    "analyze",
    "count_bad_frames",
    "flicker_score",
    "sha256_file",
]


Image8 = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]

Status = Literal["ok", "missing", "empty", "not_video", "no_video_stream", "damaged"]

#: Width in pixels of the gray image every frame is reduced to for the per-frame statistics.
SMALL_WIDTH = 64
#: Frames whose small images are processed together (one numpy call per block, not per frame).
_BLOCK = 64
#: Screenshots are taken this far from the start and from the end (and one in the middle).
SCREENSHOT_OFFSET_S = 0.5
#: The contact sheet's grid: columns × rows of evenly spaced thumbnails.
SHEET_COLUMNS, SHEET_ROWS = 4, 3
#: Decoding stops after this many packets that fail to decode (the file is damaged either way).
_MAX_DECODE_ERRORS = 25
_SCALE = Interpolation.AREA
#: 8-bit pixel formats whose first plane is the luma, one byte a pixel (sampled without conversion).
_PLANAR_LUMA = frozenset(
    {
        "gray",
        "nv12",
        "nv16",
        "nv21",
        "yuv410p",
        "yuv411p",
        "yuv420p",
        "yuv422p",
        "yuv440p",
        "yuv444p",
        "yuvj411p",
        "yuvj420p",
        "yuvj422p",
        "yuvj440p",
        "yuvj444p",
    }
)


@dataclass(frozen=True, eq=False)
class Analysis:
    """Everything one decode pass measured. ``status`` is ``"ok"`` only when every declared frame decoded.

    ``diffs[i]`` is the mean absolute difference between small gray frames ``i - 1`` and ``i``
    (``diffs[0] = 0``); ``luma`` and ``contrast`` are each frame's mean and standard deviation.
    ``black_frames`` and ``flat_frames`` are counted with the default :class:`~worldmill.qa.criteria.Thresholds`
    (:func:`~worldmill.qa.judge.check` recounts them with its own). Screenshots and the contact sheet are RGB.
    """

    path: Path
    status: Status
    decode_error: str | None = None
    bytes: int = 0
    sha256: str = ""  # empty only when the file cannot be read
    container: str | None = None
    codec: str | None = None
    width: int = 0
    height: int = 0
    fps: Fraction | None = None
    frames: int = 0
    duration_s: float = 0.0
    declared_frames: int | None = None
    declared_duration_s: float | None = None
    vfr: bool = False
    frame_interval_s: tuple[float, float] | None = None  # shortest and longest gap between frames
    audio_only: bool = False
    has_audio: bool = False
    motion: float = 0.0
    diffs: Floats = field(default_factory=lambda: np.zeros(0, np.float32))
    luma: Floats = field(default_factory=lambda: np.zeros(0, np.float32))
    contrast: Floats = field(default_factory=lambda: np.zeros(0, np.float32))
    black_frames: int = 0
    flat_frames: int = 0
    flicker: float = 0.0
    phash: tuple[int, ...] = ()
    #: Every frame's 64-bit DCT pHash (:func:`~worldmill.qa.fingerprint.phash` of its small gray image).
    frame_hashes: npt.NDArray[np.uint64] = field(default_factory=lambda: np.zeros(0, np.uint64))
    #: Every frame's start in seconds from the first frame.
    frame_times: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0, np.float64))
    #: The pHash of a frame every ``1 / rate`` s; ``None`` when nothing decoded.
    fingerprint: Fingerprint | None = None
    screenshots: dict[str, Image8] = field(default_factory=dict)
    contact_sheet: Image8 | None = None

    @property
    def readable(self) -> bool:
        """At least one frame decoded, so the content checks mean something."""
        return self.frames > 0


# -- helpers ---------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """SHA-256 of a file in hex (:func:`worldmill.runtime.digest.sha256_file`, without the size)."""
    return digest_sha256_file(path)[0]


def _evenly(count: int, samples: int) -> list[int]:
    """``samples`` frame indices spread evenly over ``count`` frames (centre of each of ``samples`` slices)."""
    if count <= 0 or samples <= 0:
        return []
    return sorted({min(count - 1, int((k + 0.5) * count / samples)) for k in range(samples)})


# -- the pass ----------------------------------------------------------------------------------


class _Pass:
    """The per-frame work of one decode pass; :meth:`add` is called for every decoded frame.

    The small gray image of a frame in an 8-bit planar YUV format is every ``step``-th pixel of its
    luma plane (a strided view of the decoded buffer, no conversion at all); other formats go
    through swscale. Measured on 320x192 H.264 (PyAV 18): luma sampling ~5 µs a frame, swscale
    to a 64 px gray image ~60 µs (area) or ~38 µs (point), against ~110 µs to decode the frame.
    Sampling and area averaging gave the same motion to within 5 % on encoded test videos.
    """

    def __init__(
        self,
        stream: av.video.stream.VideoStream,
        *,
        estimated_frames: int,
        estimated_duration_s: float | None,
        thumb_width: int,
    ) -> None:
        self.scaler = VideoReformatter()
        self.time_base = float(stream.time_base) if stream.time_base else None
        self.thumb_width = thumb_width
        self.count = 0
        self.pts: list[int] = []
        self.missing_pts = False
        self.first_pts: int | None = None
        self.width = 0
        self.height = 0
        self.step = 1
        self.origin = (0, 0)
        self.sampled = False  # the small image is sampled from the luma plane
        self.limited = False  # ... which is limited range (16-235) and is scaled to 0-255 per block
        self.block: Image8 = np.zeros((0, 0, 0), np.uint8)
        self.filled = 0
        self.previous: Image8 | None = None
        self.rows: npt.NDArray[np.float32] = np.zeros((0, 0), np.float32)
        self.columns: npt.NDArray[np.float32] = np.zeros((0, 0), np.float32)
        self.diffs: list[Floats] = []
        self.luma: list[Floats] = []
        self.contrast: list[Floats] = []
        self.hashes: list[npt.NDArray[np.uint64]] = []
        self.phashes: list[npt.NDArray[np.uint64]] = []
        rate = stream.average_rate or stream.guessed_rate
        self.fps = Fraction(rate.numerator, rate.denominator) if rate else None
        # Screenshot times, earliest first. The frame shown at a time is the last one that starts
        # at or before it: it is taken when the next frame starts later. Every target gets a frame
        # (the first starts at 0); targets not passed by the end get the last frame.
        targets = [("start", SCREENSHOT_OFFSET_S)]
        if estimated_duration_s:
            half = estimated_duration_s / 2
            end = max(estimated_duration_s - SCREENSHOT_OFFSET_S, half)
            targets = [("start", min(SCREENSHOT_OFFSET_S, half)), ("middle", half), ("end", end)]
        self.targets = targets
        self.next_target = targets[0][1] + 1e-6
        self.shots: dict[str, av.VideoFrame] = {}
        self.last: av.VideoFrame | None = None
        self.thumb_at = set(_evenly(estimated_frames, SHEET_COLUMNS * SHEET_ROWS))
        self.thumbs: list[Image8] = []

    def _start(self, frame: av.VideoFrame) -> None:
        self.width, self.height = frame.width, frame.height
        self.step = step = max(1, frame.width // SMALL_WIDTH)
        columns, rows = max(1, frame.width // step), max(1, frame.height // step)
        # Sample the centre of each step × step cell (clamped for frames smaller than a cell).
        self.origin = (min(step // 2, frame.height - 1 - (rows - 1) * step), min(step // 2, frame.width - 1))
        name = frame.format.name
        self.sampled = name in _PLANAR_LUMA
        self.limited = (
            self.sampled and name != "gray" and not name.startswith("yuvj") and frame.color_range != ColorRange.JPEG
        )
        self.block = np.empty((_BLOCK, rows, columns), np.uint8)
        self.rows = area_weights(rows, 8).astype(np.float32)  # dHash: 9 × 8 cells, compared left to right
        self.columns = np.ascontiguousarray(area_weights(columns, 9).astype(np.float32).T)

    def _small(self, frame: av.VideoFrame, out: Image8) -> None:
        rows, columns = out.shape
        if self.sampled and frame.width == self.width and frame.height == self.height:
            plane = frame.planes[0]
            line, (top, left) = plane.line_size, self.origin
            # A strided view of the decoded luma: every step-th pixel of every step-th row.
            view = np.ndarray(
                (rows, columns), np.uint8, memoryview(plane), top * line + left, (self.step * line, self.step)
            )
            np.copyto(out, view)
            return
        gray = self.scaler.reformat(
            frame, width=columns, height=rows, format="gray", interpolation=Interpolation.AREA, threads=1
        ).to_ndarray()
        if self.limited:  # keep the block in one range: full-range gray back to 16-235
            gray = np.rint(gray.astype(np.float32) * (219 / 255) + 16)
        np.copyto(out, gray, casting="unsafe")

    def add(self, frame: av.VideoFrame) -> None:
        """Measure one frame: small gray image into the block, timestamps, screenshot and thumbnail picks."""
        if self.count == 0:
            self._start(frame)
        self._small(frame, self.block[self.filled])
        self.filled += 1
        if self.filled == _BLOCK:
            self._flush()
        pts = frame.pts
        if pts is None:
            self.missing_pts = True
        else:
            self.pts.append(pts)
            if self.first_pts is None:
                self.first_pts = pts
        if self._seconds(pts) > self.next_target:
            self._passed(self._seconds(pts))
        if self.count in self.thumb_at:
            self.thumbs.append(self._thumb(frame))
        self.last = frame
        self.count += 1

    def run(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> list[str]:
        """Demux and decode ``stream`` to the end, adding every frame; the problems met on the way."""
        errors: list[str] = []
        try:
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError as exc:  # a bad packet: note it, go on with the next
                    errors.append(f"a packet after frame {self.count} does not decode ({exc})")
                    if len(errors) >= _MAX_DECODE_ERRORS:
                        break
                    continue
                for frame in decoded:
                    self.add(frame)
        except (av.error.FFmpegError, OSError) as exc:
            errors.append(f"reading stops after {self.count} frames ({exc})")
        return errors

    def _passed(self, seconds: float) -> None:
        """The frame starting at ``seconds`` is past one or more targets: the previous frame is shown there."""
        while self.targets and seconds > self.targets[0][1] + 1e-6 and self.last is not None:
            label, _ = self.targets.pop(0)
            self.shots[label] = self.last
        self.next_target = self.targets[0][1] + 1e-6 if self.targets else math.inf

    def _seconds(self, pts: int | None) -> float:
        if pts is not None and self.first_pts is not None and self.time_base is not None:
            return (pts - self.first_pts) * self.time_base
        return self.count / float(self.fps) if self.fps else float(self.count)

    def _thumb(self, frame: av.VideoFrame) -> Image8:
        height = max(2, round(self.thumb_width * frame.height / frame.width / 2) * 2)
        thumb = self.scaler.reformat(
            frame, width=self.thumb_width, height=height, format="rgb24", interpolation=_SCALE, threads=1
        )
        return np.asarray(thumb.to_ndarray(), dtype=np.uint8)

    def _flush(self) -> None:
        """Statistics of the filled part of the block, in full-range gray levels."""
        count = self.filled
        if not count:
            return
        pixels = self.block[:count].reshape(count, -1)
        scale = np.float32(255 / 219) if self.limited else np.float32(1)
        before = pixels[:1] if self.previous is None else self.previous  # first frame: difference 0
        chain = np.concatenate([before, pixels])
        later, earlier = chain[1:], chain[:-1]
        moved = (np.maximum(later, earlier) - np.minimum(later, earlier)).sum(axis=1, dtype=np.uint32)  # |a - b|
        self.diffs.append((moved / np.float32(pixels.shape[1]) * scale).astype(np.float32))
        self.previous = pixels[-1:].copy()
        values = pixels.astype(np.float32)
        mean = values.mean(axis=1)
        square = np.einsum("ij,ij->i", values, values) / np.float32(pixels.shape[1])
        self.contrast.append((np.sqrt(np.maximum(square - mean * mean, 0)) * scale).astype(np.float32))
        offset = np.float32(16) if self.limited else np.float32(0)
        self.luma.append(np.clip((mean - offset) * scale, 0, 255).astype(np.float32))
        images = values.reshape(self.block[:count].shape)
        self.phashes.append(phash_batch(images))  # pHash: gain and offset free, no range scaling needed
        cells = np.matmul(self.rows, np.matmul(images, self.columns))
        bits = np.packbits((cells[:, :, 1:] > cells[:, :, :-1]).reshape(count, 64), axis=1)
        self.hashes.append(bits.view(">u8").reshape(-1).astype(np.uint64))
        self.filled = 0

    def rgb(self, frame: av.VideoFrame) -> Image8:
        """A full-size RGB copy of a frame (for screenshots only)."""
        return np.asarray(self.scaler.reformat(frame, format="rgb24", threads=1).to_ndarray(), dtype=np.uint8)

    def _frame_times(self) -> npt.NDArray[np.float64]:
        """Each frame's start in seconds from the first (from the timestamps, else from the frame rate)."""
        if not self.missing_pts and len(self.pts) == self.count and self.time_base is not None and self.pts:
            pts = np.asarray(self.pts, dtype=np.float64)
            return np.asarray((pts - pts[0]) * self.time_base, dtype=np.float64)
        step = 1 / float(self.fps) if self.fps else 1.0
        return np.arange(self.count, dtype=np.float64) * step

    def finish(self, path: Path, sample_frames: int, thresholds: Thresholds) -> Analysis:
        """The measurements (status still to be decided by the caller)."""
        self._flush()
        frame_hashes = np.concatenate(self.phashes) if self.phashes else np.zeros(0, np.uint64)
        diffs = np.concatenate(self.diffs) if self.diffs else np.zeros(0, np.float32)
        luma = np.concatenate(self.luma) if self.luma else np.zeros(0, np.float32)
        contrast = np.concatenate(self.contrast) if self.contrast else np.zeros(0, np.float32)
        hashes = np.concatenate(self.hashes) if self.hashes else np.zeros(0, np.uint64)
        vfr, interval, duration = self._timing()
        shots = dict(self.shots)
        if self.last is not None:
            shots |= {label: self.last for label, _ in self.targets}  # not passed: the last frame
            shots.setdefault("end", self.last)  # duration unknown: the last frame
        black, flat = count_bad_frames(luma, contrast, thresholds)
        times = self._frame_times()
        fingerprint = None
        if len(frame_hashes) and len(frame_hashes) == len(times):
            rate = thresholds.fingerprint_rate
            picks = sample_indices(times, duration or float(times[-1]) + 1e-3, rate)
            fingerprint = Fingerprint(rate=rate, hashes=tuple(int(frame_hashes[i]) for i in picks))
        return Analysis(
            path=path,
            status="ok",
            width=self.width,
            height=self.height,
            fps=self.fps,
            frames=self.count,
            duration_s=duration,
            vfr=vfr,
            frame_interval_s=interval,
            motion=float(diffs[1:].mean()) if len(diffs) > 1 else 0.0,
            diffs=diffs,
            luma=luma,
            contrast=contrast,
            black_frames=black,
            flat_frames=flat,
            flicker=flicker_score(luma),
            phash=tuple(int(hashes[i]) for i in _evenly(len(hashes), sample_frames)),
            frame_hashes=frame_hashes,
            frame_times=times,
            fingerprint=fingerprint,
            screenshots={label: self.rgb(frame) for label, frame in shots.items()},
            contact_sheet=self._sheet(),
        )

    def _timing(self) -> tuple[bool, tuple[float, float] | None, float]:
        fallback = self.count / float(self.fps) if self.fps else 0.0
        if self.missing_pts or len(self.pts) < 2 or self.time_base is None:
            return False, None, fallback
        pts = np.asarray(self.pts, dtype=np.int64)
        deltas = np.diff(pts)
        median = float(np.median(deltas))
        # Rounding to a fine time base jitters by one tick; a coarse one (a tick per frame) must be exact.
        allowed = max(1.0 if median >= 10 else 0.0, 0.01 * median)
        vfr = bool(np.abs(deltas - median).max() > allowed)
        tb = float(self.time_base)
        interval = (float(deltas.min()) * tb, float(deltas.max()) * tb)
        duration = float(pts.max() - pts.min() + median) * tb
        return vfr, interval, duration

    def _sheet(self) -> Image8 | None:
        if not self.thumbs:
            return None
        height, width = self.thumbs[0].shape[:2]
        sheet = np.zeros((SHEET_ROWS * height, SHEET_COLUMNS * width, 3), np.uint8)
        for k, thumb in enumerate(self.thumbs[: SHEET_ROWS * SHEET_COLUMNS]):
            row, column = divmod(k, SHEET_COLUMNS)
            h, w = min(height, thumb.shape[0]), min(width, thumb.shape[1])
            sheet[row * height : row * height + h, column * width : column * width + w] = thumb[:h, :w]
        return sheet


def count_bad_frames(luma: Floats, contrast: Floats, thresholds: Thresholds) -> tuple[int, int]:
    """Black frames (dark and flat) and flat frames that are not black, with ``thresholds``."""
    flat = contrast < thresholds.flat_std
    black = flat & (luma < thresholds.black_luma)
    return int(black.sum()), int((flat & ~black).sum())


def flicker_score(luma: Floats) -> float:
    """Mean absolute deviation of each frame's luma from the average of its two neighbours.

    Smooth motion and fades follow their neighbours (score near 0); brightness that jumps up and
    down from frame to frame does not. A single cut adds one deviation, spread over all frames.
    """
    if len(luma) < 3:
        return 0.0
    m = luma.astype(np.float64)
    return float(np.abs(m[1:-1] - (m[:-2] + m[2:]) / 2).mean())


def analyze(
    path: Path,
    *,
    sample_frames: int = 8,
    thumb_width: int = 160,
    thresholds: Thresholds | None = None,
) -> Analysis:
    """Decode ``path`` once and measure everything :func:`~worldmill.qa.judge.check` needs; never raises for a bad file.

    ``sample_frames`` evenly spaced frames get a 64-bit dHash (:func:`~worldmill.qa.judge.near_duplicate`); the contact
    sheet has :data:`SHEET_COLUMNS` × :data:`SHEET_ROWS` thumbnails ``thumb_width`` pixels wide.
    Screenshots are the frames shown 0.5 s after the start, at the middle and 0.5 s before the end
    of the declared duration (a file that ends early gives its last frame for the later ones).
    ``thresholds`` only sets how ``black_frames`` and ``flat_frames`` are counted.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        return Analysis(path=path, status="missing", decode_error=f"cannot read the file ({exc})")
    if size == 0:
        return Analysis(
            path=path, status="empty", decode_error="empty file (0 bytes)", sha256=hashlib.sha256().hexdigest()
        )
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="qa-sha256") as pool:
        digest = pool.submit(sha256_file, path)  # reads the file while the main thread decodes it
        result = _decode(path, sample_frames, thumb_width, thresholds or Thresholds())
        try:
            return replace(result, bytes=size, sha256=digest.result())
        except OSError as exc:
            return replace(result, bytes=size, decode_error=result.decode_error or f"cannot read the file ({exc})")


def _decode(path: Path, sample_frames: int, thumb_width: int, thresholds: Thresholds) -> Analysis:
    """The decode pass: every :class:`Analysis` field but the size and the hash."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        return _unopenable(path, exc)
    with container:
        name = container_name(container)
        audio = container.streams.audio
        if not container.streams.video:
            kind = f"audio only: {audio[0].codec_context.name}" if audio else "no streams at all"
            return Analysis(
                path=path,
                status="no_video_stream",
                decode_error=f"no video stream ({kind})",
                container=name,
                audio_only=bool(audio),
                has_audio=bool(audio),
            )
        stream = container.streams.video[0]
        declared_frames = stream.frames or None
        declared_s: float | None = None
        if stream.duration and stream.time_base:
            declared_s = float(stream.duration * stream.time_base)
        elif container.duration:
            declared_s = container.duration / av.time_base
        rate = stream.average_rate or stream.guessed_rate
        estimated = declared_frames or (round(declared_s * float(rate)) if declared_s and rate else 0)
        work = _Pass(stream, estimated_frames=estimated, estimated_duration_s=declared_s, thumb_width=thumb_width)
        errors = work.run(container, stream)
        result = replace(
            work.finish(path, sample_frames, thresholds),
            container=name,
            codec=stream.codec_context.name,
            has_audio=bool(audio),
            declared_frames=declared_frames,
            declared_duration_s=declared_s,
        )
    frames = result.frames
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        problem = f"damaged after {frames} decoded frames: {errors[0]}{more}"
        if declared_frames and frames < declared_frames:
            problem += f" (the file declares {declared_frames})"
    elif declared_frames and frames < declared_frames:
        problem = f"truncated: decoded {frames} of the {declared_frames} frames the file declares"
    elif frames == 0:
        problem = "no frame decodes"
    else:
        return result
    if frames == 0 and container_kind(read_head(path)) is None:
        return replace(result, status="not_video", decode_error=f"not a video: {problem}")
    return replace(result, status="damaged", decode_error=problem)


def _unopenable(path: Path, exc: Exception) -> Analysis:
    kind = container_kind(read_head(path))
    reason = getattr(exc, "strerror", None) or str(exc)
    if kind is None:
        return Analysis(path=path, status="not_video", decode_error=f"not a video: no container recognised ({reason})")
    return Analysis(
        path=path,
        status="damaged",
        decode_error=f"damaged {kind} file: cannot be opened, truncated or corrupt ({reason})",
    )
