"""Which held job runs next: keep model loads rare without starving older jobs (pure)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from worldmill.contracts.generation import ExecutionSignature


@dataclass
class Candidate:
    """A held job as the selector sees it."""

    job_id: str
    signature: ExecutionSignature
    received: float
    passes: int = 0


def choose(
    candidates: Sequence[Candidate],
    loaded: Collection[ExecutionSignature],
    *,
    max_passes: int,
    current: ExecutionSignature | None = None,
) -> int:
    """Index of the job to run next.

    A job passed over ``max_passes`` times goes first (oldest such); otherwise the oldest job whose
    model is the one in use, then the oldest whose model is loaded, then the oldest of all.
    """
    if not candidates:
        raise ValueError("no candidates")
    by_age = sorted(range(len(candidates)), key=lambda i: candidates[i].received)
    for i in by_age:
        if candidates[i].passes >= max_passes:
            return i
    for wanted in ([current] if current is not None else []), list(loaded):
        for i in by_age:
            if candidates[i].signature in wanted:
                return i
    return by_age[0]


def passed_over(candidates: Sequence[Candidate], chosen: int) -> None:
    """Count one pass for every job older than the chosen one."""
    received = candidates[chosen].received
    for i, c in enumerate(candidates):
        if i != chosen and c.received < received:
            c.passes += 1
