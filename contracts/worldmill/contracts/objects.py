"""Stored objects and upload notifications."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from worldmill.contracts.base import Message


class ObjectCreated(Message):
    """An object appeared in a watched bucket: one normalized shape for every source.

    MinIO's NATS notifications, the poller for stores that cannot push, and direct API uploads all
    end as this event. Its id is derived from (bucket, key, etag), so a duplicate notification of
    the same upload is dropped by JetStream's dedup window and by idempotent consumers.
    """

    TYPE: ClassVar[str] = "object.created"

    bucket: str
    key: str = Field(min_length=1, max_length=1024)
    size: int = Field(ge=0)
    etag: str
    content_type: str | None = None
    sha256: str | None = Field(default=None, description="Known when we stored the object ourselves.")
    sequencer: str | None = Field(default=None, description="MinIO's per-object event sequencer.")
    event_name: str = "s3:ObjectCreated:Put"
    origin: Literal["minio", "poller", "api", "worldmill"]
    event_time: datetime

    def entity_id(self) -> str | None:
        return f"{self.bucket}/{self.key}"


class S3Notification(Message):
    """A storage notification as received (e.g. one MinIO event on ``wm.s3.minio``), already normalised.

    Never published: the consume loop builds it from the raw payload, and the handler publishes each
    of its ``events`` as an ``object.created`` with a dedup id derived from the upload.
    """

    TYPE: ClassVar[str] = "s3.notification"

    events: tuple[ObjectCreated, ...] = ()
