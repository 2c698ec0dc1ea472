"""Structure inside one video (pure): does it repeat itself (a loop), does it cut to another shot?

Every generated video is meant to be one continuous shot. Two fakes pass the per-frame checks:

* a **loop**: a longer variant made by playing a shorter clip again (a "10 s" that is the 5 s clip
  twice). :func:`find_loop` looks for the smallest lag at which the video's fingerprint
  (:mod:`worldmill.qa.fingerprint`, a pHash every 0.25 s) matches itself over at least half a
  period and :data:`MIN_REPEAT_S`, while the content within the period does change (a near-static
  video matches itself at every lag and is the ``static`` check's business). A lag that is not a
  whole number of samples is covered by also comparing with the next sample; the period is then
  refined to a whole number of frames on the per-frame hashes.
* a **cut**: a hard change of shot. :func:`find_cuts` is a content detector in the manner of
  PySceneDetect's ``ContentDetector`` on the gray thumbnails the QA pass already has: a frame is a
  cut when its mean absolute difference from the previous frame is at least ``min_diff`` gray
  levels and ``factor`` × the median difference of the frames around it (so fast motion is not a
  cut), *and* the pHash of the frame differs from the previous one's by at least ``hash_bits``
  (so a brightness jump, a flash or a fade, which leave the pHash alone, is not a cut either).

Measured with analyze() on 320x192 H.264 (crf 20-30) clips: consecutive frames of ordinary
motion differ by 0-8 pHash bits; a cut between unrelated textured scenes 20-40 bits with a
difference 6-40 × the local median; the sample-wise distance between a clip and its own repeat
0-3 bits, between unrelated samples 25-40.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from worldmill.qa.fingerprint import Fingerprint

__all__ = ["MIN_REPEAT_S", "Loop", "find_cuts", "find_loop"]

#: The shortest stretch of video that must repeat before it counts as a loop.
MIN_REPEAT_S = 2.0

Hashes = npt.NDArray[np.uint64]


def _bits(x: Hashes) -> npt.NDArray[np.int64]:
    return np.bitwise_count(x).astype(np.int64)


@dataclass(frozen=True)
class Loop:
    """The video repeats itself: from ``start_s`` on, every ``period_s`` until ``end_s``."""

    period_s: float
    start_s: float
    end_s: float
    #: Mean Hamming distance (of 64) between a sample and the one a period later, over the repetition.
    distance_bits: float
    #: Mean Hamming distance between samples half a period apart (the content does change).
    novelty_bits: float
    #: The frames where the clip starts again (a jump back to its beginning), when frames were given.
    restarts: tuple[int, ...] = ()
    #: The median of the frame difference at the restarts ÷ the median difference (``0``: not measured).
    restart_ratio: float = 0.0
    #: No jump where the period starts again: smoothly periodic motion (a swing, a ramp), not a clip played again.
    seamless: bool = False

    @property
    def repeats(self) -> float:
        """How many times the period is played from ``start_s`` to ``end_s`` (2.0: twice)."""
        return (self.end_s - self.start_s) / self.period_s

    def ranges(self) -> list[tuple[float, float]]:
        """The occurrences, ``(start, end)`` seconds each; the last may be partial."""
        out: list[tuple[float, float]] = []
        at = self.start_s
        while at < self.end_s - 1e-6:
            out.append((round(at, 3), round(min(at + self.period_s, self.end_s), 3)))
            at += self.period_s
        return out


def _longest_run(mask: npt.NDArray[np.bool_]) -> tuple[int, int]:
    """``(start, length)`` of the longest run of ``True`` (``(0, 0)`` when there is none)."""
    if not mask.any():
        return 0, 0
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    starts, ends = edges[::2], edges[1::2]
    best = int(np.argmax(ends - starts))
    return int(starts[best]), int(ends[best] - starts[best])


def find_loop(
    fingerprint: Fingerprint,
    *,
    match_bits: float = 8.0,
    novelty_bits: float = 14.0,
    min_period_s: float = 1.0,
    min_repeat_s: float = MIN_REPEAT_S,
    frame_hashes: Hashes | None = None,
    fps: float | None = None,
    diffs: npt.NDArray[np.float32] | None = None,
    restart_factor: float = 3.0,
) -> Loop | None:
    """The video's repetition with the smallest period, or ``None``.

    At lag ``L`` samples, sample ``k`` matches when its pHash is within ``match_bits`` of sample
    ``k + L`` or ``k + L + 1``. A loop is the smallest ``L`` ≥ ``min_period_s`` whose longest run
    of matching samples covers at least ``min_repeat_s`` and half a period, with a mean distance
    ≤ ``match_bits`` / 2 and samples half a period apart ≥ ``novelty_bits`` apart on average.
    With ``frame_hashes`` (every frame's pHash) and ``fps`` the period is refined to whole frames;
    with ``diffs`` too, the restarts are located (the largest frame difference near each period
    boundary, at one phase) and a repetition whose restarts are not ≥ ``restart_factor`` × the
    median difference is ``seamless``.
    """
    h = fingerprint.array()
    n, rate = len(h), fingerprint.rate
    low = max(1, math.ceil(min_period_s * rate - 1e-9))
    run_min = max(1, math.ceil(min_repeat_s * rate - 1e-9))
    for lag in range(low, n - run_min + 1):
        d = _bits(h[: n - lag] ^ h[lag:])
        if n - lag - 1 > 0:
            d[:-1] = np.minimum(d[:-1], _bits(h[: n - lag - 1] ^ h[lag + 1 :]))
        start, length = _longest_run(d <= match_bits)
        if length < max(run_min, lag / 2):
            continue
        distance = float(d[start : start + length].mean())
        if distance > match_bits / 2:
            continue
        half = max(1, lag // 2)
        segment = h[start : min(start + length + lag, n)]
        if len(segment) <= half:
            continue
        novelty = float(_bits(segment[:-half] ^ segment[half:]).mean())
        if novelty < novelty_bits:
            continue
        period = lag / rate
        first, end = start / rate, min(n / rate, (start + length) / rate + period)
        restarts: tuple[int, ...] = ()
        ratio, seamless = 0.0, False
        if frame_hashes is not None and fps:
            period = _refine(frame_hashes, fps, start / rate, (start + length) / rate, lag / rate)
            end = min(n / rate, (start + length) / rate + period)
            if diffs is not None and len(diffs) > 2:
                restarts, ratio = _restarts(diffs, fps, first, end, period, rate=rate)
                seamless = ratio < restart_factor
                if restarts and not seamless:
                    first = max(0.0, restarts[0] / fps - period)
        return Loop(
            period_s=round(period, 4),
            start_s=round(first, 3),
            end_s=round(end, 3),
            distance_bits=round(distance, 2),
            novelty_bits=round(novelty, 2),
            restarts=restarts,
            restart_ratio=round(ratio, 2),
            seamless=seamless,
        )
    return None


def _refine(frame_hashes: Hashes, fps: float, start_s: float, stop_s: float, coarse_s: float) -> float:
    """The period in whole frames near ``coarse_s`` (up to one sample longer) with the closest per-frame match."""
    first, last = int(start_s * fps), int(stop_s * fps)
    base = round(coarse_s * fps)
    best, best_lag = math.inf, base
    for lag in range(max(1, base - 2), base + math.ceil(fps / 4) + 3):
        a = frame_hashes[first : max(first, min(last, len(frame_hashes) - lag))]
        if len(a) == 0:
            continue
        score = float(_bits(a ^ frame_hashes[first + lag : first + lag + len(a)]).mean())
        if score < best:
            best, best_lag = score, lag
    return best_lag / fps


def _restarts(
    diffs: npt.NDArray[np.float32], fps: float, first_s: float, end_s: float, period_s: float, *, rate: float
) -> tuple[tuple[int, ...], float]:
    """Where the clip starts again: the phase (within a sample of the coarse start) whose frames jump most."""
    d = np.asarray(diffs, dtype=np.float64)
    n, p = len(d), max(1, round(period_s * fps))
    median = float(np.median(d[1:])) if n > 1 else 0.0
    slack = math.ceil(fps / rate) + 1
    base = round(first_s * fps) + p
    best: tuple[float, list[int]] = (-1.0, [])
    for phase in range(base - slack, base + slack + 1):
        frames = [f for f in range(phase, min(n, round(end_s * fps)), p) if 0 < f < n]
        if frames:
            score = float(np.median(d[frames]))
            if score > best[0]:
                best = (score, frames)
    score, frames = best
    if not frames:
        return (), 0.0
    return tuple(frames), (score / median if median > 0 else (math.inf if score > 0 else 0.0))


def find_cuts(
    diffs: npt.NDArray[np.float32],
    frame_hashes: Hashes,
    *,
    min_diff: float = 8.0,
    factor: float = 5.0,
    hash_bits: int = 16,
    window: int = 12,
    exclude: Iterable[int] = (),
) -> list[int]:
    """The frames that start a new shot (index ``i``: the cut is between frames ``i - 1`` and ``i``).

    ``diffs[i]`` is the mean absolute gray difference of frame ``i`` from frame ``i - 1``;
    ``frame_hashes[i]`` its pHash. The local median is over ``window`` frames either side (without
    ``i - 1 .. i + 1``). Frames in ``exclude`` are not reported.
    """
    n = min(len(diffs), len(frame_hashes))
    if n < 2:
        return []
    d = np.asarray(diffs[:n], dtype=np.float64)
    jumps = np.zeros(n, np.int64)
    jumps[1:] = _bits(frame_hashes[1:n] ^ frame_hashes[: n - 1])
    skip = set(exclude)
    out: list[int] = []
    for candidate in np.flatnonzero((d >= min_diff) & (jumps >= hash_bits)):
        i = int(candidate)
        if i == 0 or i in skip:
            continue
        around = np.concatenate([d[max(1, i - window) : max(1, i - 1)], d[i + 2 : i + window + 1]])
        local = float(np.median(around)) if len(around) else 0.0
        if d[i] >= factor * local:
            out.append(i)
    return out
