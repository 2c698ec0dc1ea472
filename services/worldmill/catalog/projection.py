"""Events → changes to the read model. Pure: no SQL here, only what to write and under which rule.

Each event becomes a list of :class:`Change` values that :mod:`worldmill.catalog.apply` executes in
one transaction, together with the row that marks the event applied (so a redelivered event changes
nothing). The rules make the result independent of arrival order:

* an :class:`Upsert` sets only the columns its event knows, so two events about the same row in
  either order give the same row; ``insert_only`` columns are placeholders a later event may set;
* a ``newer`` guard keeps the row when the stored value of a column (a run document's version, a
  verdict's check time) is already at least the event's, so a stale event never wins;
* :class:`FillAssets` copies a prompt version's fields onto its videos whichever came first;
* lineage :class:`Edge` rows are written as soon as either end is mentioned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worldmill.contracts.augment import AugmentCompleted
from worldmill.contracts.base import Message
from worldmill.contracts.catalog import AssetDeleted, AssetNoted, AssetRated, DatasetExported, RunDeleted
from worldmill.contracts.envelope import EnvelopeAttributes
from worldmill.contracts.generation import (
    GenerationRequested,
    JobCanceled,
    JobCompleted,
    JobFailed,
    JobProgress,
    Regeneration,
    RunUpdated,
    VideoReady,
)
from worldmill.contracts.prompts import ManifestAccepted, ManifestRejected, PromptCreated, PromptSpec
from worldmill.contracts.qa import QaFailed, QaPassed


@dataclass(frozen=True)
class Upsert:
    """Insert a row, or update the given columns of the row with this key."""

    table: str
    key: dict[str, Any]
    values: dict[str, Any]
    insert_only: dict[str, Any] = field(default_factory=dict)
    newer: str | None = None
    """Update only if the stored value of this column is NULL or smaller than the event's."""


@dataclass(frozen=True)
class FillAssets:
    """Copy a prompt version's fields onto every asset made from it."""

    prompt_id: str
    version: int


@dataclass(frozen=True)
class RefreshRating:
    """Recompute an asset's mean rating and rating count from the ratings table."""

    asset_id: str


@dataclass(frozen=True)
class Edge:
    """parent → child in the lineage graph."""

    parent_kind: str
    parent_id: str
    child_kind: str
    child_id: str
    relation: str


@dataclass(frozen=True)
class Delete:
    """Remove the rows of ``table`` whose columns equal ``where`` (a deletion event: the asset is gone)."""

    table: str
    where: dict[str, Any]


Change = Upsert | FillAssets | RefreshRating | Edge | Delete


def spec_node(prompt_id: str, version: int) -> str:
    """The lineage id of one version of a spec."""
    return f"{prompt_id}@v{version}"


def qa_node(asset_id: str, attempt: int) -> str:
    """The lineage id of one QA verdict of an asset."""
    return f"{asset_id}#qa{attempt}"


def changes_for(attrs: EnvelopeAttributes, message: Message) -> list[Change]:
    """What ``message`` changes in the read model (empty for events the catalog does not keep)."""
    handler = _HANDLERS.get(type(message))
    return handler(attrs, message) if handler else []


#: Prompt fields copied onto assets (the filters then read one table).
PROMPT_FIELDS_ON_ASSETS = ("manifest", "series", "scenario", "variant", "risk_level", "prompt")


def _manifest_accepted(attrs: EnvelopeAttributes, m: ManifestAccepted) -> list[Change]:
    out: list[Change] = [
        Upsert(
            "manifests",
            {"name": m.manifest},
            {
                "sha256": m.manifest_sha256,
                "state": "accepted",
                "prompt_count": len(m.prompt_ids),
                "problems": None,
                "updated_at": attrs.time,
            },
            newer="updated_at",
        )
    ]
    out += [Upsert("manifest_prompts", {"manifest": m.manifest, "prompt_id": pid}, {}) for pid in m.prompt_ids]
    return out


def _manifest_rejected(attrs: EnvelopeAttributes, m: ManifestRejected) -> list[Change]:
    problems = [p.model_dump(mode="json") for p in m.problems]
    # A rejection never hides an accepted version of the same manifest: it only fills a new name.
    return [
        Upsert(
            "manifests",
            {"name": m.manifest},
            {},
            insert_only={
                "sha256": m.manifest_sha256,
                "state": "rejected",
                "problems": problems,
                "updated_at": attrs.time,
            },
        )
    ]


def _spec_row(spec: PromptSpec) -> dict[str, Any]:
    return {
        "previous_version": spec.previous_version,
        "manifest": spec.manifest,
        "series": spec.series,
        "scenario": spec.scenario,
        "variant": spec.variant,
        "duration_s": spec.duration_s,
        "fps": spec.fps,
        "target_frames": spec.target_frames,
        "model": spec.model,
        "mode": str(spec.mode),
        "risk_level": spec.risk_level,
        "prompt": spec.prompt,
        "upsampled": spec.upsampled is not None,
        "spec": spec.model_dump(mode="json"),
        "created_at": spec.created_at,
    }


def _prompt_created(_: EnvelopeAttributes, m: PromptCreated) -> list[Change]:
    spec = m.spec
    node = spec_node(spec.prompt_id, spec.version)
    out: list[Change] = [
        Upsert("prompt_versions", {"prompt_id": spec.prompt_id, "version": spec.version}, _spec_row(spec)),
        FillAssets(spec.prompt_id, spec.version),
    ]
    out += [
        Upsert("prompt_tags", {"prompt_id": spec.prompt_id, "version": spec.version, "tag": t}, {}) for t in spec.tags
    ]
    if spec.manifest:
        out.append(Upsert("manifest_prompts", {"manifest": spec.manifest, "prompt_id": spec.prompt_id}, {}))
        out.append(Edge("manifest", spec.manifest, "spec", node, "expands_to"))
    if spec.upsampled is not None:
        out.append(Edge("spec", spec_node(spec.prompt_id, spec.upsampled.source_version), "spec", node, "upsampled"))
    elif spec.previous_version is not None:
        out.append(Edge("spec", spec_node(spec.prompt_id, spec.previous_version), "spec", node, "revised"))
    return out


def _regenerated(regeneration: Regeneration | None, request_id: str) -> list[Change]:
    """failed asset → the request that makes it again (then run → job → its replacement)."""
    if regeneration is None or regeneration.replaces is None:
        return []
    return [Edge("asset", regeneration.replaces, "request", request_id, "regenerated_by")]


def _generation_requested(attrs: EnvelopeAttributes, m: GenerationRequested) -> list[Change]:
    return [
        Upsert(
            "generation_requests",
            {"request_id": m.request_id},
            {"prompt_ids": list(m.prompt_ids), "requested_by": m.requested_by, "requested_at": attrs.time},
        ),
        *_regenerated(m.regeneration, m.request_id),
    ]


def _run_updated(_: EnvelopeAttributes, m: RunUpdated) -> list[Change]:
    run = m.run
    out: list[Change] = [
        Upsert(
            "runs",
            {"run_id": run.run_id},
            {
                "version": m.version,
                "request_id": run.request_id,
                "prompt_id": run.prompt_id,
                "prompt_version": run.prompt_version,
                "plan_id": run.plan.plan_id,
                "state": run.state,
                "attempts": len(run.attempts),
                "max_attempts": run.max_attempts,
                "requested_by": run.requested_by,
                "asset_id": run.asset_id,
                "error": run.error,
                "record": run.model_dump(mode="json"),
                "created_at": run.created_at,
                "updated_at": run.updated_at,
            },
            newer="version",
        ),
        Edge("request", run.request_id, "run", run.run_id, "requested"),
        Edge("spec", spec_node(run.prompt_id, run.prompt_version), "plan", run.plan.plan_id, "planned"),
        Edge("plan", run.plan.plan_id, "run", run.run_id, "ran_as"),
        *_regenerated(run.plan.regeneration, run.request_id),
    ]
    for a in run.attempts:
        out.append(
            Upsert(
                "jobs",
                {"job_id": a.job_id},
                {
                    "run_id": run.run_id,
                    "attempt": a.attempt,
                    "state": a.state,
                    "runner": a.runner,
                    "error": a.error,
                    "run_version": m.version,
                    "updated_at": a.finished_at or run.updated_at,
                },
                newer="run_version",
            )
        )
        out.append(Edge("run", run.run_id, "job", a.job_id, f"attempt_{a.attempt}"))
        if run.asset_id and a.state == "ready":
            out.append(Edge("job", a.job_id, "asset", run.asset_id, "produced"))
    return out


def _job_progress(attrs: EnvelopeAttributes, m: JobProgress) -> list[Change]:
    return [
        Upsert(
            "jobs",
            {"job_id": m.job_id},
            {
                "phase": m.phase,
                "fraction": m.fraction,
                "step": m.step,
                "steps": m.steps,
                "runner": m.runner,
                "progress_at": attrs.time,
            },
            insert_only={"run_id": m.run_id, "attempt": m.attempt, "state": "running", "updated_at": attrs.time},
            newer="progress_at",
        ),
        Edge("run", m.run_id, "job", m.job_id, f"attempt_{m.attempt}"),
    ]


def _job_finished(attrs: EnvelopeAttributes, m: JobCompleted | JobFailed | JobCanceled) -> list[Change]:
    values: dict[str, Any] = {"progress_at": attrs.time}
    if isinstance(m, JobCompleted):
        values |= {"fraction": 1.0, "phase": "uploading"}
    state = {JobCompleted: "ready", JobFailed: "failed", JobCanceled: "canceled"}[type(m)]
    return [
        Upsert(
            "jobs",
            {"job_id": m.job_id},
            values,
            insert_only={"run_id": m.run_id, "attempt": m.attempt, "state": state, "updated_at": attrs.time},
            newer="progress_at",
        ),
        Edge("run", m.run_id, "job", m.job_id, f"attempt_{m.attempt}"),
    ]


def _video_ready(attrs: EnvelopeAttributes, m: VideoReady) -> list[Change]:
    exp = m.plan.expected
    out: list[Change] = [
        Upsert(
            "assets",
            {"asset_id": m.asset_id},
            {
                "run_id": m.run_id,
                "prompt_id": m.prompt_id,
                "prompt_version": m.plan.prompt_version,
                "attempt": m.attempt,
                "model": m.plan.model,
                "duration_s": exp.duration_s,
                "fps": exp.fps,
                "frames": exp.frames,
                "width": exp.resolution.width,
                "height": exp.resolution.height,
                "video": m.video.model_dump(mode="json"),
                "plan": m.plan.model_dump(mode="json"),
                "provenance": m.provenance.model_dump(mode="json"),
                "request_id": m.request_id,
                "requested_by": m.requested_by,
                "created_at": attrs.time,
            },
        ),
        FillAssets(m.prompt_id, m.plan.prompt_version),
        RefreshRating(m.asset_id),
        Edge("run", m.run_id, "asset", m.asset_id, "produced"),
    ]
    return out


def _verdict(attrs: EnvelopeAttributes, m: QaPassed | QaFailed) -> list[Change]:
    failed = sorted({f.check for f in m.findings if not f.passed and f.severity == "error"})
    values: dict[str, Any] = {
        "qa_status": "passed" if isinstance(m, QaPassed) else "failed",
        "qa_attempt": m.attempt,
        "qa_checked_at": m.checked_at,
        "checker_version": m.checker_version,
        "findings": [f.model_dump(mode="json") for f in m.findings],
        "failed_checks": failed,
        "screenshots": [s.model_dump(mode="json") for s in m.screenshots],
        "contact_sheet": m.contact_sheet.model_dump(mode="json") if m.contact_sheet else None,
    }
    # The verdict alone does not put the asset in the gallery: its video.ready (plan, provenance) does.
    insert_only: dict[str, Any] = {"created_at": attrs.time}
    if m.prompt_id:
        insert_only["prompt_id"] = m.prompt_id
    return [
        Upsert("assets", {"asset_id": m.asset_id}, values, insert_only=insert_only, newer="qa_checked_at"),
        Edge("asset", m.asset_id, "qa", qa_node(m.asset_id, m.attempt), "verdict"),
    ]


def _augment_completed(attrs: EnvelopeAttributes, m: AugmentCompleted) -> list[Change]:
    a = m.augmentation
    out: list[Change] = [
        Upsert(
            "augmentations",
            {"augmentation_id": a.augmentation_id},
            {
                "state": a.state,
                "input_uri": a.input.uri(),
                "asset_id": a.asset_id,
                "record": a.model_dump(mode="json"),
                "updated_at": a.updated_at,
            },
            newer="updated_at",
        ),
        Edge("object", a.input.uri(), "augmentation", a.augmentation_id, "augmented_by"),
    ]
    if a.asset_id:
        out.append(
            Upsert("assets", {"asset_id": a.asset_id}, {"kind": "augmentation"}, insert_only={"created_at": attrs.time})
        )
        out.append(Edge("augmentation", a.augmentation_id, "asset", a.asset_id, "produced"))
    if a.prompt_id:
        out.append(Edge("augmentation", a.augmentation_id, "prompt", a.prompt_id, "specified_by"))
    return out


def _rated(_: EnvelopeAttributes, m: AssetRated) -> list[Change]:
    return [
        Upsert(
            "ratings",
            {"asset_id": m.asset_id, "rater": m.rater},
            {"rating": m.rating, "rated_at": m.rated_at},
            newer="rated_at",
        ),
        RefreshRating(m.asset_id),
    ]


def _noted(_: EnvelopeAttributes, m: AssetNoted) -> list[Change]:
    return [
        Upsert(
            "notes",
            {"note_id": m.note_id},
            {"asset_id": m.asset_id, "author": m.author, "text": m.text, "noted_at": m.noted_at},
        )
    ]


def _exported(_: EnvelopeAttributes, m: DatasetExported) -> list[Change]:
    out: list[Change] = [
        Upsert(
            "exports",
            {"export_id": m.export_id},
            {
                "format": m.format,
                "destination": m.destination,
                "selection": m.selection,
                "samples": m.sample_count if m.sample_count is not None else len(m.samples),
                "manifest_sha256": m.manifest_sha256,
                "exported_at": m.exported_at,
            },
        )
    ]
    out += [Edge("asset", s.asset_id, "dataset", m.export_id, "exported_to") for s in m.samples]
    return out


def _asset_deleted(_: EnvelopeAttributes, m: AssetDeleted) -> list[Change]:
    """The asset, its ratings and notes go; lineage edges stay (an export that held it still says so)."""
    return [Delete(table, {"asset_id": m.asset_id}) for table in ("notes", "ratings", "assets")]


def _run_deleted(_: EnvelopeAttributes, m: RunDeleted) -> list[Change]:
    return [Delete("jobs", {"run_id": m.run_id}), Delete("runs", {"run_id": m.run_id})]


_HANDLERS: dict[type[Message], Callable[[EnvelopeAttributes, Any], list[Change]]] = {
    ManifestAccepted: _manifest_accepted,
    ManifestRejected: _manifest_rejected,
    PromptCreated: _prompt_created,
    GenerationRequested: _generation_requested,
    RunUpdated: _run_updated,
    JobProgress: _job_progress,
    JobCompleted: _job_finished,
    JobFailed: _job_finished,
    JobCanceled: _job_finished,
    VideoReady: _video_ready,
    QaPassed: _verdict,
    QaFailed: _verdict,
    AugmentCompleted: _augment_completed,
    AssetRated: _rated,
    AssetNoted: _noted,
    DatasetExported: _exported,
    AssetDeleted: _asset_deleted,
    RunDeleted: _run_deleted,
}

#: The event types the catalog keeps (its consumer filters on ``wm.evt.>`` and ignores the rest).
KEPT_TYPES: tuple[type[Message], ...] = tuple(_HANDLERS)
