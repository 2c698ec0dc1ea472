"""The export manifest (``export_manifest.json``): what a finished export holds, built from its plan.

Written last, so its presence means the export is complete. Its ``content`` part has no timestamp:
the same items give the same content (and ``content_sha256``); only the envelope (``created_at``,
version, destination) varies. Pure: the writer (:mod:`worldmill.catalog.export.write`) puts it on disk.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from pydantic import Field

from worldmill.catalog.export.journal import FileRecord
from worldmill.catalog.export.plan import (
    ASPECT_BINS,
    CURATE_MIN_DURATION_S,
    DURATION_BINS,
    SHORT_BIN,
    ExportModel,
    ExportOptions,
    ExportPlan,
    ExportPlanError,
    PlannedSample,
    PlannedUnit,
    SkippedItem,
    canonical_json,
    export_id_for,
    sha256_hex,
)
from worldmill.contracts.base import Identifier, Sha256
from worldmill.contracts.catalog import ExportFormat

MANIFEST_VERSION: Final = 1
SHORT_CLIP_DEVIATION: Final = (
    "duration_0_5: clips shorter than 5 s are kept in duration_0_5 bins; cosmos-curate drops them"
)


class ManifestSample(ExportModel):
    """One sample: which asset, its key, where it is (shard or video path), its bin and video digest."""

    asset_id: str
    key: str
    shard: str
    bin: str
    video_sha256: Sha256
    video_bytes: int
    duration_s: float


class ManifestShard(ExportModel):
    """One webdataset shard."""

    path: str
    bin: str
    samples: int
    bytes: int
    sha256: Sha256
    first_key: str
    last_key: str


class BinStats(ExportModel):
    """How much one bin (or the whole export) holds."""

    samples: int = 0
    shards: int = 0
    bytes: int = 0


class ExportContent(ExportModel):
    """Everything the export holds, with no timestamp: the same items give the same content."""

    format: ExportFormat
    selection: str
    plan_sha256: str
    options: ExportOptions
    binning: dict[str, Any]
    samples: tuple[ManifestSample, ...]
    shards: tuple[ManifestShard, ...] = Field(description="webdataset shards (empty for the cosmos layout).")
    files: tuple[FileRecord, ...] = Field(description="Every file of the cosmos layout (empty for webdataset).")
    bins: dict[str, BinStats]
    totals: BinStats
    short_clips: int = Field(description="Samples in duration_0_5 bins (cosmos-curate would drop them).")
    deviations: tuple[str, ...]
    skipped: tuple[SkippedItem, ...]


class ExportManifest(ExportModel):
    """``export_manifest.json``: the content plus when, by what, and where it was written."""

    manifest_version: int = MANIFEST_VERSION
    export_id: Identifier
    destination: str
    created_at: datetime
    worldmill_version: str
    content_sha256: Sha256
    content: ExportContent


def binning_rules() -> dict[str, Any]:
    """The bin rules, written into the manifest so a reader does not need this code to know them."""
    return {
        "resolution": "by the smaller side: >=1080 -> 1080, >=720 -> 720, else lt_720",
        "aspect_ratio": [{"above": lo, "at_most": hi, "bin": name} for lo, hi, name in ASPECT_BINS],
        "duration": [{"at_least": 0.0, "below": CURATE_MIN_DURATION_S, "bin": SHORT_BIN}]
        + [{"at_least": lo, "at_most": None if math.isinf(hi) else hi, "bin": n} for lo, hi, n in DURATION_BINS],
        "duration_source": "frames / fps; a length on a boundary goes to the lower bin (10 s -> 5_10)",
        "layout": "<bin>/part_NNNNNN/NNNNNN.tar, at most 100 tars per part",
    }


def build_content(plan: ExportPlan, written: Mapping[str, Sequence[FileRecord]]) -> ExportContent:
    """The manifest content once every unit is on disk; ``written`` maps unit id → its files."""
    missing = [u.unit_id for u in plan.units if u.unit_id not in written]
    if missing:
        raise ExportPlanError(f"units not written yet: {', '.join(missing[:5])}")
    shards: list[ManifestShard] = []
    files: list[FileRecord] = []
    bins: dict[str, BinStats] = {}
    for unit in plan.units:
        records = tuple(written[unit.unit_id])
        size = sum(r.bytes for r in records)
        stats = bins.get(unit.bin, BinStats())
        is_shard = plan.format == "webdataset"
        bins[unit.bin] = BinStats(
            samples=stats.samples + len(unit.samples), shards=stats.shards + is_shard, bytes=stats.bytes + size
        )
        if is_shard:
            shards.append(_shard_entry(unit, records[0]))
        else:
            files.extend(records)
    short = sum(s.bin.endswith(f"/duration_{SHORT_BIN}") for s in plan.samples)
    totals = BinStats(
        samples=sum(b.samples for b in bins.values()),
        shards=sum(b.shards for b in bins.values()),
        bytes=sum(b.bytes for b in bins.values()),
    )
    return ExportContent(
        format=plan.format,
        selection=plan.selection,
        plan_sha256=plan.plan_sha256,
        options=plan.options,
        binning=binning_rules(),
        samples=tuple(_sample_entry(s) for s in plan.samples),
        shards=tuple(shards),
        files=tuple(files),
        bins=dict(sorted(bins.items())),
        totals=totals,
        short_clips=short,
        deviations=(SHORT_CLIP_DEVIATION,) if short else (),
        skipped=plan.skipped,
    )


def _shard_entry(unit: PlannedUnit, record: FileRecord) -> ManifestShard:
    return ManifestShard(
        path=record.path,
        bin=unit.bin,
        samples=len(unit.samples),
        bytes=record.bytes,
        sha256=record.sha256,
        first_key=unit.samples[0].key,
        last_key=unit.samples[-1].key,
    )


def _sample_entry(sample: PlannedSample) -> ManifestSample:
    return ManifestSample(
        asset_id=sample.item.asset_id,
        key=sample.key,
        shard=sample.unit,
        bin=sample.bin,
        video_sha256=sample.item.video.sha256,
        video_bytes=sample.item.video.size,
        duration_s=sample.item.clip_seconds,
    )


def content_sha256(content: ExportContent) -> str:
    """sha256 of the content's canonical JSON: equal for equal exports, whenever they were made."""
    return sha256_hex(canonical_json(content.model_dump(mode="json")))


def build_manifest(
    plan: ExportPlan,
    written: Mapping[str, Sequence[FileRecord]],
    *,
    destination: str,
    created_at: datetime,
    worldmill_version: str,
) -> ExportManifest:
    """The whole manifest: content, its digest, and the envelope (id, destination, time, version)."""
    content = build_content(plan, written)
    return ExportManifest(
        export_id=export_id_for(plan, destination),
        destination=destination,
        created_at=created_at,
        worldmill_version=worldmill_version,
        content_sha256=content_sha256(content),
        content=content,
    )


def manifest_bytes(manifest: ExportManifest) -> bytes:
    """The manifest file's bytes (indented for people, sorted keys)."""
    text = json.dumps(manifest.model_dump(mode="json"), sort_keys=True, indent=2, ensure_ascii=False)
    return (text + "\n").encode()
