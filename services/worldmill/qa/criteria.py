"""What a video must be (:class:`Expectation`) and where measurements become findings (:class:`Thresholds`).

Pure data, read by both halves of per-video QA: :mod:`worldmill.qa.measure` (the decode pass counts
black and flat frames and samples the fingerprint at these limits) and :mod:`worldmill.qa.judge`
(which turns the measurements into findings against them).
"""

from __future__ import annotations

from dataclasses import dataclass

from worldmill.contracts.generation import GenerationPlan
from worldmill.qa.fingerprint import DEFAULT_RATE

__all__ = ["Expectation", "Thresholds"]


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
    #: Flicker score (see :func:`~worldmill.qa.measure.flicker_score`) from which brightness pulses are reported.
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
