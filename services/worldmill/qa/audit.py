"""Audit a folder of delivered videos: what the security-camera team did by hand
(docs/background.md#security-cameras), for every file, every time.

Their audit ran ffprobe on each file, md5sum across the duration variants and extracted three
screenshots per video, and found byte-identical 5/10/30 s variants, 93-frame 16 fps clips named
10 s and 30 s, and missing 30 s variants (R14-R18). Here each file is decoded once
(:func:`~worldmill.qa.measure.analyze`, which also hashes it) and checked against what it was meant
to be (:func:`~worldmill.qa.judge.check`); then the checks no single file can tell run across
the files: byte-identical groups (same SHA-256), near-identical siblings (same scenario, sampled
perceptual hashes) and missing variants.

What a file was meant to be (:class:`Expectations`):

* with a manifest's specs, a file is matched by its name (without the suffix): ``<prompt_id>``,
  ``<scenario>_<duration>s`` (variant 0) or ``<scenario>_<duration>s_v<variant>``, the duration
  written as ``5``, ``2.5`` or ``2_5``; frames, fps, duration and resolution come from the spec,
  codec and container are H.264 in MP4 (what the pipeline delivers). Every spec without a file
  is missing.
* without one, the name alone: ``<id>_<duration>s[_v<variant>]`` (the id is everything before the
  last ``_<duration>s``, so ``scene_2_10s`` is id ``scene_2``, 10 s; fractional durations need a
  dot: ``C01_2.5s``). Expected frames are ``duration × fps`` (``fps`` given by the caller) and the
  container is the one the suffix names. A (duration, variant) that at least half of the ids have
  is expected of every id (one stray file does not make every other id incomplete).

A file matching neither gets an ``expectation`` info finding and is still checked for decoding,
content, duplicates. Only local files: the caller downloads remote ones (one at a time) and hands
each in with :meth:`Auditor.add`. Per file, only what the report needs is kept (findings, the
perceptual hashes and three small JPEG screenshots), never the decoded frames.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from worldmill.contracts.prompts import PromptSpec
from worldmill.contracts.qa import Finding, Severity
from worldmill.qa.criteria import Expectation, Thresholds
from worldmill.qa.findings import finding, jpeg, passed
from worldmill.qa.fingerprint import Fingerprint
from worldmill.qa.fpindex import FingerprintIndex
from worldmill.qa.judge import check, near_duplicate
from worldmill.qa.measure import Analysis, analyze

__all__ = [
    "SCREENSHOT_LABELS",
    "VIDEO_SUFFIXES",
    "Audit",
    "Auditor",
    "Expectations",
    "FileResult",
    "Group",
    "Missing",
    "Target",
    "duration_token",
    "find_videos",
    "is_video",
]

#: File suffixes (lower case) that are audited; anything else in the folder is ignored.
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})
#: The container :func:`analyze` reports for a file whose name ends so (``matroska`` covers webm).
_CONTAINER_BY_SUFFIX = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "matroska",
    ".avi": "avi",
}
#: The screenshots kept per file, in report order (docs/background.md#security-cameras: 0.5 s in, the middle, 0.5 s
#: before the end).
SCREENSHOT_LABELS = ("start", "middle", "end")
#: Width in pixels of the screenshots kept for the report.
THUMB_WIDTH = 160
#: ``<id>_<duration>s`` with an optional ``_v<variant>``; the id is as long as it can be.
_NAME = re.compile(r"^(?P<id>.+)_(?P<duration>\d+(?:\.\d+)?)s(?:_v(?P<variant>\d+))?$")

Source = Literal["manifest", "name"]


def duration_token(duration_s: float) -> str:
    """``5`` → ``"5s"``, ``2.5`` → ``"2_5s"`` (the prompt ids' spelling)."""
    return f"{duration_s:g}".replace(".", "_") + "s"


def is_video(name: str) -> bool:
    """Whether a file or object name has one of the :data:`VIDEO_SUFFIXES`."""
    return PurePosixPath(name).suffix.lower() in VIDEO_SUFFIXES


def find_videos(folder: Path) -> list[Path]:
    """The video files under ``folder`` (recursive), in a stable order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_video(p.name))


@dataclass(frozen=True)
class Target:
    """What one file was meant to be: a (scenario, duration, variant) and the expectation that follows."""

    scenario: str
    duration_s: float
    variant: int
    expectation: Expectation
    source: Source
    prompt_id: str | None = None

    @property
    def key(self) -> tuple[str, float, int]:
        """(scenario, duration, variant)."""
        return self.scenario, self.duration_s, self.variant

    def file_name(self, suffix: str = ".mp4") -> str:
        """The name a file for this target would have: ``R14_30s.mp4``, ``R14_30s_v1.mp4``."""
        tail = f"_v{self.variant}" if self.variant else ""
        return f"{self.scenario}_{duration_token(self.duration_s)}{tail}{suffix}"


class Expectations:
    """Which file is meant to be what: from a manifest's specs, or (``specs=None``) from file names."""

    def __init__(self, specs: Sequence[PromptSpec] | None = None, *, fps: float = 24.0) -> None:
        self.fps = fps
        self.manifest_driven = specs is not None
        self._by_name: dict[str, Target] = {}
        self._planned: list[Target] = []
        for spec in specs or ():
            target = Target(
                scenario=spec.scenario,
                duration_s=spec.duration_s,
                variant=spec.variant,
                expectation=Expectation(
                    frames=spec.target_frames,
                    fps=spec.fps,
                    duration_s=spec.duration_s,
                    width=spec.resolution.width,
                    height=spec.resolution.height,
                ),
                source="manifest",
                prompt_id=spec.prompt_id,
            )
            self._planned.append(target)
            for name in _spec_names(spec):
                self._by_name.setdefault(name, target)
            self._by_name[spec.prompt_id] = target  # a prompt id wins over a pattern name

    @property
    def planned(self) -> list[Target]:
        """Every target the manifest plans (empty without a manifest)."""
        return list(self._planned)

    def match(self, name: str) -> Target | None:
        """The target of a file name (a path's last part; its suffix is ignored), or ``None``."""
        pure = PurePosixPath(name)
        stem = pure.stem
        if self.manifest_driven:
            return self._by_name.get(stem)
        m = _NAME.match(stem)
        if m is None:
            return None
        duration = float(m.group("duration"))
        if duration <= 0:
            return None
        return Target(
            scenario=m.group("id"),
            duration_s=duration,
            variant=int(m.group("variant") or 0),
            expectation=Expectation(
                frames=round(duration * self.fps),
                fps=self.fps,
                duration_s=duration,
                codec=None,
                container=_CONTAINER_BY_SUFFIX.get(pure.suffix.lower()),
            ),
            source="name",
        )

    def unmatched_reason(self) -> str:
        """Why a file that :meth:`match` did not match has no expectation."""
        if self.manifest_driven:
            return (
                "the name is no prompt id of the manifest, nor <scenario>_<duration>s[_v<variant>] of one of its specs"
            )
        return "the name does not look like <id>_<duration>s[_v<variant>]"


def _spec_names(spec: PromptSpec) -> list[str]:
    """The file names (without suffix) that mean this spec: ``C01_5s`` (variant 0), ``C01_5s_v0``, ``C01_2.5s``."""
    tokens = {duration_token(spec.duration_s), f"{spec.duration_s:g}s"}
    names = [f"{spec.scenario}_{t}_v{spec.variant}" for t in sorted(tokens)]
    if spec.variant == 0:
        names += [f"{spec.scenario}_{t}" for t in sorted(tokens)]
    return names


@dataclass(frozen=True)
class FileResult:
    """One audited file: what was measured, what it was meant to be, the findings and three screenshots (JPEG)."""

    name: str
    size: int
    sha256: str
    status: str
    decode_error: str | None
    target: Target | None
    findings: tuple[Finding, ...]
    container: str | None = None
    codec: str | None = None
    width: int = 0
    height: int = 0
    fps: float | None = None
    frames: int = 0
    duration_s: float = 0.0
    phash: tuple[int, ...] = ()
    screenshots: dict[str, bytes] = field(default_factory=dict)
    seconds: float = 0.0
    #: The content fingerprint (a pHash every 0.25 s) for cross-file indexes; ``None`` when nothing decoded.
    fingerprint: Fingerprint | None = None

    @property
    def passed(self) -> bool:
        """No finding of severity ``error`` failed."""
        return passed(self.findings)

    @property
    def failures(self) -> list[Finding]:
        """The findings that did not pass (any severity)."""
        return [f for f in self.findings if not f.passed]


@dataclass(frozen=True)
class Group:
    """Files that are the same: byte-identical (``sha256``) or near-identical siblings (``scenario``)."""

    files: tuple[str, ...]
    sha256: str | None = None
    scenario: str | None = None


@dataclass(frozen=True)
class Missing:
    """A (scenario, duration, variant) that should have a file and has none."""

    scenario: str
    duration_s: float
    variant: int
    expected_name: str
    reason: str
    prompt_id: str | None = None


@dataclass(frozen=True)
class Audit:
    """The outcome of an audit: every file, the groups, what is missing."""

    source: str
    manifest: str | None
    fps: float | None
    started_at: datetime
    elapsed_s: float
    files: tuple[FileResult, ...]
    identical: tuple[Group, ...]
    near_identical: tuple[Group, ...]
    missing: tuple[Missing, ...]

    @property
    def passed_files(self) -> list[FileResult]:
        """Files whose every error-severity check passed."""
        return [f for f in self.files if f.passed]

    @property
    def failed_files(self) -> list[FileResult]:
        """Files with at least one failed error-severity check."""
        return [f for f in self.files if not f.passed]

    @property
    def ok(self) -> bool:
        """At least one file, every file passed and nothing is missing."""
        return bool(self.files) and not self.failed_files and not self.missing

    def failures_by_check(self, severity: Severity = Severity.ERROR) -> dict[str, int]:
        """Files failing each check with ``severity``, most frequent first (ties by name)."""
        counts = Counter(f.check for r in self.files for f in r.findings if not f.passed and f.severity is severity)
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _thumbnail(image: npt.NDArray[np.uint8], width: int) -> bytes:
    """An RGB screenshot as a JPEG at most ``width`` pixels wide."""
    height, current = image.shape[:2]
    if current > width:
        small = Image.fromarray(np.ascontiguousarray(image)).resize(
            (width, max(1, round(height * width / current))), Image.Resampling.BILINEAR
        )
        image = np.asarray(small, dtype=np.uint8)
    return jpeg(image, quality=80)


class Auditor:
    """Audits files one at a time (:meth:`add`), then the checks across them (:meth:`finish`)."""

    def __init__(
        self,
        expectations: Expectations,
        thresholds: Thresholds | None = None,
        *,
        source: str = "",
        manifest: str | None = None,
        thumb_width: int = THUMB_WIDTH,
        missing_share: float = 0.5,
    ) -> None:
        self.expectations = expectations
        self.thresholds = thresholds or Thresholds()
        self.source = source
        self.manifest = manifest
        self.thumb_width = thumb_width
        self.missing_share = missing_share
        self.results: list[FileResult] = []
        self.started_at = datetime.now(UTC)
        self._clock = time.perf_counter()

    def _expectation_findings(self, findings: list[Finding]) -> list[Finding]:
        """check()'s "no expectation" finding, saying why the file has none."""
        why = self.expectations.unmatched_reason()
        return [
            f.model_copy(update={"message": f"no expectation ({why}): {f.message.removeprefix('no expectation: ')}"})
            if f.check == "expectation"
            else f
            for f in findings
        ]

    def add(self, name: str, path: Path) -> FileResult:
        """Audit one local file (one decode pass); ``name`` is how the report calls it (a relative path or key)."""
        began = time.perf_counter()
        target = self.expectations.match(PurePosixPath(name).name)
        analysis = analyze(path, thresholds=self.thresholds)
        findings = check(analysis, target.expectation if target else None, self.thresholds)
        if target is None:
            findings = self._expectation_findings(findings)
        result = self._result(name, analysis, target, findings, time.perf_counter() - began)
        self.results.append(result)
        return result

    def add_unreadable(self, name: str, message: str) -> FileResult:
        """Record a file that could not be fetched at all (it fails the ``fetch`` check)."""
        target = self.expectations.match(PurePosixPath(name).name)
        result = FileResult(
            name=name,
            size=0,
            sha256="",
            status="missing",
            decode_error=message,
            target=target,
            findings=(finding("fetch", False, Severity.ERROR, measured=None, expected="ok", message=message),),
        )
        self.results.append(result)
        return result

    def _result(
        self, name: str, a: Analysis, target: Target | None, findings: list[Finding], seconds: float
    ) -> FileResult:
        shots = {
            label: _thumbnail(a.screenshots[label], self.thumb_width)
            for label in SCREENSHOT_LABELS
            if label in a.screenshots
        }
        return FileResult(
            name=name,
            size=a.bytes,
            sha256=a.sha256,
            status=a.status,
            decode_error=a.decode_error,
            target=target,
            findings=tuple(findings),
            container=a.container,
            codec=a.codec,
            width=a.width,
            height=a.height,
            fps=None if a.fps is None else round(float(a.fps), 4),
            frames=a.frames,
            duration_s=round(a.duration_s, 3),
            phash=a.phash,
            screenshots=shots,
            seconds=round(seconds, 4),
            fingerprint=a.fingerprint,
        )

    def finish(self) -> Audit:
        """The checks across files (identical, near-identical siblings, missing) and the audit."""
        results = self.results
        identical = _identical_groups(results)
        edges = _near_edges(results, self.thresholds.near_duplicate_bits)
        extra: dict[str, list[Finding]] = defaultdict(list)
        by_sha = {g.sha256: g for g in identical}
        for r in results:
            if not r.sha256:
                continue
            group = by_sha.get(r.sha256)
            others = [n for n in group.files if n != r.name] if group else []
            extra[r.name].append(
                finding(
                    "identical",
                    not others,
                    Severity.ERROR,
                    measured=_names(others),
                    expected=None,
                    message=f"byte-identical to {', '.join(others)}" if others else "no other file has these bytes",
                )
            )
        siblings = _siblings(results)
        for r in results:
            if r.target is None or not r.phash:
                continue
            near = sorted(edges.get(r.name, ()))
            count = sum(1 for s in siblings[r.target.scenario] if s.sha256 != r.sha256)
            extra[r.name].append(
                finding(
                    "near_duplicate",
                    not near,
                    Severity.ERROR,
                    measured=_names(near),
                    expected=None,
                    message=f"nearly identical to sibling(s) {', '.join(near)}"
                    if near
                    else f"differs from its {count} sibling(s) with other bytes",
                )
            )
        for name, copied in _copies(results).items():
            extra[name].append(copied)
        files = tuple(replace(r, findings=(*r.findings, *extra[r.name])) for r in results)
        return Audit(
            source=self.source,
            manifest=self.manifest,
            fps=None if self.expectations.manifest_driven else self.expectations.fps,
            started_at=self.started_at,
            elapsed_s=round(time.perf_counter() - self._clock, 3),
            files=files,
            identical=identical,
            near_identical=_near_groups(results, edges),
            missing=tuple(self._missing(results)),
        )

    def _missing(self, results: Iterable[FileResult]) -> list[Missing]:
        present = {r.target.key for r in results if r.target is not None}
        if self.expectations.manifest_driven:
            out = [
                Missing(
                    scenario=t.scenario,
                    duration_s=t.duration_s,
                    variant=t.variant,
                    expected_name=t.file_name(),
                    reason="planned by the manifest",
                    prompt_id=t.prompt_id,
                )
                for t in self.expectations.planned
                if t.key not in present
            ]
            return sorted(out, key=lambda m: (m.scenario, m.duration_s, m.variant))
        have: dict[str, set[tuple[float, int]]] = defaultdict(set)
        for scenario, duration, variant in present:
            have[scenario].add((duration, variant))
        seen = Counter(k for keys in have.values() for k in keys)
        ids = len(have)
        usual = {k for k, n in seen.items() if n >= self.missing_share * ids}
        out = []
        for scenario in sorted(have):
            for duration, variant in sorted(usual - have[scenario]):
                target = Target(scenario, duration, variant, Expectation(), "name")
                out.append(
                    Missing(
                        scenario=scenario,
                        duration_s=duration,
                        variant=variant,
                        expected_name=target.file_name(),
                        reason=f"{seen[(duration, variant)]} of {ids} ids have a "
                        + duration_token(duration)
                        + (f" v{variant}" if variant else "")
                        + " file",
                    )
                )
        return out


def _names(names: list[str]) -> list[str | int | float] | None:
    """File names as a finding's measured value (``None`` when there are none)."""
    return list(names) or None


def _identical_groups(results: Sequence[FileResult]) -> tuple[Group, ...]:
    by_sha: dict[str, list[str]] = defaultdict(list)
    for r in results:
        if r.sha256:
            by_sha[r.sha256].append(r.name)
    groups = [Group(files=tuple(sorted(names)), sha256=sha) for sha, names in by_sha.items() if len(names) > 1]
    return tuple(sorted(groups, key=lambda g: g.files))


def _siblings(results: Sequence[FileResult]) -> dict[str, list[FileResult]]:
    """Files with a target and perceptual hashes, by scenario (every duration and variant of one scenario)."""
    out: dict[str, list[FileResult]] = defaultdict(list)
    for r in results:
        if r.target is not None and r.phash:
            out[r.target.scenario].append(r)
    return out


def _near_edges(results: Sequence[FileResult], bits: int) -> dict[str, set[str]]:
    """Pairs of siblings with different bytes whose sampled dHashes are within ``bits`` (both directions)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for members in _siblings(results).values():
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                # Lenient: files of one audit are hashed alike; a clip under 8 frames is compared on the pairs it has.
                if a.sha256 != b.sha256 and near_duplicate(a.phash, b.phash, bits=bits, equal_length=False).duplicate:
                    edges[a.name].add(b.name)
                    edges[b.name].add(a.name)
    return edges


def _copies(results: Sequence[FileResult]) -> dict[str, Finding]:
    """``copy_of`` for every fingerprinted file: the same picture as another file of the folder, in whole or part.

    Byte-identical files are the ``identical`` check's; this finds re-encodes, trims, copies starting
    elsewhere and loops made of another file, across ids (the QA service's dataset-wide index, over the folder).
    """
    index = FingerprintIndex()
    printed = [r for r in results if r.fingerprint is not None and r.fingerprint.hashes]
    index.add_many([(r.name, r.fingerprint, {"sha256": r.sha256}) for r in printed if r.fingerprint is not None])
    out: dict[str, Finding] = {}
    for r in printed:
        if r.fingerprint is None:
            continue
        matches = [m for m in index.lookup(r.fingerprint, exclude={r.name}) if m.meta.get("sha256") != r.sha256]
        top = matches[0] if matches else None
        # Without lineage, "inside a longer file" may be the original a loop or extension was made of:
        # the longer one fails (contains), the shorter one is warned (contained in); equal copies both fail.
        severe = any(m.relation != "contained_in" for m in matches)
        out[r.name] = finding(
            "copy_of",
            top is None,
            Severity.ERROR if severe or top is None else Severity.WARNING,
            measured=None if top is None else [top.asset_id, top.relation, *top.query_range, *top.other_range],
            expected=None,
            message="; ".join(m.describe() for m in matches[:5])
            if matches
            else f"shares no frames with the other {len(printed) - 1} file(s)",
        )
    return out


def _near_groups(results: Sequence[FileResult], edges: dict[str, set[str]]) -> tuple[Group, ...]:
    """Connected components of the near-identical pairs, each within one scenario."""
    scenario = {r.name: r.target.scenario for r in results if r.target is not None}
    seen: set[str] = set()
    groups: list[Group] = []
    for start in sorted(edges):
        if start in seen:
            continue
        component: set[str] = set()
        stack = [start]
        while stack:
            name = stack.pop()
            if name in component:
                continue
            component.add(name)
            stack.extend(edges[name] - component)
        seen |= component
        groups.append(Group(files=tuple(sorted(component)), scenario=scenario.get(start)))
    return tuple(groups)
