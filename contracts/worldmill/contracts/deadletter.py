"""What a consumer records when it gives up on a message."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from worldmill.contracts.base import Message

DeadLetterReason = Literal[
    "not_json",  # the payload is not JSON at all
    "invalid_envelope",  # JSON, but not a valid CloudEvents envelope
    "unknown_type",  # a valid envelope of a type nobody registered
    "invalid_data",  # the type is known, its data does not match the schema
    "unexpected_type",  # a valid message this consumer does not handle
    "permanent_error",  # the handler said it can never succeed
    "max_deliveries",  # transient failures (or crashes) until the delivery limit
]


class DeadLetter(Message):
    """A message a consumer could not process, with the reason. Published on ``wm.dlq.<consumer>``.

    The original payload is kept verbatim (as text when it is UTF-8, else base64) so the message
    can be inspected and replayed; nothing accepted is lost.
    """

    TYPE: ClassVar[str] = "deadletter"

    consumer: str
    stream: str
    original_subject: str
    stream_sequence: int = Field(ge=0)
    deliveries: int = Field(ge=0)
    reason: DeadLetterReason
    error: str = Field(max_length=4000)
    payload_encoding: Literal["utf-8", "base64"]
    payload: str
    headers: dict[str, str] = Field(default_factory=dict)
    original_id: str | None = None
    original_type: str | None = None
    failed_at: datetime

    def entity_id(self) -> str | None:
        return self.original_id
