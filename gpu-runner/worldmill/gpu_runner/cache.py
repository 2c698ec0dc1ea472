"""Warm models, keyed by execution signature, within a memory budget.

Loading a Cosmos checkpoint takes minutes; a runner that reloads per job spends most of its GPU
time loading (the team of docs/background.md#web-ui saved 30–40 % by reusing a loaded model). The cache keeps every
loaded backend it can afford and evicts the least recently used one when a new load needs room.

Backends of one runner share components (``Backend.memory_parts``: a Transfer pipeline's text
encoder, transformer and VAE are the same for its edge and depth controlnets), so memory is the
sum over the *distinct* parts held; a new load is expected to need the parts of its model not
loaded now, plus its signature's own parts (its controlnet), as last seen.
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

#: Parts that belong to one signature, not to the model (a Transfer controlnet per control type).
_OWN_PARTS = ("controlnet:",)


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
        self._parts: dict[str, dict[str, int]] = {}
        self.stats = CacheStats()

    def signatures(self) -> list[ExecutionSignature]:
        """What is loaded now, least recently used first."""
        return list(self._loaded)

    def used_bytes(self) -> int:
        """Memory the loaded backends hold, each shared part counted once."""
        parts: dict[str, int] = {}
        total = 0
        for backend in self._loaded.values():
            held = backend.memory_parts()
            if held:
                parts.update(held)
            else:
                total += backend.memory_bytes()
        return total + sum(parts.values())

    def _expected(self, signature: ExecutionSignature) -> int:
        """Bytes a load of ``signature`` will add: what is not loaded yet of its model's parts, as last seen."""
        seen = self._parts.get(signature.model)
        if seen:
            loaded = {k for b in self._loaded.values() for k in b.memory_parts()}
            return sum(v for k, v in seen.items() if k not in loaded or k.startswith(_OWN_PARTS))
        return self._sizes.get(signature.model) or max((b.memory_bytes() for b in self._loaded.values()), default=0)

    async def get(self, signature: ExecutionSignature) -> tuple[Backend, float]:
        """The loaded backend for ``signature`` and the seconds spent loading it now (0 on a hit)."""
        backend = self._loaded.get(signature)
        if backend is not None:
            self._loaded.move_to_end(signature)
            self.stats.hits += 1
            return backend, 0.0
        # Make room *before* loading (a GPU has no room for both): what this model added when last
        # seen, else the largest one loaded now, stands in for what the load will take.
        await self._evict_until(self._expected(signature))
        backend = self._factory(signature)
        started = time.perf_counter()
        await asyncio.to_thread(backend.setup)
        seconds = time.perf_counter() - started
        self._sizes[signature.model] = backend.memory_bytes()
        if parts := backend.memory_parts():
            self._parts[signature.model] = parts
        self._loaded[signature] = backend
        await self._evict_until(0, keep=signature)
        self.stats.loads += 1
        self.stats.load_seconds += seconds
        self.stats.loaded_signatures.append(signature)
        log.info("model.loaded", model=signature.model, checkpoint=signature.checkpoint, seconds=round(seconds, 2))
        return backend, seconds

    async def _evict_until(self, needed: int, *, keep: ExecutionSignature | None = None) -> None:
        while self.used_bytes() + needed > self._budget:
            victims = [s for s in self._loaded if s != keep]
            if not victims:
                return
            old_sig = victims[0]
            old = self._loaded.pop(old_sig)
            await asyncio.to_thread(old.close)
            self.stats.evictions += 1
            log.info("model.evicted", model=old_sig.model, checkpoint=old_sig.checkpoint)

    async def close(self) -> None:
        """Free every loaded backend."""
        while self._loaded:
            _, backend = self._loaded.popitem()
            await asyncio.to_thread(backend.close)
