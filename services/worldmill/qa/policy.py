"""QA decisions that are not measurements (pure): sibling groups, duplicates, regeneration."""

from __future__ import annotations

import re
from dataclasses import dataclass

from worldmill.contracts.qa import Finding

_VARIANT = re.compile(r"^(?P<group>.+)-[0-9_]+s-v\d+$")

#: Checks whose failure a new generation can fix (a wrong file, not a wrong request).
REGENERABLE = frozenset(
    {"decodes", "frames", "fps", "duration", "resolution", "static", "black", "seams", "identical", "near_duplicate"}
)


def sibling_group(prompt_id: str | None, asset_id: str) -> str:
    """Videos that must differ from each other: every duration and variant of one scenario.

    seeds/000's 5, 10 and 30 s "variants" were byte-identical copies: so siblings are all specs of
    a scenario (the prompt id without its ``-<duration>s-v<variant>`` tail).
    """
    if prompt_id is None:
        return f"asset:{asset_id}"
    m = _VARIANT.match(prompt_id)
    return m.group("group") if m else prompt_id


@dataclass(frozen=True)
class RegenerationPolicy:
    """When a failed video is made again: bounded, and only for failures a new attempt can fix."""

    max_regenerations: int = 1
    checks: frozenset[str] = REGENERABLE

    def wants(self, findings: list[Finding], done: int) -> bool:
        """True when a failed check is regenerable and the bound is not reached."""
        failed = {f.check for f in findings if not f.passed and f.severity == "error"}
        return done < self.max_regenerations and bool(failed & self.checks)
