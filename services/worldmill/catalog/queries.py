"""Reads of the catalog database: search, detail, lineage, facets, queue status, a manifest's specs.

Every value a caller gives is a bound parameter. Results are plain row mappings; turning them into
contracts (with presigned links) is the service's job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from worldmill.catalog.search import LIKE_ESCAPE, AssetQuery, decode_cursor, encode_cursor, like_pattern
from worldmill.catalog.tables import (
    ASSETS,
    AUGMENTATIONS,
    EDGES,
    EVENTS,
    EXPORTS,
    JOBS,
    MANIFEST_PROMPTS,
    MANIFESTS,
    NOTES,
    PROMPT_TAGS,
    PROMPTS,
    RATINGS,
    REQUESTS,
    RUNS,
)
from worldmill.contracts.catalog import LineageEdge, LineageNode
from worldmill.contracts.generation import ACTIVE_STATES

#: Run states that are not final (the queue).
MAX_LINEAGE_NODES = 200
FACET_LIMIT = 200


def utc(value: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite hands back naive UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _time_param(conn: Connection, value: datetime) -> datetime:
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).replace(tzinfo=None) if conn.dialect.name == "sqlite" else aware


def _conditions(conn: Connection, q: AssetQuery) -> list[sa.ColumnElement[bool]]:
    a = ASSETS.c
    conds: list[sa.ColumnElement[bool]] = [a.video.is_not(None)]
    for name in ("series", "scenario", "risk_level", "model", "manifest", "qa_status", "kind"):
        value = getattr(q, name)
        if value is not None:
            conds.append(a[name] == value)
    for tag in q.tags:
        conds.append(
            sa.exists().where(
                PROMPT_TAGS.c.prompt_id == a.prompt_id,
                PROMPT_TAGS.c.version == a.prompt_version,
                PROMPT_TAGS.c.tag == tag,
            )
        )
    if q.q:
        conds.append(sa.func.lower(a.prompt).like(like_pattern(q.q), escape=LIKE_ESCAPE))
    if q.min_duration is not None:
        conds.append(a.duration_s >= q.min_duration)
    if q.max_duration is not None:
        conds.append(a.duration_s <= q.max_duration)
    if q.created_from is not None:
        conds.append(a.created_at >= _time_param(conn, q.created_from))
    if q.created_to is not None:
        conds.append(a.created_at <= _time_param(conn, q.created_to))
    if q.min_rating is not None:
        conds.append(a.rating >= q.min_rating)
    return conds


def search(conn: Connection, q: AssetQuery, *, count: bool = False) -> tuple[list[RowMapping], str | None, int | None]:
    """One page of matching assets, newest first, the next cursor, and (if asked) how many match."""
    a = ASSETS.c
    conds = _conditions(conn, q)
    total = conn.execute(sa.select(sa.func.count()).select_from(ASSETS).where(*conds)).scalar_one() if count else None
    if q.cursor:
        when, asset_id = decode_cursor(q.cursor)
        t = _time_param(conn, when)
        conds.append(sa.or_(a.created_at < t, sa.and_(a.created_at == t, a.asset_id < asset_id)))
    stmt = sa.select(ASSETS).where(*conds).order_by(a.created_at.desc(), a.asset_id.desc()).limit(q.limit + 1)
    rows = list(conn.execute(stmt).mappings())
    nxt = None
    if len(rows) > q.limit:
        rows = rows[: q.limit]
        last = rows[-1]
        nxt = encode_cursor(utc(last["created_at"]) or datetime.min.replace(tzinfo=UTC), last["asset_id"])
    return rows, nxt, total


def asset(conn: Connection, asset_id: str) -> RowMapping | None:
    """One asset row (video known or not)."""
    return conn.execute(sa.select(ASSETS).where(ASSETS.c.asset_id == asset_id)).mappings().first()


def tags_of(conn: Connection, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], tuple[str, ...]]:
    """Tags of these prompt versions."""
    if not keys:
        return {}
    t = PROMPT_TAGS.c
    rows = conn.execute(
        sa.select(t.prompt_id, t.version, t.tag)
        .where(sa.tuple_(t.prompt_id, t.version).in_(list(keys)))
        .order_by(t.tag)
    )
    out: dict[tuple[str, int], list[str]] = {}
    for pid, version, tag in rows:
        out.setdefault((pid, version), []).append(tag)
    return {k: tuple(v) for k, v in out.items()}


def ratings_by_rater(conn: Connection, asset_id: str) -> dict[str, int]:
    """Each rater's latest rating of an asset."""
    r = RATINGS.c
    return {
        str(rater): int(rating)
        for rater, rating in conn.execute(sa.select(r.rater, r.rating).where(r.asset_id == asset_id))
    }


def notes(conn: Connection, asset_id: str) -> list[RowMapping]:
    """Notes on an asset, oldest first."""
    n = NOTES.c
    return list(conn.execute(sa.select(NOTES).where(n.asset_id == asset_id).order_by(n.noted_at, n.note_id)).mappings())


def facets(conn: Connection) -> dict[str, list[str]]:
    """The values each filter can take (for the gallery's dropdowns)."""
    a = ASSETS.c
    out: dict[str, list[str]] = {}
    for name in ("series", "scenario", "risk_level", "model", "manifest", "qa_status", "kind"):
        col = a[name]
        stmt = sa.select(col).where(col.is_not(None), a.video.is_not(None)).distinct().order_by(col).limit(FACET_LIMIT)
        out[name] = [str(v) for v in conn.execute(stmt).scalars()]
    tags = sa.select(PROMPT_TAGS.c.tag).distinct().order_by(PROMPT_TAGS.c.tag).limit(FACET_LIMIT)
    out["tags"] = list(conn.execute(tags).scalars())
    return out


# -- lineage ------------------------------------------------------------------------------------


def lineage(conn: Connection, kind: str, node_id: str) -> tuple[list[LineageNode], list[LineageEdge]]:
    """Every ancestor and descendant of a node, with whether each is known to the catalog yet."""
    e = EDGES.c
    edges: dict[tuple[str, str, str, str], LineageEdge] = {}
    seen: set[tuple[str, str]] = {(kind, node_id)}
    for direction in ("up", "down"):
        frontier = [(kind, node_id)]
        while frontier and len(seen) < MAX_LINEAGE_NODES:
            nxt: list[tuple[str, str]] = []
            for k, i in frontier:
                if direction == "up":
                    stmt = sa.select(EDGES).where(e.child_kind == k, e.child_id == i)
                else:
                    stmt = sa.select(EDGES).where(e.parent_kind == k, e.parent_id == i)
                for row in conn.execute(stmt).mappings():
                    edge = LineageEdge(**dict(row))
                    edges[(edge.parent_kind, edge.parent_id, edge.child_kind, edge.child_id)] = edge
                    other = (
                        (edge.parent_kind, edge.parent_id) if direction == "up" else (edge.child_kind, edge.child_id)
                    )
                    if other not in seen:
                        seen.add(other)
                        nxt.append(other)
            frontier = nxt
    nodes = [_node(conn, k, i) for k, i in sorted(seen)]
    return nodes, sorted(edges.values(), key=lambda x: (x.parent_kind, x.parent_id, x.child_kind, x.child_id))


def _node(conn: Connection, kind: str, node_id: str) -> LineageNode:
    label, known = "", True
    if kind == "manifest":
        known = _exists(conn, MANIFESTS, MANIFESTS.c.name == node_id)
    elif kind == "spec":
        pid, _, version = node_id.rpartition("@v")
        number = int(version) if version.isdigit() else -1
        row = conn.execute(
            sa.select(PROMPTS.c.scenario, PROMPTS.c.upsampled).where(
                PROMPTS.c.prompt_id == pid, PROMPTS.c.version == number
            )
        ).first()
        known = row is not None
        label = f"{row.scenario}{' (upsampled)' if row.upsampled else ''}" if row else ""
    elif kind == "prompt":
        known = _exists(conn, PROMPTS, PROMPTS.c.prompt_id == node_id)
    elif kind in ("plan", "run", "request"):
        column = {"plan": RUNS.c.plan_id, "run": RUNS.c.run_id, "request": REQUESTS.c.request_id}[kind]
        if kind == "run":
            state = conn.execute(sa.select(RUNS.c.state).where(column == node_id)).scalar()
            known, label = state is not None, state or ""
        elif kind == "plan":
            known = _exists(conn, RUNS, column == node_id)
        else:  # a request made over HTTP is known through its runs; another system's through its event
            known = _exists(conn, REQUESTS, column == node_id) or _exists(conn, RUNS, RUNS.c.request_id == node_id)
    elif kind == "job":
        row = conn.execute(sa.select(JOBS.c.state, JOBS.c.runner).where(JOBS.c.job_id == node_id)).first()
        known, label = (
            row is not None,
            (f"{row.state} on {row.runner}" if row and row.runner else row.state if row else ""),
        )
    elif kind == "asset":
        row = conn.execute(sa.select(ASSETS.c.qa_status, ASSETS.c.video).where(ASSETS.c.asset_id == node_id)).first()
        known, label = bool(row and row.video is not None), (row.qa_status if row else "")
    elif kind == "qa":
        asset_id, _, attempt = node_id.rpartition("#qa")
        row = conn.execute(
            sa.select(ASSETS.c.qa_status, ASSETS.c.qa_attempt).where(ASSETS.c.asset_id == asset_id)
        ).first()
        known = bool(row and row.qa_attempt is not None)
        label = row.qa_status if row and str(row.qa_attempt) == attempt else ("superseded" if known else "")
    elif kind == "dataset":
        fmt = conn.execute(sa.select(EXPORTS.c.format).where(EXPORTS.c.export_id == node_id)).scalar()
        known, label = fmt is not None, fmt or ""
    elif kind == "augmentation":
        state = conn.execute(
            sa.select(AUGMENTATIONS.c.state).where(AUGMENTATIONS.c.augmentation_id == node_id)
        ).scalar()
        known, label = state is not None, state or ""
    return LineageNode(kind=kind, id=node_id, label=label, known=known)


def _exists(conn: Connection, table: sa.Table | Any, cond: sa.ColumnElement[bool]) -> bool:
    return conn.execute(sa.select(sa.literal(1)).select_from(table).where(cond).limit(1)).first() is not None


# -- runs ---------------------------------------------------------------------------------------


def run_counts(conn: Connection) -> dict[str, int]:
    """Runs per state."""
    r = RUNS.c
    return {str(state): int(n) for state, n in conn.execute(sa.select(r.state, sa.func.count()).group_by(r.state))}


def active_runs(conn: Connection, limit: int = 200) -> list[dict[str, Any]]:
    """Runs not finished, each with its current attempt's progress."""
    r = RUNS.c
    runs = list(
        conn.execute(
            sa.select(RUNS).where(r.state.in_(ACTIVE_STATES)).order_by(r.updated_at.desc(), r.run_id).limit(limit)
        ).mappings()
    )
    return [run_status(conn, row) for row in runs]


def run_status(conn: Connection, row: RowMapping | Mapping[str, Any]) -> dict[str, Any]:
    """A run row joined with its current attempt's job row."""
    j = JOBS.c
    job = (
        conn.execute(sa.select(JOBS).where(j.run_id == row["run_id"]).order_by(j.attempt.desc()).limit(1))
        .mappings()
        .first()
    )
    return {
        "run_id": row["run_id"],
        "request_id": row["request_id"],
        "prompt_id": row["prompt_id"],
        "state": row["state"],
        "attempt": job["attempt"] if job else row["attempts"],
        "phase": job["phase"] if job else None,
        "fraction": job["fraction"] if job else None,
        "runner": job["runner"] if job else None,
        "error": row["error"],
        "asset_id": row["asset_id"],
        "updated_at": utc(row["updated_at"]),
    }


def run_by_id(conn: Connection, run_id: str) -> dict[str, Any] | None:
    """One run's status, or None."""
    row = conn.execute(sa.select(RUNS).where(RUNS.c.run_id == run_id)).mappings().first()
    return run_status(conn, row) if row else None


def progress_of_job(conn: Connection, run_id: str) -> dict[str, Any] | None:
    """A run's status when only its job has been heard of (progress before run.updated)."""
    found = run_by_id(conn, run_id)
    if found is not None:
        return found
    j = JOBS.c
    job = conn.execute(sa.select(JOBS).where(j.run_id == run_id).order_by(j.attempt.desc()).limit(1)).mappings().first()
    if job is None:
        return None
    return {
        "run_id": run_id,
        "state": "running",
        "attempt": job["attempt"],
        "phase": job["phase"],
        "fraction": job["fraction"],
        "runner": job["runner"],
        "updated_at": utc(job["progress_at"]),
    }


# -- manifests ----------------------------------------------------------------------------------


def manifest(conn: Connection, name: str) -> RowMapping | None:
    """A manifest row."""
    return conn.execute(sa.select(MANIFESTS).where(MANIFESTS.c.name == name)).mappings().first()


def manifest_specs(conn: Connection, name: str) -> list[RowMapping]:
    """The latest version of every spec of a manifest, in prompt id order."""
    p, mp = PROMPTS.c, MANIFEST_PROMPTS.c
    latest = (
        sa.select(p.prompt_id, sa.func.max(p.version).label("version"))
        .where(p.prompt_id.in_(sa.select(mp.prompt_id).where(mp.manifest == name)))
        .group_by(p.prompt_id)
        .subquery()
    )
    stmt = (
        sa.select(PROMPTS)
        .join(latest, sa.and_(p.prompt_id == latest.c.prompt_id, p.version == latest.c.version))
        .order_by(p.prompt_id)
    )
    return list(conn.execute(stmt).mappings())


def assets_of(conn: Connection, prompt_ids: Sequence[str]) -> list[RowMapping]:
    """Every asset made from these specs (any version), oldest first."""
    if not prompt_ids:
        return []
    a = ASSETS.c
    stmt = sa.select(ASSETS).where(a.prompt_id.in_(list(prompt_ids))).order_by(a.created_at, a.asset_id)
    return list(conn.execute(stmt).mappings())


def runs_of(conn: Connection, prompt_ids: Sequence[str]) -> list[RowMapping]:
    """Every run of these specs, oldest first."""
    if not prompt_ids:
        return []
    r = RUNS.c
    return list(
        conn.execute(
            sa.select(RUNS).where(r.prompt_id.in_(list(prompt_ids))).order_by(r.created_at, r.run_id)
        ).mappings()
    )


def counts(conn: Connection) -> dict[str, int]:
    """How many of each thing the catalog holds."""

    def n(table: sa.Table, *conds: sa.ColumnElement[bool]) -> int:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(*conds)).scalar_one())

    a = ASSETS.c
    return {
        "events": n(EVENTS),
        "manifests": n(MANIFESTS),
        "prompts": n(PROMPTS),
        "runs": n(RUNS),
        "assets": n(ASSETS, a.video.is_not(None)),
        "passed": n(ASSETS, a.video.is_not(None), a.qa_status == "passed"),
        "failed": n(ASSETS, a.video.is_not(None), a.qa_status == "failed"),
        "exports": n(EXPORTS),
    }


# -- deletions ---------------------------------------------------------------------------------


def assets_by_ids(conn: Connection, asset_ids: Sequence[str]) -> list[RowMapping]:
    """The asset rows of these ids (those the catalog holds)."""
    if not asset_ids:
        return []
    return list(conn.execute(sa.select(ASSETS).where(ASSETS.c.asset_id.in_(list(asset_ids)))).mappings())


def runs_by_ids(conn: Connection, run_ids: Sequence[str]) -> list[RowMapping]:
    """The run rows of these ids."""
    if not run_ids:
        return []
    return list(conn.execute(sa.select(RUNS).where(RUNS.c.run_id.in_(list(run_ids)))).mappings())


def assets_of_runs(conn: Connection, run_ids: Sequence[str]) -> list[RowMapping]:
    """Every asset these runs made, oldest first."""
    if not run_ids:
        return []
    a = ASSETS.c
    stmt = sa.select(ASSETS).where(a.run_id.in_(list(run_ids))).order_by(a.created_at, a.asset_id)
    return list(conn.execute(stmt).mappings())


def known_prompts(conn: Connection, prompt_ids: Sequence[str]) -> set[str]:
    """Which of these spec ids the catalog holds (any version)."""
    if not prompt_ids:
        return set()
    stmt = sa.select(PROMPTS.c.prompt_id).where(PROMPTS.c.prompt_id.in_(list(prompt_ids))).distinct()
    return set(conn.execute(stmt).scalars())


def exports_holding(conn: Connection, asset_ids: Sequence[str]) -> dict[str, list[str]]:
    """asset id → the exports that hold it (lineage edges asset → dataset)."""
    if not asset_ids:
        return {}
    e = EDGES.c
    stmt = (
        sa.select(e.parent_id, e.child_id)
        .where(e.parent_kind == "asset", e.parent_id.in_(list(asset_ids)), e.child_kind == "dataset")
        .order_by(e.parent_id, e.child_id)
    )
    out: dict[str, list[str]] = {}
    for asset_id, export_id in conn.execute(stmt):
        out.setdefault(asset_id, []).append(export_id)
    return out


def all_assets(conn: Connection) -> list[RowMapping]:
    """Every asset row (for ``verify``), in id order."""
    return list(conn.execute(sa.select(ASSETS).order_by(ASSETS.c.asset_id)).mappings())


def all_run_ids(conn: Connection) -> dict[str, str]:
    """run id → state, every run."""
    return {str(r): str(s) for r, s in conn.execute(sa.select(RUNS.c.run_id, RUNS.c.state))}
