"""Executes :mod:`worldmill.catalog.projection` changes on a connection, the same on SQLite and PostgreSQL.

Upserts are ``INSERT … ON CONFLICT (key) DO UPDATE SET <the event's columns> WHERE <guard>``, a
statement both databases have with the same meaning; the guard is the ``newer`` rule. An event is
applied at most once: its id goes into ``applied_events`` (with ``applied_at``, when the catalog
applied it) in the same transaction as its changes, with ``ON CONFLICT DO NOTHING … RETURNING``;
when that returns nothing the event was applied before and the transaction changes nothing else.

Statements are built once per shape (dialect, table, key columns, columns set, guard) and executed
with the values as parameters: building SQLAlchemy constructs per event cost more than the
database's own work (bench/catalog.py).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from worldmill.catalog.projection import (
    PROMPT_FIELDS_ON_ASSETS,
    Change,
    Delete,
    Edge,
    FillAssets,
    RefreshRating,
    Upsert,
)
from worldmill.catalog.tables import ASSETS, EDGES, EVENTS, PROMPTS, RATINGS, metadata
from worldmill.contracts.envelope import EnvelopeAttributes


def _insert(dialect: str, table: sa.Table) -> Any:
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def _utc(value: Any) -> Any:
    """Times are stored in UTC (SQLite keeps no offset, so every writer must agree)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value


@functools.cache
def _mark_statement(dialect: str) -> Any:
    return (
        _insert(dialect, EVENTS)
        .values(
            event_id=sa.bindparam("event_id"),
            type=sa.bindparam("type"),
            subject=sa.bindparam("subject"),
            time=sa.bindparam("time", type_=EVENTS.c.time.type),
            applied_at=sa.bindparam("applied_at", type_=EVENTS.c.applied_at.type),
        )
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(EVENTS.c.event_id)
    )


def mark_applied(conn: Connection, attrs: EnvelopeAttributes) -> bool:
    """Record the event as applied, and when (now, UTC); False when it was applied before (then apply nothing)."""
    params = {
        "event_id": attrs.id,
        "type": attrs.type,
        "subject": attrs.subject,
        "time": _utc(attrs.time),
        "applied_at": datetime.now(UTC),
    }
    return conn.execute(_mark_statement(conn.dialect.name), params).first() is not None


def apply_changes(conn: Connection, changes: list[Change]) -> None:
    """Execute every change, in order, on ``conn`` (inside the caller's transaction)."""
    for change in changes:
        if isinstance(change, Upsert):
            _upsert(conn, change)
        elif isinstance(change, Edge):
            _edge(conn, change)
        elif isinstance(change, FillAssets):
            _fill_assets(conn, change)
        elif isinstance(change, Delete):
            _delete(conn, change)
        else:
            _refresh_rating(conn, change)


@functools.cache
def _upsert_statement(  # noqa: PLR0917 - the cache key is the statement's whole shape
    dialect: str,
    table_name: str,
    keys: tuple[str, ...],
    updated: tuple[str, ...],
    inserted: tuple[str, ...],
    newer: str | None,
) -> Any:
    table = metadata.tables[table_name]
    columns = (*keys, *updated, *inserted)
    stmt = _insert(dialect, table).values({c: sa.bindparam(c, type_=table.c[c].type) for c in columns})
    if not updated:
        return stmt.on_conflict_do_nothing(index_elements=list(keys))
    where = None
    if newer is not None:
        column = table.c[newer]
        where = sa.or_(column.is_(None), column < stmt.excluded[newer])
    return stmt.on_conflict_do_update(
        index_elements=list(keys), set_={k: stmt.excluded[k] for k in updated}, where=where
    )


def _upsert(conn: Connection, u: Upsert) -> None:
    inserted = tuple(k for k in u.insert_only if k not in u.values)
    stmt = _upsert_statement(conn.dialect.name, u.table, tuple(u.key), tuple(u.values), inserted, u.newer)
    params = {k: _utc(v) for k, v in {**u.insert_only, **u.values, **u.key}.items()}
    conn.execute(stmt, params)


def _edge(conn: Connection, e: Edge) -> None:
    stmt = _upsert_statement(
        conn.dialect.name, EDGES.name, ("parent_kind", "parent_id", "child_kind", "child_id"), (), ("relation",), None
    )
    conn.execute(
        stmt,
        {
            "parent_kind": e.parent_kind,
            "parent_id": e.parent_id,
            "child_kind": e.child_kind,
            "child_id": e.child_id,
            "relation": e.relation,
        },
    )


_PROMPT_FIELDS = sa.select(*(PROMPTS.c[name] for name in PROMPT_FIELDS_ON_ASSETS)).where(
    PROMPTS.c.prompt_id == sa.bindparam("pid"), PROMPTS.c.version == sa.bindparam("version")
)
_FILL = (
    sa.update(ASSETS)
    .where(ASSETS.c.prompt_id == sa.bindparam("pid"), ASSETS.c.prompt_version == sa.bindparam("version"))
    .values({name: sa.bindparam(f"v_{name}", type_=ASSETS.c[name].type) for name in PROMPT_FIELDS_ON_ASSETS})
)
_RATING = sa.select(sa.func.avg(RATINGS.c.rating), sa.func.count()).where(RATINGS.c.asset_id == sa.bindparam("aid"))
_SET_RATING = (
    sa.update(ASSETS)
    .where(ASSETS.c.asset_id == sa.bindparam("aid"))
    .values(rating=sa.bindparam("mean", type_=ASSETS.c.rating.type), ratings=sa.bindparam("n", type_=sa.Integer))
)


@functools.cache
def _delete_statement(table_name: str, columns: tuple[str, ...]) -> Any:
    table = metadata.tables[table_name]
    return sa.delete(table).where(*(table.c[c] == sa.bindparam(f"w_{c}", type_=table.c[c].type) for c in columns))


def _delete(conn: Connection, d: Delete) -> None:
    conn.execute(_delete_statement(d.table, tuple(d.where)), {f"w_{k}": v for k, v in d.where.items()})


def _fill_assets(conn: Connection, f: FillAssets) -> None:
    row = conn.execute(_PROMPT_FIELDS, {"pid": f.prompt_id, "version": f.version}).first()
    if row is not None:
        values = {f"v_{k}": v for k, v in row._mapping.items()}
        conn.execute(_FILL, {"pid": f.prompt_id, "version": f.version, **values})


def _refresh_rating(conn: Connection, r: RefreshRating) -> None:
    mean, count = conn.execute(_RATING, {"aid": r.asset_id}).one()
    rating = round(float(mean), 4) if mean is not None else None
    conn.execute(_SET_RATING, {"aid": r.asset_id, "mean": rating, "n": int(count)})
