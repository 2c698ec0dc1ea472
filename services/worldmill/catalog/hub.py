"""Fan-out of live updates to the gallery's server-sent-event streams.

Each open stream has a bounded queue; a slow reader loses its oldest updates, never blocks the
consumer that feeds the catalog (progress is a "latest value wins" kind of fact).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

QUEUE_SIZE = 256


@dataclass(frozen=True)
class Update:
    """One server-sent event: its name and its JSON-ready data."""

    event: str
    data: dict[str, Any]


@dataclass
class Hub:
    """Subscribers and the updates broadcast to them."""

    _queues: set[asyncio.Queue[Update]] = field(default_factory=set)

    @property
    def subscribers(self) -> int:
        """Streams open now."""
        return len(self._queues)

    def publish(self, update: Update) -> None:
        """Give ``update`` to every subscriber (dropping a full queue's oldest item)."""
        for queue in list(self._queues):
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(update)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[Update]]:
        """A queue that receives every update until the block ends."""
        queue: asyncio.Queue[Update] = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)
