"""A scenario's QA requirements from the ``qa:`` keys of its manifest, series and scenario (pure).

Each key of ``qa.critic`` is taken from the innermost level that sets it (scenario > series >
manifest), like the generation settings. One exception keeps a threshold meaningful: a level that
changes ``kind`` without giving a ``threshold`` drops the outer levels' threshold (a share 0–1 is not
a score 1–5), so the kind's default applies. Keys no level sets are left unset on the spec: the qa
service fills them from its ``WM_QA_VLM_*`` settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from worldmill.contracts.qa import CriticRequirement, QaRequirements, critic_threshold_rule
from worldmill.prompt.manifest import Manifest, QaOptions
from worldmill.prompt.source import Path


@dataclass(frozen=True)
class QaProblem:
    """A QA requirement that breaks a rule: where (the level that set the value) and which rule."""

    loc: Path
    rule: str
    message: str


def _levels(manifest: Manifest, si: int, ci: int) -> list[tuple[QaOptions | None, Path]]:
    """The ``qa`` of each level, outermost first."""
    series = manifest.series[si]
    return [
        (manifest.qa, ("qa",)),
        (series.qa, ("series", si, "qa")),
        (series.scenarios[ci].qa, ("series", si, "scenarios", ci, "qa")),
    ]


def effective_qa(manifest: Manifest, si: int, ci: int) -> tuple[QaRequirements | None, list[QaProblem]]:
    """The requirements of scenario ``ci`` of series ``si`` (None when no level asks anything), and their problems."""
    gate = kind = threshold = None
    threshold_loc: Path = ("qa",)
    asked = False
    for options, loc in _levels(manifest, si, ci):
        critic = options.critic if options is not None else None
        if critic is None:
            continue
        asked = True
        here: Path = (*loc, "critic")
        if critic.gate is not None:
            gate = critic.gate
        if critic.kind is not None:
            kind = critic.kind
            if critic.threshold is None:
                threshold = None  # another kind's threshold means nothing for this one
        if critic.threshold is not None:
            threshold, threshold_loc = critic.threshold, (*here, "threshold")
    if not asked:
        return None, []
    if threshold is not None:
        if kind is None:
            return None, [
                QaProblem(
                    threshold_loc,
                    "threshold needs a kind",
                    f"threshold {threshold:g} needs 'kind' at this level or an enclosing one: anomaly (the share of "
                    "answers finding no anomaly, 0–1) or plausibility (the mean 1–5 score)",
                )
            ]
        if (rule := critic_threshold_rule(kind, threshold)) is not None:
            return None, [QaProblem(threshold_loc, "threshold out of range", rule)]
    return QaRequirements(critic=CriticRequirement(gate=gate, kind=kind, threshold=threshold)), []
