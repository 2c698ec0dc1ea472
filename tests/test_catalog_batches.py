"""The catalog applies what its consumer fetched in shared transactions, on SQLite and PostgreSQL.

Against a real nats-server: the events of a fetch commit together and are acked only after that
commit; a bad event in a batch is dead-lettered with its reason while the others are applied; the
database records when it applied each event (``applied_at``, migration 0003).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

import worldmill.catalog.database as catalog_database
from tests.helpers.bus import PrivateStream, dead_letters, eventually, run_until
from tests.helpers.catalog_events import attrs_and_message, dataset
from tests.test_catalog_db import dump
from worldmill.catalog.app import ingest_consumer
from worldmill.catalog.database import CatalogDatabase, Event, alembic_config
from worldmill.catalog.projection import changes_for
from worldmill.catalog.service import CatalogService
from worldmill.catalog.tables import EVENTS
from worldmill.contracts.subjects import ConsumerSpec
from worldmill.runtime.bus import Bus
from worldmill.runtime.consumer import Consumer
from worldmill.runtime.errors import PermanentError
from worldmill.runtime.sql import DatabaseUnavailableError, make_engine


@pytest.fixture
async def db(store_url: str) -> AsyncIterator[CatalogDatabase]:
    database = CatalogDatabase(store_url)
    await database.open()
    try:
        yield database
    finally:
        await database.close()


class Batches:
    """Wraps ``db.apply_batch`` (the real one runs): the size of every transaction tried, and an optional gate."""

    def __init__(self, db: CatalogDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        real: Callable[[Sequence[Event]], Awaitable[list[bool]]] = db.apply_batch

        async def spy(events: Sequence[Event]) -> list[bool]:
            self.sizes.append(len(events))
            self.entered.set()
            if self.gate is not None:
                await self.gate.wait()
            return await real(events)

        monkeypatch.setattr(db, "apply_batch", spy)


def consumer_for(bus: Bus, service: CatalogService, stream: PrivateStream) -> Consumer:
    """The catalog's own ingest consumer, on a private stream."""
    durable = f"catalog-{uuid.uuid4().hex[:8]}"
    spec = ConsumerSpec(durable=durable, stream=stream.spec.name, filter_subject=f"{stream.prefix}.>", max_deliver=3)
    return ingest_consumer(bus, service, spec=spec, source="/test/catalog")


async def publish(bus: Bus, stream: PrivateStream, envelopes: list[Any]) -> None:
    for e in envelopes:
        await bus.publish(e, subject=stream.subject(e.type.split(".")[2]))


async def ack_pending(bus: Bus, consumer: Consumer) -> int:
    info = await bus.js.consumer_info(consumer.spec.stream, consumer.spec.durable)
    return int(info.num_ack_pending or 0)


async def test_a_fetch_is_applied_in_shared_transactions_like_one_by_one(
    db: CatalogDatabase, bus: Bus, test_stream: PrivateStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 assets' events (241) through the real consumer: far fewer transactions than events, every message
    acked, and the same rows as applying each event in its own transaction."""
    events = dataset(f"cat-batch-{db.dialect}", 30, fail_every=4)
    await publish(bus, test_stream, events)
    batches = Batches(db, monkeypatch)
    consumer = consumer_for(bus, CatalogService(db=db), test_stream)
    await run_until(consumer, lambda: consumer.stats.acked == len(events))
    assert sum(batches.sizes) == len(events)
    assert max(batches.sizes) > 1 and len(batches.sizes) < len(events) / 4
    assert consumer.stats.dead_lettered == consumer.stats.nacked == 0
    assert await eventually(lambda: ack_pending(bus, consumer), lambda n: n == 0) == 0
    batched = await dump(db)
    assert len(batched["assets"]) == 30 and len(batched["applied_events"]) == len(events)

    monkeypatch.undo()
    await db.reset()
    for e in events:
        await db.apply(*attrs_and_message(e))
    assert await dump(db) == batched


async def test_messages_are_acked_only_after_their_transaction_commits(
    db: CatalogDatabase, bus: Bus, test_stream: PrivateStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the batch's transaction is held, no message of it is acked (the server holds them all as pending)."""
    events = dataset(f"cat-ack-{db.dialect}", 3)
    await publish(bus, test_stream, events)
    batches = Batches(db, monkeypatch)
    batches.gate = asyncio.Event()
    consumer = consumer_for(bus, CatalogService(db=db), test_stream)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await asyncio.wait_for(batches.entered.wait(), 20)
        while sum(batches.sizes) < len(events):  # the first fetch may bring one message: wait for all
            batches.gate.set()
            batches.gate = asyncio.Event()
            batches.entered.clear()
            await asyncio.wait_for(batches.entered.wait(), 20)
        held = batches.sizes[-1]
        assert await eventually(lambda: ack_pending(bus, consumer), lambda n: n == held) == held
        assert consumer.stats.acked == len(events) - held  # the earlier batches' acks, none of this one's
        assert await db.read("n", lambda c: c.execute(sa.select(sa.func.count()).select_from(EVENTS)).scalar()) == (
            len(events) - held
        )
        batches.gate.set()
        assert await eventually(lambda: ack_pending(bus, consumer), lambda n: n == 0) == 0
        assert consumer.stats.acked == len(events)
    finally:
        stop.set()
        if batches.gate is not None:
            batches.gate.set()
        await asyncio.wait_for(task, 30)


async def test_a_bad_event_is_dead_lettered_with_its_reason_and_the_rest_of_its_batch_applied(
    db: CatalogDatabase, bus: Bus, test_stream: PrivateStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One event the projection refuses, amid a fetch: the batch is split, the bad one dead-lettered at once
    with its reason, every other event applied once."""
    events = dataset(f"cat-poison-{db.dialect}", 12)
    poison = events[len(events) // 2]
    real = changes_for

    def refuse(attrs: Any, message: Any) -> Any:
        if attrs.id == poison.id:
            raise PermanentError("test: this event cannot be projected")
        return real(attrs, message)

    monkeypatch.setattr(catalog_database, "changes_for", refuse)
    await publish(bus, test_stream, events)
    batches = Batches(db, monkeypatch)
    service = CatalogService(db=db)
    consumer = consumer_for(bus, service, test_stream)
    await run_until(consumer, lambda: consumer.stats.acked + consumer.stats.dead_lettered == len(events))
    assert (consumer.stats.acked, consumer.stats.dead_lettered, consumer.stats.nacked) == (len(events) - 1, 1, 0)
    assert service.batcher.stats.split >= 1
    assert max(batches.sizes) > 1
    [letter] = await dead_letters(bus, consumer.spec.durable, 1)
    assert letter.original_id == poison.id
    assert letter.reason == "permanent_error" and "cannot be projected" in letter.error
    ids = set(await db.read("ids", lambda c: list(c.scalars(sa.select(EVENTS.c.event_id)))))
    assert ids == {e.id for e in events} - {poison.id}


async def test_a_database_outage_fails_the_batch_without_trying_each_event(
    db: CatalogDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unavailable database: every waiting event gets that (transient) error from one attempt, not one per event."""
    events = dataset(f"cat-down-{db.dialect}", 2)
    service = CatalogService(db=db)
    batches = Batches(db, monkeypatch)
    await db.close()
    outcomes = await asyncio.gather(*(service.ingest(*attrs_and_message(e)) for e in events), return_exceptions=True)
    assert all(isinstance(o, DatabaseUnavailableError) for o in outcomes), outcomes
    assert batches.sizes == [len(events)]
    assert service.batcher.stats.split == 0


async def test_concurrent_ingests_share_transactions_and_each_gets_its_own_answer(
    db: CatalogDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batcher alone: calls made together share one transaction; repeats answer False; in a batch with a
    bad event, its caller gets its error and the others True (the batch is applied again one by one)."""
    events = dataset(f"cat-group-{db.dialect}", 6)
    service = CatalogService(db=db)
    batches = Batches(db, monkeypatch)
    first = await asyncio.gather(*(service.ingest(*attrs_and_message(e)) for e in events))
    assert first == [True] * len(events)
    assert batches.sizes == [len(events)]
    again = await asyncio.gather(*(service.ingest(*attrs_and_message(e)) for e in events[:5]))
    assert again == [False] * 5

    more = dataset(f"cat-group2-{db.dialect}", 3)
    bad = more[2]
    real = changes_for

    def refuse(attrs: Any, message: Any) -> Any:
        if attrs.id == bad.id:
            raise ValueError("test: refused")
        return real(attrs, message)

    monkeypatch.setattr(catalog_database, "changes_for", refuse)
    batches.sizes.clear()
    outcomes = await asyncio.gather(*(service.ingest(*attrs_and_message(e)) for e in more), return_exceptions=True)
    assert [type(o).__name__ for o in outcomes] == ["bool"] * 2 + ["ValueError"] + ["bool"] * (len(more) - 3)
    assert all(o is True for i, o in enumerate(outcomes) if i != 2)
    assert batches.sizes == [len(more)] + [1] * len(more)  # the batch, then each event alone
    assert service.batcher.stats.split == 1


async def test_applied_at_records_when_the_catalog_applied_each_event(db: CatalogDatabase) -> None:
    """applied_at is the catalog's clock at apply (UTC), not the event's own time; a repeat keeps the first."""
    events = dataset(f"cat-when-{db.dialect}", 1)
    before = datetime.now(UTC)
    for e in events:
        await db.apply(*attrs_and_message(e))
    after = datetime.now(UTC)

    def read(conn: sa.Connection) -> dict[str, tuple[datetime, datetime]]:
        return {r.event_id: (r.time, r.applied_at) for r in conn.execute(sa.select(EVENTS))}

    rows = await db.read("when", read)
    assert set(rows) == {e.id for e in events}
    for event_time, applied_at in rows.values():
        applied = applied_at.replace(tzinfo=UTC) if applied_at.tzinfo is None else applied_at
        assert before <= applied <= after
        assert event_time.replace(tzinfo=UTC) < before  # the events' own times are in November
    for e in events:
        assert await db.apply(*attrs_and_message(e)) is False
    assert await db.read("when", read) == rows


async def test_migration_0003_adds_applied_at_to_an_existing_catalog_and_downgrades(store_url: str) -> None:
    """A catalog at 0002 with applied events: upgrading keeps them (applied_at NULL: not recorded then), new
    events get it; downgrading to 0002 drops the column and keeps the rows."""
    engine = make_engine(store_url)  # creates the SQLite file's folder, as the catalog does
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0002_search_indexes")
            conn.execute(
                sa.text("INSERT INTO applied_events (event_id, type, subject, time) VALUES (:i, :t, NULL, :w)"),
                {"i": "old-event", "t": "io.worldmill.asset.noted.v1", "w": datetime(2026, 11, 1, tzinfo=UTC)},
            )

        def columns() -> set[str]:
            with engine.connect() as conn:
                return {c["name"] for c in sa.inspect(conn).get_columns("applied_events")}

        assert "applied_at" not in columns()
        db = CatalogDatabase(store_url)
        await db.open()  # migrates to head
        try:
            assert "applied_at" in columns()
            events = dataset("cat-migrate", 1)[:1]
            assert await db.apply(*attrs_and_message(events[0]))
            got = await db.read("r", lambda c: dict(c.execute(sa.select(EVENTS.c.event_id, EVENTS.c.applied_at)).all()))
            assert got["old-event"] is None and got[events[0].id] is not None
        finally:
            await db.close()
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0002_search_indexes")
        assert "applied_at" not in columns()
        with engine.connect() as conn:
            kept = set(conn.scalars(sa.text("SELECT event_id FROM applied_events")))
        assert kept == {"old-event", events[0].id}
    finally:
        engine.dispose()
