"""QA findings and verdicts, and what a spec may ask of the VLM critic."""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from worldmill.contracts.base import Contract, Identifier, Message, ObjectRef

#: A measured or expected value: a JSON scalar or a short list of them.
Value = str | int | float | bool | None | list[str | int | float]

#: What the VLM critic is asked: ``anomaly`` (does the clip hold anomalies? score = share of "No"
#: answers, 0–1) or ``plausibility`` (how physically believable, 1–5? score = mean answer).
CriticKind = Literal["anomaly", "plausibility"]
#: What a critic score under the threshold does: ``off`` (no critique), ``warn`` (a warning, the
#: verdict can still pass) or ``fail`` (an error: the video fails QA).
CriticGate = Literal["off", "warn", "fail"]
#: The closed range a threshold of each kind must lie in.
CRITIC_THRESHOLD_RANGE: dict[CriticKind, tuple[float, float]] = {"anomaly": (0.0, 1.0), "plausibility": (1.0, 5.0)}
#: The threshold of each kind when none is given.
DEFAULT_CRITIC_THRESHOLD: dict[CriticKind, float] = {"anomaly": 0.5, "plausibility": 3.0}
#: Each trial's raw answer is kept up to this many bytes (as JSON) in a verdict (16 trials stay far under
#: the envelope's 256 KiB).
CRITIC_RAW_LIMIT_BYTES = 4096
#: Raw answer texts kept in a verdict (the qa settings allow at most 16 trials).
CRITIC_MAX_RAW = 16
_SCORE_MEANING: dict[CriticKind, str] = {
    "anomaly": "the share of answers finding no anomaly",
    "plausibility": "the mean 1–5 score",
}


def critic_threshold_rule(kind: CriticKind, threshold: float) -> str | None:
    """Why ``threshold`` is not a valid threshold for ``kind`` (None when it is)."""
    lo, hi = CRITIC_THRESHOLD_RANGE[kind]
    if not math.isfinite(threshold) or not lo <= threshold <= hi:
        return f"threshold {threshold:g} is outside {lo:g}–{hi:g} for kind {kind} ({_SCORE_MEANING[kind]})"
    return None


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


class CriticRequirement(Contract):
    """What a spec asks of the VLM critic; an unset field falls back to the qa service's ``WM_QA_VLM_*`` setting.

    A threshold means nothing without its kind (a share 0–1 or a score 1–5), so it comes with one.
    """

    gate: CriticGate | None = None
    kind: CriticKind | None = None
    threshold: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _threshold_fits_kind(self) -> CriticRequirement:
        if self.threshold is not None:
            if self.kind is None:
                raise ValueError("threshold needs a kind: anomaly (a share 0–1) or plausibility (a score 1–5)")
            if (rule := critic_threshold_rule(self.kind, self.threshold)) is not None:
                raise ValueError(rule)
        return self


class QaRequirements(Contract):
    """What a spec asks of QA beyond its plan's numbers (carried on the spec and its generation plan)."""

    critic: CriticRequirement | None = None


class CriticRecord(Contract):
    """What the VLM critic was asked and answered for one video, stored with the verdict.

    ``score`` is None when the video was not judged (``error`` says why). ``raw`` holds every trial's
    full text (thinking included), each cut to :data:`CRITIC_RAW_LIMIT_BYTES` bytes as JSON;
    ``raw_bytes`` gives each text's UTF-8 size before the cut and ``truncated`` says whether any was cut
    (or trials beyond :data:`CRITIC_MAX_RAW` were left out).
    """

    gate: CriticGate
    gate_from: Literal["settings", "spec"] = Field(description="Where the gate came from: qa settings or the spec.")
    kind: CriticKind
    threshold: float
    model: str | None = Field(default=None, description="None when no critic is configured.")
    score: float | None = None
    trials: int = Field(default=0, ge=0)
    valid_trials: int = Field(default=0, ge=0)
    answers: tuple[str, ...] = Field(default=(), description="The valid parsed answers, in order.")
    system_prompt: str | None = None
    question: str | None = None
    fps: float | None = Field(default=None, gt=0, description="Frames per second the server sampled.")
    prompt_tokens: int | None = Field(default=None, ge=0)
    raw: tuple[str, ...] = Field(default=(), max_length=CRITIC_MAX_RAW)
    raw_bytes: tuple[int, ...] = Field(default=(), max_length=CRITIC_MAX_RAW)
    truncated: bool = False
    error: str | None = Field(default=None, max_length=2000)


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
    critic: CriticRecord | None = Field(default=None, description="The VLM critic's question and answers, if asked.")

    def entity_id(self) -> str | None:
        return self.asset_id


class QaPassed(_Verdict):
    """Every check passed (warnings allowed)."""

    TYPE: ClassVar[str] = "qa.passed"


class QaFailed(_Verdict):
    """At least one check failed with severity ``error``."""

    TYPE: ClassVar[str] = "qa.failed"
