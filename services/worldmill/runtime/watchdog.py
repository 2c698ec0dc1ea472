"""A watchdog on one work loop (a consumer, the runner's job queue): is it getting anything done?

The loop tells it three things: it is turning (``beat``, each time it goes round to pull), how
many messages it holds (``hold``), and that it made progress (``progressed``: a message settled,
a denoising step done). ``stall`` answers, from those and an optional count of messages waiting
on the server, whether the loop is stuck and since when:

* it holds messages and none was settled (nor any step made) since it started holding them;
* it holds nothing and has not gone round for a while (the loop is stuck somewhere, or dead);
* messages wait on the server, it holds none and has settled none since that was first seen.

Thresholds are the caller's (``/readyz`` reports a short stall, ``/healthz`` fails after a long
one so an orchestrator restarts the process). Recovery never depends on this: the loops heal
themselves; the watchdog is for the case they cannot. No I/O but the optional backlog probe; an
injectable clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Stall:
    """How long a loop has been stuck and why, in words for a health report."""

    seconds: float
    reason: str


@dataclass
class Watchdog:
    """Progress of one loop. ``backlog`` (optional) counts messages waiting on the server."""

    name: str
    backlog: Callable[[], Awaitable[int]] | None = None
    clock: Callable[[], float] = time.monotonic
    _beat: float = field(default=0.0, init=False)
    _progress: float = field(default=0.0, init=False)
    _holding: int = field(default=0, init=False)
    _holding_since: float = field(default=0.0, init=False)
    _waiting_since: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        now = self.clock()
        self._beat = self._progress = self._holding_since = now

    def beat(self) -> None:
        """The loop went round (it is about to pull, or just pulled)."""
        self._beat = self.clock()

    def hold(self, count: int) -> None:
        """The loop now holds ``count`` messages."""
        if count > 0 and self._holding == 0:
            self._holding_since = self.clock()
        self._holding = max(0, count)

    def progressed(self) -> None:
        """Something got done: a message settled (ack, nak, term, dead letter) or a step of work."""
        self._progress = self.clock()
        self._waiting_since = None

    @property
    def holding(self) -> int:
        """Messages held now."""
        return self._holding

    def stall(self, *, waiting: int | None = None) -> Stall:
        """How long the loop has gone without doing what it should, and why; compare ``seconds`` to a threshold.

        ``waiting`` is the server's count of messages not yet delivered (``None``: unknown). An idle
        loop that goes round as it should reports the time since it last did (well under a second).
        """
        now = self.clock()
        if self._holding > 0:
            since = max(self._progress, self._holding_since)
            return Stall(now - since, f"holds {self._holding} message(s), none settled for {now - since:.0f} s")
        silent = Stall(now - self._beat, f"holds nothing and has not pulled for {now - self._beat:.0f} s")
        if waiting is None:
            return silent
        if waiting <= 0:
            self._waiting_since = None
            return silent
        if self._waiting_since is None:
            self._waiting_since = now
        since = max(self._waiting_since, self._progress)
        backlog = Stall(now - since, f"{waiting} message(s) wait on the server, none taken for {now - since:.0f} s")
        return max(silent, backlog, key=lambda st: st.seconds)

    async def check(self, *, timeout_s: float = 2.0) -> Stall:
        """``stall`` with the backlog asked from the server (unknown when it cannot be asked in time)."""
        waiting: int | None = None
        if self.backlog is not None:
            try:
                waiting = await asyncio.wait_for(self.backlog(), timeout=timeout_s)
            except Exception:  # NATS down: the bus check reports that; no backlog known
                waiting = None
        return self.stall(waiting=waiting)
