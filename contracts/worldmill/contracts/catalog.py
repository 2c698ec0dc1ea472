"""The catalog: what it hears about (ratings, notes, exports) and what it answers (assets, lineage, reports)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, StringConstraints, model_validator

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


ObjectUri = Annotated[str, StringConstraints(pattern=r"^s3://[a-z0-9][a-z0-9.\-]+[a-z0-9]/.+$", max_length=1100)]

#: Objects named in one deletion event at most (an asset has a handful: video, provenance, screenshots).
MAX_DELETED_OBJECTS = 200


class AssetDeleted(Message):
    """An asset was deleted on purpose: its stored objects are gone and the catalog forgets it.

    Lineage edges stay (an export that held the asset still says so); ``exports`` names the
    exports that hold it, ``forced`` says the deletion was asked for in spite of them.
    """

    TYPE: ClassVar[str] = "asset.deleted"

    asset_id: Identifier
    run_id: Identifier | None = None
    prompt_id: Identifier | None = None
    objects: tuple[ObjectUri, ...] = Field(
        default=(), max_length=MAX_DELETED_OBJECTS, description="Every object removed, as s3://bucket/key."
    )
    exports: tuple[Identifier, ...] = Field(default=(), max_length=1000)
    forced: bool = False
    reason: str = Field(default="", max_length=500)
    requested_by: str = Field(default="api", min_length=1, max_length=200)
    deleted_at: datetime

    def entity_id(self) -> str | None:
        return self.asset_id


class RunDeleted(Message):
    """A run was deleted with every video it made (each has its own ``asset.deleted``)."""

    TYPE: ClassVar[str] = "run.deleted"

    run_id: Identifier
    prompt_id: Identifier | None = None
    asset_ids: tuple[Identifier, ...] = Field(default=(), max_length=1000)
    reason: str = Field(default="", max_length=500)
    requested_by: str = Field(default="api", min_length=1, max_length=200)
    deleted_at: datetime

    def entity_id(self) -> str | None:
        return self.run_id


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


class DeletionRequest(Contract):
    """``POST /deletions``: assets, runs or specs to delete with everything their lineage holds.

    A spec (``prompts``) loses every run and video made from it; the spec itself stays, so its
    manifest's report lists it as missing and ``generate --missing`` makes it again. What an export
    holds is refused unless ``force``; ``dry_run`` only says what would go.
    """

    assets: tuple[Identifier, ...] = Field(default=(), max_length=10000)
    runs: tuple[Identifier, ...] = Field(default=(), max_length=10000)
    prompts: tuple[Identifier, ...] = Field(default=(), max_length=10000)
    dry_run: bool = False
    force: bool = Field(default=False, description="Delete assets that an export holds too.")
    reason: str = Field(default="", max_length=500)
    requested_by: str = Field(default="api", min_length=1, max_length=200)

    @model_validator(mode="after")
    def _something(self) -> DeletionRequest:
        if not (self.assets or self.runs or self.prompts):
            raise ValueError("name at least one asset, run or prompt to delete")
        return self


class DeletedAsset(Contract):
    """One asset a deletion removes (or would), with its objects and the exports that hold it."""

    asset_id: Identifier
    run_id: Identifier | None = None
    prompt_id: Identifier | None = None
    scenario: str | None = None
    qa_status: QaStatus = "pending"
    objects: tuple[ObjectUri, ...] = Field(default=(), description="Its stored objects, as s3://bucket/key.")
    exports: tuple[Identifier, ...] = ()


class DeletionPlan(Contract):
    """The answer to ``POST /deletions``: everything the lineage removes, and whether it was removed."""

    assets: tuple[DeletedAsset, ...] = ()
    runs: tuple[Identifier, ...] = ()
    prompts: tuple[Identifier, ...] = ()
    unknown: tuple[str, ...] = Field(default=(), description="Ids asked for that the catalog does not hold.")
    exports: tuple[Identifier, ...] = Field(default=(), description="Exports holding any of the assets.")
    blocked: bool = Field(default=False, description="True when exports hold assets and force was not given.")
    deleted: bool = False
    objects_deleted: int = 0


class VerifyRequest(Contract):
    """``POST /verify``: compare the catalog's rows with the stored objects; ``fix`` repairs what it can."""

    fix: bool = False
    min_orphan_age_s: float = Field(
        default=3600.0,
        ge=0,
        le=10 * 365 * 86400,
        description="Objects younger than this are never orphans (a run may be uploading); at most ten years.",
    )
    requested_by: str = Field(default="api", min_length=1, max_length=200)


VerifyKind = Literal["missing", "mismatch", "orphan"]


class VerifyProblem(Contract):
    """One disagreement between the catalog and the store, and what ``fix`` did about it."""

    kind: VerifyKind
    uri: ObjectUri
    asset_id: Identifier | None = None
    detail: str = ""
    fixed: bool = False
    repair: str = Field(default="", description="What fix does (or did) about it; empty when it cannot.")


class VerifyReport(Contract):
    """The answer to ``POST /verify``."""

    assets: int
    objects_checked: int
    objects_listed: int
    problems: tuple[VerifyProblem, ...] = ()
    fixed: int = 0


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
