"""The message envelope: CloudEvents 1.0 attribute names, structured JSON mode.

Every message on the bus is one JSON object with the CloudEvents context attributes and our
extensions (lower-case, as the spec requires), and the typed payload under ``data``. The ``id``
is also sent as the ``Nats-Msg-Id`` header, so JetStream drops a republish of the same id.

Other systems may publish plain CloudEvents 1.0 (only ``specversion``, ``id``, ``source``, ``type``
and ``data`` required, as any CloudEvents SDK writes them): our extensions are then derived
(``correlationid`` = ``id``, ``schemaversion`` = the ``.vN`` of ``type``, ``time`` = when it was
read), ``datacontenttype`` may carry parameters (``application/json; charset=utf-8``), and other
extension attributes (``traceparent``, ``partitionkey``…) are kept and passed on if their names and
values follow the spec. Binary data (``data_base64``) is refused with the reason.
"""

from __future__ import annotations

import functools
import re
import secrets
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import ConfigDict, Field, model_validator

from worldmill.contracts.base import Contract, Message

#: Media type of a structured-mode CloudEvent, sent as the NATS ``Content-Type`` header.
CONTENT_TYPE = "application/cloudevents+json"
#: Largest encoded envelope we accept (CloudEvents intermediaries must forward at least 64 KiB).
MAX_ENVELOPE_BYTES = 256 * 1024
#: CloudEvents 1.0: extension attribute names are lower-case ASCII letters or digits, at most 20 of them.
EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
_TYPE_VERSION = re.compile(r"\.v([0-9]+)$")


def _now() -> datetime:
    return datetime.now(UTC)


class EnvelopeAttributes(Contract):
    """The CloudEvents 1.0 context attributes plus worldmill's extensions: everything but data.

    Unknown attributes are CloudEvents extensions: kept (``model_extra``) when their names and values
    follow the spec, refused otherwise.
    """

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=False)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=200, description="Unique per event; also the Nats-Msg-Id.")
    source: str = Field(min_length=1, max_length=200, description="URI-reference of the producer.")
    type: str = Field(pattern=r"^io\.worldmill\.[a-z0-9_.]+\.v[0-9]+$")
    subject: str | None = Field(default=None, max_length=1100, description="Id of the entity concerned.")
    time: datetime = Field(
        default_factory=_now, description="When it happened; absent in a plain CloudEvent: read time."
    )
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str | None = None
    # Extensions (CloudEvents: lower-case alphanumerics only).
    correlationid: str = Field(
        min_length=1, max_length=200, description="Shared by one whole flow; absent in a plain CloudEvent: its id."
    )
    causationid: str | None = Field(default=None, max_length=200, description="Id of the message that caused this one.")
    schemaversion: int = Field(ge=1, description="Version of data's schema; absent in a plain CloudEvent: type's .vN.")

    @model_validator(mode="before")
    @classmethod
    def _plain_cloudevent(cls, value: Any) -> Any:
        """Derive our extensions for an event written by any CloudEvents 1.0 producer."""
        if not isinstance(value, dict):
            return value
        if "data_base64" in value:
            raise ValueError("data_base64: binary data is not accepted; send the data as a JSON object")
        content_type = value.get("datacontenttype")
        plain = "correlationid" not in value or "schemaversion" not in value
        if not plain and (not isinstance(content_type, str) or content_type == "application/json"):
            return value  # our own envelopes: the fast path
        value = dict(value)
        if "correlationid" not in value and isinstance(value.get("id"), str):
            value["correlationid"] = value["id"]
        kind = value.get("type")
        if "schemaversion" not in value and isinstance(kind, str) and (found := _TYPE_VERSION.search(kind)):
            value["schemaversion"] = int(found.group(1))
        if isinstance(content_type, str) and content_type.split(";")[0].strip().lower() == "application/json":
            value["datacontenttype"] = "application/json"
        return value

    @model_validator(mode="after")
    def _extensions_follow_the_spec(self) -> EnvelopeAttributes:
        found = _TYPE_VERSION.search(self.type)
        if found is not None and int(found.group(1)) != self.schemaversion:
            raise ValueError(f"schemaversion {self.schemaversion} must equal the version in type {self.type!r}")
        for name, value in (self.model_extra or {}).items():
            if not EXTENSION_NAME.match(name):
                raise ValueError(
                    f"{name!r}: not an attribute of a worldmill event, and not a CloudEvents extension name "
                    "(1-20 lower-case letters or digits)"
                )
            if not isinstance(value, str | int) or (isinstance(value, str) and len(value) > 2048):
                raise ValueError(
                    f"{name}: an extension attribute is a string (at most 2048 characters), an integer or a boolean"
                )
        return self


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
