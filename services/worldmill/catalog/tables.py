"""The catalog's read model: tables filled from events, and nothing else.

Every row can be rebuilt from the event stream (ratings and notes included: they are events too).
Rows are written by upserts that each set only the columns their event knows, so events may arrive
in any order: a verdict before its video makes the asset row, the video fills in the rest later.
Lineage is a table of edges between (kind, id) pairs, written as soon as either end is mentioned;
a parent that has not been seen yet is "unknown" until its own event arrives.

The schema is created and changed only by the Alembic migrations next to this file
(``migrations/versions``); ``tests/test_catalog_db.py`` checks the two agree. On PostgreSQL a
migration also adds a trigram index for the prompt text search (``pg_trgm``, where the extension can
be created); expression indexes are not declared here (Alembic does not compare them).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

#: Identifiers and keys sort in code-point order on both databases ("C" collation on PostgreSQL),
#: so cursors page identically on SQLite and PostgreSQL.


def _key(name: str, length: int = 255, **kw: Any) -> sa.Column[Any]:
    return sa.Column(name, sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql"), **kw)


def _when(name: str, **kw: Any) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), **kw)


EVENTS = sa.Table(
    "applied_events",
    metadata,
    _key("event_id", 200, primary_key=True),
    sa.Column("type", sa.String(200), nullable=False),
    _key("subject", 1100, nullable=True),
    _when("time", nullable=False),
    _when("applied_at", nullable=True, comment="When the catalog applied the event (UTC); NULL before migration 0003."),
)

MANIFESTS = sa.Table(
    "manifests",
    metadata,
    _key("name", primary_key=True),
    sa.Column("sha256", sa.String(64)),
    sa.Column("state", sa.String(20), nullable=False, comment="accepted or rejected (latest event)."),
    sa.Column("prompt_count", sa.Integer),
    sa.Column("problems", sa.JSON),
    _when("updated_at", nullable=False),
)

PROMPTS = sa.Table(
    "prompt_versions",
    metadata,
    _key("prompt_id", 128, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("previous_version", sa.Integer),
    _key("manifest", nullable=True),
    sa.Column("series", sa.String(255)),
    sa.Column("scenario", sa.String(255), nullable=False),
    sa.Column("variant", sa.Integer, nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Column("fps", sa.Float, nullable=False),
    sa.Column("target_frames", sa.Integer, nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("mode", sa.String(40), nullable=False),
    sa.Column("risk_level", sa.String(100)),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("upsampled", sa.Boolean, nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    _when("created_at", nullable=False),
    sa.Index("ix_prompt_versions_manifest", "manifest"),
)

MANIFEST_PROMPTS = sa.Table(
    "manifest_prompts",
    metadata,
    _key("manifest", primary_key=True),
    _key("prompt_id", 128, primary_key=True),
)

PROMPT_TAGS = sa.Table(
    "prompt_tags",
    metadata,
    _key("prompt_id", 128, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    _key("tag", 200, primary_key=True),
    sa.Index("ix_prompt_tags_tag", "tag", "prompt_id", "version"),
)

REQUESTS = sa.Table(
    "generation_requests",
    metadata,
    _key("request_id", 128, primary_key=True),
    sa.Column("prompt_ids", sa.JSON, nullable=False),
    sa.Column("requested_by", sa.String(200), nullable=False),
    _when("requested_at", nullable=False),
)

RUNS = sa.Table(
    "runs",
    metadata,
    _key("run_id", 128, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False, comment="The run document's version this row shows."),
    _key("request_id", 128, nullable=False),
    _key("prompt_id", 128, nullable=False),
    sa.Column("prompt_version", sa.Integer, nullable=False),
    sa.Column("plan_id", sa.String(128), nullable=False),
    sa.Column("state", sa.String(40), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("requested_by", sa.String(200), nullable=False),
    _key("asset_id", 128, nullable=True),
    sa.Column("error", sa.Text),
    sa.Column("record", sa.JSON, nullable=False),
    _when("created_at", nullable=False),
    _when("updated_at", nullable=False),
    sa.Index("ix_runs_state", "state"),
    sa.Index("ix_runs_prompt", "prompt_id", "prompt_version"),
)

JOBS = sa.Table(
    "jobs",
    metadata,
    _key("job_id", 128, primary_key=True),
    _key("run_id", 128, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("state", sa.String(40), nullable=False),
    sa.Column("phase", sa.String(40)),
    sa.Column("fraction", sa.Float),
    sa.Column("step", sa.Integer),
    sa.Column("steps", sa.Integer),
    sa.Column("runner", sa.String(200)),
    sa.Column("error", sa.Text),
    sa.Column("run_version", sa.Integer, comment="Version of the run record the state came from."),
    _when("progress_at", nullable=True),
    _when("updated_at", nullable=False),
    sa.Index("ix_jobs_run", "run_id"),
)

ASSETS = sa.Table(
    "assets",
    metadata,
    _key("asset_id", 128, primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False, server_default="video"),
    _key("run_id", 128, nullable=True),
    _key("prompt_id", 128, nullable=True),
    sa.Column("prompt_version", sa.Integer),
    sa.Column("attempt", sa.Integer),
    # Copied from the prompt version (either may arrive first): the filters are single-table.
    _key("manifest", nullable=True),
    _key("series", nullable=True),
    _key("scenario", nullable=True),
    sa.Column("variant", sa.Integer),
    _key("risk_level", 100, nullable=True),
    sa.Column("prompt", sa.Text),
    # From video.ready: the video, its plan and provenance.
    _key("model", 200, nullable=True),
    sa.Column("duration_s", sa.Float),
    sa.Column("fps", sa.Float),
    sa.Column("frames", sa.Integer),
    sa.Column("width", sa.Integer),
    sa.Column("height", sa.Integer),
    sa.Column("video", sa.JSON),
    sa.Column("plan", sa.JSON),
    sa.Column("provenance", sa.JSON),
    _key("request_id", 128, nullable=True),
    sa.Column("requested_by", sa.String(200)),
    # From the latest QA verdict (a later attempt replaces an earlier one).
    sa.Column("qa_status", sa.String(20), nullable=False, server_default="pending"),
    sa.Column("qa_attempt", sa.Integer),
    _when("qa_checked_at", nullable=True),
    sa.Column("checker_version", sa.String(100)),
    sa.Column("findings", sa.JSON),
    sa.Column("failed_checks", sa.JSON),
    sa.Column("screenshots", sa.JSON),
    sa.Column("contact_sheet", sa.JSON),
    # Ratings, kept up to date from the ratings table.
    sa.Column("rating", sa.Float),
    sa.Column("ratings", sa.Integer, nullable=False, server_default="0"),
    _when("created_at", nullable=False),
    sa.Index("ix_assets_created", "created_at", "asset_id"),
    sa.Index("ix_assets_series_created", "series", "created_at", "asset_id"),
    sa.Index("ix_assets_scenario_created", "scenario", "created_at", "asset_id"),
    sa.Index("ix_assets_qa_created", "qa_status", "created_at", "asset_id"),
    sa.Index("ix_assets_manifest", "manifest", "qa_status"),
    sa.Index("ix_assets_prompt", "prompt_id", "prompt_version"),
    sa.Index("ix_assets_model_created", "model", "created_at", "asset_id"),
    sa.Index("ix_assets_risk", "risk_level"),
)

AUGMENTATIONS = sa.Table(
    "augmentations",
    metadata,
    _key("augmentation_id", 128, primary_key=True),
    sa.Column("state", sa.String(40), nullable=False),
    sa.Column("input_uri", sa.String(1200), nullable=False),
    _key("asset_id", 128, nullable=True),
    sa.Column("record", sa.JSON, nullable=False),
    _when("updated_at", nullable=False),
)

RATINGS = sa.Table(
    "ratings",
    metadata,
    _key("asset_id", 128, primary_key=True),
    _key("rater", 200, primary_key=True),
    sa.Column("rating", sa.Integer, nullable=False),
    _when("rated_at", nullable=False),
)

NOTES = sa.Table(
    "notes",
    metadata,
    _key("note_id", 128, primary_key=True),
    _key("asset_id", 128, nullable=False),
    sa.Column("author", sa.String(200), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    _when("noted_at", nullable=False),
    sa.Index("ix_notes_asset", "asset_id", "noted_at"),
)

EXPORTS = sa.Table(
    "exports",
    metadata,
    _key("export_id", 128, primary_key=True),
    sa.Column("format", sa.String(40), nullable=False),
    sa.Column("destination", sa.String(2048), nullable=False),
    sa.Column("selection", sa.Text, nullable=False),
    sa.Column("samples", sa.Integer, nullable=False),
    sa.Column("manifest_sha256", sa.String(64), nullable=False),
    _when("exported_at", nullable=False),
)

EDGES = sa.Table(
    "lineage_edges",
    metadata,
    _key("parent_kind", 40, primary_key=True),
    _key("parent_id", 1100, primary_key=True),
    _key("child_kind", 40, primary_key=True),
    _key("child_id", 1100, primary_key=True),
    sa.Column("relation", sa.String(40), nullable=False),
    sa.Index("ix_lineage_child", "child_kind", "child_id"),
)

#: Indexes a migration creates only where the database supports them (PostgreSQL's trigram index
#: for text search); not declared above, so comparisons of the schema with this module skip them.
DATABASE_ONLY_INDEXES = frozenset({"ix_assets_prompt_trgm"})


def declared(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:  # noqa: ARG001
    """Alembic's ``include_object`` hook: everything but the database-only indexes."""
    return not (type_ == "index" and name in DATABASE_ONLY_INDEXES)


#: Every read-model table, children first (the order a rebuild empties them in).
ALL_TABLES: tuple[sa.Table, ...] = (
    EDGES,
    EXPORTS,
    NOTES,
    RATINGS,
    AUGMENTATIONS,
    ASSETS,
    JOBS,
    RUNS,
    REQUESTS,
    PROMPT_TAGS,
    MANIFEST_PROMPTS,
    PROMPTS,
    MANIFESTS,
    EVENTS,
)
