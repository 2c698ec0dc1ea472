"""Warm models, keyed by execution signature, within a memory budget.

Loading a Cosmos checkpoint takes minutes; a runner that reloads per job spends most of its GPU
time loading (seeds/004's users saved 30–40 % by reusing a loaded model). The cache keeps every
loaded backend it can afford and evicts the least recently used one when a new load needs room.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from worldmill.contracts.generation import ExecutionSignature
from worldmill.gpu_runner.backends.base import Backend
from worldmill.runtime.logs import get_logger

log = get_logger(__name__)


@dataclass
class CacheStats:
    """What the cache did: loads, hits, evictions and time spent loading."""

    loads: int = 0
    hits: int = 0
    evictions: int = 0
    load_seconds: float = 0.0
    loaded_signatures: list[ExecutionSignature] = field(default_factory=list)


class ModelCache:
    """Backends by signature; ``get`` loads (``setup`` in a thread) on a miss."""

    def __init__(self, factory: Callable[[ExecutionSignature], Backend], *, budget_bytes: int) -> None:
        self._factory = factory
        self._budget = budget_bytes
        self._loaded: OrderedDict[ExecutionSignature, Backend] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self.stats = CacheStats()

    def signatures(self) -> list[ExecutionSignature]:
        """What is loaded now, least recently used first."""
        return list(self._loaded)

    def used_bytes(self) -> int:
        """Memory the loaded backends say they hold."""
        return sum(b.memory_bytes() for b in self._loaded.values())

    async def get(self, signature: ExecutionSignature) -> tuple[Backend, float]:
        """The loaded backend for ``signature`` and the seconds spent loading it now (0 on a hit)."""
        backend = self._loaded.get(signature)
        if backend is not None:
            self._loaded.move_to_end(signature)
            self.stats.hits += 1
            return backend, 0.0
        # Make room *before* loading (a GPU has no room for both): the size of this model as last
        # seen, else the largest one loaded now, stands in for what the load will take.
        expected = self._sizes.get(signature.model) or max((b.memory_bytes() for b in self._loaded.values()), default=0)
        await self._evict_until(expected)
        backend = self._factory(signature)
        started = time.perf_counter()
        await asyncio.to_thread(backend.setup)
        seconds = time.perf_counter() - started
        self._sizes[signature.model] = backend.memory_bytes()
        await self._evict_until(backend.memory_bytes())
        self._loaded[signature] = backend
        self.stats.loads += 1
        self.stats.load_seconds += seconds
        self.stats.loaded_signatures.append(signature)
        log.info("model.loaded", model=signature.model, checkpoint=signature.checkpoint, seconds=round(seconds, 2))
        return backend, seconds

    async def _evict_until(self, needed: int) -> None:
        while self._loaded and self.used_bytes() + needed > self._budget:
            old_sig, old = self._loaded.popitem(last=False)
            await asyncio.to_thread(old.close)
            self.stats.evictions += 1
            log.info("model.evicted", model=old_sig.model, checkpoint=old_sig.checkpoint)

    async def close(self) -> None:
        """Free every loaded backend."""
        while self._loaded:
            _, backend = self._loaded.popitem()
            await asyncio.to_thread(backend.close)
