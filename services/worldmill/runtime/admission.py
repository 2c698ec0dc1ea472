"""Admission: the way in for every consumer, before any handler sees a message.

A message is decoded (an envelope, or a foreign payload through the consumer's decoder) and checked
against the delivery limit (a message delivered more often than that without ever being answered
crashed its worker each time). One that fails is dead-lettered with the reason; when its letter
cannot be written now it is handed back with backoff (``nak`` with a delay), so it neither blocks
the queue nor gets lost. The consume loop (``consumer``) and the job queue (``jobqueue``) both
come in this way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import NamedTuple

from nats.aio.msg import Msg

from worldmill.contracts.base import Message
from worldmill.contracts.deadletter import DeadLetterReason
from worldmill.contracts.envelope import EnvelopeAttributes, wrap
from worldmill.contracts.subjects import ConsumerSpec
from worldmill.runtime.bus import Bus
from worldmill.runtime.dead_letters import DeadLetterDeferredError, dead_letter
from worldmill.runtime.decode import Undeliverable, parse
from worldmill.runtime.errors import InvalidInputError
from worldmill.runtime.logs import get_logger
from worldmill.runtime.store import ObjectStore

log = get_logger(__name__)


class Deferred(NamedTuple):
    """A message that should be dead-lettered but could not be yet; it was handed back with a delay."""

    reason: DeadLetterReason
    error: str


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


async def defer_dead_letter(
    msg: Msg, spec: ConsumerSpec, delivered: int, reason: DeadLetterReason, exc: Exception
) -> None:
    """Hand a message whose dead letter cannot be written now back with backoff: other messages flow meanwhile."""
    delay = backoff_delay(spec, delivered)
    with contextlib.suppress(Exception):  # NATS down too: it comes back after ack_wait
        await msg.nak(delay=delay)
    log.error("message.dead_letter_deferred", reason=reason, error=str(exc)[:500], delay_s=delay, delivery=delivered)


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
    decode: Callable[[bytes], Message] | None = None,
    store: ObjectStore | None = None,
) -> Admitted | DeadLetterReason | Deferred:
    """The way in for every consumer: an undecodable or crash-looping message is dead-lettered (and its
    reason returned) before any handler sees it; ``Deferred`` when its dead letter cannot be written now
    (it was handed back with backoff). With ``decode``, the payload is a foreign message (not an
    envelope) and gets an envelope named after its stream position."""
    delivered, seq = delivery_counts(msg)
    try:
        if decode is not None:
            try:
                message = decode(msg.data)
            except InvalidInputError as exc:
                raise Undeliverable("invalid_data", str(exc)) from exc
            envelope: EnvelopeAttributes = wrap(message, source=source, event_id=f"{spec.stream}-{seq}")
        else:
            envelope, message = parse(msg.data, accept, (msg.headers or {}).get("ce-type"))
        # After decoding, so a letter deferred a few times still says why it could not be decoded.
        if delivered > spec.max_deliver:
            raise Undeliverable(
                "max_deliveries",
                f"delivered {delivered} times without an answer (its worker probably crashed each time)",
                envelope,
            )
    except Undeliverable as exc:
        try:
            await dead_letter(
                bus,
                msg,
                consumer=spec.durable,
                source=source,
                reason=exc.reason,
                error=exc.error,
                envelope=exc.envelope,
                store=store,
            )
        except DeadLetterDeferredError as deferred:
            await defer_dead_letter(msg, spec, delivered, exc.reason, deferred)
            return Deferred(exc.reason, exc.error)
        return exc.reason
    return Admitted(envelope, message, delivered, seq)
