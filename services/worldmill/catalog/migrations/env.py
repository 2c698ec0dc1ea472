"""Alembic environment: runs on the connection the catalog hands over (no alembic.ini, no URL here)."""

from __future__ import annotations

from alembic import context

from worldmill.catalog.tables import declared, metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,
    compare_type=True,
    include_object=declared,
)
with context.begin_transaction():
    context.run_migrations()
