"""Every message type, by CloudEvents type, for decoding; and every schema, for export."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, ValidationError

from worldmill.contracts.augment import (
    AugmentAccepted,
    Augmentation,
    AugmentationPage,
    AugmentCompleted,
    AugmentRejected,
    AugmentRequested,
    AugmentSubmission,
    InputSpecRequested,
)
from worldmill.contracts.backends import BackendCapabilities
from worldmill.contracts.base import Message
from worldmill.contracts.cards import ModelCard
from worldmill.contracts.catalog import (
    AssetDeleted,
    AssetDetail,
    AssetNoted,
    AssetPage,
    AssetRated,
    CatalogCounts,
    DatasetExported,
    DeletionPlan,
    DeletionRequest,
    GenerationStatus,
    NoteSubmission,
    QueueStatus,
    RatingSubmission,
    RunDeleted,
    VerifyReport,
    VerifyRequest,
)
from worldmill.contracts.deadletter import DeadLetter
from worldmill.contracts.envelope import Envelope, TypedEnvelope, typed_envelope
from worldmill.contracts.generation import (
    CancelRequested,
    GenerationAccepted,
    GenerationPlan,
    GenerationRejected,
    GenerationRequested,
    GenerationSubmission,
    GpuJob,
    JobCanceled,
    JobCompleted,
    JobFailed,
    JobProgress,
    Provenance,
    RunPage,
    RunRecord,
    RunUpdated,
    VideoReady,
)
from worldmill.contracts.http_errors import ErrorBody, ValidationErrorBody
from worldmill.contracts.objects import ObjectCreated, S3Notification
from worldmill.contracts.prompts import (
    InputSpecRequest,
    InputSpecResult,
    ManifestAccepted,
    ManifestRejected,
    ManifestResult,
    ManifestSubmission,
    PromptCreated,
    PromptDetail,
    PromptPage,
    PromptSpec,
)
from worldmill.contracts.qa import QaFailed, QaPassed
from worldmill.contracts.subjects import ConsumerSpec, StreamSpec
from worldmill.contracts.upsample import (
    PromptUpsampled,
    UpsampleAccepted,
    UpsampleRequested,
    UpsamplerInfo,
    UpsampleSkipped,
    UpsampleStatus,
    UpsampleStatusPage,
    UpsampleSubmission,
)

MESSAGE_CLASSES: tuple[type[Message], ...] = (
    ManifestAccepted,
    ManifestRejected,
    PromptCreated,
    UpsampleRequested,
    PromptUpsampled,
    UpsampleSkipped,
    GenerationRequested,
    GenerationRejected,
    GpuJob,
    JobProgress,
    JobCompleted,
    JobFailed,
    CancelRequested,
    JobCanceled,
    VideoReady,
    RunUpdated,
    QaPassed,
    QaFailed,
    ObjectCreated,
    S3Notification,
    AugmentRequested,
    InputSpecRequested,
    AugmentRejected,
    AugmentCompleted,
    AssetRated,
    AssetNoted,
    DatasetExported,
    AssetDeleted,
    RunDeleted,
    DeadLetter,
)

#: Contracts that are not messages but cross service boundaries (stored or embedded).
DOCUMENT_CLASSES: tuple[type[BaseModel], ...] = (
    Envelope,
    ModelCard,
    BackendCapabilities,
    PromptSpec,
    GenerationPlan,
    Provenance,
    StreamSpec,
    ConsumerSpec,
    ManifestSubmission,
    ManifestResult,
    PromptPage,
    PromptDetail,
    InputSpecRequest,
    InputSpecResult,
    GenerationSubmission,
    GenerationAccepted,
    RunRecord,
    RunPage,
    UpsampleSubmission,
    UpsampleAccepted,
    UpsampleStatus,
    UpsampleStatusPage,
    UpsamplerInfo,
    Augmentation,
    AugmentSubmission,
    AugmentAccepted,
    AugmentationPage,
    AssetPage,
    AssetDetail,
    RatingSubmission,
    NoteSubmission,
    QueueStatus,
    GenerationStatus,
    CatalogCounts,
    DeletionRequest,
    DeletionPlan,
    VerifyRequest,
    VerifyReport,
    ValidationErrorBody,
    ErrorBody,
)


class UnknownMessageTypeError(ValueError):
    """The envelope's ``type`` is not a registered message type."""


class InvalidMessageDataError(ValueError):
    """The envelope's ``data`` does not match its type's schema."""


@functools.cache
def _by_type() -> dict[str, type[Message]]:
    return {cls.ce_type(): cls for cls in MESSAGE_CLASSES}


def message_class(ce_type: str) -> type[Message]:
    """The class registered for a CloudEvents ``type``."""
    cls = _by_type().get(ce_type)
    if cls is None:
        raise UnknownMessageTypeError(f"type: unknown message type {ce_type!r}")
    return cls


def decode_data(envelope: Envelope) -> Message:
    """The typed message inside an envelope, validated against its schema."""
    cls = message_class(envelope.type)
    try:
        return cls.model_validate(envelope.data)
    except ValidationError as exc:
        problems = "; ".join(f"data.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()[:10])
        raise InvalidMessageDataError(f"{envelope.type}: {problems}") from exc


def decode_typed(raw: bytes | str, ce_type: str) -> TypedEnvelope[Message]:
    """Parse a whole envelope of a known type from JSON in one validation pass (the fast path).

    Raises ``UnknownMessageTypeError`` or ``pydantic.ValidationError``; callers that need the
    exact reason for a failure fall back to ``Envelope`` + :func:`decode_data`.
    """
    envelope: TypedEnvelope[Message] = _typed(ce_type).model_validate_json(raw)
    if envelope.type != ce_type:
        raise UnknownMessageTypeError(f"type: envelope says {envelope.type!r}, header says {ce_type!r}")
    return envelope


def _typed(ce_type: str) -> type[TypedEnvelope[Message]]:
    return typed_envelope(message_class(ce_type))


def schema_name(cls: type[BaseModel]) -> str:
    """File stem for a class's exported schema: the message type, or the class name."""
    if issubclass(cls, Message):
        return f"{cls.TYPE}.v{cls.VERSION}"
    return cls.__name__


def all_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every message and document contract, keyed by :func:`schema_name`."""
    out: dict[str, dict[str, Any]] = {}
    for cls in (*MESSAGE_CLASSES, *DOCUMENT_CLASSES):
        schema = cls.model_json_schema(mode="serialization")
        if issubclass(cls, Message):
            schema["x-worldmill-type"] = cls.ce_type()
            schema["x-worldmill-subject"] = cls.subject()
            schema["x-worldmill-kind"] = cls.KIND
        out[schema_name(cls)] = schema
    return out
