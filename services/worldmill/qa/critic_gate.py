"""The VLM critic's gate (pure): which gate applies to a video, and the finding and record of its answer.

A spec may ask for the critic (``plan.qa.critic``, from the manifest's ``qa.critic``); what it leaves
unset comes from the qa settings (:class:`CriticDefaults`). The gate then turns the critic's score
into a finding:

* ``fail``: a score under the threshold is an error (the video fails QA, and may be regenerated: a new
  attempt can well be judged plausible); a video that cannot be judged fails too, never passes
  silently (no critic configured, or no trial gave a valid answer).
* ``warn``: a score under the threshold is a warning; a video that cannot be judged gets a passing
  ``info`` saying why.
* ``off``: nothing is asked.

Every judged or unjudged video gets a :class:`~worldmill.contracts.qa.CriticRecord` with the model,
the prompts, the sampling fps, the parsed answers and the raw texts (each cut to
:data:`~worldmill.contracts.qa.CRITIC_RAW_LIMIT_BYTES` as JSON, so a verdict always fits its envelope).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from worldmill.contracts.qa import (
    CRITIC_MAX_RAW,
    CRITIC_RAW_LIMIT_BYTES,
    DEFAULT_CRITIC_THRESHOLD,
    CriticGate,
    CriticKind,
    CriticRecord,
    CriticRequirement,
    Finding,
    Severity,
)
from worldmill.runtime.vlm import CriticResult, MalformedCritique

#: The check of a judged video (regenerable), and of one the critic could not judge (not regenerable).
CHECK, UNJUDGED = "vlm_critic", "vlm_critic_unjudged"


@dataclass(frozen=True)
class CriticDefaults:
    """The qa settings' gate, kind and threshold (``WM_QA_VLM_GATE``, ``_KIND``, ``_THRESHOLD``)."""

    gate: CriticGate = "warn"
    kind: CriticKind = "anomaly"
    threshold: float = DEFAULT_CRITIC_THRESHOLD["anomaly"]


@dataclass(frozen=True)
class Gate:
    """The gate that applies to one video: what to ask, the bar, and what falling under it does."""

    mode: Literal["warn", "fail"]
    kind: CriticKind
    threshold: float
    source: Literal["settings", "spec"]

    def record(self, **fields: object) -> CriticRecord:
        """A record of this gate with the critic's fields."""
        return CriticRecord.model_validate(
            {"gate": self.mode, "gate_from": self.source, "kind": self.kind, "threshold": self.threshold, **fields}
        )


def resolve(defaults: CriticDefaults, requested: CriticRequirement | None, *, configured: bool) -> Gate | None:
    """The gate for a video whose spec asked ``requested`` (None: no critique at all).

    Without a critic configured the settings' gate is off: only a spec's explicit gate asks for one
    (and then learns there is none). A spec's kind other than the settings' brings its own threshold
    or that kind's default, never the settings' threshold of another kind.
    """
    source: Literal["settings", "spec"] = "settings"
    mode: CriticGate = defaults.gate if configured else "off"
    if requested is not None and requested.gate is not None:
        mode, source = requested.gate, "spec"
    if mode == "off":
        return None
    kind = requested.kind if requested is not None and requested.kind is not None else defaults.kind
    if requested is not None and requested.threshold is not None:
        threshold = requested.threshold
    elif kind == defaults.kind:
        threshold = defaults.threshold
    else:
        threshold = DEFAULT_CRITIC_THRESHOLD[kind]
    return Gate(mode=mode, kind=kind, threshold=threshold, source=source)


def _json_size(text: str) -> int:
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def _cut(text: str, limit: int) -> tuple[str, bool]:
    """The longest prefix of ``text`` whose JSON string (quotes excluded) takes at most ``limit`` bytes."""
    if _json_size(text) <= limit:
        return text, False
    lo, hi = 0, min(len(text), limit)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _json_size(text[:mid]) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo], True


def bounded(raw: tuple[str, ...], limit: int = CRITIC_RAW_LIMIT_BYTES) -> dict[str, object]:
    """``raw``, ``raw_bytes`` and ``truncated`` of a record: each text cut to ``limit`` bytes as JSON."""
    kept = [_cut(text, limit) for text in raw[:CRITIC_MAX_RAW]]
    return {
        "raw": tuple(text for text, _ in kept),
        "raw_bytes": tuple(len(text.encode()) for text in raw[:CRITIC_MAX_RAW]),
        "truncated": any(cut for _, cut in kept) or len(raw) > CRITIC_MAX_RAW,
    }


def _score_text(kind: CriticKind, score: float) -> str:
    if kind == "anomaly":
        return f"share of answers finding no anomaly {score:.2f}"
    return f"mean plausibility {score:.2f} of 5"


def judged(gate: Gate, result: CriticResult) -> tuple[Finding, CriticRecord]:
    """The finding of a judged video (passes at or over the threshold) and its record."""
    ok = result.score >= gate.threshold
    finding = Finding(
        check=CHECK,
        passed=ok,
        severity=Severity.ERROR if gate.mode == "fail" else Severity.WARNING,
        measured=round(result.score, 3),
        expected=gate.threshold,
        message=f"{_score_text(gate.kind, result.score)} {'≥' if ok else '<'} threshold {gate.threshold:g} "
        f"(gate {gate.mode}; {result.valid_trials} of {result.trials} answers valid; {result.model})",
    )
    record = gate.record(
        model=result.model,
        score=result.score,
        trials=result.trials,
        valid_trials=result.valid_trials,
        answers=result.answers,
        system_prompt=result.system_prompt or None,
        question=result.question or None,
        fps=result.fps,
        prompt_tokens=result.prompt_tokens,
        **bounded(result.raw),
    )
    return finding, record


def unjudged(
    gate: Gate, reason: str, *, model: str | None = None, fps: float | None = None
) -> tuple[Finding, CriticRecord]:
    """A video the critic could not judge: fails under ``fail``, a passing info under ``warn``."""
    fail = gate.mode == "fail"
    finding = Finding(
        check=UNJUDGED,
        passed=not fail,
        severity=Severity.ERROR if fail else Severity.INFO,
        expected=gate.threshold,
        message=f"not judged (gate {gate.mode}, from {gate.source}): {reason}",
    )
    return finding, gate.record(model=model, fps=fps, error=reason[:2000])


def not_configured(gate: Gate) -> tuple[Finding, CriticRecord]:
    """The spec asks for the critic, but this qa service has none."""
    need = "requires" if gate.mode == "fail" else "asks for"
    return unjudged(gate, f"the spec {need} the VLM critic but none is configured (set WM_QA_VLM_BASE_URL)")


def malformed(gate: Gate, exc: MalformedCritique, *, fps: float) -> tuple[Finding, CriticRecord]:
    """No trial gave a valid answer: the reason, with the prompts and the raw texts kept."""
    finding, record = unjudged(gate, str(exc), model=exc.model, fps=fps)
    record = record.model_copy(
        update={
            "trials": len(exc.raw),
            "system_prompt": exc.system_prompt,
            "question": exc.question,
            **bounded(exc.raw),
        }
    )
    return finding, record
