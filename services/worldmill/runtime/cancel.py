"""Cancel flags in a NATS key-value bucket: set by the generate service, watched by runners.

A runner keeps a local set of canceled run ids, fed by a KV watch, so checking a flag between two
denoising steps costs a set lookup (safe from the GPU thread) and no round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from worldmill.contracts.subjects import CANCEL_BUCKET, CANCEL_TTL_S
from worldmill.runtime.bus import Bus
from worldmill.runtime.logs import get_logger

log = get_logger(__name__)


class CancelFlags:
    """Set, read and follow cancel flags. ``watch()`` must run for ``is_canceled`` to see others' flags."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._kv: KeyValue | None = None
        self._canceled: set[str] = set()
        self._lock = threading.Lock()

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self.bus.js.key_value(CANCEL_BUCKET)
            except BucketNotFoundError:
                self._kv = await self.bus.js.create_key_value(
                    bucket=CANCEL_BUCKET, ttl=CANCEL_TTL_S, history=1, replicas=self.bus.stream_replicas
                )
        return self._kv

    async def ensure(self) -> None:
        """Create the bucket when it is missing (``bus init`` and the local stack's set-up do, as ``admin``)."""
        await self._bucket()

    async def cancel(self, run_id: str, reason: str = "") -> None:
        """Flag a run as canceled (idempotent)."""
        kv = await self._bucket()
        await kv.put(run_id, reason.encode() or b"canceled")
        with self._lock:
            self._canceled.add(run_id)

    async def fetch(self, run_id: str) -> bool:
        """Ask the bucket directly whether a run is canceled."""
        kv = await self._bucket()
        try:
            entry = await kv.get(run_id)
        except KeyNotFoundError:
            return False
        return entry is not None and entry.value is not None

    def is_canceled(self, run_id: str) -> bool:
        """From the local set (thread-safe; fed by ``watch``)."""
        with self._lock:
            return run_id in self._canceled

    async def watch(self, stop: asyncio.Event) -> None:
        """Follow the bucket until ``stop``: every flag set anywhere lands in the local set."""
        kv = await self._bucket()
        watcher = await kv.watchall()
        try:
            while not stop.is_set():
                try:
                    entry = await watcher.updates(timeout=1.0)  # type: ignore[no-untyped-call]
                except TimeoutError:
                    continue
                if entry is None or entry.key is None:
                    continue
                with self._lock:
                    if entry.value:
                        self._canceled.add(entry.key)
                    else:
                        self._canceled.discard(entry.key)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
