"""Dead letters: a message that will never be handled, copied to ``wm.dlq.<consumer>`` with the reason.

A dead letter always fits: a payload too big for the envelope is stored as an object
(``deadletters/<consumer>/<stream>/<seq>.bin`` in the artifacts bucket) and referenced, with the
letter's headers cut to fit. The letter is published before the message is removed (``term``);
when it cannot be written now (store or NATS down) :class:`DeadLetterDeferredError` says so and the
message is left for the caller to hand back (``worldmill.runtime.admission``).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg

from worldmill.contracts.deadletter import DeadLetter, DeadLetterReason, dead_letter_id, payload_key
from worldmill.contracts.envelope import MAX_ENVELOPE_BYTES, EnvelopeAttributes, wrap
from worldmill.contracts.keys import ARTIFACTS_BUCKET
from worldmill.contracts.subjects import dlq_subject
from worldmill.runtime.bus import Bus, encode
from worldmill.runtime.errors import BusUnavailableError, TransientError, WorldmillError
from worldmill.runtime.logs import get_logger
from worldmill.runtime.store import ObjectStore

log = get_logger(__name__)

#: A dead letter's headers beyond this many bytes are cut (the payload is kept whole).
MAX_LETTER_HEADER_BYTES = 64 * 1024


class DeadLetterDeferredError(TransientError):
    """The dead letter could not be written now (store or NATS down): the message is handed back, not lost."""


async def dead_letter(
    bus: Bus,
    msg: Msg,
    *,
    consumer: str,
    source: str,
    reason: DeadLetterReason,
    error: str,
    envelope: EnvelopeAttributes | None = None,
    store: ObjectStore | None = None,
) -> None:
    """Copy a message to ``wm.dlq.<consumer>`` with the reason, then ``term`` it (never the other way).

    The payload goes in the letter, or, when the letter would not fit in an envelope, into the
    store (``deadletters/<consumer>/<stream>/<seq>.bin`` in the artifacts bucket), referenced by the
    letter. Raises :class:`DeadLetterDeferredError` when the letter cannot be written now; the
    message is then left as it is for the caller to hand back.
    """
    meta = msg.metadata
    stream, seq = meta.stream, meta.sequence.stream
    try:
        text, encoding = msg.data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(msg.data).decode(), "base64"
    letter = DeadLetter(
        consumer=consumer,
        stream=stream,
        original_subject=msg.subject,
        stream_sequence=seq,
        deliveries=meta.num_delivered,
        reason=reason,
        error=error[:4000],
        payload_encoding=encoding,
        payload=text,
        payload_size=len(msg.data),
        headers={k: str(v) for k, v in (msg.headers or {}).items()},
        original_id=envelope.id if envelope else None,
        original_type=envelope.type if envelope else None,
        failed_at=datetime.now(UTC),
    )

    def enveloped(body: DeadLetter) -> Any:
        return wrap(
            body,
            source=source,
            event_id=dead_letter_id(consumer, stream, seq),
            correlation_id=envelope.correlationid if envelope else None,
            causation_id=envelope.id if envelope else None,
        )

    out = enveloped(letter)
    if len(encode(out)) > MAX_ENVELOPE_BYTES:
        if store is None:
            raise DeadLetterDeferredError(
                f"the payload ({len(msg.data)} bytes) does not fit in a dead letter and consumer {consumer} "
                "has no object store to keep it"
            )
        try:
            ref = await store.put_bytes(
                ARTIFACTS_BUCKET,
                payload_key(consumer, stream, seq),
                msg.data,
                metadata={"consumer": consumer, "stream": stream, "sequence": str(seq), "subject": msg.subject},
            )
        except WorldmillError as exc:
            raise DeadLetterDeferredError(f"the payload could not be stored: {type(exc).__name__}: {exc}") from exc
        headers, cut = fit_headers(letter.headers, MAX_LETTER_HEADER_BYTES)
        letter = letter.model_copy(
            update={
                "payload_encoding": "object",
                "payload": "",
                "payload_ref": ref,
                "headers": headers,
                "headers_truncated": cut,
            }
        )
        out = enveloped(letter)
    # Publish first: a message is only removed (term) once its dead letter is stored.
    try:
        await bus.publish(out, subject=dlq_subject(consumer))
    except BusUnavailableError as exc:
        raise DeadLetterDeferredError(str(exc)) from exc
    await msg.term()
    log.warning(
        "message.dead_lettered",
        reason=reason,
        error=error[:500],
        stream_seq=seq,
        payload=letter.payload_ref.uri() if letter.payload_ref else encoding,
    )


def fit_headers(headers: dict[str, str], budget: int) -> tuple[dict[str, str], bool]:
    """Headers within ``budget`` bytes of JSON: unchanged when they fit, else values cut to 256
    characters and headers past the budget dropped. Returns them and whether anything was cut."""
    if len(json.dumps(headers)) <= budget:
        return headers, False
    kept: dict[str, str] = {}
    used = 2
    for name, value in headers.items():
        item = {name[:256]: value[:256]}
        size = len(json.dumps(item))
        if used + size > budget:
            break
        kept.update(item)
        used += size
    return kept, True
