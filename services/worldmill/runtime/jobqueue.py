"""A work queue a worker takes jobs from and settles them itself (the GPU runner's view of JetStream).

Unlike ``Consumer``, which runs a handler per message, a ``JobQueue`` hands the caller decoded
jobs to hold, reorder and settle when their outcome is published: ``done`` (ack) or ``give_back``
(nak now, for another worker). Held jobs are heartbeated (``in_progress``) so a long job or a job
waiting in a selection window is not redelivered; undecodable messages and crash loops are
dead-lettered on the way in, exactly as ``Consumer`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import nats.errors
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from worldmill.contracts.base import Message
from worldmill.contracts.envelope import EnvelopeAttributes
from worldmill.contracts.subjects import ConsumerSpec
from worldmill.runtime.bus import Bus
from worldmill.runtime.consumer import Admitted, admit


@dataclass(eq=False)
class HeldJob:
    """A decoded job in hand; settle it with ``JobQueue.done`` or ``JobQueue.give_back``."""

    envelope: EnvelopeAttributes
    message: Message
    deliveries: int
    _msg: Msg


class JobQueue:
    """Take, hold and settle jobs of one durable pull consumer."""

    def __init__(self, bus: Bus, spec: ConsumerSpec, accept: tuple[type[Message], ...], *, source: str) -> None:
        self.bus = bus
        self.spec = spec
        self.accept = frozenset(c.ce_type() for c in accept)
        self.source = source
        self.dead_lettered = 0
        self._sub: JetStreamContext.PullSubscription | None = None
        self._held: dict[int, HeldJob] = {}
        self._heartbeat: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Ensure the consumer, bind to it and start heartbeating held jobs."""
        await self.bus.ensure_consumer(self.spec)
        self._sub = await self.bus.js.pull_subscribe_bind(self.spec.durable, stream=self.spec.stream)
        self._heartbeat = asyncio.create_task(self._beat())

    async def take(self, most: int, *, wait: bool) -> list[HeldJob]:
        """Up to ``most`` jobs; when ``wait``, wait up to a second for the first one."""
        if self._sub is None or most <= 0:
            return []
        try:
            msgs = await self._sub.fetch(1 if wait else most, timeout=1.0 if wait else 0.05)
        except TimeoutError:  # nats-py raises its own subclass and plain asyncio timeouts
            return []
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
            await asyncio.sleep(0.5)
            return []
        out = []
        for msg in msgs:
            held = await self._admit(msg)
            if held is not None:
                out.append(held)
        return out

    async def _admit(self, msg: Msg) -> HeldJob | None:
        admitted = await admit(self.bus, msg, spec=self.spec, accept=self.accept, source=self.source)
        if not isinstance(admitted, Admitted):
            self.dead_lettered += 1
            return None
        held = HeldJob(envelope=admitted.envelope, message=admitted.message, deliveries=admitted.delivered, _msg=msg)
        self._held[id(held)] = held
        return held

    async def done(self, held: HeldJob) -> None:
        """Ack: the job's outcome is published, the queue may forget it."""
        self._held.pop(id(held), None)
        await held._msg.ack()

    async def give_back(self, held: HeldJob) -> None:
        """Nak without delay: another worker may take it now."""
        self._held.pop(id(held), None)
        with contextlib.suppress(Exception):
            await held._msg.nak()

    async def close(self) -> None:
        """Give back every held job and stop."""
        for held in list(self._held.values()):
            await self.give_back(held)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _beat(self) -> None:
        interval = max(0.05, self.spec.ack_wait_s / 3)
        while True:
            await asyncio.sleep(interval)
            for held in list(self._held.values()):
                with contextlib.suppress(Exception):
                    await held._msg.in_progress()
