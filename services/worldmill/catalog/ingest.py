"""Group commit for the live ingest: the events handed in while one transaction runs go into the next.

The catalog's consumer handles its fetched messages concurrently; each handler hands its event to
:class:`IngestBatcher` and waits. One drain task at a time takes everything waiting (up to
``max_batch``) and applies it in ONE transaction (``CatalogDatabase.apply_batch``), then answers each
handler; the consumer acks a message only when its handler returns, so only after the commit. An
idle catalog applies a lone event at once (a batch of one); a busy one makes batches as large as
what arrived during the previous commit, without waiting for a batch to fill.

A failed batch is rolled back whole, then:

* the database is unavailable → every event of it gets that error (the consumer retries them);
  trying them one by one would only fail again, once per event;
* anything else (an event the projection or the database refuses) → the batch is applied again one
  event per transaction, so each event gets its own outcome: the bad one its error (a
  ``PermanentError`` is dead-lettered with its reason, anything else retried and dead-lettered after
  the delivery limit, as before batching), the others are applied.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from worldmill.catalog.database import CatalogDatabase, Event
from worldmill.contracts.base import Message
from worldmill.contracts.envelope import EnvelopeAttributes
from worldmill.runtime.errors import TransientError
from worldmill.runtime.logs import get_logger
from worldmill.runtime.sql import DatabaseUnavailableError

log = get_logger(__name__)

#: Most events in one transaction (the consumer holds at most its prefetch, 256, at a time).
MAX_BATCH = 500

_Waiting = tuple[Event, "asyncio.Future[bool]"]


@dataclass
class IngestStats:
    """What the batcher did since it was made."""

    batches: int = 0
    events: int = 0
    largest: int = 0
    #: Batches that failed and were applied again one event per transaction.
    split: int = 0


class IngestBatcher:
    """Applies the events of concurrent callers in shared transactions (see the module docstring)."""

    def __init__(self, db: CatalogDatabase, *, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.db = db
        self.max_batch = max_batch
        self.stats = IngestStats()
        self._waiting: list[_Waiting] = []
        self._drain: asyncio.Task[None] | None = None

    async def apply(self, attrs: EnvelopeAttributes, message: Message) -> bool:
        """Apply one event with whatever else is waiting; True when it was new. Returns after the commit."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append(((attrs, message), done))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._drain_all())
        return await done

    async def _drain_all(self) -> None:
        while self._waiting:
            await asyncio.sleep(0)  # the other handlers of the same fetch join this batch
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            try:
                await self._apply(batch)
            except BaseException:  # cancelled (shutdown): nobody may wait forever; the consumer retries
                stranded, self._waiting = [*batch, *self._waiting], []
                for _, done in stranded:
                    _fail(done, TransientError("catalog ingest stopped before this event was applied"))
                raise

    async def _apply(self, batch: list[_Waiting]) -> None:
        events = [event for event, _ in batch]
        try:
            results = await self.db.apply_batch(events)
        except DatabaseUnavailableError as exc:
            for _, done in batch:
                _fail(done, exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch[0][1], exc)
                return
            self.stats.split += 1
            log.warning("catalog.batch_split", events=len(batch), error=f"{type(exc).__name__}: {exc}"[:500])
            await self._one_by_one(batch)
            return
        self.stats.batches += 1
        self.stats.events += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        for (_, done), new in zip(batch, results, strict=True):
            if not done.done():
                done.set_result(new)

    async def _one_by_one(self, batch: list[_Waiting]) -> None:
        for (attrs, message), done in batch:
            try:
                new = await self.db.apply(attrs, message)
            except Exception as exc:
                _fail(done, exc)
            else:
                if not done.done():
                    done.set_result(new)


def _fail(done: asyncio.Future[bool], exc: BaseException) -> None:
    if not done.done():
        done.set_exception(exc)
