"""Versioned, immutable documents plus a transactional outbox, on SQLite (default) or PostgreSQL.

Why this shape:

* **Immutable versions.** A document is never updated in place: a change is a new row
  ``(kind, doc_id, version + 1)``. Writing a version that exists fails with
  ``VersionConflictError`` (transient: reload the latest, decide again, retry), so two writers
  can never silently overwrite each other, and ``history`` is the audit trail for free.
* **An index table.** ``find`` filters on ``document_index(field, value)`` rows the writer lists
  in ``NewDocument.index``: plain equality on strings, portable across SQLite and PostgreSQL,
  without JSON operators that differ between them. Bodies are canonical JSON text.
* **A transactional outbox.** ``commit`` writes the documents and the events announcing them in
  ONE transaction, so a request is acknowledged only after it is stored, and an event exists
  exactly when its state does. ``OutboxRelay`` publishes pending rows with their ``Nats-Msg-Id``
  header and then deletes them: delivery is at least once (a crash between publish and delete
  re-sends), and JetStream drops re-sends inside the duplicate window. It publishes a window of
  rows at once and waits for their acks together (one round trip per window, not per row), then
  deletes exactly the acked ones in one transaction per flush. Order: a window holds at most one
  row per entity (the envelope's CloudEvents ``subject``), so the rows of one entity reach the
  stream in the order they were written even when a publish fails; rows of different entities go
  in id order unless one fails, which then goes after the later rows of other entities.

Only the runtime imports SQLAlchemy; services use this API. Calls run a sync engine in a worker
thread (``asyncio.to_thread``), like ``worldmill.runtime.store``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine, Row

from worldmill.contracts.base import Message
from worldmill.contracts.envelope import MAX_ENVELOPE_BYTES, AnyEnvelope, wrap
from worldmill.runtime.bus import Bus, _subject_of, encode, headers_for
from worldmill.runtime.digest import canonical_json as _canonical_json
from worldmill.runtime.errors import InvalidInputError, PermanentError, TransientError
from worldmill.runtime.logs import get_logger
from worldmill.runtime.sql import DatabaseUnavailableError, make_engine, run_sql

__all__ = ["DatabaseUnavailableError", "Document", "DocumentStore", "NewDocument", "OutboxItem", "OutboxRelay"]

log = get_logger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 1
MAX_FIND_LIMIT = 1000
# Byte limits keep every index key well under PostgreSQL's btree row limit (~2.7 kB).
_LIMITS = {"kind": 100, "doc_id": 255, "field": 100, "value": 1536, "content_hash": 128}


def _keys(*names: str) -> list[sa.Column[Any]]:
    # "C" collation on PostgreSQL: code-point order, the same as SQLite's BINARY, so keyset
    # pagination orders identically on both and range scans use the index.
    def key(name: str) -> sa.Column[Any]:
        n = _LIMITS[name]
        return sa.Column(name, sa.String(n).with_variant(sa.String(n, collation="C"), "postgresql"), primary_key=True)

    version = sa.Column("version", sa.Integer, primary_key=True, autoincrement=False)
    return [key("kind"), key("doc_id"), version, *(key(name) for name in names)]


metadata = sa.MetaData()
META = sa.Table(
    "meta", metadata, sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.Text, nullable=False)
)
DOCUMENTS = sa.Table(
    "documents",
    metadata,
    *_keys(),
    sa.Column("content_hash", sa.String(_LIMITS["content_hash"]), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_documents_kind_hash", "kind", "content_hash"),
)
DOCUMENT_INDEX = sa.Table(
    "document_index",
    metadata,
    *_keys("field", "value"),
    sa.Index("ix_document_index_lookup", "kind", "field", "value"),
)
OUTBOX = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("headers", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sqlite_autoincrement=True,  # never reuse an id: a stale relay must not mark a new row sent
)


class VersionConflictError(TransientError):
    """The (kind, doc_id, version) exists already: reload the latest version and try again."""


def canonical_json(body: Mapping[str, Any]) -> str:
    """Sorted keys, no spaces, no NaN: the same body always gives the same text."""
    try:
        return _canonical_json(body)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError("body", f"must be JSON-serialisable ({exc})") from exc


@dataclass(frozen=True)
class Document:
    """One stored version. ``index`` values come back sorted and de-duplicated."""

    kind: str
    doc_id: str
    version: int
    body: dict[str, Any]
    content_hash: str
    created_at: datetime
    index: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class NewDocument:
    """A version to write; ``index`` maps field -> values that ``find`` can filter on."""

    kind: str
    doc_id: str
    version: int
    body: dict[str, Any]
    content_hash: str
    index: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboxItem:
    """An encoded message to publish once the transaction that wrote it commits."""

    subject: str
    payload: bytes
    headers: dict[str, str]

    @classmethod
    def from_envelope(cls, envelope: AnyEnvelope, subject: str | None = None) -> OutboxItem:
        """Encode like ``Bus.publish``: same bytes, same dedup and type headers, same subject."""
        return cls(subject or _subject_of(envelope), encode(envelope), headers_for(envelope))

    @classmethod
    def of(cls, message: Message, *, source: str, event_id: str) -> OutboxItem:
        """A message wrapped in its envelope (``event_id`` = its dedup id), ready for the outbox."""
        return cls.from_envelope(wrap(message, source=source, event_id=event_id))


@dataclass(frozen=True)
class OutboxRow:
    """A pending outbox row."""

    id: int
    subject: str
    payload: bytes
    headers: dict[str, str]
    created_at: datetime


def _text(name: str, value: object) -> str:
    limit = _LIMITS[name]
    if not isinstance(value, str) or not value or "\x00" in value or len(value.encode()) > limit:
        raise InvalidInputError(name, f"must be a non-empty string without NUL, at most {limit} bytes UTF-8")
    return value


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _outbox_row(item: OutboxItem, now: datetime) -> dict[str, Any]:
    if len(item.payload) > MAX_ENVELOPE_BYTES:
        raise InvalidInputError("outbox", f"payload for {item.subject} is over {MAX_ENVELOPE_BYTES} bytes")
    headers = json.dumps(item.headers, sort_keys=True)
    return {"subject": item.subject, "payload": item.payload, "headers": headers, "created_at": now}


def _conflict(conn: Connection, keys: list[tuple[str, str, int]]) -> VersionConflictError | None:
    """The error naming the first of ``keys`` that exists, if one does."""
    d = DOCUMENTS
    q = sa.select(d.c.kind, d.c.doc_id, d.c.version).where(sa.tuple_(d.c.kind, d.c.doc_id, d.c.version).in_(keys))
    found = conn.execute(q.limit(1)).first() if keys else None
    if found is None:
        return None
    return VersionConflictError(f"{found.kind}/{found.doc_id} v{found.version} exists already; nothing written")


def _doc(row: Row[Any], index: dict[str, tuple[str, ...]]) -> Document:
    return Document(
        row.kind, row.doc_id, row.version, json.loads(row.body), row.content_hash, _utc(row.created_at), index
    )


class DocumentStore:
    """Documents and outbox in one SQL database. Construction is cheap and does no I/O."""

    def __init__(self, url: str) -> None:
        self.url = sa.make_url(url)
        self._engine: Engine | None = None
        self._flush_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    def __repr__(self) -> str:
        return f"DocumentStore({self.url.render_as_string(hide_password=True)!r})"  # no password in logs

    def outbox_lock(self) -> asyncio.Lock:
        """Held by a relay's flush: one flush at a time per store in this process (the background relay
        and a request's ``flush_now`` would otherwise publish the same rows twice over)."""
        loop = asyncio.get_running_loop()
        if self._flush_lock is None or self._flush_lock[0] is not loop:
            self._flush_lock = (loop, asyncio.Lock())
        return self._flush_lock[1]

    async def _run(self, what: str, fn: Callable[[Engine], T]) -> T:
        return await run_sql(self._engine, f"{self!r}: {what}", fn)

    async def _documents(self, what: str, query: Any) -> list[Document]:
        return await self._run(what, lambda e: _read(e, lambda c: _load(c, query)))

    async def open(self) -> None:
        """Connect and create missing tables (idempotent); SQLite gets WAL and a busy timeout."""
        if self._engine is not None:
            return
        self._engine = make_engine(self.url)
        try:
            await self._run("open", _create_schema)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Release all connections."""
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(engine.dispose)

    async def check(self) -> None:
        """Readiness: one round trip (``SELECT 1``)."""
        await self._run("check", lambda e: _read(e, lambda c: c.execute(sa.select(1)).scalar()))

    async def get(self, kind: str, doc_id: str, version: int | None = None) -> Document | None:
        """One version of a document (``None`` = the latest), or ``None`` if there is none."""
        d = DOCUMENTS
        q = sa.select(d).where(d.c.kind == kind, d.c.doc_id == doc_id)
        q = q.where(d.c.version == version) if version is not None else q
        docs = await self._documents(f"get {kind}/{doc_id}", q.order_by(d.c.version.desc()).limit(1))
        return docs[0] if docs else None

    async def history(self, kind: str, doc_id: str) -> list[Document]:
        """Every version of a document, oldest first."""
        d = DOCUMENTS
        q = sa.select(d).where(d.c.kind == kind, d.c.doc_id == doc_id).order_by(d.c.version)
        return await self._documents(f"history {kind}/{doc_id}", q)

    async def find(
        self,
        kind: str,
        *,
        where: Mapping[str, str | Sequence[str]] | None = None,
        latest_only: bool = True,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Document]:
        """Documents whose index matches every field of ``where`` (a sequence = any of its values).

        Ordered by ``(doc_id, version)``; ``after`` is the last doc_id of the previous page.
        ``limit`` counts documents: with ``latest_only=False`` a page holds every matching
        version of up to ``limit`` documents, so a document is never split across two pages.
        """
        if not 1 <= limit <= MAX_FIND_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_FIND_LIMIT}, got {limit}")
        filters: dict[str, list[str]] = {}
        for name, values in (where or {}).items():
            vals = [values] if isinstance(values, str) else list(values)
            filters[_text("field", name)] = [_text("value", v) for v in vals]
            if not vals:
                return []
        d = DOCUMENTS
        conds = _conditions(kind, filters, latest_only)
        page = [*conds, d.c.doc_id > after] if after is not None else conds

        def read(conn: Connection) -> list[Document]:
            if latest_only:
                return _load(conn, sa.select(d).where(*page).order_by(d.c.doc_id).limit(limit))
            ids = list(conn.scalars(sa.select(d.c.doc_id).where(*page).distinct().order_by(d.c.doc_id).limit(limit)))
            return _load(conn, sa.select(d).where(*conds, d.c.doc_id.in_(ids)).order_by(d.c.doc_id, d.c.version))

        return await self._run(f"find {kind}", lambda e: _read(e, read))

    async def commit(self, docs: Sequence[NewDocument], outbox: Sequence[OutboxItem] = ()) -> None:
        """Write the documents, their index rows and the outbox rows in ONE transaction.

        If any (kind, doc_id, version) exists already, nothing is written and
        ``VersionConflictError`` names it.
        """
        now = datetime.now(UTC)
        doc_rows: list[dict[str, Any]] = []
        index_rows: list[dict[str, Any]] = []
        seen: set[tuple[str, str, int]] = set()
        for doc in docs:
            if not isinstance(doc.version, int) or doc.version < 1:
                raise InvalidInputError("version", f"must be an integer >= 1, got {doc.version!r}")
            if (_text("kind", doc.kind), _text("doc_id", doc.doc_id), doc.version) in seen:
                raise InvalidInputError("docs", f"{doc.kind}/{doc.doc_id} v{doc.version} appears twice")
            seen.add((doc.kind, doc.doc_id, doc.version))
            key = {"kind": doc.kind, "doc_id": doc.doc_id, "version": doc.version}
            body = canonical_json(doc.body)
            doc_rows.append(
                {**key, "content_hash": _text("content_hash", doc.content_hash), "body": body, "created_at": now}
            )
            for name, values in doc.index.items():
                unique = {values} if isinstance(values, str) else set(values)  # a lone str is one value
                index_rows += [{**key, "field": _text("field", name), "value": _text("value", v)} for v in unique]
        out_rows = [_outbox_row(item, now) for item in outbox]

        def write(engine: Engine) -> None:
            try:
                with engine.begin() as conn:
                    if conflict := _conflict(conn, list(seen)):  # the usual case: a clean, named error
                        raise conflict
                    for table, rows in ((DOCUMENTS, doc_rows), (DOCUMENT_INDEX, index_rows), (OUTBOX, out_rows)):
                        if rows:
                            conn.execute(sa.insert(table), rows)
            except sa_exc.IntegrityError as exc:  # a concurrent writer got there between check and insert
                conflict = _read(engine, lambda c: _conflict(c, list(seen)))
                raise conflict or VersionConflictError("a document of this commit exists already") from exc

        await self._run("commit", write)

    async def pending_outbox(self, limit: int = 500) -> list[OutboxRow]:
        """Rows not yet sent, oldest first."""
        q = sa.select(OUTBOX).order_by(OUTBOX.c.id).limit(max(1, limit))

        def read(conn: Connection) -> list[OutboxRow]:
            return [
                OutboxRow(r.id, r.subject, bytes(r.payload), json.loads(r.headers), _utc(r.created_at))
                for r in conn.execute(q)
            ]

        return await self._run("read outbox", lambda e: _read(e, read))

    async def mark_sent(self, ids: Sequence[int]) -> None:
        """Forget rows that were published: sent rows are DELETED (the stream is the record)."""
        if ids:
            q = sa.delete(OUTBOX).where(OUTBOX.c.id.in_(list(ids)))
            await self._run("mark outbox sent", lambda e: _execute(e, q))


#: Rows a relay publishes at once before waiting for their acks (``OutboxRelay(window=...)``).
DEFAULT_WINDOW = 128


def order_key(row: OutboxRow) -> str:
    """What a row must stay in order with: its envelope's entity (CloudEvents ``subject``), else its NATS subject."""
    try:
        entity = json.loads(row.payload).get("subject")
    except (ValueError, AttributeError):  # not an envelope (never written by OutboxItem): its subject orders it
        entity = None
    return f"entity:{entity}" if isinstance(entity, str) and entity else f"subject:{row.subject}"


def windows(rows: Sequence[OutboxRow], size: int) -> Iterator[list[OutboxRow]]:
    """``rows`` (in id order) as windows to publish one after the other, each in id order.

    A window holds at most ``size`` rows and at most one per order key: the rows of a key form a lane,
    and a window takes the first row of the ``size`` lanes whose first rows are the oldest. So a row is
    never in flight with an earlier row of its key, and goes only after that row's window.
    """
    lanes: dict[str, deque[OutboxRow]] = {}
    for row in rows:
        lanes.setdefault(order_key(row), deque()).append(row)
    heads = [(lane[0].id, key) for key, lane in lanes.items()]
    heapq.heapify(heads)
    while heads:
        taken = [heapq.heappop(heads) for _ in range(min(size, len(heads)))]
        yield [lanes[key].popleft() for _, key in taken]
        for _, key in taken:
            if lanes[key]:
                heapq.heappush(heads, (lanes[key][0].id, key))


class OutboxRelay:
    """Publishes outbox rows, a window at a time. One flush runs at a time per store in a process; a
    relay in another process only causes re-sends that JetStream drops as duplicates inside the
    stream's duplicate window (a row is deleted only after its ack, so the per-entity order holds
    across relays too)."""

    def __init__(self, store: DocumentStore, bus: Bus, *, window: int = DEFAULT_WINDOW) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.store = store
        self.bus = bus
        self.window = window

    async def flush(self, limit: int = 500) -> int:
        """Publish up to ``limit`` pending rows, ``window`` at a time (each window's acks awaited together),
        then delete the acked rows in one transaction. A window with a failed publish ends the flush: the
        failed rows, their entities' later rows and the rows not sent yet stay pending for the next flush.

        Returns how many rows were published (re-sends that JetStream dropped count as sent).
        """
        async with self.store.outbox_lock():
            acked: list[int] = []
            try:
                for window in windows(await self.store.pending_outbox(limit), self.window):
                    if not await self._publish(window, acked):
                        break
            finally:  # also when cancelled: what was acked is not sent again
                await self.store.mark_sent(acked)
            return len(acked)

    async def _publish(self, rows: list[OutboxRow], acked: list[int]) -> bool:
        """Publish ``rows`` concurrently, adding the acked ones' ids to ``acked``; False if any failed."""

        async def one(row: OutboxRow) -> None:
            await self.bus.publish_raw(row.subject, row.payload, row.headers)
            acked.append(row.id)

        outcomes: list[BaseException | None]
        if len(rows) == 1:  # an entity's rows one after the other: no tasks to make
            outcomes = [None]
            try:
                await one(rows[0])
            except Exception as exc:
                outcomes = [exc]
        else:
            outcomes = await asyncio.gather(*(one(row) for row in rows), return_exceptions=True)
        failed = [(row, out) for row, out in zip(rows, outcomes, strict=True) if isinstance(out, BaseException)]
        if failed:  # these rows (and their entities' later rows) are retried by the next flush
            first, error = failed[0]
            log.warning(
                "outbox.publish_failed",
                failed=len(failed),
                of=len(rows),
                outbox_id=first.id,
                subject=first.subject,
                error=repr(error),
            )
        return not failed

    @classmethod
    async def flush_now(cls, store: DocumentStore, bus: Bus | None) -> None:
        """Publish what is pending now, when the bus is connected (the background relay would, a moment later)."""
        if bus is not None and bus.connected:
            await cls(store, bus).flush()

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0, limit: int = 500) -> None:
        """Flush until ``stop`` is set; a full batch flushes again at once. Never raises."""
        while not stop.is_set():
            sent = 0
            try:
                sent = await self.flush(limit)
            except Exception as exc:
                log.warning("outbox.flush_failed", error=repr(exc))
            if sent < limit:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)


def _conditions(kind: str, filters: dict[str, list[str]], latest_only: bool) -> list[sa.ColumnElement[bool]]:
    # One flat query of correlated EXISTS: PostgreSQL plans it well even before the first ANALYZE
    # (a LIMIT-ed IN-subquery or a max() subquery took seconds on 500 fresh rows).
    d = DOCUMENTS
    conds: list[sa.ColumnElement[bool]] = [d.c.kind == kind]
    if latest_only:
        n = DOCUMENTS.alias()
        newer = sa.select(n.c.version).where(n.c.kind == d.c.kind, n.c.doc_id == d.c.doc_id, n.c.version > d.c.version)
        conds.append(~newer.exists())
    for name, values in filters.items():
        i = DOCUMENT_INDEX.alias()
        match = sa.select(i.c.version).where(
            i.c.kind == d.c.kind, i.c.doc_id == d.c.doc_id, i.c.version == d.c.version, i.c.field == name
        )
        conds.append(match.where(i.c.value.in_(values)).exists())
    return conds


def _read(engine: Engine, fn: Callable[[Connection], T]) -> T:
    with engine.connect() as conn:
        return fn(conn)


def _load(conn: Connection, query: Any) -> list[Document]:
    rows = list(conn.execute(query))
    index: dict[tuple[str, str, int], dict[str, list[str]]] = {}
    for kind in {r.kind for r in rows}:
        keys = [(r.doc_id, r.version) for r in rows if r.kind == kind]
        di = DOCUMENT_INDEX
        for i in conn.execute(sa.select(di).where(di.c.kind == kind, sa.tuple_(di.c.doc_id, di.c.version).in_(keys))):
            index.setdefault((kind, i.doc_id, i.version), {}).setdefault(i.field, []).append(i.value)
    return [
        _doc(r, {f: tuple(sorted(v)) for f, v in sorted(index.get((r.kind, r.doc_id, r.version), {}).items())})
        for r in rows
    ]


def _execute(engine: Engine, statement: Any) -> None:
    with engine.begin() as conn:
        conn.execute(statement)


def _create_schema(engine: Engine, attempts: int = 3) -> None:
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            have = conn.execute(sa.select(META.c.value).where(META.c.key == "schema_version")).scalar()
            if have is None:
                conn.execute(sa.insert(META).values(key="schema_version", value=str(SCHEMA_VERSION)))
            elif int(have) > SCHEMA_VERSION:
                raise PermanentError(f"database schema version {have} is newer than this code's {SCHEMA_VERSION}")
    except (sa_exc.IntegrityError, sa_exc.ProgrammingError):
        if attempts <= 1:  # several processes creating the same tables at once: one wins, retry
            raise
        _create_schema(engine, attempts - 1)
