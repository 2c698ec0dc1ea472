"""The true copy relation between two corpus videos, from how each was made (pure).

Every corpus video is a sequence of :class:`Piece` s: stretches of some *material* (a rendered
shot, named) laid end to end on the video's own timeline. A re-encode, rescale, crop or re-timing
keeps the pieces of its source; a trim keeps part of one; a loop repeats one; a compilation is
pieces of different materials. Two videos share picture where they hold the same material over the
same material time; :func:`relation` turns that into the relation the index reports, read
"query <relation> other" as ``worldmill.qa.fpindex.Match`` does:

* the shared stretches are merged per time offset (a loop of a clip held against a longer loop of
  the same clip shares one long stretch, not several short ones);
* a stretch counts when it is at least :data:`MIN_SHARED_S` long. A shorter shared stretch is *not*
  a copy: two variants made from one input (video2world) share their conditioning frames, a
  fraction of a second; the corpus's "shared 1 s opening" is such a negative, its "shared 4 s
  opening" a positive (``overlaps``). Nothing in the corpus shares 1.5-3 s: that is the decision
  boundary, where the answer depends on how alike the frames just after the fork are;
* the longest stretch decides: it covers an end of a video when it reaches within :data:`EDGE_S`
  of it (the index's own edge tolerance: 2 samples at 4 a second), so ``equal`` (covers both),
  ``contains`` (covers the other), ``contained_in`` (covers the query) or ``overlaps``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Relation = Literal["equal", "contains", "contained_in", "overlaps"]
Range = tuple[float, float]

#: Shared picture shorter than this is not a copy (the index's ``min_samples`` at 4 samples a second).
MIN_SHARED_S = 2.0
#: A shared stretch this close to an end of a video covers that end.
EDGE_S = 0.5
_EPS = 1e-6


@dataclass(frozen=True)
class Piece:
    """``start_s`` to ``end_s`` of ``material``'s own timeline, laid next on a video's timeline."""

    material: str
    start_s: float
    end_s: float

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Truth:
    """What the query truly is to ``other``; ``stretches``: every longest shared ``(query range, other range)``."""

    other: str
    relation: Relation
    stretches: tuple[tuple[Range, Range], ...]
    #: Separate places of the query holding shared picture (a loop of the other: its repeats).
    occurrences: int = 1


def length_s(pieces: Sequence[Piece]) -> float:
    return sum(p.length_s for p in pieces)


def _shared(query: Sequence[Piece], other: Sequence[Piece]) -> list[tuple[float, float, float]]:
    """``(query start, query end, other start - query start)`` of every piece-wise shared stretch, merged per offset."""
    raw: list[tuple[float, float, float]] = []
    tq = 0.0
    for p in query:
        to = 0.0
        for r in other:
            lo, hi = max(p.start_s, r.start_s), min(p.end_s, r.end_s)
            if p.material == r.material and hi - lo > _EPS:
                qs, os = tq + lo - p.start_s, to + lo - r.start_s
                raw.append((qs, qs + hi - lo, os - qs))
            to += r.length_s
        tq += p.length_s
    raw.sort(key=lambda s: (round(s[2], 6), s[0]))
    merged: list[tuple[float, float, float]] = []
    for qs, qe, off in raw:
        if merged and abs(merged[-1][2] - off) < _EPS and qs <= merged[-1][1] + _EPS:
            a, b, _ = merged[-1]
            merged[-1] = (a, max(b, qe), off)
        else:
            merged.append((qs, qe, off))
    return merged


def relation(query: Sequence[Piece], other: Sequence[Piece], other_name: str) -> Truth | None:
    """The true relation of a video made of ``query`` to one made of ``other`` (None: no copy)."""
    stretches = [s for s in _shared(query, other) if s[1] - s[0] >= MIN_SHARED_S - _EPS]
    if not stretches:
        return None
    nq, no = length_s(query), length_s(other)
    longest = max(qe - qs for qs, qe, _ in stretches)
    best = [s for s in stretches if s[1] - s[0] >= longest - _EPS]
    qs, qe, off = best[0]
    covers_query = qs <= EDGE_S and qe >= nq - EDGE_S
    covers_other = qs + off <= EDGE_S and qe + off >= no - EDGE_S
    rel: Relation
    if covers_query and covers_other:
        rel = "equal"
    elif covers_other:
        rel = "contains"
    elif covers_query:
        rel = "contained_in"
    else:
        rel = "overlaps"
    ranges = tuple(((round(a, 3), round(b, 3)), (round(a + d, 3), round(b + d, 3))) for a, b, d in best)
    places: list[tuple[float, float]] = []
    for a, b, _ in sorted(stretches, key=lambda s: s[0] - s[1]):
        if all(b <= pa + _EPS or a >= pb - _EPS for pa, pb in places):
            places.append((a, b))
    return Truth(other_name, rel, ranges, len(places) if rel == "contains" else 1)
