"""The catalog's first schema: events applied, manifests, prompt versions, runs, jobs, assets, lineage.

Revision ID: 0001_catalog
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_catalog"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create every table of the read model."""
    op.create_table(
        "applied_events",
        sa.Column(
            "event_id",
            sa.String(length=200).with_variant(sa.String(length=200, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column(
            "subject",
            sa.String(length=1100).with_variant(sa.String(length=1100, collation="C"), "postgresql"),
            nullable=True,
        ),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_table(
        "assets",
        sa.Column(
            "asset_id",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=20), server_default="video", nullable=False),
        sa.Column(
            "run_id",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "prompt_id",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=True,
        ),
        sa.Column("prompt_version", sa.Integer(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column(
            "manifest",
            sa.String(length=255).with_variant(sa.String(length=255, collation="C"), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "series",
            sa.String(length=255).with_variant(sa.String(length=255, collation="C"), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "scenario",
            sa.String(length=255).with_variant(sa.String(length=255, collation="C"), "postgresql"),
            nullable=True,
        ),
        sa.Column("variant", sa.Integer(), nullable=True),
        sa.Column(
            "risk_level",
            sa.String(length=100).with_variant(sa.String(length=100, collation="C"), "postgresql"),
            nullable=True,
        ),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column(
            "model",
            sa.String(length=200).with_variant(sa.String(length=200, collation="C"), "postgresql"),
            nullable=True,
        ),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("fps", sa.Float(), nullable=True),
        sa.Column("frames", sa.Integer(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("video", sa.JSON(), nullable=True),
        sa.Column("plan", sa.JSON(), nullable=True),
        sa.Column("provenance", sa.JSON(), nullable=True),
        sa.Column(
            "request_id",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=True,
        ),
        sa.Column("requested_by", sa.String(length=200), nullable=True),
        sa.Column("qa_status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("qa_attempt", sa.Integer(), nullable=True),
        sa.Column("qa_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checker_version", sa.String(length=100), nullable=True),
        sa.Column("findings", sa.JSON(), nullable=True),
        sa.Column("failed_checks", sa.JSON(), nullable=True),
        sa.Column("screenshots", sa.JSON(), nullable=True),
        sa.Column("contact_sheet", sa.JSON(), nullable=True),
        sa.Column("rating", sa.Float(), nullable=True),
        sa.Column("ratings", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("asset_id"),
    )
    op.create_index("ix_assets_created", "assets", ["created_at", "asset_id"], unique=False)
    op.create_index("ix_assets_manifest", "assets", ["manifest", "qa_status"], unique=False)
    op.create_index("ix_assets_model", "assets", ["model"], unique=False)
    op.create_index("ix_assets_prompt", "assets", ["prompt_id", "prompt_version"], unique=False)
    op.create_index("ix_assets_qa_created", "assets", ["qa_status", "created_at", "asset_id"], unique=False)
    op.create_index("ix_assets_risk", "assets", ["risk_level"], unique=False)
    op.create_index("ix_assets_scenario_created", "assets", ["scenario", "created_at", "asset_id"], unique=False)
    op.create_index("ix_assets_series_created", "assets", ["series", "created_at", "asset_id"], unique=False)
    op.create_table(
        "augmentations",
        sa.Column(
            "augmentation_id",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("state", sa.String(length=40), nullable=False),
        sa.Column("input_uri", sa.String(length=1200), nullable=False),
        sa.Column(
            "asset_id",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=True,
        ),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("augmentation_id"),
    )
    op.create_table(
        "exports",
        sa.Column(
            "export_id",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("format", sa.String(length=40), nullable=False),
        sa.Column("destination", sa.String(length=2048), nullable=False),
        sa.Column("selection", sa.Text(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.Column("exported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("export_id"),
    )
    op.create_table(
        "generation_requests",
        sa.Column(
            "request_id",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("prompt_ids", sa.JSON(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_table(
        "jobs",
        sa.Column(
            "job_id",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "run_id",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=40), nullable=False),
        sa.Column("phase", sa.String(length=40), nullable=True),
        sa.Column("fraction", sa.Float(), nullable=True),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("steps", sa.Integer(), nullable=True),
        sa.Column("runner", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("run_version", sa.Integer(), nullable=True, comment="Version of the run record the state came from."),
        sa.Column("progress_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.create_index("ix_jobs_run", "jobs", ["run_id"], unique=False)
    op.create_table(
        "lineage_edges",
        sa.Column(
            "parent_kind",
            sa.String(length=40).with_variant(sa.String(length=40, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "parent_id",
            sa.String(length=1100).with_variant(sa.String(length=1100, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "child_kind",
            sa.String(length=40).with_variant(sa.String(length=40, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "child_id",
            sa.String(length=1100).with_variant(sa.String(length=1100, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("relation", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("parent_kind", "parent_id", "child_kind", "child_id"),
    )
    op.create_index("ix_lineage_child", "lineage_edges", ["child_kind", "child_id"], unique=False)
    op.create_table(
        "manifest_prompts",
        sa.Column(
            "manifest",
            sa.String(length=255).with_variant(sa.String(length=255, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "prompt_id",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("manifest", "prompt_id"),
    )
    op.create_table(
        "manifests",
        sa.Column(
            "name",
            sa.String(length=255).with_variant(sa.String(length=255, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False, comment="accepted or rejected (latest event)."),
        sa.Column("prompt_count", sa.Integer(), nullable=True),
        sa.Column("problems", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "notes",
        sa.Column(
            "note_id",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "asset_id",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("noted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("note_id"),
    )
    op.create_index("ix_notes_asset", "notes", ["asset_id", "noted_at"], unique=False)
    op.create_table(
        "prompt_tags",
        sa.Column(
            "prompt_id",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column(
            "tag",
            sa.String(length=200).with_variant(sa.String(length=200, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("prompt_id", "version", "tag"),
    )
    op.create_index("ix_prompt_tags_tag", "prompt_tags", ["tag", "prompt_id", "version"], unique=False)
    op.create_table(
        "prompt_versions",
        sa.Column(
            "prompt_id",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("previous_version", sa.Integer(), nullable=True),
        sa.Column(
            "manifest",
            sa.String(length=255).with_variant(sa.String(length=255, collation="C"), "postgresql"),
            nullable=True,
        ),
        sa.Column("series", sa.String(length=255), nullable=True),
        sa.Column("scenario", sa.String(length=255), nullable=False),
        sa.Column("variant", sa.Integer(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("fps", sa.Float(), nullable=False),
        sa.Column("target_frames", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("mode", sa.String(length=40), nullable=False),
        sa.Column("risk_level", sa.String(length=100), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("upsampled", sa.Boolean(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("prompt_id", "version"),
    )
    op.create_index("ix_prompt_versions_manifest", "prompt_versions", ["manifest"], unique=False)
    op.create_table(
        "ratings",
        sa.Column(
            "asset_id",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "rater",
            sa.String(length=200).with_variant(sa.String(length=200, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("rated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("asset_id", "rater"),
    )
    op.create_table(
        "runs",
        sa.Column(
            "run_id",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False, comment="The run document's version this row shows."),
        sa.Column(
            "request_id",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "prompt_id",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("prompt_version", sa.Integer(), nullable=False),
        sa.Column("plan_id", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=40), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column(
            "asset_id",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=True,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_index("ix_runs_prompt", "runs", ["prompt_id", "prompt_version"], unique=False)
    op.create_index("ix_runs_state", "runs", ["state"], unique=False)
    # ### end Alembic commands ###


def downgrade() -> None:
    """Drop every table (children first)."""
    op.drop_table("lineage_edges")
    op.drop_table("exports")
    op.drop_table("notes")
    op.drop_table("ratings")
    op.drop_table("augmentations")
    op.drop_table("assets")
    op.drop_table("jobs")
    op.drop_table("runs")
    op.drop_table("generation_requests")
    op.drop_table("prompt_tags")
    op.drop_table("manifest_prompts")
    op.drop_table("prompt_versions")
    op.drop_table("manifests")
    op.drop_table("applied_events")
