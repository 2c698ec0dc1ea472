"""The document store and its outbox on SQLite and PostgreSQL, the relay against a real nats-server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.helpers.bus import PrivateStream
from worldmill.contracts.envelope import wrap
from worldmill.contracts.objects import ObjectCreated
from worldmill.runtime.bus import Bus
from worldmill.runtime.docstore import (
    DatabaseUnavailableError,
    DocumentStore,
    NewDocument,
    OutboxItem,
    OutboxRelay,
    VersionConflictError,
)
from worldmill.runtime.errors import InvalidInputError
from worldmill.runtime.servers import NatsEndpoint, free_port


@pytest.fixture
async def docs(store_url: str) -> AsyncIterator[DocumentStore]:
    """An open document store on the fresh database."""
    st = DocumentStore(store_url)
    await st.open()
    try:
        yield st
    finally:
        await st.close()


def _doc(doc_id: str, version: int = 1, kind: str = "job", **index: str | tuple[str, ...]) -> NewDocument:
    body = {"id": doc_id, "v": version, "text": "héllo ✓"}
    idx = {k: (v,) if isinstance(v, str) else v for k, v in index.items()}
    return NewDocument(kind=kind, doc_id=doc_id, version=version, body=body, content_hash=f"h{version}", index=idx)


def _item(subject: str, event_id: str, key: str = "a.mp4") -> OutboxItem:
    event = ObjectCreated(bucket="wm-inputs", key=key, size=1, etag="e", origin="api", event_time=datetime.now(UTC))
    return OutboxItem.from_envelope(wrap(event, source="/test", event_id=event_id), subject=subject)


async def test_versions_latest_and_history(docs: DocumentStore) -> None:
    """get() returns the latest or a named version, history() every version in ascending order."""
    await docs.commit([_doc("a", 1, state="new")])
    await docs.commit([_doc("a", 2, state="done"), _doc("b", 1)])
    latest = await docs.get("job", "a")
    assert latest is not None
    assert (latest.version, latest.body, latest.index) == (
        2,
        {"id": "a", "v": 2, "text": "héllo ✓"},
        {"state": ("done",)},
    )
    assert latest.created_at.tzinfo is not None
    first = await docs.get("job", "a", 1)
    assert first is not None and first.index == {"state": ("new",)} and first.content_hash == "h1"
    assert [d.version for d in await docs.history("job", "a")] == [1, 2]
    assert await docs.get("job", "a", 3) is None
    assert await docs.get("other", "a") is None
    assert await docs.history("job", "missing") == []


async def test_existing_version_conflicts_and_nothing_of_that_commit_is_written(docs: DocumentStore) -> None:
    """A commit touching an existing version raises VersionConflictError and writes none of its rows."""
    await docs.commit([_doc("a", 1)], [_item("s.one", "e1")])
    with pytest.raises(VersionConflictError, match=r"job/a v1 exists already"):
        await docs.commit([_doc("fresh", 1, state="x"), _doc("a", 1)], [_item("s.two", "e2")])
    assert await docs.get("job", "fresh") is None
    assert await docs.find("job", where={"state": "x"}) == []
    assert [r.subject for r in await docs.pending_outbox()] == ["s.one"]
    original = await docs.get("job", "a")
    assert original is not None and original.content_hash == "h1"


async def test_concurrent_commits_of_one_version_have_exactly_one_winner(docs: DocumentStore) -> None:
    """Eight writers racing for the same new version: one commits, seven get VersionConflictError."""
    await docs.check()
    results = await asyncio.gather(
        *(docs.commit([_doc("race", 1)], [_item("s.race", f"e{i}")]) for i in range(8)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, VersionConflictError) for r in results if r is not None), results
    assert len(await docs.pending_outbox()) == 1


async def test_find_filters_single_list_and_several_fields(docs: DocumentStore) -> None:
    """Equality filters: one value, any of a list, and several fields that must all match."""
    await docs.commit(
        [
            _doc("a", state="new", owner="ann"),
            _doc("b", state="running", owner="bob"),
            _doc("c", state="new", owner="bob", tag=("red", "blue")),
            _doc("d", kind="other", state="new"),
        ]
    )

    async def ids(**where: str | list[str]) -> list[str]:
        return [d.doc_id for d in await docs.find("job", where=where)]

    assert await ids(state="new") == ["a", "c"]
    assert await ids(state=["new", "running"]) == ["a", "b", "c"]
    assert await ids(state="new", owner="bob") == ["c"]
    assert await ids(tag="blue") == ["c"]
    assert await ids(state=[]) == []
    assert await ids() == ["a", "b", "c"]
    found = await docs.find("job", where={"tag": "red"})
    assert found[0].index == {"owner": ("bob",), "state": ("new",), "tag": ("blue", "red")}


async def test_find_latest_only_or_every_version(docs: DocumentStore) -> None:
    """latest_only matches current versions only; otherwise every matching version, by (doc_id, version)."""
    await docs.commit([_doc("a", 1, state="new"), _doc("b", 1, state="new")])
    await docs.commit([_doc("a", 2, state="done"), _doc("b", 2, state="new")])
    assert [(d.doc_id, d.version) for d in await docs.find("job", where={"state": "new"})] == [("b", 2)]
    every = await docs.find("job", where={"state": "new"}, latest_only=False)
    assert [(d.doc_id, d.version) for d in every] == [("a", 1), ("b", 1), ("b", 2)]
    pages = (
        await docs.find("job", latest_only=False, limit=1),
        await docs.find("job", latest_only=False, limit=1, after="a"),
    )
    assert [[(d.doc_id, d.version) for d in page] for page in pages] == [[("a", 1), ("a", 2)], [("b", 1), ("b", 2)]]


async def test_keyset_pagination_over_250_documents(docs: DocumentStore) -> None:
    """Pages of 100 over 250 matching documents: 3 pages, none missing, none twice, in order."""
    await docs.commit([_doc(f"d{i:04d}", state="new" if i % 2 == 0 else "old") for i in range(500)])
    pages, after = [], None
    while True:
        page = await docs.find("job", where={"state": "new"}, limit=100, after=after)
        if not page:
            break
        pages.append(page)
        after = page[-1].doc_id
    seen = [d.doc_id for page in pages for d in page]
    assert [len(p) for p in pages] == [100, 100, 50]
    assert seen == [f"d{i:04d}" for i in range(0, 500, 2)]


async def test_long_index_values_fit_and_oversized_ones_are_refused(docs: DocumentStore) -> None:
    """A bucket/key value of 1.1 kB (any S3 key) is stored and found; over 1536 bytes is InvalidInputError."""
    long_value = "wm-inputs/" + "é" * 545
    await docs.commit([_doc("a", input=long_value)])
    assert [d.doc_id for d in await docs.find("job", where={"input": long_value})] == ["a"]
    with pytest.raises(InvalidInputError, match=r"value: .*1536 bytes"):
        await docs.commit([_doc("b", input="x" * 1537)])
    assert await docs.get("job", "b") is None


@pytest.mark.parametrize("limit", [0, 1001, -5])
async def test_limit_out_of_range_is_refused(docs: DocumentStore, limit: int) -> None:
    """A limit outside 1..1000 raises ValueError naming the rule."""
    with pytest.raises(ValueError, match=r"limit must be between 1 and 1000"):
        await docs.find("job", limit=limit)


async def test_injection_in_filter_values_matches_nothing_and_breaks_nothing(docs: DocumentStore) -> None:
    """Quotes and SQL in filter values and ids are data: they match nothing and leave tables intact."""
    await docs.commit([_doc("a", state="new")])
    for evil in ["x' OR '1'='1", "'; DROP TABLE documents; --", 'new" OR 1=1 --', "%", "_"]:
        assert await docs.find("job", where={"state": evil}) == []
        assert await docs.find("job", where={evil: "new"}) == []
        assert await docs.get("job", evil) is None
        assert await docs.find("job", after=evil, where={"state": evil}) == []
    await docs.commit([_doc("x' OR '1'='1", state="'; DROP TABLE documents; --")])
    assert [d.doc_id for d in await docs.find("job", where={"state": "'; DROP TABLE documents; --"})] == [
        "x' OR '1'='1"
    ]
    assert [d.doc_id for d in await docs.find("job")] == ["a", "x' OR '1'='1"]


async def test_outbox_rows_are_written_with_their_documents(docs: DocumentStore) -> None:
    """Outbox rows commit with the documents, come back oldest first with headers, and mark_sent removes them."""
    await docs.commit([_doc("a")], [_item("s.1", "e1"), _item("s.2", "e2")])
    await docs.commit([], [_item("s.3", "e3")])
    rows = await docs.pending_outbox()
    assert [r.subject for r in rows] == ["s.1", "s.2", "s.3"]
    assert rows[0].headers["Nats-Msg-Id"] == "e1" and rows[0].headers["ce-type"].startswith("io.worldmill.")
    assert b'"id":"e1"' in rows[0].payload
    assert [r.subject for r in await docs.pending_outbox(limit=2)] == ["s.1", "s.2"]
    await docs.mark_sent([rows[0].id, rows[2].id])
    assert [r.subject for r in await docs.pending_outbox()] == ["s.2"]
    await docs.check()


async def test_an_unreachable_database_is_a_transient_error(store_url: str, tmp_path: Path) -> None:
    """open() on a server nobody listens on (or a path under a file) raises DatabaseUnavailableError."""
    if store_url.startswith("sqlite"):
        (tmp_path / "file").write_text("x")
        url = f"sqlite:///{tmp_path / 'file' / 'db.sqlite3'}"
    else:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(DatabaseUnavailableError):
        await DocumentStore(url).open()
    with pytest.raises(DatabaseUnavailableError, match="not open"):
        await DocumentStore(store_url).check()


async def _stream_messages(bus: Bus, stream: PrivateStream) -> list[tuple[str, bytes, str]]:
    info = await bus.js.stream_info(stream.spec.name)
    out: list[tuple[str, bytes, str]] = []
    for seq in range(1, info.state.messages + 1):
        msg = await bus.js.get_msg(stream.spec.name, seq)
        out.append((msg.subject or "", msg.data or b"", (msg.headers or {}).get("Nats-Msg-Id", "")))
    return out


async def test_relay_publishes_in_order_with_headers_and_dedups_resends(
    docs: DocumentStore, bus: Bus, test_stream: PrivateStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """flush() publishes rows in order with Nats-Msg-Id; a re-send after a lost mark_sent is not stored twice."""
    items = [_item(test_stream.subject(f"n{i}"), f"{test_stream.prefix}-{i}", key=f"k{i}.mp4") for i in range(5)]
    await docs.commit([_doc("a")], items[:3])
    await docs.commit([], items[3:])
    relay = OutboxRelay(docs, bus)

    async def lost(ids: object) -> None:
        return None

    monkeypatch.setattr(docs, "mark_sent", lost)
    assert await relay.flush() == 5
    assert len(await docs.pending_outbox()) == 5
    monkeypatch.undo()
    assert await relay.flush() == 5
    assert await docs.pending_outbox() == []
    stored = await _stream_messages(bus, test_stream)
    assert stored == [(i.subject, i.payload, i.headers["Nats-Msg-Id"]) for i in items]
    assert await relay.flush() == 0


async def test_relay_stops_at_a_failed_row_and_keeps_order(
    docs: DocumentStore, bus: Bus, test_stream: PrivateStream
) -> None:
    """A row that cannot be published stops the flush there: earlier rows are sent, it and later ones wait."""
    nowhere = f"nostream{uuid.uuid4().hex[:8]}.x"
    await docs.commit(
        [],
        [
            _item(test_stream.subject("a"), f"{test_stream.prefix}-a"),
            _item(nowhere, f"{test_stream.prefix}-b"),
            _item(test_stream.subject("c"), f"{test_stream.prefix}-c"),
        ],
    )
    assert await OutboxRelay(docs, bus).flush() == 1
    assert [r.subject for r in await docs.pending_outbox()] == [nowhere, test_stream.subject("c")]
    assert [m[0] for m in await _stream_messages(bus, test_stream)] == [test_stream.subject("a")]


async def test_relay_with_a_closed_bus_keeps_rows_then_sends_after_reconnect(
    docs: DocumentStore, nats: NatsEndpoint, test_stream: PrivateStream
) -> None:
    """With the bus closed, flush and run raise nothing and keep rows; a new Bus then delivers them."""
    await docs.commit(
        [_doc("a")], [_item(test_stream.subject(f"r{i}"), f"{test_stream.prefix}-r{i}") for i in range(3)]
    )
    down = Bus(nats.url, name="test-down")
    await down.connect()
    await down.close()
    relay = OutboxRelay(docs, down)
    assert await relay.flush() == 0
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop, interval_s=0.05))
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert len(await docs.pending_outbox()) == 3

    up = Bus(nats.url, name="test-up")
    await up.connect()
    try:
        stop = asyncio.Event()
        task = asyncio.create_task(OutboxRelay(docs, up).run(stop, interval_s=0.05))
        for _ in range(100):
            if not await docs.pending_outbox():
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 5)
        assert await docs.pending_outbox() == []
        assert [m[0] for m in await _stream_messages(up, test_stream)] == [
            test_stream.subject(f"r{i}") for i in range(3)
        ]
    finally:
        await up.close()
