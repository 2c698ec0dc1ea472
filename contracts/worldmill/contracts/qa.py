"""QA findings and verdicts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from worldmill.contracts.base import Contract, Identifier, Message, ObjectRef

#: A measured or expected value: a JSON scalar or a short list of them.
Value = str | int | float | bool | None | list[str | int | float]


class Severity(StrEnum):
    """How much a finding matters; any ``error`` fails the verdict."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class Finding(Contract):
    """The result of one check on one video."""

    check: str
    passed: bool
    severity: Severity
    measured: Value = None
    expected: Value = None
    message: str = ""


class _Verdict(Message):
    asset_id: Identifier
    prompt_id: Identifier | None = Field(default=None, description="The spec the video was made for, if any.")
    video: ObjectRef
    findings: tuple[Finding, ...]
    screenshots: tuple[ObjectRef, ...] = ()
    contact_sheet: ObjectRef | None = None
    checked_at: datetime
    checker_version: str
    attempt: int = Field(default=1, ge=1)

    def entity_id(self) -> str | None:
        return self.asset_id


class QaPassed(_Verdict):
    """Every check passed (warnings allowed)."""

    TYPE: ClassVar[str] = "qa.passed"


class QaFailed(_Verdict):
    """At least one check failed with severity ``error``."""

    TYPE: ClassVar[str] = "qa.failed"
