"""Judge one analysed video: measurements and expectations become findings with severities.

:func:`check` turns an :class:`~worldmill.qa.measure.Analysis` into findings against what the plan
said the file must be (:class:`~worldmill.qa.criteria.Expectation`), with the limits in
:class:`~worldmill.qa.criteria.Thresholds`: format (container, codec, frames, fps, duration,
resolution), content (frame rate, frozen, black, flat, flicker, seams at planned chunk joins) and
structure (fingerprint, loop, cuts). :func:`near_duplicate` is the one rule for two videos whose
sampled perceptual hashes say they show the same content (the qa service's siblings, the audit's).

Pure: no decoding here (:mod:`worldmill.qa.measure` does that), no bus, no store.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from worldmill.contracts.qa import Finding, Severity
from worldmill.qa.criteria import Expectation, Thresholds
from worldmill.qa.findings import finding
from worldmill.qa.fingerprint import hamming
from worldmill.qa.measure import Analysis, count_bad_frames
from worldmill.qa.structure import Loop, find_cuts, find_loop

__all__ = ["Resemblance", "check", "cuts_of", "loop_of", "near_duplicate"]


class Resemblance(NamedTuple):
    """How alike two videos' sampled perceptual hashes are: ``distance`` (mean bits of 64 per compared
    sample; ``None`` when there was nothing to compare) and the verdict ``duplicate``."""

    distance: float | None
    duplicate: bool


def near_duplicate(a: Sequence[int], b: Sequence[int], *, bits: float, equal_length: bool) -> Resemblance:
    """Whether two videos show the same content: mean Hamming distance of their sampled hashes ≤ ``bits``.

    Both are sampled at the same relative positions (:attr:`~worldmill.qa.measure.Analysis.phash`),
    so re-encodes (another crf, another bitrate) of the same frames match, and byte-identical copies
    match trivially. Videos without sampled hashes are never near duplicates. The strictness is the
    caller's, explicitly:

    * ``equal_length=True``: sequences of different lengths are never near duplicates (they were
      sampled at other positions: a stored sibling hashed by another checker, a clip under 8 frames);
    * ``equal_length=False``: the pairs of the shorter length are compared (``zip``'s truncation).
    """
    if equal_length and len(a) != len(b):
        return Resemblance(None, False)
    pairs = list(zip(a, b, strict=False))
    if not pairs:
        return Resemblance(None, False)
    distance = sum(hamming(x, y) for x, y in pairs) / len(pairs)
    return Resemblance(distance, distance <= bits)


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
