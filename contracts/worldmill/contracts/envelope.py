"""The message envelope: CloudEvents 1.0 attribute names, structured JSON mode.

Every message on the bus is one JSON object with the CloudEvents context attributes and our
extensions (lower-case, as the spec requires), and the typed payload under ``data``. The ``id``
is also sent as the ``Nats-Msg-Id`` header, so JetStream drops a republish of the same id.
"""

from __future__ import annotations

import functools
import secrets
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import Field

from worldmill.contracts.base import Contract, Message

#: Media type of a structured-mode CloudEvent, sent as the NATS ``Content-Type`` header.
CONTENT_TYPE = "application/cloudevents+json"
#: Largest encoded envelope we accept (CloudEvents intermediaries must forward at least 64 KiB).
MAX_ENVELOPE_BYTES = 256 * 1024


class EnvelopeAttributes(Contract):
    """The CloudEvents 1.0 context attributes plus worldmill's extensions: everything but data."""

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=200, description="Unique per event; also the Nats-Msg-Id.")
    source: str = Field(min_length=1, max_length=200, description="URI-reference of the producer.")
    type: str = Field(pattern=r"^io\.worldmill\.[a-z0-9_.]+\.v[0-9]+$")
    subject: str | None = Field(default=None, max_length=1100, description="Id of the entity concerned.")
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str | None = None
    # Extensions (CloudEvents: lower-case alphanumerics only).
    correlationid: str = Field(min_length=1, max_length=200, description="Shared by one whole flow.")
    causationid: str | None = Field(default=None, max_length=200, description="Id of the message that caused this one.")
    schemaversion: int = Field(ge=1)


class Envelope(EnvelopeAttributes):
    """A CloudEvents 1.0 event in structured JSON mode: the attributes and the data as JSON."""

    data: dict[str, Any]


M = TypeVar("M", bound=Message)


class TypedEnvelope(EnvelopeAttributes, Generic[M]):
    """An envelope whose data is validated as message type ``M`` in the same (fast) parse."""

    data: M


#: Any envelope that can be encoded: data as a JSON object or as a typed message.
AnyEnvelope = Envelope | TypedEnvelope[Any]


@functools.cache
def typed_envelope(cls: type[M]) -> type[TypedEnvelope[M]]:
    """The (cached) envelope class whose data is a ``cls``."""
    return TypedEnvelope[cls]  # type: ignore[valid-type]


def wrap(
    message: M,
    *,
    source: str,
    event_id: str | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    time: datetime | None = None,
) -> TypedEnvelope[M]:
    """Put a message in an envelope.

    ``event_id`` should be derived from the business key whenever a retry must not produce a
    second message (a job's id, for instance); a fresh random id is used otherwise. The
    correlation id defaults to the event id, which starts a new flow.
    """
    eid = event_id or secrets.token_hex(16)
    return typed_envelope(type(message))(
        id=eid,
        source=source,
        type=message.ce_type(),
        subject=message.entity_id(),
        time=time or datetime.now(UTC),
        dataschema=f"urn:worldmill:schema:{message.TYPE}:v{message.VERSION}",
        correlationid=correlation_id or eid,
        causationid=causation_id,
        schemaversion=message.VERSION,
        data=message,
    )


def follow_up(cause: EnvelopeAttributes, message: M, *, source: str, event_id: str | None = None) -> TypedEnvelope[M]:
    """Wrap a message caused by ``cause``: same correlation id, causation id = cause's id."""
    return wrap(
        message,
        source=source,
        event_id=event_id,
        correlation_id=cause.correlationid,
        causation_id=cause.id,
    )
