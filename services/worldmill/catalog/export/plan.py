"""What a dataset export will hold and where each sample goes: pure decisions, no I/O.

The writer (:mod:`worldmill.catalog.export.write`) carries out an :class:`ExportPlan`; everything it
has to decide is decided here, so it can be tested without files or servers and is the same on
every run (an export of the same items is byte-identical).

**Bins** follow cosmos-curate's code (``core/utils/dataset/dimensions.py``,
``for_standard_video_datasets``), the layout its sharding stage writes and Cosmos training reads:
``resolution_<r>/aspect_ratio_<a>/duration_<d>``.

* resolution by the *smaller* side: ≥ 1080 → ``1080``, ≥ 720 → ``720``, else ``lt_720``. So a
  1280×704 Predict2.5 clip (its "720p" tier) is ``lt_720``, exactly as curate would put it.
* aspect ratio by width / height, each bin open below and closed above: (0, 0.65] ``9_16``,
  (0.65, 0.88] ``3_4``, (0.88, 1.16] ``1_1``, (1.16, 1.55] ``4_3``, (1.55, 10] ``16_9``. A clip
  wider than 10:1 fits no bin and is skipped (curate drops it too).
* duration in seconds = frames / fps (exact for our constant-rate clips; a container's duration can
  be off by a frame): [5, 10] ``5_10``, (10, 30] ``10_30``, above 30 ``30_inf`` (curate takes the
  first bin whose closed range holds the length, so 10 s is ``5_10`` and 30 s is ``10_30``).

**Deviation from curate**: curate drops clips shorter than 5 s. Our synthetic clips are often 1–5 s
long and are the point of the dataset, so they go to a fourth bin, ``duration_0_5`` ([0, 5)); the
export manifest counts them (``short_clips``) and says so in ``deviations``. A reader that wants
curate's exact behaviour skips the ``duration_0_5`` folders.

**Samples**: the key of a sample is its asset id (an identifier: letters, digits, ``_`` and ``-``;
no dot, so webdataset's "key = name up to the first dot" rule gives it back whole, and no slash).
Samples are ordered by (bin, asset id). A sample is three members, ``<key>.json`` (metadata),
``<key>.mp4`` (video), ``<key>.txt`` (the prompt, UTF-8), adjacent and in that (name) order.

**Shards** (``webdataset``): per bin, ``part_NNNNNN/NNNNNN.tar``, at most ``MAX_TARS_PER_PART``
tars per part (the tar number counts within its part, like curate's), filled in sample order; a
shard is closed when it holds ``max_samples_per_shard`` samples or when the next sample would take
it past ``target_shard_bytes`` (a sample bigger than the target gets a shard of its own). The
``cosmos-video2world`` layout is flat instead: ``videos/<key>.mp4``, ``metas/<key>.txt`` and
``metadata/<key>.json``; its samples are still binned in the manifest.

**Units and resuming**: the writer works unit by unit (a shard, or one sample's three files) and
records every finished unit in a progress journal (``export_manifest.json.partial``, JSON lines).
A rerun keeps a unit only when the journal has it with the same fingerprint (its samples, their
video digests and the exact bytes of their text and metadata) and its files on disk still have the
recorded sha256 (:func:`~worldmill.catalog.export.journal.decide_resume`); files the journal
recorded that the plan no longer has are removed. The manifest (``export_manifest.json``,
:mod:`worldmill.catalog.export.manifest`) is written last, so its presence means the export is
complete. Its ``content`` part has no timestamp: the same items give the same content (and
``content_sha256``); only the envelope (``created_at``, version, destination) varies.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worldmill.contracts.base import Identifier, ObjectRef
from worldmill.contracts.catalog import AssetDetail, ExportFormat
from worldmill.runtime.digest import canonical_json as digest_canonical_json

FORMATS: Final[tuple[ExportFormat, ...]] = ("webdataset", "cosmos-video2world")
MANIFEST_NAME: Final = "export_manifest.json"
JOURNAL_NAME: Final = "export_manifest.json.partial"
#: Suffix of a file being written; it gets its final name only when complete.
PARTIAL_SUFFIX: Final = ".partial"

DEFAULT_MAX_SAMPLES_PER_SHARD: Final = 100
DEFAULT_TARGET_SHARD_BYTES: Final = 500_000_000
MAX_TARS_PER_PART: Final = 100

#: (smallest side at least, bin name), largest first.
RESOLUTION_BINS: Final[tuple[tuple[int, str], ...]] = ((1080, "1080"), (720, "720"))
RESOLUTION_BELOW: Final = "lt_720"
#: (above, at most, bin name) for width / height.
ASPECT_BINS: Final[tuple[tuple[float, float, str], ...]] = (
    (0.0, 0.65, "9_16"),
    (0.65, 0.88, "3_4"),
    (0.88, 1.16, "1_1"),
    (1.16, 1.55, "4_3"),
    (1.55, 10.0, "16_9"),
)
#: cosmos-curate drops clips shorter than this; we keep them in ``duration_0_5``.
CURATE_MIN_DURATION_S: Final = 5.0
SHORT_BIN: Final = "0_5"
#: (at least, at most, bin name) after the short bin; the first bin that holds the length wins.
DURATION_BINS: Final[tuple[tuple[float, float, str], ...]] = (
    (5.0, 10.0, "5_10"),
    (10.0, 30.0, "10_30"),
    (30.0, math.inf, "30_inf"),
)

_TAR_BLOCK = 512
#: Longest member name a plain ustar header holds; longer ones take a pax header (two blocks).
_USTAR_NAME = 100


class ExportPlanError(ValueError):
    """The plan cannot be made as asked (bad options); the message names the option and the rule."""


class NotExportableError(ValueError):
    """One asset cannot be exported; ``reason`` says why (it is listed as skipped, not fatal)."""

    def __init__(self, asset_id: str, reason: str) -> None:
        super().__init__(f"{asset_id}: {reason}")
        self.asset_id = asset_id
        self.reason = reason


class ExportModel(BaseModel):
    """The export's records: frozen, no fields but the declared ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# -- what goes in --------------------------------------------------------------------------------


class ExportItem(ExportModel):
    """One QA-passed video to export: where its bytes are, its prompt, its size, its metadata JSON."""

    asset_id: Identifier
    video: ObjectRef
    prompt: str = Field(min_length=1)
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    fps: float = Field(gt=0)
    frames: int = Field(gt=0)
    duration_s: float = Field(ge=0)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def clip_seconds(self) -> float:
        """frames / fps, rounded to the microsecond so 120 / 24.0 is exactly 5.0 on every machine."""
        return round(self.frames / self.fps, 6)

    @classmethod
    def from_detail(cls, detail: AssetDetail) -> ExportItem:
        """The item for a catalog asset; :class:`NotExportableError` when it lacks what a sample needs."""
        asset = detail.asset
        if asset.qa_status != "passed":
            raise NotExportableError(asset.asset_id, f"qa_status is {asset.qa_status}, not passed")
        if asset.video is None:
            raise NotExportableError(asset.asset_id, "the catalog has no video for it")
        prompt = _prompt_of(detail)
        if prompt is None:
            raise NotExportableError(asset.asset_id, "no prompt text (a sample needs its caption)")
        width, height, fps, frames = asset.width, asset.height, asset.fps, asset.frames
        if width is None or height is None or fps is None or frames is None:
            missing = [name for name in ("width", "height", "fps", "frames") if getattr(asset, name) is None]
            raise NotExportableError(asset.asset_id, f"unknown {', '.join(missing)}")
        try:
            return cls(
                asset_id=asset.asset_id,
                video=asset.video.ref,
                prompt=prompt,
                width=width,
                height=height,
                fps=fps,
                frames=frames,
                duration_s=asset.duration_s if asset.duration_s is not None else frames / fps,
                metadata=sample_metadata(detail, prompt),
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise NotExportableError(asset.asset_id, f"{where}: {first['msg']}") from exc


def _prompt_of(detail: AssetDetail) -> str | None:
    """The asset's prompt, else the one its provenance recorded; None when neither has text."""
    candidates = [detail.asset.prompt, (detail.provenance or {}).get("prompt")]
    for text in candidates:
        if isinstance(text, str) and text.strip():
            return text
    return None


def _compact(values: Mapping[str, Any]) -> dict[str, Any]:
    """Leave out what is unknown, so a sample's JSON says only what is known."""
    return {k: v for k, v in values.items() if v is not None and v not in ((), [])}


def sample_metadata(detail: AssetDetail, prompt: str) -> dict[str, Any]:
    """The metadata JSON of a sample: the asset, a QA summary, provenance essentials and lineage ids.

    Only facts about the asset, never the time of the export, so the same asset gives the same bytes.
    """
    asset = detail.asset
    video = asset.video.ref if asset.video else None
    prov = detail.provenance or {}
    prompt_ref = f"{asset.prompt_id}@{asset.prompt_version}" if asset.prompt_id and asset.prompt_version else None
    parents = sorted(f"{e.parent_kind}:{e.parent_id}" for e in detail.lineage_edges if e.child_id == asset.asset_id)
    return _compact(
        {
            "asset_id": asset.asset_id,
            "kind": asset.kind,
            "prompt": prompt,
            "video": _compact(
                {
                    "sha256": video.sha256 if video else None,
                    "bytes": video.size if video else None,
                    "content_type": video.content_type if video else None,
                    "width": asset.width,
                    "height": asset.height,
                    "fps": asset.fps,
                    "frames": asset.frames,
                    "duration_s": asset.duration_s,
                }
            ),
            "labels": _compact(
                {
                    "series": asset.series,
                    "scenario": asset.scenario,
                    "variant": asset.variant,
                    "risk_level": asset.risk_level,
                    "tags": sorted(asset.tags),
                }
            ),
            "lineage": _compact(
                {
                    "asset_id": asset.asset_id,
                    "manifest": asset.manifest,
                    "prompt_id": asset.prompt_id,
                    "prompt_version": asset.prompt_version,
                    "prompt": prompt_ref,
                    "run_id": asset.run_id,
                    "request_id": detail.request_id,
                    "requested_by": detail.requested_by,
                    "parents": parents,
                }
            ),
            "provenance": _provenance_essentials(prov, asset.model),
            "qa": _qa_summary(detail),
        }
    )


def _provenance_essentials(prov: Mapping[str, Any], model: str | None) -> dict[str, Any]:
    """Enough to say how the video was made (model, checkpoint, seeds, code), not the whole record."""
    inputs = [
        _compact({"uri": f"s3://{ref.get('bucket')}/{ref.get('key')}", "sha256": ref.get("sha256")})
        for ref in prov.get("inputs") or ()
        if isinstance(ref, Mapping)
    ]
    return _compact(
        {
            "model": prov.get("model") or model,
            "backend": prov.get("backend"),
            "checkpoint": prov.get("checkpoint"),
            "checkpoint_sha256": prov.get("checkpoint_sha256"),
            "seeds": list(prov.get("seeds") or ()),
            "code_version": prov.get("code_version"),
            "inputs": inputs,
        }
    )


def _qa_summary(detail: AssetDetail) -> dict[str, Any]:
    """Each check's outcome (sorted by check), and the warnings' messages."""
    checks = sorted(
        (
            _compact({"check": f.check, "passed": f.passed, "severity": f.severity.value, "measured": f.measured})
            for f in detail.findings
        ),
        key=lambda c: (c["check"], json.dumps(c, sort_keys=True)),
    )
    warnings = sorted({f"{f.check}: {f.message}" if f.message else f.check for f in detail.findings if not f.passed})
    return _compact(
        {
            "status": detail.asset.qa_status,
            "checker_version": detail.checker_version,
            "attempt": detail.qa_attempt,
            "checks": checks,
            "warnings": warnings,
        }
    )


# -- bins and keys -------------------------------------------------------------------------------


def resolution_bin(width: int, height: int) -> str:
    """``1080``, ``720`` or ``lt_720`` by the smaller side."""
    short = min(width, height)
    for at_least, name in RESOLUTION_BINS:
        if short >= at_least:
            return name
    return RESOLUTION_BELOW


def aspect_bin(width: int, height: int) -> str | None:
    """The aspect-ratio bin of width / height, or None when it is wider than 10:1 (no bin)."""
    ratio = width / height
    for above, at_most, name in ASPECT_BINS:
        if above < ratio <= at_most:
            return name
    return None


def duration_bin(seconds: float) -> str:
    """``0_5`` below 5 s (our addition), else curate's bin: [5, 10], (10, 30], above 30."""
    if seconds < CURATE_MIN_DURATION_S:
        return SHORT_BIN
    for at_least, at_most, name in DURATION_BINS:
        if at_least <= seconds <= at_most:
            return name
    return DURATION_BINS[-1][2]


def bin_of(width: int, height: int, seconds: float) -> str:
    """``resolution_<r>/aspect_ratio_<a>/duration_<d>``; :class:`ValueError` when no bin fits."""
    if width <= 0 or height <= 0:
        raise ValueError(f"{width}x{height} is not a frame size")
    aspect = aspect_bin(width, height)
    if aspect is None:
        raise ValueError(f"aspect ratio {width}x{height} is wider than 10:1, outside every cosmos-curate bin")
    return f"resolution_{resolution_bin(width, height)}/aspect_ratio_{aspect}/duration_{duration_bin(seconds)}"


def sample_key(asset_id: str) -> str:
    """A sample's key: the asset id itself, refused if it could split or escape (a dot or a slash)."""
    if not asset_id or any(ch in asset_id for ch in "./\\") or asset_id != asset_id.strip():
        raise ValueError(f"asset id {asset_id!r} cannot be a sample key (no dots, slashes or spaces)")
    return asset_id


def shard_path(bin_name: str, index: int) -> str:
    """The ``index``-th shard of a bin: ``<bin>/part_{index // 100}/{index % 100}.tar`` (six digits each)."""
    part, number = divmod(index, MAX_TARS_PER_PART)
    return f"{bin_name}/part_{part:06d}/{number:06d}.tar"


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8, no NaN (:func:`worldmill.runtime.digest.canonical_json`), as bytes."""
    return digest_canonical_json(value).encode()


def sha256_hex(data: bytes) -> str:
    """sha256 of bytes in hex."""
    return hashlib.sha256(data).hexdigest()


# -- the plan ------------------------------------------------------------------------------------


class ExportOptions(ExportModel):
    """How big shards may get."""

    max_samples_per_shard: int = Field(default=DEFAULT_MAX_SAMPLES_PER_SHARD, ge=1)
    target_shard_bytes: int = Field(default=DEFAULT_TARGET_SHARD_BYTES, ge=1)
    max_tars_per_part: int = MAX_TARS_PER_PART


class SkippedItem(ExportModel):
    """An asset the selection matched that is not in the export, and why."""

    asset_id: str
    reason: str


@dataclass(frozen=True)
class PlannedSample:
    """One sample: the item, its key and bin, the unit (shard or video path) holding it, its member bytes."""

    item: ExportItem
    key: str
    bin: str
    unit: str
    text: bytes
    meta: bytes

    @property
    def members(self) -> tuple[str, str, str]:
        """Member names in the order they are written: json, mp4, txt (sorted by name)."""
        return (f"{self.key}.json", f"{self.key}.mp4", f"{self.key}.txt")

    @property
    def tar_bytes(self) -> int:
        """Bytes the sample takes in a tar (headers, data, padding to 512-byte blocks)."""
        sizes = (len(self.meta), self.item.video.size, len(self.text))
        return sum(_tar_member_bytes(name, size) for name, size in zip(self.members, sizes, strict=True))


def _tar_member_bytes(name: str, size: int) -> int:
    header = _TAR_BLOCK * (3 if len(name.encode()) > _USTAR_NAME else 1)
    return header + math.ceil(size / _TAR_BLOCK) * _TAR_BLOCK


@dataclass(frozen=True)
class PlannedUnit:
    """What the writer makes in one go: a shard (webdataset) or one sample's files (cosmos layout)."""

    unit_id: str
    bin: str
    samples: tuple[PlannedSample, ...]
    files: tuple[str, ...]
    fingerprint: str


@dataclass(frozen=True)
class ExportPlan:
    """Every decision of an export: samples in order, units to write, skipped assets, a fingerprint."""

    format: ExportFormat
    selection: str
    options: ExportOptions
    samples: tuple[PlannedSample, ...]
    units: tuple[PlannedUnit, ...]
    skipped: tuple[SkippedItem, ...]
    plan_sha256: str


def cosmos_paths(key: str) -> tuple[str, str, str]:
    """The files of one sample in the cosmos-video2world layout: video, prompt, metadata."""
    return (f"videos/{key}.mp4", f"metas/{key}.txt", f"metadata/{key}.json")


def plan_export(
    items: Iterable[ExportItem],
    *,
    export_format: ExportFormat,
    selection: str,
    options: ExportOptions | None = None,
    skipped: Iterable[SkippedItem] = (),
) -> ExportPlan:
    """Bin, order and group ``items``; the same items (in any order) give the same plan."""
    if export_format not in FORMATS:
        raise ExportPlanError(f"format: {export_format!r} is not one of {', '.join(FORMATS)}")
    opts = options or ExportOptions()
    skips = list(skipped)
    binned: list[tuple[str, ExportItem]] = []
    for item in _unique(items, skips):
        try:
            binned.append((bin_of(item.width, item.height, item.clip_seconds), item))
        except ValueError as exc:
            skips.append(SkippedItem(asset_id=item.asset_id, reason=str(exc)))
    binned.sort(key=lambda pair: (pair[0], pair[1].asset_id))
    units = _webdataset_units(binned, opts) if export_format == "webdataset" else _cosmos_units(binned)
    samples = tuple(s for unit in units for s in unit.samples)
    skipped_sorted = tuple(sorted(skips, key=lambda s: (s.asset_id, s.reason)))
    fingerprint = sha256_hex(
        canonical_json(
            {
                "format": export_format,
                "selection": selection,
                "options": opts.model_dump(mode="json"),
                "units": [[u.unit_id, u.fingerprint] for u in units],
                "skipped": [s.model_dump(mode="json") for s in skipped_sorted],
            }
        )
    )
    return ExportPlan(export_format, selection, opts, samples, units, skipped_sorted, fingerprint)


def _unique(items: Iterable[ExportItem], skips: list[SkippedItem]) -> list[ExportItem]:
    """One item per asset id (the smallest by video digest when listed twice with different videos)."""
    ordered = sorted(items, key=lambda i: (i.asset_id, i.video.sha256, canonical_json(i.model_dump(mode="json"))))
    kept: list[ExportItem] = []
    for index, item in enumerate(ordered):
        if index and ordered[index - 1] == item:
            continue  # the very same item twice is one sample
        if kept and kept[-1].asset_id == item.asset_id:
            skips.append(SkippedItem(asset_id=item.asset_id, reason="listed twice with different content"))
            continue
        kept.append(item)
    return kept


def _sample(item: ExportItem, bin_name: str, unit: str) -> PlannedSample:
    key = sample_key(item.asset_id)
    meta = canonical_json({**item.metadata, "sample": {"key": key, "bin": bin_name}})
    return PlannedSample(item=item, key=key, bin=bin_name, unit=unit, text=item.prompt.encode("utf-8"), meta=meta)


def _fingerprint(unit_id: str, samples: Sequence[PlannedSample]) -> str:
    return sha256_hex(
        canonical_json(
            {
                "unit": unit_id,
                "samples": [
                    [s.key, s.bin, s.item.video.sha256, s.item.video.size, sha256_hex(s.text), sha256_hex(s.meta)]
                    for s in samples
                ],
            }
        )
    )


def _unit(unit_id: str, bin_name: str, samples: Sequence[PlannedSample], files: tuple[str, ...]) -> PlannedUnit:
    return PlannedUnit(unit_id, bin_name, tuple(samples), files, _fingerprint(unit_id, samples))


def shard_groups(sizes: Sequence[int], *, max_samples: int, target_bytes: int) -> list[list[int]]:
    """Indices of ``sizes`` grouped into shards, in order: close a shard at ``max_samples`` or before
    the sample that would take it past ``target_bytes`` (a shard always takes at least one sample)."""
    groups: list[list[int]] = []
    current: list[int] = []
    current_bytes = 0
    for index, size in enumerate(sizes):
        if current and (len(current) >= max_samples or current_bytes + size > target_bytes):
            groups.append(current)
            current, current_bytes = [], 0
        current.append(index)
        current_bytes += size
    if current:
        groups.append(current)
    return groups


def _webdataset_units(binned: Sequence[tuple[str, ExportItem]], opts: ExportOptions) -> tuple[PlannedUnit, ...]:
    units: list[PlannedUnit] = []
    for bin_name in sorted({b for b, _ in binned}):
        in_bin = [item for b, item in binned if b == bin_name]
        draft = [_sample(item, bin_name, "") for item in in_bin]
        groups = shard_groups(
            [s.tar_bytes for s in draft], max_samples=opts.max_samples_per_shard, target_bytes=opts.target_shard_bytes
        )
        for index, group in enumerate(groups):
            path = shard_path(bin_name, index)
            samples = [replace(draft[i], unit=path) for i in group]
            units.append(_unit(path, bin_name, samples, (path,)))
    return tuple(units)


def _cosmos_units(binned: Sequence[tuple[str, ExportItem]]) -> tuple[PlannedUnit, ...]:
    units: list[PlannedUnit] = []
    for bin_name, item in binned:
        files = cosmos_paths(sample_key(item.asset_id))
        units.append(_unit(files[0], bin_name, [_sample(item, bin_name, files[0])], files))
    return tuple(units)


def export_id_for(plan: ExportPlan, destination: str) -> str:
    """The export's id: from the plan and where it was written, so a rerun reports the same export."""
    return "exp-" + sha256_hex(f"{plan.plan_sha256}\n{destination}".encode())[:32]
