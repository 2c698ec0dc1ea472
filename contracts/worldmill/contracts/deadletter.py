"""What a consumer records when it gives up on a message."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from worldmill.contracts.base import Message, ObjectRef

DeadLetterReason = Literal[
    "not_json",  # the payload is not JSON at all
    "invalid_envelope",  # JSON, but not a valid CloudEvents envelope
    "unknown_type",  # a valid envelope of a type nobody registered
    "invalid_data",  # the type is known, its data does not match the schema
    "unexpected_type",  # a valid message this consumer does not handle
    "permanent_error",  # the handler said it can never succeed
    "max_deliveries",  # transient failures (or crashes) until the delivery limit
]

#: Where a payload too big for a dead letter's envelope is kept (a folder of the artifacts bucket).
PAYLOAD_PREFIX = "deadletters"


def dead_letter_id(consumer: str, stream: str, sequence: int) -> str:
    """The dead letter's event id: one per consumer and stream position, so a retry is stored once
    and two consumers giving up on the same message each keep their own letter."""
    return f"dlq-{consumer}-{stream}-{sequence}"


def payload_key(consumer: str, stream: str, sequence: int) -> str:
    """Object key of a dead-lettered payload kept in the store (a pure function: a retry writes the same key)."""
    return f"{PAYLOAD_PREFIX}/{consumer}/{stream}/{sequence}.bin"


class DeadLetter(Message):
    """A message a consumer could not process, with the reason. Published on ``wm.dlq.<consumer>``.

    The original payload is kept verbatim so the message can be inspected and replayed; nothing
    accepted is lost: in the letter as text when it is UTF-8, else base64, or — when that would
    not fit in an envelope (streams accept 1 MiB, envelopes 256 KiB) — as an object in the store,
    referenced by ``payload_ref`` (``payload_encoding`` ``"object"``, ``payload`` empty).
    """

    TYPE: ClassVar[str] = "deadletter"

    consumer: str
    stream: str
    original_subject: str
    stream_sequence: int = Field(ge=0)
    deliveries: int = Field(ge=0)
    reason: DeadLetterReason
    error: str = Field(max_length=4000)
    payload_encoding: Literal["utf-8", "base64", "object"]
    payload: str
    payload_ref: ObjectRef | None = Field(
        default=None, description="The original bytes, verbatim, when they were too big for the envelope."
    )
    payload_size: int | None = Field(default=None, ge=0, description="Size of the original payload in bytes.")
    headers: dict[str, str] = Field(default_factory=dict)
    headers_truncated: bool = Field(
        default=False, description="Header values were cut to fit the envelope (the payload object is complete)."
    )
    original_id: str | None = None
    original_type: str | None = None
    failed_at: datetime

    def entity_id(self) -> str | None:
        return self.original_id
