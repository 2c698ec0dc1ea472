"""The labelled corpus's copy class (issue #15): every true relation found with its ranges, no look-alike flagged.

``bench/qa.py`` part 3 measures precision and recall of ``copy_of`` on the full corpus; this guards
the same claim in CI on the small one (real H.264 files, the decode pass's fingerprints, the real
index), then checks the labels themselves (pure: how each item was made gives its true relations).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import qa_copy_scores, qa_corpus
from tests.helpers.qa_corpus import Item, cut, repeat
from tests.helpers.qa_relations import Piece, relation
from tests.helpers.qa_takes import Motion, Take
from worldmill.qa.fpindex import FingerprintLike, Match
from worldmill.qa.measure import analyze
from worldmill.qa.service import fingerprint_of

Scored = tuple[list[Item], dict[str, FingerprintLike], list[qa_copy_scores.Pair]]


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Scored:
    items = qa_corpus.build(tmp_path_factory.mktemp("copies"), small=True, kinds=("copies",))
    prints = {it.name: fingerprint_of(analyze(it.path)) for it in items}
    fingerprints = {name: fp for name, fp in prints.items() if fp is not None}
    assert len(fingerprints) == len(items)
    return items, fingerprints, qa_copy_scores.pairs(items, fingerprints)


def test_every_labelled_copy_is_found_with_its_relation_ranges_and_repeats(scored: Scored) -> None:
    _, _, pairs = scored
    copies = [p for p in pairs if p.truth is not None]
    assert {p.true_relation for p in copies} == set(qa_copy_scores.RELATIONS)  # every relation is tested
    assert len(copies) >= 20
    wrong = [
        (p.query, p.other, p.true_relation, p.truth.stretches if p.truth else None, p.found and p.found.describe())
        for p in copies
        if p.found_relation != p.true_relation or not p.ranges_right or not p.occurrences_right
    ]
    assert wrong == []


def test_no_negative_is_flagged_the_hard_ones_included(scored: Scored) -> None:
    items, _, pairs = scored
    tags = {t for it in items for t in it.tags}
    assert {"same_scene", "short_opening", "near_static"} <= tags
    assert any("same_scene" in it.tags and "fixed" in it.name for it in items)  # a fixed camera, two seeds
    flagged = [(p.query, p.other, p.found.describe()) for p in pairs if p.truth is None and p.found is not None]
    assert flagged == []


def test_in_service_order_every_copy_and_nothing_else_is_flagged(scored: Scored) -> None:
    items, fingerprints, _ = scored
    arrivals = qa_copy_scores.in_service_order(items, fingerprints)
    assert sum(a.is_copy for a in arrivals) >= 8 and sum(not a.is_copy for a in arrivals) >= 8
    assert [(a.name, a.is_copy, [m.describe() for m in a.matches]) for a in arrivals if a.is_copy != a.flagged] == []


# -- the labels (pure) ----------------------------------------------------------------------------


def test_labels_of_a_trim_a_loop_a_tail_and_forks() -> None:
    src = (Piece("x", 0.0, 8.0),)
    trim = relation(cut(src, 2.9, 6.1), src, "src")
    assert trim is not None and trim.relation == "contained_in"
    assert trim.stretches == (((0.0, 3.2), (2.9, 6.1)),)
    loop = relation(repeat(src[:1], 16.0), src, "src")
    assert loop is not None and (loop.relation, loop.occurrences) == ("contains", 2)
    assert set(loop.stretches) == {((0.0, 8.0), (0.0, 8.0)), ((8.0, 16.0), (0.0, 8.0))}
    six, two = repeat(src, 48.0), repeat(src, 16.0)
    inside = relation(two, six, "six")
    assert inside is not None and inside.relation == "contained_in" and len(inside.stretches) == 5
    tail = relation((Piece("x", 5.0, 11.0),), src, "src")
    assert tail is not None and tail.relation == "overlaps" and tail.stretches == (((0.0, 3.0), (5.0, 11.0 - 3.0)),)
    fork4 = (Piece("x", 0.0, 4.0), Piece("x/fork", 4.0, 8.0))
    opening = relation(fork4, src, "src")
    assert opening is not None and opening.relation == "overlaps" and opening.stretches == (((0.0, 4.0), (0.0, 4.0)),)
    assert relation((Piece("x", 0.0, 1.0), Piece("x/fork", 1.0, 8.0)), src, "src") is None  # a 1 s opening
    assert relation((Piece("y", 0.0, 8.0),), src, "src") is None
    nearly = relation(cut(src, 0.0, 7.7), src, "src")  # within 0.5 s of the end: the same clip
    assert nearly is not None and nearly.relation == "equal"


def test_the_small_corpus_labels_its_copies_as_made() -> None:
    """The labels of a few named items, read off by hand (no video is written: the pieces alone)."""
    takes = qa_corpus._takes()
    shots = {s.name: qa_corpus._shot_pieces(s) for s in qa_corpus._shots(takes)}
    assert shots["tail_p_from_5s"] == (Piece("take:p", 5.0, 11.0),)
    assert shots["opening_4s_of_t"] == (Piece("take:t", 0.0, 4.0), Piece("take:t_fork4", 4.0, 8.0))
    truth = relation(shots["tail_p_from_5s"], shots["src_p_8s"], "src_p_8s")
    assert truth is not None and truth.relation == "overlaps" and truth.stretches == (((0.0, 3.0), (5.0, 8.0)),)
    assert relation(shots["scene_m_seed1"], shots["scene_m_seed2"], "m2") is None


def test_a_take_extended_or_forked_keeps_its_frames() -> None:
    """Frame i is a function of the take and i: a longer take starts with the shorter; a fork parts at its frame."""
    take = Take(7, 70, 64, 48, ((0, Motion(pan=2.0, drift=(1.0, 0.5))),))
    short, long = list(take.frames(0, 10)), list(take.frames(0, 30))
    assert all(np.array_equal(a, b) for a, b in zip(short, long[:10], strict=True))
    assert np.array_equal(next(take.frames(12, 13)), long[12])
    fork = take.fork(20, Motion(pan=-2.0))
    forked = list(fork.frames(0, 30))
    assert all(np.array_equal(a, b) for a, b in zip(forked[:20], long[:20], strict=True))
    assert not np.array_equal(forked[20], long[20]) and not np.array_equal(forked[25], long[25])
    other_seed = next(Take(7, 71, 64, 48, take.path).frames(0, 1)).astype(int)
    other_scene = next(Take(8, 70, 64, 48, take.path).frames(0, 1)).astype(int)
    first = long[0].astype(int)
    assert not np.array_equal(other_seed, first)  # another seed: other detail and noise, on the same layout:
    assert np.abs(other_seed - first).mean() < np.abs(other_scene - first).mean() / 2  # nearer than another scene


def test_scores_count_a_wrong_relation_as_a_miss_and_a_false_find() -> None:
    truth = relation((Piece("x", 0.0, 8.0),), (Piece("x", 0.0, 8.0),), "b")
    found = Match("b", "contained_in", (0.0, 8.0), (0.0, 8.0), 0.01, 1.0, 32)
    right = Match("b", "equal", (0.0, 8.0), (0.0, 7.75), 0.01, 1.0, 32)
    pairs = [
        qa_copy_scores.Pair("a", "b", truth, found),
        qa_copy_scores.Pair("c", "b", truth, right),
        qa_copy_scores.Pair("d", "b", None, right),
        qa_copy_scores.Pair("e", "b", truth, None),
    ]
    s = qa_copy_scores.scores(pairs)
    assert (s["equal"]["tp"], s["equal"]["fn"], s["equal"]["fp"]) == (1, 2, 1)
    assert (s["contained_in"]["fp"], s["contained_in"]["precision"]) == (1, 0.0)
    assert (s["copy"]["tp"], s["copy"]["fp"], s["copy"]["fn"]) == (2, 1, 1)
    assert pairs[1].ranges_right and pairs[1].range_error_s == 0.25


def test_unknown_kinds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown corpus kinds"):
        qa_corpus.build(tmp_path, kinds=("copy",))
