"""QA decisions that are not measurements (pure): sibling groups, duplicates, regeneration."""

from __future__ import annotations

import re
from dataclasses import dataclass

from worldmill.contracts.qa import Finding, Severity

_VARIANT = re.compile(r"^(?P<group>.+)-[0-9_]+s-v\d+$")

#: Checks whose failure a new generation can fix (a wrong file, not a wrong request). ``vlm_critic``
#: (a ``fail`` gate's score under its threshold) is one: another attempt may well be judged
#: plausible. ``vlm_critic_unjudged`` (no critic, no valid answer) is not: a new video changes nothing.
REGENERABLE = frozenset(
    {
        "decodes",
        "frames",
        "fps",
        "duration",
        "resolution",
        "static",
        "black",
        "seams",
        "identical",
        "near_duplicate",
        "copy_of",
        "vlm_critic",
    }
)


def sibling_group(prompt_id: str | None, asset_id: str) -> str:
    """Videos that must differ from each other: every duration and variant of one scenario.

    The 5, 10 and 30 s (docs/background.md#security-cameras) "variants" were byte-identical copies: so siblings are
    all specs of
    a scenario (the prompt id without its ``-<duration>s-v<variant>`` tail).
    """
    if prompt_id is None:
        return f"asset:{asset_id}"
    m = _VARIANT.match(prompt_id)
    return m.group("group") if m else prompt_id


def copy_severity(prompt_id: str | None, other_prompt_id: str | None, *, shared_input: bool = False) -> Severity:
    """How much a perceptual copy (``copy_of``) of another asset matters.

    The same picture under another spec is the copied clip of docs/background.md#security-cameras delivered twice (an
    error); a
    rendition of the same spec (a deterministic re-run with the same seed, a regeneration, a
    re-augmentation of the same input) is expected to look like it (a warning: one is redundant).
    Look-alikes of one scenario made with other seeds are not copies at all: the index's thresholds
    keep them apart, so they never reach this rule.
    """
    same_spec = prompt_id is not None and prompt_id == other_prompt_id
    # Two augmentations of one input (a forced re-run, other parameters) follow the same picture by design.
    return Severity.WARNING if same_spec or shared_input else Severity.ERROR


def failed_checks(findings: list[Finding]) -> tuple[str, ...]:
    """The checks that failed with error severity (what fails a verdict), sorted and each once."""
    return tuple(sorted({f.check for f in findings if not f.passed and f.severity == Severity.ERROR}))


@dataclass(frozen=True)
class RegenerationPolicy:
    """When a failed video is made again: bounded, and only for failures a new attempt can fix."""

    max_regenerations: int = 1
    checks: frozenset[str] = REGENERABLE

    def wants(self, findings: list[Finding], done: int) -> bool:
        """True when a failed check is regenerable and the bound is not reached."""
        return done < self.max_regenerations and bool(set(failed_checks(findings)) & self.checks)

    @staticmethod
    def number(done: int, previous: int | None = None) -> int:
        """Which regeneration of the spec the next one is: after ``done`` failed videos of the spec.

        ``previous``: the regeneration number of the failed video itself, when it was one, so a
        regeneration of a regeneration always gets a higher number (and so another seed) even when
        fewer failures are counted.
        """
        return max(done, previous or 0) + 1
