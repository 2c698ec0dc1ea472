"""The consume loop: a durable pull consumer whose handler's outcome decides each message's fate.

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
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import nats.errors
import structlog
from nats.aio.msg import Msg

from worldmill.contracts.base import Message
from worldmill.contracts.deadletter import DeadLetter, DeadLetterReason
from worldmill.contracts.envelope import EnvelopeAttributes, wrap
from worldmill.contracts.subjects import ConsumerSpec, dlq_subject
from worldmill.runtime.bus import Bus
from worldmill.runtime.decode import Undeliverable, parse
from worldmill.runtime.errors import InvalidInputError, PermanentError
from worldmill.runtime.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One decoded message as a handler sees it."""

    envelope: EnvelopeAttributes
    message: Message
    subject: str
    num_delivered: int
    stream_sequence: int


Handler = Callable[[Delivery], Awaitable[None]]
#: For streams of foreign messages (e.g. MinIO's raw notifications): bytes → a message, or
#: ``InvalidInputError`` (the message is then dead-lettered as invalid).
RawDecoder = Callable[[bytes], Message]

#: How long a busy consumer's fetch may wait to fill a batch (bounds the latency it adds).
BUSY_LINGER_S = 0.05


@dataclass
class ConsumerStats:
    """Counters of one consumer, for health and tests."""

    acked: int = 0
    nacked: int = 0
    dead_lettered: int = 0
    in_flight: int = 0
    heartbeats: int = 0
    last_error: str | None = None
    reasons: dict[str, int] = field(default_factory=dict)


def backoff_delay(spec: ConsumerSpec, num_delivered: int) -> float:
    """Nak delay after the ``num_delivered``-th failed delivery: base × 2^(n-1), capped."""
    return float(min(spec.backoff_max_s, spec.backoff_base_s * (2 ** max(0, num_delivered - 1))))


def delivery_counts(msg: Msg) -> tuple[int, int]:
    """(times delivered, stream sequence) from the JetStream ack subject of a message.

    The ack subject's layout is fixed by the JetStream protocol (ADR-15):
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>``, or
    with ``<domain>.<account hash>`` after ``ACK`` and a trailing token (12+ tokens). Reading two
    fields directly costs a quarter of nats-py's full ``metadata`` parse, on every message.
    """
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9 and tokens[1] == "ACK":
        return int(tokens[4]), int(tokens[5])
    if len(tokens) >= 12 and tokens[1] == "ACK":
        return int(tokens[6]), int(tokens[7])
    meta = msg.metadata
    return meta.num_delivered, meta.sequence.stream


class Consumer:
    """Runs one handler over one durable pull consumer. Many processes may share the consumer."""

    def __init__(
        self,
        bus: Bus,
        spec: ConsumerSpec,
        handler: Handler,
        *,
        accept: tuple[type[Message], ...] | None = None,
        concurrency: int = 1,
        prefetch: int | None = None,
        fetch_timeout_s: float = 1.0,
        source: str = "worldmill",
        decode: RawDecoder | None = None,
    ) -> None:
        self.bus = bus
        self.decode = decode
        self.spec = spec
        self.handler = handler
        self.accept = frozenset(c.ce_type() for c in accept) if accept is not None else None
        self.concurrency = max(1, concurrency)
        self.prefetch = max(self.concurrency, prefetch or self.concurrency)
        self.fetch_timeout_s = fetch_timeout_s
        self.source = source
        self.stats = ConsumerStats()
        self._in_hand: dict[int, Msg] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain in-flight messages and return.

        With ``concurrency == 1`` a fetched batch is handled in order, inline; messages fetched
        but not started when ``stop`` is set are handed back at once (``nak`` without delay) so
        another worker can take them. With more, each message gets its own task.
        """
        await self.bus.ensure_consumer(self.spec)
        sub = await self.bus.js.pull_subscribe_bind(self.spec.durable, stream=self.spec.stream)
        structlog.contextvars.bind_contextvars(consumer=self.spec.durable)
        working = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[None]] = set()
        heartbeat = asyncio.create_task(self._heartbeat())
        idle = True
        try:
            while not stop.is_set():
                free = self.prefetch - len(self._in_hand)
                if free <= 0:
                    await self._wait_any(running, stop)
                    continue
                # nats-py's fetch(n) that finds nothing waiting lingers until n messages or the
                # timeout: fine when busy, but it would hold a lone new message for the whole
                # timeout. So an idle consumer waits for one message; a busy one takes what is
                # there and lingers briefly.
                batch, timeout = (1, self.fetch_timeout_s) if idle else (free, BUSY_LINGER_S)
                try:
                    msgs = await sub.fetch(batch, timeout=timeout)
                except TimeoutError:  # nats-py raises its own subclass and plain asyncio timeouts
                    idle = True
                    continue
                except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
                    await asyncio.sleep(0.5)
                    continue
                idle = False
                for msg in msgs:
                    self._in_hand[id(msg)] = msg
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
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

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

    async def _handle(self, msg: Msg) -> None:
        admitted = await admit(
            self.bus, msg, spec=self.spec, accept=self.accept, source=self.source, decode=self.decode
        )
        if not isinstance(admitted, Admitted):
            self._count_dead_letter(admitted)
            return
        envelope, message, delivered, seq = admitted
        delivery = Delivery(envelope, message, msg.subject, delivered, seq)
        structlog.contextvars.bind_contextvars(event_id=envelope.id, correlation_id=envelope.correlationid)
        try:
            await self.handler(delivery)
        except PermanentError as exc:
            await self._dead_letter(msg, "permanent_error", f"{type(exc).__name__}: {exc}", envelope)
            return
        except Exception as exc:
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            if delivered >= self.spec.max_deliver:
                await self._dead_letter(
                    msg,
                    "max_deliveries",
                    f"failed on each of {delivered} deliveries; last error {type(exc).__name__}: {exc}",
                    envelope,
                )
                return
            delay = backoff_delay(self.spec, delivered)
            log.warning("message.retry", error=self.stats.last_error, delay_s=delay, delivery=delivered)
            await msg.nak(delay=delay)
            self.stats.nacked += 1
            return
        await msg.ack()
        self.stats.acked += 1

    async def _dead_letter(
        self, msg: Msg, reason: DeadLetterReason, error: str, envelope: EnvelopeAttributes | None = None
    ) -> None:
        await dead_letter(
            self.bus, msg, consumer=self.spec.durable, source=self.source, reason=reason, error=error, envelope=envelope
        )
        self._count_dead_letter(reason)

    def _count_dead_letter(self, reason: DeadLetterReason) -> None:
        self.stats.dead_lettered += 1
        self.stats.reasons[reason] = self.stats.reasons.get(reason, 0) + 1

    async def _heartbeat(self) -> None:
        interval = max(0.05, self.spec.ack_wait_s / 3)
        while True:
            await asyncio.sleep(interval)
            for msg in list(self._in_hand.values()):
                with contextlib.suppress(Exception):
                    await msg.in_progress()
                    self.stats.heartbeats += 1


class Admitted(NamedTuple):
    """A message that may be handled: decoded, and not delivered more often than allowed."""

    envelope: EnvelopeAttributes
    message: Message
    delivered: int
    sequence: int


async def admit(
    bus: Bus,
    msg: Msg,
    *,
    spec: ConsumerSpec,
    accept: frozenset[str] | None,
    source: str,
    decode: RawDecoder | None = None,
) -> Admitted | DeadLetterReason:
    """The way in for every consumer: a crash-looping or undecodable message is dead-lettered (and its
    reason returned) before any handler sees it. With ``decode``, the payload is a foreign message
    (not an envelope) and gets an envelope named after its stream position."""
    delivered, seq = delivery_counts(msg)
    try:
        if delivered > spec.max_deliver:
            raise Undeliverable(
                "max_deliveries",
                f"delivered {delivered} times without an answer (its worker probably crashed each time)",
            )
        if decode is not None:
            try:
                message = decode(msg.data)
            except InvalidInputError as exc:
                raise Undeliverable("invalid_data", str(exc)) from exc
            envelope: EnvelopeAttributes = wrap(message, source=source, event_id=f"{spec.stream}-{seq}")
            return Admitted(envelope, message, delivered, seq)
        envelope, message = parse(msg.data, accept, (msg.headers or {}).get("ce-type"))
    except Undeliverable as exc:
        await dead_letter(
            bus, msg, consumer=spec.durable, source=source, reason=exc.reason, error=exc.error, envelope=exc.envelope
        )
        return exc.reason
    return Admitted(envelope, message, delivered, seq)


async def dead_letter(
    bus: Bus,
    msg: Msg,
    *,
    consumer: str,
    source: str,
    reason: DeadLetterReason,
    error: str,
    envelope: EnvelopeAttributes | None = None,
) -> None:
    """Copy a message to ``wm.dlq.<consumer>`` with the reason, then ``term`` it (never the other way)."""
    meta = msg.metadata
    try:
        text, encoding = msg.data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(msg.data).decode(), "base64"
    letter = DeadLetter(
        consumer=consumer,
        stream=meta.stream,
        original_subject=msg.subject,
        stream_sequence=meta.sequence.stream,
        deliveries=meta.num_delivered,
        reason=reason,
        error=error[:4000],
        payload_encoding=encoding,
        payload=text,
        headers={k: str(v) for k, v in (msg.headers or {}).items()},
        original_id=envelope.id if envelope else None,
        original_type=envelope.type if envelope else None,
        failed_at=datetime.now(UTC),
    )
    out = wrap(
        letter,
        source=source,
        event_id=f"dlq-{meta.stream}-{meta.sequence.stream}",
        correlation_id=envelope.correlationid if envelope else None,
        causation_id=envelope.id if envelope else None,
    )
    # Publish first: a message is only removed (term) once its dead letter is stored.
    await bus.publish(out, subject=dlq_subject(consumer))
    await msg.term()
    log.warning("message.dead_lettered", reason=reason, error=error[:500], stream_seq=meta.sequence.stream)


async def run_consumers(consumers: list[Consumer], stop: asyncio.Event) -> None:
    """Run several consumers until ``stop``; each drains before this returns."""
    await asyncio.gather(*(c.run(stop) for c in consumers))
