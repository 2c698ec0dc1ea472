"""Turning message bytes into a typed message, or the dead-letter reason why not.

Shared by every way in (``Consumer``, ``JobQueue``) and by reads of the log (``Bus.replay``/``follow``).
"""

from __future__ import annotations

import json

from pydantic import ValidationError

from worldmill.contracts.base import Message
from worldmill.contracts.deadletter import DeadLetterReason
from worldmill.contracts.envelope import Envelope, EnvelopeAttributes
from worldmill.contracts.registry import (
    InvalidMessageDataError,
    UnknownMessageTypeError,
    decode_data,
    decode_typed,
)


class Undeliverable(Exception):  # noqa: N818 - an outcome that decides a dead letter
    """A message that can never be handled, with the dead-letter reason."""

    def __init__(self, reason: DeadLetterReason, error: str, envelope: EnvelopeAttributes | None = None) -> None:
        super().__init__(error)
        self.reason: DeadLetterReason = reason
        self.error = error
        self.envelope = envelope


def parse(
    data: bytes, accept: frozenset[str] | None, type_hint: str | None = None
) -> tuple[EnvelopeAttributes, Message]:
    """Decode a payload into its envelope and typed message, or raise with a dead-letter reason.

    ``type_hint`` (the ``ce-type`` header our publishers set) allows one fast validation of the
    whole envelope; any failure there falls through to the step-by-step path, which finds the
    exact reason.
    """
    if type_hint is not None and (accept is None or type_hint in accept):
        try:
            typed = decode_typed(data, type_hint)
        except (ValueError, ValidationError):
            pass
        else:
            return typed, typed.data
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Undeliverable("not_json", f"payload is not JSON: {exc}") from exc
    try:
        envelope = Envelope.model_validate(raw)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'envelope'}: {e['msg']}" for e in exc.errors()[:10])
        raise Undeliverable("invalid_envelope", f"not a valid envelope: {detail}") from exc
    try:
        message = decode_data(envelope)
    except UnknownMessageTypeError as exc:
        raise Undeliverable("unknown_type", str(exc), envelope) from exc
    except InvalidMessageDataError as exc:
        raise Undeliverable("invalid_data", str(exc), envelope) from exc
    if accept is not None and envelope.type not in accept:
        raise Undeliverable("unexpected_type", f"type {envelope.type!r} is not handled by this consumer", envelope)
    return envelope, message
