"""How well ``copy_of`` finds the corpus's copies: every pair of items looked up in the real index, against the truth.

The fingerprints are the decode pass's (``worldmill.qa.service.fingerprint_of(analyze(path))``) and
the index is the QA service's and ``worldmill audit``'s :class:`~worldmill.qa.fpindex.FingerprintIndex`
with its default parameters, queried the way they query it:

* :func:`pairs` - as ``worldmill audit`` does: every item held (``add_many``), each looked up with
  itself excluded. Every ordered pair (query, other) is scored: the relation found against the
  relation true (``tests/helpers/qa_relations.py``), and, where both say the same, whether the
  reported time ranges are within :data:`TOLERANCE_S` of a true shared stretch;
* :func:`in_service_order` - as the QA service does: items arrive one at a time in corpus order,
  each is looked up (``limit=20``, itself excluded) against the ones before it and then added. An
  item is flagged when anything is found; it is truly a copy when it shares picture with an earlier one.

Pairs outside what the fingerprint claims (:func:`beyond_claim`: a crop of more than 2 % of each
side; two near-static takes of one scene, which are one picture) are scored apart, not in the
precision and recall. Pure apart from the index; used by ``bench/qa.py`` and ``tests/test_qa_corpus.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tests.helpers.qa_corpus import Item
from tests.helpers.qa_relations import Truth
from worldmill.qa.fpindex import FingerprintIndex, FingerprintLike, Match

#: Reported range ends within this of the truth count as right (2 samples at 4 a second).
TOLERANCE_S = 0.5
RELATIONS = ("equal", "contains", "contained_in", "overlaps")


@dataclass(frozen=True)
class Pair:
    """One ordered pair: what ``query`` truly is to ``other`` and what the index found."""

    query: str
    other: str
    truth: Truth | None
    found: Match | None
    beyond: bool = False

    @property
    def true_relation(self) -> str | None:
        return None if self.truth is None else self.truth.relation

    @property
    def found_relation(self) -> str | None:
        return None if self.found is None else self.found.relation

    @property
    def range_error_s(self) -> float | None:
        """The largest error of the four range ends against the nearest true stretch (both relations alike)."""
        if self.truth is None or self.found is None or self.true_relation != self.found_relation:
            return None
        got = (*self.found.query_range, *self.found.other_range)
        return min(max(abs(a - b) for a, b in zip(got, (*q, *o), strict=True)) for q, o in self.truth.stretches)

    @property
    def ranges_right(self) -> bool | None:
        error = self.range_error_s
        return None if error is None else error <= TOLERANCE_S

    @property
    def occurrences_right(self) -> bool | None:
        if self.truth is None or self.found is None or self.true_relation != self.found_relation:
            return None
        return self.truth.occurrences == self.found.occurrences


def beyond_claim(query: Item, other: Item, truth: Truth | None) -> bool:
    """A pair the fingerprint does not claim to tell: a copy cropped too much, or two takes of one still picture."""
    if truth is not None and ("beyond_claim" in query.tags or "beyond_claim" in other.tags):
        return True
    return "limit" in query.tags and "limit" in other.tags


def pairs(items: Sequence[Item], fingerprints: Mapping[str, FingerprintLike]) -> list[Pair]:
    """Every ordered pair of items, the index holding all of them (``worldmill audit``'s way)."""
    index = FingerprintIndex()
    index.add_many((it.name, fingerprints[it.name], None) for it in items)
    out: list[Pair] = []
    for it in items:
        found = {m.asset_id: m for m in index.lookup(fingerprints[it.name], exclude={it.name})}
        for other in items:
            if other.name != it.name:
                truth = it.truth(other.name)
                out.append(Pair(it.name, other.name, truth, found.get(other.name), beyond_claim(it, other, truth)))
    return out


@dataclass(frozen=True)
class Arrival:
    """One item checked in service order: flagged, and truly a copy of an earlier item (pairs in the claim only)."""

    name: str
    is_copy: bool
    flagged: bool
    matches: tuple[Match, ...]


def in_service_order(items: Sequence[Item], fingerprints: Mapping[str, FingerprintLike]) -> list[Arrival]:
    """Items arriving one at a time in corpus order, each looked up before it is added (the QA service's way).

    Pairs beyond the claim count neither way: an item whose only earlier relatives are such pairs is
    no copy, and a match with such a relative does not flag it.
    """
    index = FingerprintIndex()
    out: list[Arrival] = []
    seen: dict[str, Item] = {}
    for it in items:
        fp = fingerprints[it.name]
        matches = tuple(index.lookup(fp, exclude={it.name}, limit=20))

        def inside(other: Item, it: Item = it) -> bool:
            return not beyond_claim(it, other, it.truth(other.name))

        is_copy = any(it.truth(o.name) is not None and inside(o) for o in seen.values())
        flagged = any(inside(seen[m.asset_id]) for m in matches)
        out.append(Arrival(it.name, is_copy, flagged, matches))
        index.add(it.name, fp)
        seen[it.name] = it
    return out


def precision_recall(tp: int, fp: int, fn: int) -> dict[str, Any]:
    """``{"tp", "fp", "fn", "precision", "recall"}`` (1.0 where nothing was expected or found)."""
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": round(tp / (tp + fp), 4) if tp + fp else 1.0,
        "recall": round(tp / (tp + fn), 4) if tp + fn else 1.0,
    }


def scores(scored: Sequence[Pair]) -> dict[str, dict[str, Any]]:
    """Precision and recall per relation and for "shares picture with" (``copy``), over the pairs in the claim."""
    inside = [p for p in scored if not p.beyond]
    out: dict[str, dict[str, Any]] = {}
    for rel in RELATIONS:
        tp = sum(p.true_relation == rel and p.found_relation == rel for p in inside)
        fp = sum(p.found_relation == rel and p.true_relation != rel for p in inside)
        fn = sum(p.true_relation == rel and p.found_relation != rel for p in inside)
        out[rel] = {"positives": tp + fn, **precision_recall(tp, fp, fn)}
    tp = sum(p.truth is not None and p.found is not None for p in inside)
    fp = sum(p.truth is None and p.found is not None for p in inside)
    fn = sum(p.truth is not None and p.found is None for p in inside)
    out["copy"] = {"positives": tp + fn, **precision_recall(tp, fp, fn)}
    return out


def arrival_scores(arrivals: Sequence[Arrival]) -> dict[str, Any]:
    """Precision and recall of "is a copy of an item before it"."""
    tp = sum(a.is_copy and a.flagged for a in arrivals)
    fp = sum(a.flagged and not a.is_copy for a in arrivals)
    fn = sum(a.is_copy and not a.flagged for a in arrivals)
    return {"items": len(arrivals), "positives": tp + fn, **precision_recall(tp, fp, fn)}
