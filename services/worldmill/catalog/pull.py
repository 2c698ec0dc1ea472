"""What ``worldmill pull`` writes and under which names: pure decisions, no I/O.

The layout is the one the security-camera team used (docs/background.md#security-cameras)::

    DEST/outputs/<scenario>_<duration>.mp4            variant 0, e.g. outputs/C01_30s.mp4
    DEST/outputs/<scenario>_<duration>_v<k>.mp4       variant k > 0, e.g. outputs/C01_30s_v1.mp4
    DEST/screenshots/<stem>_frame1.jpg                0.5 s in
    DEST/screenshots/<stem>_frame2.jpg                the middle
    DEST/screenshots/<stem>_frame3.jpg                0.5 s before the end
    DEST/generation_status.json                       the manifest's status (``worldmill report --json``)
    DEST/SHA256SUMS                                   ``sha256sum -c SHA256SUMS`` checks every file above

The duration token is the project's (``5s``, ``30s``, ``2_5s``; see
``worldmill.prompt.identity.duration_token``, repeated here because services do not import each
other). Names come from catalog metadata, so the scenario is sanitized: every run of characters
other than ASCII letters, digits, ``-`` and ``_`` becomes one ``_`` (``../../etc`` → ``etc``), and
an asset whose scenario sanitizes to nothing is skipped. :func:`safe_relative` refuses any path
that is absolute or has a ``..`` part, so nothing planned can leave DEST.

**Collisions**: two assets can map to one name (a failed video and its regeneration with ``--all``,
or two passed takes of one spec). One wins, deterministically: a QA-passed one before any other,
then an original video before an augmentation, then the newest (``created_at``), then the larger
asset id. The others are skipped with the winner named. Names are compared case-insensitively, so
the choice is the same on a case-insensitive file system.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Final

from worldmill.contracts.base import ObjectRef
from worldmill.contracts.catalog import AssetSummary

OUTPUTS: Final = "outputs"
SCREENSHOTS: Final = "screenshots"
STATUS_NAME: Final = "generation_status.json"
SUMS_NAME: Final = "SHA256SUMS"
#: docs/background.md#security-cameras: a screenshot 0.5 s in, one in the middle, one 0.5 s before the end.
SCREENSHOT_OFFSET_S: Final = 0.5
SHOTS: Final = 3
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_SUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")
_OLDEST = datetime.min.replace(tzinfo=UTC)


class UnsafePathError(ValueError):
    """A planned path would leave DEST (absolute, or with a ``..`` part)."""


def duration_token(duration_s: float) -> str:
    """``5`` → ``"5s"``, ``2.5`` → ``"2_5s"`` (the same as ``worldmill.prompt.identity.duration_token``)."""
    text = f"{duration_s:g}".replace(".", "_")
    return f"{text}s"


def safe_component(text: str) -> str:
    """``text`` as one file-name part: runs of other characters than ``[A-Za-z0-9_-]`` become ``_``, trimmed.

    Empty when nothing usable is left (the caller skips the asset).
    """
    return _UNSAFE.sub("_", text).strip("_")


def stem_for(scenario: str, duration_s: float, variant: int) -> str:
    """``C01_30s`` for variant 0, ``C01_30s_v2`` for variant 2; :class:`ValueError` for an unusable scenario."""
    name = safe_component(scenario)
    if not name:
        raise ValueError(f"scenario {scenario!r} has no usable characters for a file name")
    if variant < 0:
        raise ValueError(f"variant {variant} is negative")
    suffix = f"_v{variant}" if variant else ""
    return f"{name}_{duration_token(duration_s)}{suffix}"


def safe_relative(path: str) -> str:
    """``path`` when it stays inside DEST (relative, no ``..``, no backslash); else :class:`UnsafePathError`."""
    pure = PurePosixPath(path)
    if not path or "\\" in path or pure.is_absolute() or any(part in ("..", ".", "") for part in path.split("/")):
        raise UnsafePathError(f"{path!r} is not a plain path inside DEST")
    return str(pure)


def screenshot_times(duration_s: float) -> tuple[float, float, float]:
    """When the three screenshots are taken: 0.5 s, the middle, 0.5 s before the end.

    Clamped for videos shorter than 1 s: never after the middle for the first, never before it for
    the last (a 0.6 s clip gives 0.3, 0.3, 0.3), never below 0. The same rule as the QA service's.
    """
    length = max(0.0, duration_s)
    half = length / 2
    return (min(SCREENSHOT_OFFSET_S, half), half, max(length - SCREENSHOT_OFFSET_S, half))


# -- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One catalog asset that could be pulled: what names it, where its bytes are, how it ranks."""

    asset_id: str
    scenario: str
    duration_s: float
    variant: int
    qa_status: str
    kind: str
    created_at: datetime | None
    video: ObjectRef


@dataclass(frozen=True)
class PlannedVideo:
    """One video to have in DEST: the asset, its video path and its three screenshot paths (relative)."""

    candidate: Candidate
    stem: str
    video: str
    screenshots: tuple[str, str, str]

    @property
    def files(self) -> tuple[str, ...]:
        """Every path this video puts in DEST."""
        return (self.video, *self.screenshots)


@dataclass(frozen=True)
class Skipped:
    """An asset left out, and why."""

    asset_id: str
    reason: str


@dataclass(frozen=True)
class PullPlan:
    """The videos to pull (by path) and what was left out."""

    videos: tuple[PlannedVideo, ...]
    skipped: tuple[Skipped, ...]

    @property
    def files(self) -> tuple[str, ...]:
        """Every path the plan puts in DEST (videos and screenshots)."""
        return tuple(path for video in self.videos for path in video.files)


def candidate_of(summary: AssetSummary, spec_durations: Mapping[str, float] | None = None) -> Candidate:
    """The candidate for an asset; :class:`ValueError` saying what it lacks.

    The duration in the name is the spec's (``spec_durations`` by prompt id, from the manifest's
    status) when known, else the asset's planned duration rounded to the millisecond.
    """
    if summary.video is None:
        raise ValueError("the catalog has no video for it")
    if not summary.scenario:
        raise ValueError("it has no scenario to name it by")
    duration = (spec_durations or {}).get(summary.prompt_id or "")
    if duration is None:
        if summary.duration_s is None:
            raise ValueError("its duration is unknown")
        duration = round(summary.duration_s, 3)
    return Candidate(
        asset_id=summary.asset_id,
        scenario=summary.scenario,
        duration_s=duration,
        variant=summary.variant or 0,
        qa_status=summary.qa_status,
        kind=summary.kind,
        created_at=summary.created_at,
        video=summary.video.ref,
    )


def _rank(c: Candidate) -> tuple[bool, bool, datetime, str]:
    return (c.qa_status == "passed", c.kind == "video", c.created_at or _OLDEST, c.asset_id)


def _why_lost(winner: Candidate, loser: Candidate) -> str:
    if winner.qa_status == "passed" and loser.qa_status != "passed":
        because = "it passed QA"
    elif winner.kind == "video" and loser.kind != "video":
        because = "it is the original video"
    elif (winner.created_at or _OLDEST) != (loser.created_at or _OLDEST):
        because = "it is newer"
    else:
        because = "its asset id sorts later"
    return f"same name as {winner.asset_id}, which is pulled instead ({because})"


def plan_pull(candidates: Iterable[Candidate], skipped: Iterable[Skipped] = ()) -> PullPlan:
    """Name every candidate, settle collisions, order by video path; the same input gives the same plan."""
    skips = list(skipped)
    groups: dict[str, list[tuple[str, Candidate]]] = {}
    for c in candidates:
        try:
            stem = stem_for(c.scenario, c.duration_s, c.variant)
        except ValueError as exc:
            skips.append(Skipped(c.asset_id, str(exc)))
            continue
        groups.setdefault(stem.casefold(), []).append((stem, c))
    videos: list[PlannedVideo] = []
    for members in groups.values():
        ordered = sorted(members, key=lambda m: _rank(m[1]), reverse=True)
        stem, winner = ordered[0]
        for _, loser in ordered[1:]:
            if loser.asset_id != winner.asset_id:
                skips.append(Skipped(loser.asset_id, _why_lost(winner, loser)))
        shots = tuple(safe_relative(f"{SCREENSHOTS}/{stem}_frame{i}.jpg") for i in range(1, SHOTS + 1))
        videos.append(
            PlannedVideo(
                candidate=winner,
                stem=stem,
                video=safe_relative(f"{OUTPUTS}/{stem}.mp4"),
                screenshots=(shots[0], shots[1], shots[2]),
            )
        )
    videos.sort(key=lambda v: v.video)
    return PullPlan(tuple(videos), tuple(sorted(set(skips), key=lambda s: (s.asset_id, s.reason))))


# -- SHA256SUMS ----------------------------------------------------------------------------------


def parse_sums(text: str) -> dict[str, str]:
    """``sha256sum`` lines (text or ``*``binary mode) as path → hex digest; other lines are ignored."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        match = _SUM_LINE.match(line.strip("\r"))
        if match:
            out[match.group(2)] = match.group(1)
    return out


def render_sums(digests: Mapping[str, str]) -> bytes:
    """``<hex>  <path>`` per file, sorted by path: what ``sha256sum -c`` reads."""
    return "".join(f"{digest}  {path}\n" for path, digest in sorted(digests.items())).encode()


def screenshots_still_valid(
    video: PlannedVideo, previous: Mapping[str, str], on_disk: Mapping[str, str | None]
) -> bool:
    """Whether the screenshots on disk are the ones an earlier pull made from this very video.

    True when the earlier SHA256SUMS recorded this video's digest and every screenshot's digest,
    and each screenshot on disk still has its recorded digest (``on_disk``: path → digest, None when
    missing).
    """
    if previous.get(video.video) != video.candidate.video.sha256:
        return False
    return all(previous.get(p) is not None and on_disk.get(p) == previous[p] for p in video.screenshots)
