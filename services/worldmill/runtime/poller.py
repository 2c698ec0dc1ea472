"""A bucket poller for S3 stores that cannot push notifications (SeaweedFS locally, any other S3).

Each poll lists the bucket under a prefix and, for every object whose (key, etag) it has not
seen, commits a ``poller-seen`` document and the ``ObjectCreated`` event in ONE transaction of
the document store's outbox, then flushes the outbox. The state lives in the database, so a new
poller on the same database resumes where the last one stopped (nothing is emitted twice) and
an overwritten object (new etag) is emitted again, as a new version of its ``poller-seen``
document. Zero-byte objects are emitted (the consumer decides what is bad input); directory
markers (keys ending in ``/``) are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from worldmill.contracts.keys import InvalidKeyError
from worldmill.contracts.objects import ObjectCreated
from worldmill.runtime.bus import Bus
from worldmill.runtime.docstore import (
    MAX_FIND_LIMIT,
    Document,
    DocumentStore,
    NewDocument,
    OutboxItem,
    OutboxRelay,
    VersionConflictError,
)
from worldmill.runtime.errors import InvalidInputError, ObjectNotFoundError
from worldmill.runtime.logs import get_logger
from worldmill.runtime.notifications import (
    MULTIPART,
    PUT,
    is_directory_marker,
    is_multipart_etag,
    normalise_etag,
    object_created,
    object_created_event_id,
)
from worldmill.runtime.store import ObjectInfo, ObjectStore

log = get_logger(__name__)
T = TypeVar("T")

#: Document kind of the poller's per-object state.
SEEN_KIND = "poller-seen"
_MAX_DOC_ID_BYTES = 255
_MAX_HASH_BYTES = 128
_FLUSH_BATCH = 500
#: Concurrent ``stat`` calls per page (the object store's connection pool holds 16).
_STAT_CONCURRENCY = 8


def mark_new(listed: Sequence[tuple[str, str]], seen: Mapping[str, str]) -> list[str]:
    """Keys of ``listed`` (key, etag) pairs whose etag differs from the one in ``seen`` (or is unseen).

    Listing order is kept. Etags are compared without quotes.
    """
    out: list[str] = []
    for key, etag in listed:
        before = seen.get(key)
        if before is None or normalise_etag(before) != normalise_etag(etag):
            out.append(key)
    return out


def seen_doc_id(bucket: str, key: str) -> str:
    """``<bucket>/<key>``; a digest of the key when that is over the store's 255-byte id limit."""
    doc_id = f"{bucket}/{key}"
    if len(doc_id.encode()) <= _MAX_DOC_ID_BYTES:
        return doc_id
    return f"{bucket}/\x01sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def _content_hash(etag: str) -> str:
    if etag and len(etag.encode()) <= _MAX_HASH_BYTES:
        return etag
    return "sha256:" + hashlib.sha256(etag.encode()).hexdigest()  # empty or oversized etags


def _bounded(calls: Iterable[Coroutine[Any, Any, T]], limit: int = _STAT_CONCURRENCY) -> list[Awaitable[T]]:
    """The coroutines wrapped so that at most ``limit`` run at once under ``asyncio.gather``."""
    gate = asyncio.Semaphore(limit)

    async def gated(call: Coroutine[Any, Any, T]) -> T:
        async with gate:
            return await call

    return [gated(c) for c in calls]


@dataclass(frozen=True)
class _Pending:
    event: ObjectCreated
    event_id: str
    doc: NewDocument


class BucketPoller:
    """Emits ``ObjectCreated(origin="poller")`` for new and overwritten objects of one bucket prefix.

    Construction does no I/O. ``docs`` must be open; ``bus`` may be ``None`` (or disconnected), in
    which case events wait in the outbox for the background ``OutboxRelay``.
    """

    def __init__(
        self,
        store: ObjectStore,
        docs: DocumentStore,
        bus: Bus | None,
        bucket: str,
        *,
        prefix: str = "",
        source: str = "/worldmill/poller",
        page_size: int = 1000,
    ) -> None:
        if not 1 <= page_size <= MAX_FIND_LIMIT:
            raise InvalidInputError("page_size", f"must be between 1 and {MAX_FIND_LIMIT}, got {page_size}")
        if not bucket:
            raise InvalidInputError("bucket", "must not be empty")
        self.store = store
        self.docs = docs
        self.bus = bus
        self.bucket = bucket
        self.prefix = prefix
        self.source = source
        self.page_size = page_size

    async def poll_once(self) -> list[ObjectCreated]:
        """List the prefix, emit an event per new or changed object, flush the outbox; return the events.

        Objects are handled ``page_size`` at a time: one query for their seen state, one commit of
        the new ones' documents and events (falling back to one commit per object when another
        poller wrote some of them first; those are then skipped).
        """
        listed = [o for o in await self.store.list(self.bucket, self.prefix) if not is_directory_marker(o.key)]
        emitted: list[ObjectCreated] = []
        for start in range(0, len(listed), self.page_size):
            page = listed[start : start + self.page_size]
            seen = await self._seen([o.key for o in page])
            etags = {key: doc.body.get("etag", doc.content_hash) for key, doc in seen.items()}
            fresh = set(mark_new([(o.key, o.etag) for o in page], etags))
            stats = _bounded(self._pending(o, seen.get(o.key)) for o in page if o.key in fresh)
            pending = [p for p in await asyncio.gather(*stats) if p is not None]
            emitted += await self._commit(pending)
            await self._flush()
        if not listed:
            await self._flush()  # still send what an earlier poll (or a failed flush) left behind
        return emitted

    async def run(self, stop: asyncio.Event, interval_s: float = 5.0) -> None:
        """Poll every ``interval_s`` until ``stop`` is set. Never raises: failures are logged and retried."""
        while not stop.is_set():
            try:
                events = await self.poll_once()
                if events:
                    log.info("poller.emitted", bucket=self.bucket, prefix=self.prefix, count=len(events))
            except Exception as exc:
                log.warning("poller.poll_failed", bucket=self.bucket, prefix=self.prefix, error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    # -- steps -------------------------------------------------------------------------------

    async def _seen(self, keys: list[str]) -> dict[str, Document]:
        """The latest ``poller-seen`` document of each of ``keys`` that has one."""
        if not keys:
            return {}
        docs = await self.docs.find(SEEN_KIND, where={"bucket": self.bucket, "key": keys}, limit=self.page_size)
        return {str(d.body.get("key")): d for d in docs}

    async def _pending(self, listed: ObjectInfo, before: Document | None) -> _Pending | None:
        """The event and seen document for a new or changed object (None if it vanished meanwhile)."""
        info = listed
        try:
            # The listing has no content type and no recorded sha256; stat has both.
            info = await self.store.stat(self.bucket, listed.key)
        except ObjectNotFoundError:
            return None  # deleted between list and stat: nothing to announce
        except (InvalidKeyError, InvalidInputError) as exc:
            # A key other tools may write but worldmill's check_key refuses: announce what we know.
            log.warning("poller.stat_refused", bucket=self.bucket, key=listed.key, error=str(exc))
        etag = normalise_etag(info.etag)
        event = object_created(
            self.bucket,
            listed.key,
            info.size,
            etag,
            origin="poller",
            content_type=info.content_type or None,
            sha256=info.sha256,
            event_name=MULTIPART if is_multipart_etag(etag) else PUT,
            event_time=info.last_modified or listed.last_modified or datetime.now(UTC),
        )
        event_id = object_created_event_id(self.bucket, listed.key, etag, None)
        doc = NewDocument(
            kind=SEEN_KIND,
            doc_id=seen_doc_id(self.bucket, listed.key),
            version=(before.version + 1) if before else 1,
            body={"bucket": self.bucket, "key": listed.key, "etag": etag, "size": info.size, "event_id": event_id},
            content_hash=_content_hash(etag),
            index={"bucket": (self.bucket,), "key": (listed.key,)},
        )
        return _Pending(event, event_id, doc)

    async def _commit(self, pending: list[_Pending]) -> list[ObjectCreated]:
        """Commit seen documents with their events; on a conflict, object by object, skipping losers."""
        if not pending:
            return []
        try:
            await self.docs.commit([p.doc for p in pending], [self._item(p) for p in pending])
            return [p.event for p in pending]
        except VersionConflictError:
            if len(pending) == 1:
                self._lost(pending[0])
                return []
        done: list[ObjectCreated] = []
        for p in pending:
            try:
                await self.docs.commit([p.doc], [self._item(p)])
            except VersionConflictError:
                self._lost(p)
                continue
            done.append(p.event)
        return done

    def _item(self, p: _Pending) -> OutboxItem:
        return OutboxItem.of(p.event, source=self.source, event_id=p.event_id)

    def _lost(self, p: _Pending) -> None:
        # Another poller on this database recorded this object first; the next poll re-checks it.
        log.info("poller.already_recorded", bucket=self.bucket, key=p.event.key, version=p.doc.version)

    async def _flush(self) -> None:
        """Publish pending outbox rows when the bus is connected (the relay would, a moment later)."""
        if self.bus is None or not self.bus.connected:
            return
        relay = OutboxRelay(self.docs, self.bus)
        while await relay.flush(_FLUSH_BATCH) == _FLUSH_BATCH:
            pass
