"""Outages of a dependency (NATS, the object store, a consumer's pull): noticed once, waited out, logged once.

An :class:`Outage` is what one caller knows about one dependency: up, or down since when and why.
It logs ``outage.started`` the first time a call fails and ``outage.ended`` (with how long it
lasted) the first time one succeeds again — never once per retry, however long the outage.
:func:`patiently` retries a call through an outage with capped exponential backoff and jitter,
up to a patience, so work in hand survives seconds or minutes of downtime without being failed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from worldmill.runtime.errors import UnavailableError
from worldmill.runtime.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")


@dataclass
class Backoff:
    """Capped exponential delays with jitter (±20 %), restarting from ``first_s`` after ``reset``."""

    first_s: float = 0.25
    max_s: float = 5.0
    _next: float = field(default=0.0, init=False)

    def next(self) -> float:
        """The delay before the next attempt."""
        base = self._next or self.first_s
        self._next = min(self.max_s, base * 2)
        return float(base * random.uniform(0.8, 1.2))

    def reset(self) -> None:
        """Start again from the first delay (after a success)."""
        self._next = 0.0


@dataclass
class Outage:
    """Whether ``dependency`` is reachable as this caller sees it; logs each outage once and its end once."""

    dependency: str
    clock: Callable[[], float] = time.monotonic
    since: float | None = None
    error: str | None = None
    #: Outages seen (ended or not), for health reports and tests.
    count: int = 0

    @property
    def down(self) -> bool:
        """True from the first failure until the next success."""
        return self.since is not None

    def failed(self, exc: BaseException | str) -> None:
        """A call failed because the dependency is unreachable (logged only when an outage starts)."""
        self.error = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        if self.since is None:
            self.since = self.clock()
            self.count += 1
            log.warning("outage.started", dependency=self.dependency, error=self.error[:500])

    def ok(self) -> None:
        """A call succeeded (logged only when it ends an outage)."""
        if self.since is not None:
            log.info("outage.ended", dependency=self.dependency, down_s=round(self.clock() - self.since, 1))
            self.since = None
            self.error = None

    def down_for(self) -> float:
        """Seconds since the outage started (0 when up)."""
        return 0.0 if self.since is None else self.clock() - self.since


async def patiently(
    call: Callable[[], Awaitable[T]],
    outage: Outage,
    *,
    patience_s: float,
    retry_on: tuple[type[BaseException], ...] = (UnavailableError,),
    backoff: Backoff | None = None,
) -> T:
    """``await call()``, retried while it raises one of ``retry_on``, for up to ``patience_s``.

    The outage is logged once when the first attempt fails and once when one succeeds. After
    ``patience_s`` the last error is raised, so the caller decides what a long outage means.
    """
    delays = backoff or Backoff()
    started = time.monotonic()
    while True:
        try:
            result = await call()
        except retry_on as exc:
            outage.failed(exc)
            if time.monotonic() - started >= patience_s:
                raise
            await asyncio.sleep(delays.next())
            continue
        outage.ok()
        return result
