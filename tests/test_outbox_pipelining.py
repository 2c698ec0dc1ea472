"""The outbox relay publishes a window of rows at once, on SQLite and PostgreSQL, against a real nats-server.

What must hold whatever fails: a row is deleted only after JetStream acked it; the rows of one entity
reach the stream in the order they were written; a re-send (a crash between publish and delete) is
stored once, dropped by its ``Nats-Msg-Id``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from tests.helpers.bus import PrivateStream
from worldmill.contracts.envelope import wrap
from worldmill.contracts.objects import ObjectCreated
from worldmill.runtime.bus import Bus, Published
from worldmill.runtime.docstore import (
    DocumentStore,
    OutboxItem,
    OutboxRelay,
    OutboxRow,
    order_key,
    windows,
)
from worldmill.runtime.errors import BusUnavailableError
from worldmill.runtime.servers import NatsEndpoint


class WatchedBus(Bus):
    """A real bus that counts publishes, records how many were in flight at once, and fails the ids in
    ``fail`` (as an unreachable server would) without sending them."""

    def __init__(self, url: str) -> None:
        super().__init__(url, name="test-watched")
        self.calls: list[str] = []
        self.in_flight = 0
        self.peak = 0
        self.fail: set[str] = set()

    async def publish_raw(self, subject: str, payload: bytes, headers: dict[str, str]) -> Published:
        msg_id = headers["Nats-Msg-Id"]
        self.calls.append(msg_id)
        if msg_id in self.fail:
            await asyncio.sleep(0.01)  # fails after later rows of the window were sent
            raise BusUnavailableError(f"test: {msg_id} not sent")
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await super().publish_raw(subject, payload, headers)
        finally:
            self.in_flight -= 1


@pytest.fixture
async def docs(store_url: str) -> AsyncIterator[DocumentStore]:
    st = DocumentStore(store_url)
    await st.open()
    try:
        yield st
    finally:
        await st.close()


@pytest.fixture
async def watched(nats: NatsEndpoint) -> AsyncIterator[WatchedBus]:
    b = WatchedBus(nats.url)
    await b.connect()
    try:
        yield b
    finally:
        await b.close()


def item(stream: PrivateStream | str, entity: str, n: int, *, subject: str | None = None) -> OutboxItem:
    """Event ``n`` about ``entity`` (an object key: ObjectCreated's entity is bucket/key), id ``<prefix>-<entity>-<n>``."""
    prefix = stream if isinstance(stream, str) else stream.prefix
    event = ObjectCreated(bucket="b", key=entity, size=n + 1, etag=f"e{n}", origin="api", event_time=datetime.now(UTC))
    envelope = wrap(event, source="/test", event_id=f"{prefix}-{entity}-{n}")
    return OutboxItem.from_envelope(envelope, subject=subject or f"{prefix}.{entity}")


async def stored(bus: Bus, stream: PrivateStream) -> list[str]:
    """Nats-Msg-Id of every message in the stream, in stream order."""
    info = await bus.js.stream_info(stream.spec.name)
    out = []
    for seq in range(1, info.state.messages + 1):
        msg = await bus.js.get_msg(stream.spec.name, seq)
        out.append((msg.headers or {})["Nats-Msg-Id"])
    return out


def per_entity(ids: list[str]) -> dict[str, list[int]]:
    """``<prefix>-<entity>-<n>`` ids grouped by entity, n in the order seen."""
    out: dict[str, list[int]] = {}
    for i in ids:
        entity, n = i.rsplit("-", 2)[1:]
        out.setdefault(entity, []).append(int(n))
    return out


async def test_a_window_is_published_at_once_and_lands_in_order(
    docs: DocumentStore, watched: WatchedBus, test_stream: PrivateStream
) -> None:
    """300 rows of 300 entities: up to a window in flight at once (not one by one), every row once, in id order."""
    items = [item(test_stream, f"k{i:03d}", 0) for i in range(300)]
    await docs.commit([], items[:150])
    await docs.commit([], items[150:])
    relay = OutboxRelay(docs, watched, window=64)
    assert await relay.flush() == 300
    assert watched.peak == 64  # bounded by the window, and more than one
    assert len(watched.calls) == 300
    assert await docs.pending_outbox() == []
    assert await stored(watched, test_stream) == [i.headers["Nats-Msg-Id"] for i in items]


async def test_rows_of_one_entity_are_never_in_flight_together(
    docs: DocumentStore, watched: WatchedBus, test_stream: PrivateStream
) -> None:
    """Five events each about three entities, interleaved: each window holds one row per entity, so the
    flush takes five windows of three, and each entity's events land in the order they were written."""
    items = [item(test_stream, entity, n) for n in range(5) for entity in ("a", "b", "c")]
    await docs.commit([], items)
    assert await OutboxRelay(docs, watched, window=64).flush() == 15
    assert watched.peak == 3
    assert per_entity(await stored(watched, test_stream)) == {
        "a": [0, 1, 2, 3, 4],
        "b": [0, 1, 2, 3, 4],
        "c": [0, 1, 2, 3, 4],
    }


async def test_a_failed_publish_holds_back_its_entity_only_and_is_retried_first(
    docs: DocumentStore, watched: WatchedBus, test_stream: PrivateStream
) -> None:
    """In a window where one publish fails and the others are acked, exactly the acked rows are deleted; the
    failed row's later events wait behind it, other entities go on; the next flush sends the rest in order."""
    items = [item(test_stream, entity, n) for n in range(3) for entity in ("a", "b", "c", "d")]
    await docs.commit([], items)
    watched.fail = {f"{test_stream.prefix}-b-0"}
    relay = OutboxRelay(docs, watched, window=64)
    assert await relay.flush() == 3  # a-0, c-0, d-0 acked; b-0 failed; the flush ends with that window
    pending = [json.loads(r.payload)["id"] for r in await docs.pending_outbox()]
    assert pending == [
        i.headers["Nats-Msg-Id"] for i in items if not i.headers["Nats-Msg-Id"].endswith(("a-0", "c-0", "d-0"))
    ]
    assert per_entity(await stored(watched, test_stream)) == {"a": [0], "c": [0], "d": [0]}

    watched.fail = set()
    assert await relay.flush() == 9
    assert await docs.pending_outbox() == []
    assert per_entity(await stored(watched, test_stream)) == {e: [0, 1, 2] for e in "abcd"}
    assert watched.calls.count(f"{test_stream.prefix}-b-0") == 2  # failed once, sent once; nothing else twice
    assert len(watched.calls) == 13


async def test_a_row_with_no_stream_blocks_its_entity_not_the_outbox(
    docs: DocumentStore, bus: Bus, test_stream: PrivateStream
) -> None:
    """A row JetStream refuses (no stream for its subject) stays pending with its entity's later rows;
    every other entity's rows are delivered, flush after flush."""
    nowhere = f"nostream{uuid.uuid4().hex[:8]}.x"
    items = [item(test_stream, "a", 0), item(test_stream, "b", 0, subject=nowhere), item(test_stream, "b", 1)]
    items += [item(test_stream, f"c{i}", 0) for i in range(5)]
    await docs.commit([], items)
    relay = OutboxRelay(docs, bus, window=4)
    assert await relay.flush() == 3  # first window: a-0, b-0 (fails), c0-0, c1-0; then the flush stops
    assert await relay.flush() == 3  # b-0 fails again; c2-0, c3-0, c4-0 go (b-1 waits behind b-0)
    assert [r.subject for r in await docs.pending_outbox()] == [nowhere, test_stream.subject("b")]
    assert sorted(per_entity(await stored(bus, test_stream))) == ["a", "c0", "c1", "c2", "c3", "c4"]


async def test_a_crash_between_publish_and_delete_only_resends_and_the_stream_keeps_one_copy(
    docs: DocumentStore, watched: WatchedBus, test_stream: PrivateStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delete after 200 rows went out in four windows fails (the database went away): every row is still
    pending, the next flush publishes them all again, and JetStream stores every event once, in order."""
    items = [item(test_stream, f"k{i:03d}", 0) for i in range(200)]
    await docs.commit([], items)

    async def gone(ids: list[int]) -> None:
        raise RuntimeError("test: database gone")

    monkeypatch.setattr(docs, "mark_sent", gone)
    relay = OutboxRelay(docs, watched, window=64)
    with pytest.raises(RuntimeError, match="database gone"):
        await relay.flush()
    assert len(await docs.pending_outbox()) == 200
    monkeypatch.undo()
    assert await relay.flush() == 200
    assert await docs.pending_outbox() == []
    assert len(watched.calls) == 400
    assert await stored(watched, test_stream) == [i.headers["Nats-Msg-Id"] for i in items]


async def test_a_cancelled_flush_deletes_what_was_acked_and_the_next_sends_only_the_rest(
    docs: DocumentStore, watched: WatchedBus, test_stream: PrivateStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled (a shutdown) while one publish of the second window hangs: the rows acked by then are
    deleted, nothing acked is sent again, and the rest goes with the next flush."""
    items = [item(test_stream, f"k{i:03d}", 0) for i in range(40)]
    await docs.commit([], items)
    hang = items[25].headers["Nats-Msg-Id"]
    stuck = asyncio.Event()
    real = WatchedBus.publish_raw

    async def publish_raw(self: WatchedBus, subject: str, payload: bytes, headers: dict[str, str]) -> Published:
        if headers["Nats-Msg-Id"] == hang and not stuck.is_set():
            stuck.set()
            await asyncio.Event().wait()  # never answers
        return await real(self, subject, payload, headers)

    monkeypatch.setattr(WatchedBus, "publish_raw", publish_raw)
    flush = asyncio.create_task(OutboxRelay(docs, watched, window=16).flush())
    await asyncio.wait_for(stuck.wait(), 10)
    await asyncio.sleep(0.2)  # the other rows of that window get their acks
    flush.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flush
    pending = {json.loads(r.payload)["id"] for r in await docs.pending_outbox()}
    assert hang in pending and len(pending) < 40 - 16  # the first window and part of the second are gone
    assert await OutboxRelay(docs, watched, window=16).flush() == len(pending)
    assert await docs.pending_outbox() == []
    assert len(await stored(watched, test_stream)) == 40
    assert len(watched.calls) == 40  # nothing acked went twice (the hung attempt never reached the bus)


async def test_concurrent_flushes_of_one_store_publish_each_row_once(
    docs: DocumentStore, watched: WatchedBus, test_stream: PrivateStream
) -> None:
    """The background relay and a request's flush_now at the same moment: one waits for the other."""
    items = [item(test_stream, f"k{i:03d}", 0) for i in range(100)]
    await docs.commit([], items)
    sent = await asyncio.gather(*(OutboxRelay(docs, watched, window=16).flush() for _ in range(3)))
    assert sorted(sent) == [0, 0, 100]
    assert len(watched.calls) == 100
    assert len(await stored(watched, test_stream)) == 100


def test_windows_take_one_row_per_entity_and_keep_the_rest_in_order() -> None:
    """The window rule alone: a row waits while an earlier row of its entity is in or before the window."""

    def row(n: int, entity: str) -> OutboxRow:
        i = item("tpure", entity, n)
        return OutboxRow(n, i.subject, i.payload, i.headers, datetime.now(UTC))

    rows = [row(1, "a"), row(2, "a"), row(3, "b"), row(4, "c"), row(5, "b"), row(6, "d"), row(7, "a")]
    got = [[r.id for r in w] for w in windows(rows, 3)]
    assert got == [[1, 3, 4], [2, 5, 6], [7]]  # 6 (d) is new but the first window was full
    assert [[r.id for r in w] for w in windows(rows, 100)] == [[1, 3, 4, 6], [2, 5], [7]]
    assert [[r.id for r in w] for w in windows(rows, 1)] == [[n] for n in range(1, 8)]
    assert list(windows([], 8)) == []
    raw = OutboxRow(9, "x.y", b"not json", {}, datetime.now(UTC))
    assert order_key(raw) == "subject:x.y"
    assert order_key(rows[0]) == "entity:b/a"
