"""The base every contract derives from, and small value types shared by many contracts."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

#: A sha256 digest in lower-case hex.
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
#: Identifiers: short, URL- and subject-safe (no dots, so they can be NATS subject tokens).
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,127}$")]

#: Who asked for something (``api``, ``cli``, ``auto``, ``qa:…``, a user or system name): bounded, as it is
#: stored with every run and served in every page of runs.
Requester = Annotated[str, StringConstraints(min_length=1, max_length=200)]

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,127}$")


def new_id(prefix: str = "") -> str:
    """A fresh random identifier (uuid4 hex), optionally prefixed like ``run_``."""
    return f"{prefix}{uuid.uuid4().hex}"


def is_identifier(value: str) -> bool:
    """True when ``value`` is a valid :data:`Identifier`."""
    return bool(_ID_RE.match(value))


class Contract(BaseModel):
    """Base of every contract: immutable, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=False)


class Message(Contract):
    """An event (a fact, read by anyone) or a job (a command for exactly one worker).

    Subclasses set ``TYPE`` (``"prompt.created"``), ``KIND`` and ``VERSION``. The NATS subject and
    the CloudEvents ``type`` are derived from these, in one place (``worldmill.contracts.subjects``).
    """

    TYPE: ClassVar[str]
    KIND: ClassVar[Literal["event", "job"]] = "event"
    VERSION: ClassVar[int] = 1

    @classmethod
    def ce_type(cls) -> str:
        """The CloudEvents ``type`` attribute, e.g. ``io.worldmill.prompt.created.v1``."""
        return f"io.worldmill.{cls.TYPE}.v{cls.VERSION}"

    @classmethod
    def subject(cls) -> str:
        """The NATS subject this message is published on."""
        prefix = "wm.evt" if cls.KIND == "event" else "wm.job"
        return f"{prefix}.{cls.TYPE}"

    def entity_id(self) -> str | None:
        """The id of the thing this message is about (CloudEvents ``subject``); None if none."""
        return None


class Resolution(Contract):
    """A frame size in pixels, width × height."""

    width: int = Field(gt=0, le=8192)
    height: int = Field(gt=0, le=8192)

    @property
    def aspect(self) -> float:
        """Width divided by height."""
        return self.width / self.height

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


class ObjectLocation(Contract):
    """Where an object is (bucket and key), before its size and digest are known."""

    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.\-]+[a-z0-9]$")
    key: str = Field(min_length=1, max_length=1024)

    def uri(self) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self.key}"


class ObjectRef(Contract):
    """Where bytes live in object storage. Events carry these, never the bytes."""

    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.\-]+[a-z0-9]$")
    key: str = Field(min_length=1, max_length=1024)
    size: int = Field(ge=0)
    sha256: Sha256
    content_type: str = "application/octet-stream"
    etag: str | None = None

    def uri(self) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self.key}"
