"""Executes :mod:`worldmill.catalog.projection` changes on a connection, the same on SQLite and PostgreSQL.

Upserts are ``INSERT … ON CONFLICT (key) DO UPDATE SET <the event's columns> WHERE <guard>``, a
statement both databases have with the same meaning; the guard is the ``newer`` rule. An event is
applied at most once: its id goes into ``applied_events`` in the same transaction as its changes,
with ``ON CONFLICT DO NOTHING``; when that inserts nothing the event was applied before and the
transaction changes nothing else.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from worldmill.catalog.projection import (
    PROMPT_FIELDS_ON_ASSETS,
    Change,
    Edge,
    FillAssets,
    RefreshRating,
    Upsert,
)
from worldmill.catalog.tables import ASSETS, EDGES, EVENTS, PROMPTS, RATINGS, metadata
from worldmill.contracts.envelope import EnvelopeAttributes


def _insert(conn: Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def mark_applied(conn: Connection, attrs: EnvelopeAttributes) -> bool:
    """Record the event as applied; False when it was applied before (then apply nothing)."""
    stmt = (
        _insert(conn, EVENTS)
        .values(event_id=attrs.id, type=attrs.type, subject=attrs.subject, time=attrs.time)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(EVENTS.c.event_id)
    )
    return conn.execute(stmt).first() is not None


def apply_changes(conn: Connection, changes: list[Change]) -> None:
    """Execute every change, in order, on ``conn`` (inside the caller's transaction)."""
    for change in changes:
        if isinstance(change, Upsert):
            _upsert(conn, change)
        elif isinstance(change, Edge):
            _edge(conn, change)
        elif isinstance(change, FillAssets):
            _fill_assets(conn, change)
        else:
            _refresh_rating(conn, change)


def _upsert(conn: Connection, u: Upsert) -> None:
    table = metadata.tables[u.table]
    stmt = _insert(conn, table).values({**u.insert_only, **u.values, **u.key})
    if not u.values:
        conn.execute(stmt.on_conflict_do_nothing(index_elements=list(u.key)))
        return
    where = None
    if u.newer is not None:
        column = table.c[u.newer]
        where = sa.or_(column.is_(None), column < stmt.excluded[u.newer])
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=list(u.key), set_={k: stmt.excluded[k] for k in u.values}, where=where
        )
    )


def _edge(conn: Connection, e: Edge) -> None:
    stmt = _insert(conn, EDGES).values(
        parent_kind=e.parent_kind,
        parent_id=e.parent_id,
        child_kind=e.child_kind,
        child_id=e.child_id,
        relation=e.relation,
    )
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["parent_kind", "parent_id", "child_kind", "child_id"]))


def _fill_assets(conn: Connection, f: FillAssets) -> None:
    p = sa.select(*(PROMPTS.c[name] for name in PROMPT_FIELDS_ON_ASSETS)).where(
        PROMPTS.c.prompt_id == f.prompt_id, PROMPTS.c.version == f.version
    )
    row = conn.execute(p).first()
    if row is None:
        return
    conn.execute(
        sa.update(ASSETS)
        .where(ASSETS.c.prompt_id == f.prompt_id, ASSETS.c.prompt_version == f.version)
        .values(dict(row._mapping))
    )


def _refresh_rating(conn: Connection, r: RefreshRating) -> None:
    mean, count = conn.execute(
        sa.select(sa.func.avg(RATINGS.c.rating), sa.func.count()).where(RATINGS.c.asset_id == r.asset_id)
    ).one()
    conn.execute(
        sa.update(ASSETS)
        .where(ASSETS.c.asset_id == r.asset_id)
        .values(rating=round(float(mean), 4) if mean is not None else None, ratings=int(count))
    )
