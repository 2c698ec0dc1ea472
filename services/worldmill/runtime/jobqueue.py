"""A work queue a worker takes jobs from and settles them itself (the GPU runner's view of JetStream).

Unlike ``Consumer``, which runs a handler per message, a ``JobQueue`` hands the caller decoded
jobs to hold, reorder and settle when their outcome is published: ``done`` (ack) or ``give_back``
(nak, now or after a delay, for another worker). Held jobs are heartbeated (``in_progress``) so a
long job or a job waiting in a selection window is not redelivered; undecodable messages and crash
loops are dead-lettered on the way in, exactly as ``Consumer`` does (payloads too big for a dead
letter go to ``store``).

``take`` never raises for an outage: while NATS is disconnected it asks for nothing (a buffered
pull request would arrive stale after the reconnect); a failed pull drops the binding and the next
``take`` ensures the consumer and binds again, with capped backoff. A job redelivered while it is
still held (an outage longer than the ack wait) is not handed out twice: the held job takes the
new delivery's handle. ``watchdog`` records progress for the runner's health routes.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from nats.aio.msg import Msg

from worldmill.contracts.base import Message
from worldmill.contracts.envelope import EnvelopeAttributes
from worldmill.contracts.subjects import ConsumerSpec
from worldmill.runtime.admission import Admitted, admit, delivery_counts
from worldmill.runtime.bus import Bus
from worldmill.runtime.consumer import PULL_ERRORS, PullSubscription, ensure_pull_consumer
from worldmill.runtime.errors import BusUnavailableError
from worldmill.runtime.logs import get_logger
from worldmill.runtime.outage import Backoff, Outage
from worldmill.runtime.store import ObjectStore
from worldmill.runtime.watchdog import Watchdog

log = get_logger(__name__)


@dataclass(eq=False)
class HeldJob:
    """A decoded job in hand; settle it with ``JobQueue.done`` or ``JobQueue.give_back``."""

    envelope: EnvelopeAttributes
    message: Message
    deliveries: int
    _msg: Msg
    sequence: int = 0


class JobQueue:
    """Take, hold and settle jobs of one durable pull consumer."""

    def __init__(
        self,
        bus: Bus,
        spec: ConsumerSpec,
        accept: tuple[type[Message], ...],
        *,
        source: str,
        store: ObjectStore | None = None,
    ) -> None:
        self.bus = bus
        self.spec = spec
        self.accept = frozenset(c.ce_type() for c in accept)
        self.source = source
        self.store = store
        self.dead_lettered = 0
        #: Dead letters that could not be written yet (their messages were handed back with a delay).
        self.deferred = 0
        #: Redeliveries of a job still held here, merged into the held job instead of handed out again.
        self.merged = 0
        self.watchdog = Watchdog(spec.durable, backlog=self._backlog)
        self.pull = Outage(f"pull:{spec.durable}")
        self._sub: PullSubscription | None = None
        self._held: dict[int, HeldJob] = {}
        self._by_sequence: dict[int, HeldJob] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._backoff = Backoff()
        self._open = False

    async def _backlog(self) -> int:
        if not self.bus.connected:  # unknown, at once (a health probe must not wait on a dead connection)
            raise BusUnavailableError("bus: not connected")
        return await self.bus.pending(self.spec.stream, self.spec.durable)

    @property
    def held(self) -> int:
        """Jobs in hand now."""
        return len(self._held)

    def holds(self, held: HeldJob) -> bool:
        """Whether ``held`` is still in hand (not yet settled)."""
        return id(held) in self._held

    async def open(self) -> None:
        """Start heartbeating held jobs and bind to the consumer (or leave that to ``take`` while NATS is down)."""
        self._open = True
        self._heartbeat = asyncio.create_task(self._beat())
        await self._bind()

    async def _bind(self) -> bool:
        try:
            await ensure_pull_consumer(self.bus, self.spec)
            self._sub = await self.bus.js.pull_subscribe_bind(self.spec.durable, stream=self.spec.stream)
        except (*PULL_ERRORS, BusUnavailableError) as exc:
            self.pull.failed(exc)
            return False
        self.pull.ok()
        self._backoff.reset()
        return True

    async def _unbind(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def take(self, most: int, *, wait: bool) -> list[HeldJob]:
        """Up to ``most`` jobs; when ``wait``, wait up to a second for the first one. Never raises for an outage."""
        self.watchdog.beat()
        if not self._open or most <= 0:
            return []
        if not self.bus.connected:
            await asyncio.sleep(0.25 if wait else 0)
            return []
        if self._sub is None and not await self._bind():
            await asyncio.sleep(self._backoff.next() if wait else 0)
            return []
        sub = self._sub
        if sub is None:  # unbound meanwhile (close)
            return []
        try:
            msgs = await sub.fetch(1 if wait else most, timeout=1.0 if wait else 0.05)
        except TimeoutError:  # nats-py raises its own subclass and plain asyncio timeouts
            return []
        except PULL_ERRORS as exc:
            self.pull.failed(exc)
            await self._unbind()
            await asyncio.sleep(self._backoff.next() if wait else 0)
            return []
        out = []
        for msg in msgs:
            held = await self._admit(msg)
            if held is not None:
                out.append(held)
        self.watchdog.hold(len(self._held))
        return out

    async def _admit(self, msg: Msg) -> HeldJob | None:
        _, sequence = delivery_counts(msg)
        if (already := self._by_sequence.get(sequence)) is not None:
            # Redelivered while held (the server's ack wait ran out during an outage): keep one job,
            # settled through the newest delivery (the one the server now waits for).
            already._msg = msg
            self.merged += 1
            return None
        admitted = await admit(self.bus, msg, spec=self.spec, accept=self.accept, source=self.source, store=self.store)
        if not isinstance(admitted, Admitted):
            if isinstance(admitted, str):
                self.dead_lettered += 1
            else:
                self.deferred += 1
            self.watchdog.progressed()
            return None
        held = HeldJob(
            envelope=admitted.envelope,
            message=admitted.message,
            deliveries=admitted.delivered,
            _msg=msg,
            sequence=admitted.sequence,
        )
        self._held[id(held)] = held
        self._by_sequence[held.sequence] = held
        return held

    def _forget(self, held: HeldJob) -> None:
        self._held.pop(id(held), None)
        if self._by_sequence.get(held.sequence) is held:
            del self._by_sequence[held.sequence]
        self.watchdog.hold(len(self._held))
        self.watchdog.progressed()

    async def done(self, held: HeldJob) -> None:
        """Ack: the job's outcome is published, the queue may forget it.

        An ack that cannot be sent (connection closed) is logged, not raised: the job comes back
        after the ack wait and its outcome, already stored, is answered again.
        """
        self._forget(held)
        try:
            await held._msg.ack()
        except Exception as exc:
            log.warning("job.ack_failed", error=f"{type(exc).__name__}: {exc}", stream_seq=held.sequence)

    async def give_back(self, held: HeldJob, *, delay_s: float | None = None) -> None:
        """Nak, now or after ``delay_s``: another worker may take it (best effort; else after the ack wait)."""
        self._forget(held)
        with contextlib.suppress(Exception):
            await held._msg.nak(delay=delay_s)

    async def close(self) -> None:
        """Give back every held job and stop."""
        self._open = False
        for held in list(self._held.values()):
            await self.give_back(held)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        await self._unbind()

    async def _beat(self) -> None:
        interval = max(0.05, self.spec.ack_wait_s / 3)
        while True:
            await asyncio.sleep(interval)
            if not self.bus.connected:  # buffered beats would reach the server all at once, late
                continue
            for held in list(self._held.values()):
                with contextlib.suppress(Exception):
                    await held._msg.in_progress()
