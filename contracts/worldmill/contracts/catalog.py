"""The catalog: what it hears about (ratings, notes, exports) and what it answers (assets, lineage, reports)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field

from worldmill.contracts.base import Contract, Identifier, Message, ObjectRef, Requester
from worldmill.contracts.qa import Finding

QaStatus = Literal["pending", "passed", "failed"]
AssetKind = Literal["video", "augmentation"]
ExportFormat = Literal["webdataset", "cosmos-video2world"]

#: Longest free text a person can attach to an asset.
MAX_NOTE = 4000


# -- events the catalog publishes (so a rebuild from the stream restores them) -------------------


class AssetRated(Message):
    """Someone rated an asset 1–5 (the latest rating by the same rater replaces theirs)."""

    TYPE: ClassVar[str] = "asset.rated"

    asset_id: Identifier
    rating: int = Field(ge=1, le=5)
    rater: str = Field(default="api", min_length=1, max_length=200)
    rated_at: datetime

    def entity_id(self) -> str | None:
        return self.asset_id


class AssetNoted(Message):
    """Someone wrote a note on an asset."""

    TYPE: ClassVar[str] = "asset.noted"

    asset_id: Identifier
    note_id: Identifier
    text: str = Field(min_length=1, max_length=MAX_NOTE)
    author: str = Field(default="api", min_length=1, max_length=200)
    noted_at: datetime

    def entity_id(self) -> str | None:
        return self.asset_id


class ExportedSample(Contract):
    """One sample of an exported dataset: which asset, where in the dataset."""

    asset_id: Identifier
    key: str = Field(description="The sample's key (webdataset __key__, or the file stem).")
    shard: str = Field(description="Shard path (webdataset) or the video path (cosmos layout), relative to DEST.")
    bin: str = Field(description="resolution/aspect/duration bin the sample was put in.")
    video_sha256: str


class DatasetExported(Message):
    """A dataset was written (complete): the samples it holds, for lineage QA → dataset."""

    TYPE: ClassVar[str] = "dataset.exported"

    export_id: Identifier
    format: ExportFormat
    destination: str = Field(max_length=2048)
    selection: str = Field(max_length=4000, description="The manifest or query the samples were chosen by.")
    samples: tuple[ExportedSample, ...]
    manifest_sha256: str = Field(description="sha256 of the export manifest written at the destination.")
    exported_at: datetime
    sample_count: int | None = Field(
        default=None, ge=0, description="Samples in the whole export (a large export is announced in parts)."
    )
    part: int = Field(default=0, ge=0, description="Which part of the export's sample list this event carries.")

    def entity_id(self) -> str | None:
        return self.export_id


# -- HTTP bodies -------------------------------------------------------------------------------


class MediaLink(Contract):
    """An object and a presigned URL to fetch it (valid for ``expires_s``)."""

    ref: ObjectRef
    url: str | None = None
    expires_s: int | None = None


class AssetSummary(Contract):
    """One row of the gallery: enough to show it and filter it."""

    asset_id: Identifier
    kind: AssetKind
    manifest: str | None = None
    prompt_id: Identifier | None = None
    prompt_version: int | None = None
    run_id: Identifier | None = None
    series: str | None = None
    scenario: str | None = None
    variant: int | None = None
    risk_level: str | None = None
    tags: tuple[str, ...] = ()
    model: str | None = None
    duration_s: float | None = None
    fps: float | None = None
    frames: int | None = None
    width: int | None = None
    height: int | None = None
    prompt: str | None = None
    qa_status: QaStatus = "pending"
    failed_checks: tuple[str, ...] = ()
    rating: float | None = Field(default=None, description="Mean of the raters' latest ratings.")
    ratings: int = Field(default=0, ge=0)
    created_at: datetime | None = None
    video: MediaLink | None = None
    screenshots: tuple[MediaLink, ...] = ()
    contact_sheet: MediaLink | None = None


class AssetPage(Contract):
    """``GET /assets``: one page, newest first, and the cursor of the next."""

    items: tuple[AssetSummary, ...]
    next_cursor: str | None = None
    total: int | None = Field(default=None, description="Matching assets (with ?count=true).")


class LineageNode(Contract):
    """One thing in an asset's family tree."""

    kind: str
    id: str
    label: str = ""
    known: bool = Field(description="False while only a child has mentioned it (its own event is not here yet).")


class LineageEdge(Contract):
    """parent → child, and how they are related."""

    parent_kind: str
    parent_id: str
    child_kind: str
    child_id: str
    relation: str


class Note(Contract):
    """A note on an asset."""

    note_id: Identifier
    text: str
    author: str
    noted_at: datetime


class AssetDetail(Contract):
    """``GET /assets/{id}``: the summary, every finding, the provenance, the lineage, ratings and notes."""

    asset: AssetSummary
    findings: tuple[Finding, ...] = ()
    qa_attempt: int | None = None
    checked_at: datetime | None = None
    checker_version: str | None = None
    provenance: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    request_id: str | None = None
    requested_by: Requester | None = None
    lineage_nodes: tuple[LineageNode, ...] = ()
    lineage_edges: tuple[LineageEdge, ...] = ()
    ratings_by_rater: dict[str, int] = Field(default_factory=dict)
    notes: tuple[Note, ...] = ()


class RatingSubmission(Contract):
    """``PUT /assets/{id}/rating``."""

    rating: int = Field(ge=1, le=5, description="1 (useless) to 5 (perfect).")
    rater: str = Field(default="api", min_length=1, max_length=200)


class NoteSubmission(Contract):
    """``POST /assets/{id}/notes``."""

    text: str = Field(min_length=1, max_length=MAX_NOTE)
    author: str = Field(default="api", min_length=1, max_length=200)


class RunStatus(Contract):
    """One run as the catalog last heard of it."""

    run_id: Identifier
    request_id: str | None = None
    prompt_id: str | None = None
    state: str
    attempt: int = 0
    phase: str | None = None
    fraction: float | None = None
    runner: str | None = None
    error: str | None = None
    asset_id: str | None = None
    updated_at: datetime | None = None


class QueueStatus(Contract):
    """``GET /runs/status``: counts per run state and the runs not finished yet."""

    counts: dict[str, int]
    active: tuple[RunStatus, ...]


StatusState = Literal["passed", "failed", "in_flight", "unverified", "missing"]


class StatusItem(Contract):
    """One spec of a manifest and how far it got."""

    prompt_id: Identifier
    version: int
    series: str | None = None
    scenario: str
    duration_s: float
    variant: int
    state: StatusState
    assets: tuple[Identifier, ...] = ()
    passed_assets: tuple[Identifier, ...] = ()
    failed_checks: tuple[str, ...] = ()
    run_state: str | None = None


class GenerationStatus(Contract):
    """``generation_status.json``: per manifest, what exists, passed, failed, is missing or in flight."""

    manifest: str
    manifest_sha256: str | None = None
    generated_at: datetime
    total: int = Field(ge=0)
    counts: dict[str, int]
    by_series: dict[str, dict[str, int]]
    items: tuple[StatusItem, ...]
    complete: bool = Field(description="Every spec has at least one QA-passed video.")


class ExportRecordRequest(Contract):
    """``POST /exports``: tell the catalog about a finished export (it publishes ``dataset.exported``)."""

    export: DatasetExported


class CatalogCounts(Contract):
    """``GET /stats``: how many of each thing, and how many events were applied."""

    events: int
    manifests: int
    prompts: int
    runs: int
    assets: int
    passed: int
    failed: int
    exports: int
