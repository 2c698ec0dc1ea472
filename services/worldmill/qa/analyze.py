"""Every per-video check in one decode pass: what a file is, what it shows, and whether it is what was planned.

Why: an earlier pipeline delivered 496 videos that nobody checked: the 5 s, 10 s and 30 s variants
were byte-identical 93-frame 16 fps clips, some variants were missing, and the only QA was three
screenshots per video (seeds/000). Here :func:`analyze` decodes a file once and measures
everything the checks need; :func:`check` turns the measurements into findings against what the
plan said the file must be (:class:`Expectation`), with the thresholds in :class:`Thresholds`.

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

from worldmill.contracts.generation import GenerationPlan
from worldmill.contracts.qa import Finding, Severity
from worldmill.qa.findings import finding, jpeg
from worldmill.qa.fingerprint import DEFAULT_RATE, Fingerprint, phash_batch, sample_indices
from worldmill.qa.structure import Loop, find_cuts, find_loop

__all__ = [
    "Analysis",
    "Expectation",
    "Thresholds",
    "analyze",
    "check",
    "cuts_of",
    "hamming",
    "jpeg",
    "loop_of",
    "near_duplicate",
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
_HASH_CHUNK = 1 << 20
#: Decoding stops after this many packets that fail to decode (the file is damaged either way).
_MAX_DECODE_ERRORS = 25
#: How many leading bytes are read to recognise a video container that ffmpeg cannot open.
_MAGIC_BYTES = 512
_ISO_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"}
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


@dataclass(frozen=True)
class Expectation:
    """What a video must be; ``None`` skips that check. ``boundaries``: output frame indices where chunks join."""

    frames: int | None = None
    fps: float | None = None
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = "h264"
    container: str | None = "mp4"
    boundaries: tuple[int, ...] = ()
    #: The video is meant to be one continuous shot: a cut (away from ``boundaries``) or a loop fails it.
    one_shot: bool = True

    @classmethod
    def from_plan(cls, plan: GenerationPlan) -> Expectation:
        """The plan's expected output, with its chunk joins mapped to delivered frame indices.

        Chunk ``i`` appends ``keep_frames`` frames to the native stream, so chunks join at the
        running sums of ``keep_frames``. After an fps conversion a join at native frame ``b`` (time
        ``b / source_fps``) lands at output frame ``round(b × target_fps / source_fps)``; the seam
        check looks one frame either side, which covers the rounding and interpolation's blending.
        """
        expected, conversion = plan.expected, plan.fps_conversion
        native: list[int] = []
        at = 0
        for chunk in plan.chunks[:-1]:
            at += chunk.keep_frames
            native.append(at)
        if conversion.method == "none":
            mapped = native
        else:
            mapped = [round(b * conversion.target_fps / conversion.source_fps) for b in native]
        boundaries = tuple(sorted({b for b in mapped if 0 < b < expected.frames}))
        return cls(
            frames=expected.frames,
            fps=expected.fps,
            duration_s=expected.duration_s,
            width=expected.resolution.width,
            height=expected.resolution.height,
            codec=expected.codec,
            container=expected.container,
            boundaries=boundaries,
        )


@dataclass(frozen=True)
class Thresholds:
    """Where measurements become findings. Gray levels are full range (0-255) on the small image.

    The content thresholds come from measuring 320x192 H.264 test videos (crf 20) with analyze():

    * motion: a frozen video 0.000, frozen with σ=2 noise 0.007, a small object (1 % of the frame)
      moving 1 px a frame 0.14, a pan of 0.1 px a frame 0.53, ordinary motion 1.9-9;
    * black/flat: encoded uniform frames have contrast 0.00 and black luma 0.0; a very dark real
      scene (mean luma 15) still has contrast ≥ 2.8;
    * flicker: smooth motion, pans, fades and cuts 0.02-0.41; random brightness jitter of ±3
      levels 1.5; a ±2-level alternation 3.0;
    * seams (largest difference in a 3-frame window ÷ median difference): 1.03-1.8 for ordinary
      videos (2.7 for the ±3 jitter one), a +6-level jump at one frame 3.1, +15 levels 8.0, a cut 12;
    * dHash (8 samples): the same frames re-encoded at crf 18/28/38 or half size 0.6-3.6 bits,
      different content 33-36 bits.
    """

    duration_tolerance_s: float = 0.5
    frames_exact: bool = True
    fps_tolerance: float = 0.01
    #: Mean inter-frame difference below which the video counts as frozen (7× frozen noise, ⅓ of a small object).
    static_motion: float = 0.05
    #: A frame is black when it is flat and its mean luma is below this.
    black_luma: float = 16.0
    #: A frame is flat (blank, featureless) when the standard deviation of its luma is below this.
    flat_std: float = 2.0
    #: Share of black (or flat) frames above which the finding is an error rather than a warning.
    bad_frame_share: float = 0.10
    #: Flicker score (see :func:`flicker_score`) from which brightness pulses are reported.
    flicker: float = 1.0
    #: A planned chunk join is a seam when its difference is ≥ this × the median difference ...
    seam_factor: float = 3.0
    #: ... and at least this many gray levels (so a nearly static video needs a visible jump).
    seam_min_diff: float = 2.0
    #: Mean Hamming distance (of 64) between sampled dHashes at or below which two videos are near duplicates.
    near_duplicate_bits: int = 10
    #: Fingerprint samples per second of video time (:mod:`worldmill.qa.fingerprint`).
    fingerprint_rate: float = DEFAULT_RATE
    #: A fingerprint sample matches the one a period later within this many bits (of 64); the mean over
    #: the repetition must be ≤ half of it (a clip and its own repeat: 0-3 bits, unrelated samples 25-40).
    loop_match_bits: float = 8.0
    #: ... and samples half a period apart must differ by this many bits on average (the content moves).
    loop_novelty_bits: float = 14.0
    #: A repetition is a loop (a clip played again) when the frames where it restarts jump by ≥ this × the
    #: median difference; without such a jump it is smoothly periodic motion and passes (noted in the message).
    loop_restart_factor: float = 3.0
    #: Shortest period reported as a loop (seconds).
    loop_min_period_s: float = 1.0
    #: Shortest stretch that must repeat (seconds; also at least half a period).
    loop_min_repeat_s: float = 2.0
    #: A cut: a frame differing from the previous one by ≥ this many gray levels ...
    cut_min_diff: float = 8.0
    #: ... and ≥ this × the median difference of the frames around it (± ``cut_window`` frames) ...
    cut_factor: float = 5.0
    cut_window: int = 12
    #: ... whose pHash differs from the previous frame's by ≥ this many bits (ordinary motion: 0-8).
    cut_hash_bits: int = 16


@dataclass(frozen=True, eq=False)
class Analysis:
    """Everything one decode pass measured. ``status`` is ``"ok"`` only when every declared frame decoded.

    ``diffs[i]`` is the mean absolute difference between small gray frames ``i - 1`` and ``i``
    (``diffs[0] = 0``); ``luma`` and ``contrast`` are each frame's mean and standard deviation.
    ``black_frames`` and ``flat_frames`` are counted with the default :class:`Thresholds`
    (:func:`check` recounts them with its own). Screenshots and the contact sheet are RGB.
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


def sha256_file(path: Path, chunk: int = _HASH_CHUNK) -> str:
    """SHA-256 of a file read in ``chunk``-byte pieces into one reused buffer."""
    digest = hashlib.sha256()
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    with path.open("rb") as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()


def hamming(a: int, b: int) -> int:
    """Bits that differ between two 64-bit hashes."""
    return (a ^ b).bit_count()


def near_duplicate(a: Analysis, b: Analysis, bits: int = Thresholds.near_duplicate_bits) -> bool:
    """Whether two videos show the same content: mean Hamming distance of their sampled dHashes ≤ ``bits``.

    Both are sampled at the same relative positions, so re-encodes (another crf, another bitrate)
    of the same frames match, and byte-identical copies match trivially. Videos without sampled
    frames are never near duplicates.
    """
    pairs = list(zip(a.phash, b.phash, strict=False))
    if not pairs:
        return False
    return sum(hamming(x, y) for x, y in pairs) / len(pairs) <= bits


def _container_kind(head: bytes) -> str | None:
    """The container a file's first bytes announce, or ``None`` when they announce no video container."""
    if len(head) >= 8 and head[4:8] in _ISO_BOXES:
        return "mp4/mov"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "matroska/webm"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:3] == b"FLV":
        return "flv"
    if head[:4] == b"\x00\x00\x01\xba":
        return "mpeg-ps"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "mpeg-ts"
    return None


def _area_matrix(size_in: int, size_out: int) -> npt.NDArray[np.float32]:
    """``(size_out, size_in)`` weights that average input pixels into output cells (area resampling)."""
    edges = np.linspace(0.0, size_in, size_out + 1)
    pixels = np.arange(size_in, dtype=np.float64)
    overlap = np.minimum(pixels[None, :] + 1, edges[1:, None]) - np.maximum(pixels[None, :], edges[:-1, None])
    weights = np.clip(overlap, 0.0, None) / np.diff(edges)[:, None]
    return np.asarray(weights, dtype=np.float32)


def _evenly(count: int, samples: int) -> list[int]:
    """``samples`` frame indices spread evenly over ``count`` frames (centre of each of ``samples`` slices)."""
    if count <= 0 or samples <= 0:
        return []
    return sorted({min(count - 1, int((k + 0.5) * count / samples)) for k in range(samples)})


def _container_name(container: av.container.InputContainer) -> str:
    """``mp4`` or ``mov`` for the ISO demuxer (by the major brand), else the demuxer's first name."""
    names = container.format.name.split(",")
    if "mp4" in names:
        brand = str(container.metadata.get("major_brand", "")).strip()
        return "mov" if brand == "qt" else "mp4"
    return names[0]


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
        self.rows = _area_matrix(rows, 8)  # dHash: 9 × 8 cells, compared left to right
        self.columns = np.ascontiguousarray(_area_matrix(columns, 9).T)

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
    """Decode ``path`` once and measure everything :func:`check` needs; never raises for a bad file.

    ``sample_frames`` evenly spaced frames get a 64-bit dHash (:func:`near_duplicate`); the contact
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
        name = _container_name(container)
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
    if frames == 0 and _container_kind(_head(path)) is None:
        return replace(result, status="not_video", decode_error=f"not a video: {problem}")
    return replace(result, status="damaged", decode_error=problem)


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(_MAGIC_BYTES)
    except OSError:
        return b""


def _unopenable(path: Path, exc: Exception) -> Analysis:
    kind = _container_kind(_head(path))
    reason = getattr(exc, "strerror", None) or str(exc)
    if kind is None:
        return Analysis(path=path, status="not_video", decode_error=f"not a video: no container recognised ({reason})")
    return Analysis(
        path=path,
        status="damaged",
        decode_error=f"damaged {kind} file: cannot be opened, truncated or corrupt ({reason})",
    )


# -- the checks ------------------------------------------------------------------------------


def _close(a: float, b: float, tolerance: float) -> bool:
    return abs(a - b) <= tolerance + 1e-9


def check(analysis: Analysis, expected: Expectation | None, thresholds: Thresholds | None = None) -> list[Finding]:
    """Findings for one analysed video against what it should be (``None``: content checks only)."""
    limits = thresholds or Thresholds()
    out = [_decodes(analysis)]
    if expected is None:
        out.append(
            finding(
                "expectation",
                False,
                Severity.INFO,
                message="no expectation: frames, fps, duration, resolution and seams were not checked",
            )
        )
    if not analysis.readable:
        return out
    if expected is not None:
        out += _format_checks(analysis, expected, limits)
    out += _content_checks(analysis, expected, limits)
    return out


def _decodes(a: Analysis) -> Finding:
    if a.status == "ok":
        return finding(
            "decodes",
            True,
            Severity.ERROR,
            measured=a.frames,
            expected=a.declared_frames,
            message=f"all {a.frames} frames decode",
        )
    return finding(
        "decodes", False, Severity.ERROR, measured=a.status, expected="ok", message=a.decode_error or a.status
    )


def _equals(check: str, measured: str | None, expected: str) -> Finding:
    """An error unless ``measured`` is ``expected``: "<check> is X[, expected Y]"."""
    ok = measured == expected
    return finding(
        check,
        ok,
        Severity.ERROR,
        measured=measured,
        expected=expected,
        message=f"{check} is {measured}" + ("" if ok else f", expected {expected}"),
    )


def _format_checks(a: Analysis, e: Expectation, t: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    if e.container is not None:
        out.append(_equals("container", a.container, e.container))
    if e.codec is not None:
        out.append(_equals("codec", a.codec, e.codec))
    if e.frames is not None:
        slack = 0 if t.frames_exact or e.fps is None else round(t.duration_tolerance_s * e.fps)
        ok = abs(a.frames - e.frames) <= slack
        out.append(
            finding(
                "frames",
                ok,
                Severity.ERROR,
                measured=a.frames,
                expected=e.frames,
                message=f"{a.frames} frames" + ("" if ok else f", expected {e.frames}"),
            )
        )
    if e.fps is not None:
        fps = float(a.fps) if a.fps is not None else None
        ok = fps is not None and _close(fps, e.fps, t.fps_tolerance)
        out.append(
            finding(
                "fps",
                ok,
                Severity.ERROR,
                measured=None if fps is None else round(fps, 4),
                expected=e.fps,
                message=(f"{fps:g} fps" if fps is not None else "no frame rate")
                + ("" if ok else f", expected {e.fps:g}"),
            )
        )
    if e.duration_s is not None:
        ok = _close(a.duration_s, e.duration_s, t.duration_tolerance_s)
        out.append(
            finding(
                "duration",
                ok,
                Severity.ERROR,
                measured=round(a.duration_s, 3),
                expected=e.duration_s,
                message=f"{a.duration_s:.2f} s"
                + ("" if ok else f", expected {e.duration_s:g} s ± {t.duration_tolerance_s:g} s"),
            )
        )
    if e.width is not None or e.height is not None:
        want = f"{e.width or a.width}x{e.height or a.height}"
        got = f"{a.width}x{a.height}"
        ok = got == want
        out.append(
            finding(
                "resolution",
                ok,
                Severity.ERROR,
                measured=got,
                expected=want,
                message=got + ("" if ok else f", expected {want}"),
            )
        )
    return out


def _share(count: int, total: int) -> str:
    return f"{count} of {total} frames ({100 * count / total:.0f} %)"


def _content_checks(a: Analysis, e: Expectation | None, t: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    low, high = a.frame_interval_s or (0.0, 0.0)
    out.append(
        finding(
            "vfr",
            not a.vfr,
            Severity.WARNING,
            measured=a.vfr,
            expected=False,
            message=f"variable frame rate: frames {low * 1000:.1f}-{high * 1000:.1f} ms apart"
            if a.vfr
            else "constant frame rate",
        )
    )
    if a.frames >= 2:
        ok = a.motion >= t.static_motion
        out.append(
            finding(
                "static",
                ok,
                Severity.ERROR,
                measured=round(a.motion, 3),
                expected=t.static_motion,
                message=f"mean inter-frame difference {a.motion:.3f}"
                + ("" if ok else f" < {t.static_motion:g}: the video is frozen or static"),
            )
        )
    black, flat = count_bad_frames(a.luma, a.contrast, t)
    for check_name, count, what in (("black", black, "black"), ("flat", flat, "flat (blank)")):
        share = count / a.frames
        severity = Severity.ERROR if share > t.bad_frame_share else Severity.WARNING
        out.append(
            finding(
                check_name,
                count == 0,
                severity if count else Severity.ERROR,
                measured=count,
                expected=0,
                message=f"{_share(count, a.frames)} are {what}" if count else f"no {what} frames",
            )
        )
    if a.frames >= 3:
        ok = a.flicker < t.flicker
        out.append(
            finding(
                "flicker",
                ok,
                Severity.WARNING,
                measured=round(a.flicker, 3),
                expected=t.flicker,
                message=f"flicker score {a.flicker:.2f}" + ("" if ok else f" ≥ {t.flicker:g}: brightness pulses"),
            )
        )
    if e is not None and e.boundaries and a.frames >= 3:
        out.append(_seams(a, e.boundaries, t))
    out += _structure(a, e, t)
    return out


def loop_of(a: Analysis, t: Thresholds | None = None) -> Loop | None:
    """The repetition in an analysed video (:func:`~worldmill.qa.structure.find_loop` with ``t``'s limits)."""
    t = t or Thresholds()
    if a.fingerprint is None:
        return None
    return find_loop(
        a.fingerprint,
        match_bits=t.loop_match_bits,
        novelty_bits=t.loop_novelty_bits,
        min_period_s=t.loop_min_period_s,
        min_repeat_s=t.loop_min_repeat_s,
        frame_hashes=a.frame_hashes,
        fps=float(a.fps) if a.fps else None,
        diffs=a.diffs,
        restart_factor=t.loop_restart_factor,
    )


def cuts_of(a: Analysis, e: Expectation | None = None, t: Thresholds | None = None) -> list[int]:
    """Frames that start a new shot, except within a frame of ``e``'s chunk joins or next to a flat frame."""
    t = t or Thresholds()
    near = {b + k for b in (e.boundaries if e else ()) for k in (-1, 0, 1)}
    flat = np.flatnonzero(a.contrast < t.flat_std)  # into or out of a blank frame: the black/flat checks' business
    near |= {int(i) for i in flat} | {int(i) + 1 for i in flat}
    return find_cuts(
        a.diffs,
        a.frame_hashes,
        min_diff=t.cut_min_diff,
        factor=t.cut_factor,
        hash_bits=t.cut_hash_bits,
        window=t.cut_window,
        exclude=near,
    )


def _seconds(value: float) -> str:
    return f"{value:.2f}"


def _structure(a: Analysis, e: Expectation | None, t: Thresholds) -> list[Finding]:
    """``fingerprint`` (computed at all), ``loop`` (repeats itself) and ``cuts`` (changes shot)."""
    fp = a.fingerprint
    if fp is None or not fp.hashes:
        return [
            finding(
                "fingerprint",
                False,
                Severity.ERROR,
                measured=0,
                expected=None,
                message="no fingerprint: no frame with a timestamp to sample, so repeats and copies cannot be checked",
            )
        ]
    out = [
        finding(
            "fingerprint",
            True,
            Severity.ERROR,
            measured=len(fp.hashes),
            expected=None,
            message=f"{len(fp.hashes)} pHash samples at {fp.rate:g} per second",
        )
    ]
    one_shot = e.one_shot if e is not None else True
    severity = Severity.ERROR if one_shot else Severity.INFO
    loop = loop_of(a, t)
    fps = float(a.fps) if a.fps else None
    loop_starts: set[int] = set()
    if loop is None or loop.seamless:
        periodic = (
            f"; periodic motion with a {loop.period_s:.2f} s period but no jump where it restarts "
            f"({loop.restart_ratio:.1f} × median < {t.loop_restart_factor:g}), so no clip played again"
            if loop
            else ""
        )
        out.append(
            finding(
                "loop",
                True,
                severity,
                measured=None,
                expected=None,
                message=f"does not repeat itself (no stretch of ≥ {t.loop_min_repeat_s:g} s plays again{periodic})",
            )
        )
    else:
        ranges = loop.ranges()
        # A loop's own restarts are jumps too: they are reported here, not as cuts.
        loop_starts = {r + k for r in loop.restarts for k in range(-1, 2)}
        spans = ", ".join(f"{_seconds(r0)}-{_seconds(r1)} s" for r0, r1 in ranges)
        out.append(
            finding(
                "loop",
                False,
                severity,
                measured=[f"{r0:g}-{r1:g}" for r0, r1 in ranges],
                expected=None,
                message=f"repeats itself: a {loop.period_s:.2f} s period played {loop.repeats:.1f} times "
                f"({spans}; {loop.distance_bits:.1f} bits apart a period later)",
            )
        )
    cuts = [i for i in cuts_of(a, e, t) if i not in loop_starts]
    times = [float(a.frame_times[i]) if i < len(a.frame_times) else i / (fps or 1.0) for i in cuts]
    at = ", ".join(f"{_seconds(s)} s (frame {i})" for s, i in zip(times, cuts, strict=True))
    out.append(
        finding(
            "cuts",
            not cuts,
            severity,
            measured=[round(s, 3) for s in times] or None,
            expected=None,
            message=f"{len(cuts)} hard cut(s) in a video meant to be one shot: at {at}"
            if cuts
            else "one continuous shot (no hard cut" + (" away from the planned joins)" if e and e.boundaries else ")"),
        )
    )
    return out


def _seams(a: Analysis, boundaries: tuple[int, ...], t: Thresholds) -> Finding:
    """A spike of the inter-frame difference at a planned chunk join (± 1 frame) is a visible seam."""
    median = float(np.median(a.diffs[1:]))
    limit = max(t.seam_factor * median, t.seam_min_diff)
    ratios: list[float] = []
    seams: list[str] = []
    for b in boundaries:
        if not 0 < b < a.frames:
            continue
        spike = float(a.diffs[max(1, b - 1) : b + 2].max())
        ratios.append(round(spike / median, 2) if median > 0 else (math.inf if spike > 0 else 0.0))
        if spike >= limit:
            seams.append(f"frame {b}: difference {spike:.1f} = {spike / max(median, 1e-9):.1f} × median {median:.2f}")
    measured: list[str | int | float] = [r if math.isfinite(r) else "inf" for r in ratios]
    return finding(
        "seams",
        not seams,
        Severity.ERROR,
        measured=measured,
        expected=t.seam_factor,
        message=("visible seams at " + "; ".join(seams))
        if seams
        else f"no seam at the {len(ratios)} planned chunk joins (spike < {t.seam_factor:g} × median {median:.2f})",
    )
