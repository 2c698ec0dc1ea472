"""The consume loop: a durable pull consumer whose handler's outcome decides each message's fate.

A consumer is typed by what it accepts: ``Consumer(bus, spec, handler, accept=(VideoReady,))`` hands
its handler a ``Delivery[VideoReady]``, a ``decode=`` function's return type types a foreign stream's
consumer, and one with neither takes any ``Message``. Anything else never reaches the handler: it is
dead-lettered as ``unexpected_type`` (below), so a handler needs no ``isinstance`` guard.

* success → ``ack``;
* :class:`~worldmill.runtime.errors.PermanentError`, or a message that cannot be decoded
  (not JSON, not an envelope, unknown type, data not matching the schema, a type this consumer
  does not take) → copied to ``wm.dlq.<consumer>`` with the reason, then ``term``;
* any other exception → ``nak`` with exponential backoff, until the delivery limit; then
  dead-lettered. A message delivered more often than the limit without ever being answered (its
  worker crashed each time) is dead-lettered before the handler runs again.

While a message is being handled, one heartbeat task sends ``in_progress`` for every message in
hand every ``ack_wait / 3``, so long work is not redelivered; a killed worker stops heartbeating
and its message is redelivered after ``ack_wait``. ``run`` returns after draining when its stop
event is set: no new fetches, in-flight handlers finish, then it returns.

Outages heal by themselves: while NATS is disconnected the loop sends no pull requests (they would
be buffered and flushed stale on reconnect); when a pull fails (JetStream not started yet, the
consumer or stream gone after a restart) it re-creates the consumer, binds again and goes on, with
capped backoff. A handler that raises :class:`~worldmill.runtime.errors.UnavailableError` (NATS or
the store down) is called again with the same delivery once the outage is over, up to
``patience_s``, so an outage spends none of the message's deliveries. A ``watchdog`` records the
loop's progress for ``/readyz`` and ``/healthz``.

A dead letter always fits: a payload too big for the envelope is stored as an object and
referenced (``dead_letters``). When the letter cannot be written now (store or NATS down) the message
is handed back with backoff (``nak`` with a delay), so it neither blocks the queue nor gets lost. Every
message comes in through ``admission``: decoded, checked against the delivery limit, or dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypedDict, cast, overload

import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from typing_extensions import TypeVar, Unpack

from worldmill.contracts.base import Message
from worldmill.contracts.deadletter import DeadLetterReason
from worldmill.contracts.envelope import EnvelopeAttributes
from worldmill.contracts.subjects import ALL_STREAMS, ConsumerSpec
from worldmill.runtime.admission import Admitted, Deferred, admit, backoff_delay, defer_dead_letter
from worldmill.runtime.bus import Bus
from worldmill.runtime.dead_letters import DeadLetterDeferredError, dead_letter
from worldmill.runtime.errors import (
    BusUnavailableError,
    PermanentError,
    TransientError,
    UnavailableError,
)
from worldmill.runtime.logs import get_logger
from worldmill.runtime.outage import Backoff, Outage, patiently
from worldmill.runtime.store import ObjectStore
from worldmill.runtime.watchdog import Watchdog

log = get_logger(__name__)


#: The message type(s) a delivery holds (``Message``: any).
M_co = TypeVar("M_co", bound=Message, default=Message, covariant=True)
#: The message type(s) a consumer accepts.
M = TypeVar("M", bound=Message, default=Message)


@dataclass(frozen=True, slots=True)
class Delivery(Generic[M_co]):
    """One decoded message as a handler sees it: ``message`` is already of a type the consumer accepts."""

    envelope: EnvelopeAttributes
    message: M_co
    subject: str
    num_delivered: int
    stream_sequence: int


Handler = Callable[[Delivery[M]], Awaitable[None]]
#: For streams of foreign messages (e.g. MinIO's raw notifications): bytes → a message, or
#: ``InvalidInputError`` (the message is then dead-lettered as invalid).
RawDecoder = Callable[[bytes], M]


class ConsumerOptions(TypedDict, total=False):
    """How a :class:`Consumer` runs (the keyword arguments besides what it accepts)."""

    concurrency: int
    prefetch: int | None
    fetch_timeout_s: float
    source: str
    store: ObjectStore | None
    patience_s: float


#: How long a busy consumer's fetch may wait to fill a batch (bounds the latency it adds).
BUSY_LINGER_S = 0.05
#: How long a handler's message waits out an outage (NATS or the store down) before it counts as a failure.
DEFAULT_PATIENCE_S = 300.0
#: Pull failures that a new binding can heal: connection errors, JetStream errors (503 while it
#: starts, consumer or stream not found after a restart). Timeouts are not failures: nothing came.
PULL_ERRORS = (nats.errors.Error, OSError)

PullSubscription = JetStreamContext.PullSubscription


@dataclass
class ConsumerStats:
    """Counters of one consumer, for health and tests."""

    acked: int = 0
    nacked: int = 0
    dead_lettered: int = 0
    #: Dead letters that could not be written yet (their messages were handed back with a delay).
    deferred: int = 0
    #: Handler calls repeated because a dependency was down (no delivery spent).
    outage_retries: int = 0
    #: Times the loop bound to its consumer again after a failed pull.
    rebinds: int = 0
    in_flight: int = 0
    heartbeats: int = 0
    last_error: str | None = None
    reasons: dict[str, int] = field(default_factory=dict)


class Consumer(Generic[M]):
    """Runs one handler over one durable pull consumer. Many processes may share the consumer.

    Its handler gets only messages of the types in ``accept`` (others are dead-lettered as
    ``unexpected_type``), or what ``decode`` returns; with neither, any message. Accepting several
    types, name their union: ``Consumer[QaPassed | QaFailed](..., accept=(QaPassed, QaFailed))``.
    """

    @overload
    def __init__(
        self: Consumer[Message],
        bus: Bus,
        spec: ConsumerSpec,
        handler: Handler[Message],
        *,
        accept: None = None,
        decode: None = None,
        **options: Unpack[ConsumerOptions],
    ) -> None: ...

    @overload
    def __init__(
        self,
        bus: Bus,
        spec: ConsumerSpec,
        handler: Handler[M],
        *,
        accept: tuple[type[M], ...],
        decode: None = None,
        **options: Unpack[ConsumerOptions],
    ) -> None: ...

    @overload
    def __init__(
        self,
        bus: Bus,
        spec: ConsumerSpec,
        handler: Handler[M],
        *,
        accept: None = None,
        decode: RawDecoder[M],
        **options: Unpack[ConsumerOptions],
    ) -> None: ...

    def __init__(
        self,
        bus: Bus,
        spec: ConsumerSpec,
        handler: Handler[M],
        *,
        accept: tuple[type[M], ...] | None = None,
        concurrency: int = 1,
        prefetch: int | None = None,
        fetch_timeout_s: float = 1.0,
        source: str = "worldmill",
        decode: RawDecoder[M] | None = None,
        store: ObjectStore | None = None,
        patience_s: float = DEFAULT_PATIENCE_S,
    ) -> None:
        self.bus = bus
        self.decode = decode
        #: Keeps payloads too big for a dead letter's envelope (the service base sets its store here).
        self.store = store
        self.patience_s = patience_s
        self.spec = spec
        self.handler = handler
        self.accept = frozenset(c.ce_type() for c in accept) if accept is not None else None
        self.concurrency = max(1, concurrency)
        self.prefetch = max(self.concurrency, prefetch or self.concurrency)
        self.fetch_timeout_s = fetch_timeout_s
        self.source = source
        self.stats = ConsumerStats()
        self._in_hand: dict[int, Msg] = {}
        self._stop = asyncio.Event()
        self.watchdog = Watchdog(spec.durable, backlog=self._backlog)
        #: This consumer's pull (bound or failing), logged once per outage.
        self.pull = Outage(f"pull:{spec.durable}")
        #: What its handler needs (NATS, the store), as the handler's errors tell.
        self.dependencies = Outage(f"handler:{spec.durable}")
        self._sub: PullSubscription | None = None
        self._backoff = Backoff()

    async def _backlog(self) -> int:
        if not self.bus.connected:  # unknown, at once (a health probe must not wait on a dead connection)
            raise BusUnavailableError("bus: not connected")
        return await self.bus.pending(self.spec.stream, self.spec.durable)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain in-flight messages and return.

        With ``concurrency == 1`` a fetched batch is handled in order, inline; messages fetched
        but not started when ``stop`` is set are handed back at once (``nak`` without delay) so
        another worker can take them. With more, each message gets its own task.
        """
        self._stop = stop
        structlog.contextvars.bind_contextvars(consumer=self.spec.durable)
        working = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[None]] = set()
        heartbeat = asyncio.create_task(self._heartbeat())
        idle = True
        try:
            while not stop.is_set():
                self.watchdog.beat()
                self.watchdog.hold(len(self._in_hand))
                free = self.prefetch - len(self._in_hand)
                if free <= 0:
                    await self._wait_any(running, stop)
                    continue
                # nats-py's fetch(n) that finds nothing waiting lingers until n messages or the
                # timeout: fine when busy, but it would hold a lone new message for the whole
                # timeout. So an idle consumer waits for one message; a busy one takes what is
                # there and lingers briefly.
                batch, timeout = (1, self.fetch_timeout_s) if idle else (free, BUSY_LINGER_S)
                msgs = await self._pull(batch, timeout, stop)
                idle = not msgs
                if not msgs:
                    continue
                for msg in msgs:
                    self._in_hand[id(msg)] = msg
                self.watchdog.hold(len(self._in_hand))
                if self.concurrency == 1:
                    await self._handle_inline(msgs, stop)
                    continue
                for msg in msgs:
                    task = asyncio.create_task(self._process(msg, working))
                    running.add(task)
                    task.add_done_callback(running.discard)
            if running:
                await asyncio.wait(running)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            if self._sub is not None:
                await _unbind(self._sub)
                self._sub = None

    async def _pull(self, batch: int, linger_s: float, stop: asyncio.Event) -> list[Msg]:
        """Up to ``batch`` messages, ``[]`` when none came in time or none could be asked for.

        While NATS is disconnected nothing is asked: a pull request sent then would be buffered and
        reach the server stale after the reconnect, delivering messages nobody waits for (nats-py
        reconnects by itself). A failed pull drops the binding; the next call binds again.
        """
        if not self.bus.connected:
            await _pause(stop, 0.25)
            return []
        if self._sub is None:
            self._sub = await self._bind()
            if self._sub is None:
                await _pause(stop, self._backoff.next())
                return []
            self._backoff.reset()
        try:
            return await self._sub.fetch(batch, timeout=linger_s)
        except TimeoutError:  # nats-py raises its own subclass and plain asyncio timeouts
            return []
        except PULL_ERRORS as exc:
            self.pull.failed(exc)
            await _unbind(self._sub)
            self._sub = None
            await _pause(stop, self._backoff.next())
            return []

    async def _bind(self) -> PullSubscription | None:
        """Ensure the durable consumer (and its stream, when it is one of ours) and bind to it; ``None`` if NATS
        cannot do it now (the failure is logged once per outage). A consumer set up incompatibly raises."""
        try:
            await ensure_pull_consumer(self.bus, self.spec)
            sub = await self.bus.js.pull_subscribe_bind(self.spec.durable, stream=self.spec.stream)
        except (*PULL_ERRORS, BusUnavailableError) as exc:
            self.pull.failed(exc)
            return None
        if self.pull.count:
            self.stats.rebinds += 1
        self.pull.ok()
        return sub

    async def _handle_inline(self, msgs: list[Msg], stop: asyncio.Event) -> None:
        try:
            for msg in msgs:
                try:
                    if stop.is_set():
                        await msg.nak()
                        continue
                    self.stats.in_flight = 1
                    await self._handle(msg)
                except Exception as exc:
                    log.error("message.unsettled", error=f"{type(exc).__name__}: {exc}")
                finally:
                    self.stats.in_flight = 0
                    self._in_hand.pop(id(msg), None)
                    self.watchdog.hold(len(self._in_hand))
        finally:
            # _handle binds the message's ids; they must not stick to the loop's own log lines.
            structlog.contextvars.unbind_contextvars("event_id", "correlation_id")

    @staticmethod
    async def _wait_any(running: set[asyncio.Task[None]], stop: asyncio.Event) -> None:
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({*running, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()

    async def _process(self, msg: Msg, working: asyncio.Semaphore) -> None:
        # Runs in its own task, hence its own copy of the logging context.
        try:
            async with working:
                self.stats.in_flight += 1
                try:
                    await self._handle(msg)
                finally:
                    self.stats.in_flight -= 1
        except Exception as exc:
            log.error("message.unsettled", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._in_hand.pop(id(msg), None)
            self.watchdog.hold(len(self._in_hand))

    async def _handle(self, msg: Msg) -> None:
        admitted = await admit(
            self.bus,
            msg,
            spec=self.spec,
            accept=self.accept,
            source=self.source,
            decode=self.decode,
            store=self.store,
        )
        if not isinstance(admitted, Admitted):
            if isinstance(admitted, Deferred):
                self.stats.deferred += 1
            else:
                self._count_dead_letter(admitted)
            self.watchdog.progressed()
            return
        envelope, message, delivered, seq = admitted
        # admit decoded it with this consumer's decoder, or refused every type not in ``accept``: it is an M.
        delivery: Delivery[M] = Delivery(envelope, cast(M, message), msg.subject, delivered, seq)
        structlog.contextvars.bind_contextvars(event_id=envelope.id, correlation_id=envelope.correlationid)
        try:
            await self._call_handler(delivery)
        except PermanentError as exc:
            await self._dead_letter(msg, "permanent_error", f"{type(exc).__name__}: {exc}", envelope, delivered)
            return
        except Exception as exc:
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            if delivered >= self.spec.max_deliver:
                await self._dead_letter(
                    msg,
                    "max_deliveries",
                    f"failed on each of {delivered} deliveries; last error {type(exc).__name__}: {exc}",
                    envelope,
                    delivered,
                )
                return
            delay = backoff_delay(self.spec, delivered)
            log.warning("message.retry", error=self.stats.last_error, delay_s=delay, delivery=delivered)
            await msg.nak(delay=delay)
            self.stats.nacked += 1
            self.watchdog.progressed()
            return
        await msg.ack()
        self.stats.acked += 1
        self.watchdog.progressed()

    async def _call_handler(self, delivery: Delivery[M]) -> None:
        """The handler, called again with the same delivery while it says a dependency is down (up to the
        patience, or until the consumer stops): an outage spends none of the message's deliveries."""

        async def attempt() -> None:
            try:
                await self.handler(delivery)
            except UnavailableError:
                if self._stop.is_set():
                    raise _Stopping from None
                self.stats.outage_retries += 1
                raise

        try:
            await patiently(attempt, self.dependencies, patience_s=self.patience_s, backoff=Backoff(0.5, 2.0))
        except _Stopping:
            raise TransientError("stopping while a dependency is down; handed back") from None

    async def _dead_letter(
        self,
        msg: Msg,
        reason: DeadLetterReason,
        error: str,
        envelope: EnvelopeAttributes | None = None,
        delivered: int = 1,
    ) -> None:
        try:
            await dead_letter(
                self.bus,
                msg,
                consumer=self.spec.durable,
                source=self.source,
                reason=reason,
                error=error,
                envelope=envelope,
                store=self.store,
            )
        except DeadLetterDeferredError as exc:
            await defer_dead_letter(msg, self.spec, delivered, reason, exc)
            self.stats.deferred += 1
        else:
            self._count_dead_letter(reason)
        self.watchdog.progressed()

    def _count_dead_letter(self, reason: DeadLetterReason) -> None:
        self.stats.dead_lettered += 1
        self.stats.reasons[reason] = self.stats.reasons.get(reason, 0) + 1

    async def _heartbeat(self) -> None:
        interval = max(0.05, self.spec.ack_wait_s / 3)
        while True:
            await asyncio.sleep(interval)
            if not self.bus.connected:  # buffered beats would reach the server all at once, late
                continue
            for msg in list(self._in_hand.values()):
                with contextlib.suppress(Exception):
                    await msg.in_progress()
                    self.stats.heartbeats += 1


class _Stopping(Exception):  # noqa: N818 - control flow inside _call_handler only
    """The consumer is stopping: a handler waiting out an outage gives up at once."""


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less when ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _unbind(sub: PullSubscription) -> None:
    with contextlib.suppress(Exception):
        await sub.unsubscribe()


async def ensure_pull_consumer(bus: Bus, spec: ConsumerSpec) -> None:
    """``Bus.ensure_consumer``, also re-creating the consumer's stream when it is one of worldmill's
    and is missing (a server that came back without its data)."""
    try:
        await bus.ensure_consumer(spec)
    except NotFoundError:
        known = next((s for s in ALL_STREAMS if s.name == spec.stream), None)
        if known is None:
            raise
        await bus.ensure_stream(known)
        await bus.ensure_consumer(spec)


async def run_consumers(consumers: list[Consumer[Any]], stop: asyncio.Event) -> None:
    """Run several consumers until ``stop``; each drains before this returns."""
    await asyncio.gather(*(c.run(stop) for c in consumers))
