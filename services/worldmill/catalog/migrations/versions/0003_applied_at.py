"""When the catalog applied each event: ``applied_events.applied_at`` (UTC).

Set by every apply from now on; rows applied before this migration keep NULL (their time was not
recorded). Lets a reader see the ingest delay (``applied_at`` − the event's own ``time``) without
polling the read model.

Revision ID: 0003_applied_at
Revises: 0002_search_indexes
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_applied_at"
down_revision: str | None = "0002_search_indexes"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the nullable ``applied_at`` column (no rewrite of existing rows on either database)."""
    op.add_column(
        "applied_events",
        sa.Column(
            "applied_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When the catalog applied the event (UTC); NULL before migration 0003.",
        ),
    )


def downgrade() -> None:
    """Drop it again."""
    with op.batch_alter_table("applied_events") as batch:
        batch.drop_column("applied_at")
