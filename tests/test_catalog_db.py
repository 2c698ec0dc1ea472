"""The catalog's read model on SQLite and PostgreSQL: idempotent, order-independent, safe to search."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tests.helpers.catalog_events import attrs_and_message, dataset
from worldmill.catalog import queries
from worldmill.catalog.database import CatalogDatabase
from worldmill.catalog.search import AssetQuery
from worldmill.catalog.tables import ALL_TABLES, declared, metadata
from worldmill.runtime.errors import InvalidInputError


@pytest.fixture
async def db(store_url: str) -> AsyncIterator[CatalogDatabase]:
    database = CatalogDatabase(store_url)
    await database.open()
    try:
        yield database
    finally:
        await database.close()


#: Columns that say when the catalog did something, not what the events say: left out of a dump.
WHEN_APPLIED = {("applied_events", "applied_at")}


async def dump(db: CatalogDatabase) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted (what a rebuild must reproduce)."""

    def rows(conn: sa.Connection, t: sa.Table) -> list[tuple[Any, ...]]:
        columns = [c for c in t.columns if (t.name, c.name) not in WHEN_APPLIED]
        return sorted((tuple(map(repr, r)) for r in conn.execute(sa.select(*columns))), key=repr)

    def read(conn: sa.Connection) -> dict[str, list[tuple[Any, ...]]]:
        return {t.name: rows(conn, t) for t in ALL_TABLES}

    return await db.read("dump", read)


async def apply_all(db: CatalogDatabase, events: list[Any]) -> int:
    return sum([await db.apply(*attrs_and_message(e)) for e in events])


async def search(db: CatalogDatabase, **filters: Any) -> list[str]:
    rows, _, _ = await db.read("search", lambda c: queries.search(c, AssetQuery(**filters)))
    return [r["asset_id"] for r in rows]


async def test_migrations_create_exactly_the_tables_the_code_declares(db: CatalogDatabase) -> None:
    def diff(conn: sa.Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(conn, opts={"include_object": declared}), metadata))

    assert await db.read("compare", diff) == []
    if db.dialect == "postgresql":  # the trigram index for text search (pg_trgm ships with PostgreSQL)

        def indexes(conn: sa.Connection) -> set[str]:
            return {i["name"] for i in sa.inspect(conn).get_indexes("assets")}

        assert "ix_assets_prompt_trgm" in await db.read("indexes", indexes)
    await db.close()
    again = CatalogDatabase(str(db.url.render_as_string(hide_password=False)))
    await again.open()  # upgrading an up-to-date database is a no-op
    await again.close()


async def test_a_family_of_events_makes_one_asset_with_its_prompt_qa_and_lineage(db: CatalogDatabase) -> None:
    events = dataset("cat-lineage", 3, fail_every=3)
    assert await apply_all(db, events) == len(events)
    rows, _, total = await db.read("s", lambda c: queries.search(c, AssetQuery(), count=True))
    assert total == 3
    by_status = {r["asset_id"]: r["qa_status"] for r in rows}
    assert sorted(by_status.values()) == ["failed", "passed", "passed"]
    row = next(r for r in rows if r["qa_status"] == "failed")
    assert row["failed_checks"] == ["black_frames"]
    assert row["series"] == "C" and row["scenario"] and row["prompt"].startswith("scene")
    assert row["manifest"] == "cat-lineage" and row["duration_s"] in (5.0, 10.0, 30.0)
    nodes, edges = await db.read("l", lambda c: queries.lineage(c, "asset", row["asset_id"]))
    kinds = {n.kind for n in nodes}
    assert {"manifest", "spec", "plan", "run", "job", "asset", "qa", "request"} <= kinds
    assert all(n.known for n in nodes), [n for n in nodes if not n.known]
    relations = {(e.parent_kind, e.child_kind) for e in edges}
    assert {
        ("manifest", "spec"),
        ("spec", "plan"),
        ("plan", "run"),
        ("run", "job"),
        ("job", "asset"),
        ("asset", "qa"),
    } <= relations
    runs = await db.read("r", queries.run_counts)
    assert runs == {"ready": 3}


async def test_duplicates_change_nothing(db: CatalogDatabase) -> None:
    events = dataset("cat-dupes", 3)
    await apply_all(db, events)
    before = await dump(db)
    assert await apply_all(db, events) == 0
    assert await db.apply_many([attrs_and_message(e) for e in events]) == 0
    assert await dump(db) == before


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_any_arrival_order_gives_the_same_rows(db: CatalogDatabase, seed: int) -> None:
    events = dataset(f"cat-order-{seed}", 3, fail_every=2)
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    dumps = []
    for order in (events, shuffled, events[::-1]):
        await db.reset()
        await apply_all(db, order)
        dumps.append(await dump(db))
    assert dumps[0] == dumps[1] == dumps[2]
    assert len(dumps[0]["assets"]) == 3 and dumps[0]["lineage_edges"]


async def test_a_child_before_its_parent_is_kept_and_linked_when_the_parent_arrives(db: CatalogDatabase) -> None:
    events = dataset("cat-orphan", 1)
    verdict = events[-1]
    video = next(e for e in events if e.type.endswith("video.ready.v1"))
    run_v3 = next(e for e in events if e.id.endswith("-v3"))
    asset_id = verdict.data.asset_id
    await db.apply(*attrs_and_message(verdict))
    assert await search(db) == []  # no video known yet: not in the gallery
    nodes, _ = await db.read("l", lambda c: queries.lineage(c, "asset", asset_id))
    assert {n.kind: n.known for n in nodes}["asset"] is False
    await db.apply(*attrs_and_message(video))
    assert await search(db) == [asset_id]
    row = await db.read("a", lambda c: queries.asset(c, asset_id))
    assert row["qa_status"] == "passed" and row["scenario"] is None  # prompt not seen yet
    nodes, _ = await db.read("l", lambda c: queries.lineage(c, "asset", asset_id))
    assert {n.kind: n.known for n in nodes}["run"] is False
    await apply_all(db, [e for e in events if e not in (verdict, video)])
    row = await db.read("a", lambda c: queries.asset(c, asset_id))
    assert row["scenario"] and row["series"] == "C" and row["qa_status"] == "passed"
    nodes, _ = await db.read("l", lambda c: queries.lineage(c, "asset", asset_id))
    assert all(n.known for n in nodes)
    assert (await db.read("r", lambda c: queries.run_by_id(c, run_v3.data.run.run_id)))["state"] == "ready"


async def test_a_stale_run_update_does_not_win(db: CatalogDatabase) -> None:
    events = dataset("cat-stale", 1)
    runs = [e for e in events if e.type.endswith("run.updated.v1")]
    for e in reversed(runs):  # v3 first, then v2 and v1 arrive late
        await db.apply(*attrs_and_message(e))
    status = await db.read("r", lambda c: queries.run_by_id(c, runs[0].data.run.run_id))
    assert status["state"] == "ready"


INJECTIONS = [
    "'; DROP TABLE assets; --",
    "x' OR '1'='1",
    '" OR ""="',
    "%",
    "_",
    "\\",
    "<script>alert(1)</script>",
    "C') UNION SELECT * FROM ratings --",
]


@pytest.mark.parametrize("text", INJECTIONS)
async def test_injection_in_every_text_field_matches_literally_and_harms_nothing(
    db: CatalogDatabase, text: str
) -> None:
    await apply_all(db, dataset("cat-inject", 3))
    for field in ("series", "scenario", "risk_level", "model", "manifest", "q"):
        assert await search(db, **{field: text}) == [], field
    assert await search(db, tags=(text,)) == []
    assert len(await search(db)) == 3  # the table is still there, whole
    assert len(await search(db, q="parcel")) == 3


async def test_like_wildcards_in_text_search_match_themselves(db: CatalogDatabase) -> None:
    await apply_all(db, dataset("cat-like", 3))
    assert len(await search(db, q="SCENE")) == 3  # case-insensitive
    assert await search(db, q="scene_1") == []  # "_" is not "any character"
    assert await search(db, q="scene%door") == []


async def test_cursor_pages_visit_every_asset_once(db: CatalogDatabase) -> None:
    await apply_all(db, dataset("cat-pages", 9))
    seen: list[str] = []
    cursor = None
    while True:
        query = AssetQuery(limit=2, cursor=cursor)
        rows, cursor, _ = await db.read("s", lambda c, q=query: queries.search(c, q))
        seen += [r["asset_id"] for r in rows]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 9
    assert seen == await search(db, limit=50)  # newest first, same order as one big page
    with pytest.raises(InvalidInputError, match="cursor"):
        await db.read("s", lambda c: queries.search(c, AssetQuery(cursor="not-a-cursor")))


@pytest.mark.parametrize("limit", [0, -1, 501, 10_000])
def test_page_sizes_out_of_range_are_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        AssetQuery(limit=limit)


def test_ranges_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="min_duration"):
        AssetQuery(min_duration=10, max_duration=5)
