"""The dataset-wide near-duplicate index (pure): copies found at any offset, look-alikes not."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from worldmill.qa.fpindex import FingerprintIndex, IndexParams, Match, between, popcount64

RATE = 4.0


@dataclass(frozen=True)
class FP:
    """Stands in for ``worldmill.qa.fingerprint.Fingerprint`` (same two fields)."""

    rate: float
    hashes: tuple[int, ...]


def flip(x: int, bits: int, rng: np.random.Generator) -> int:
    for b in rng.choice(64, size=bits, replace=False):
        x ^= 1 << int(b)
    return x


def clip(n: int, rng: np.random.Generator) -> tuple[int, ...]:
    """A video-like hash sequence: a random start, then 3-11 bits change per sample (motion)."""
    bits = rng.permuted(np.tile(np.arange(64, dtype=np.uint64), (n, 1)), axis=1)
    chosen = np.arange(64)[None, :] < rng.integers(3, 12, size=n)[:, None]
    flips = np.bitwise_or.reduce(np.where(chosen, np.uint64(1) << bits, np.uint64(0)), axis=1)
    flips[0] = np.uint64(int(rng.integers(0, 2**63)) << 1 | int(rng.integers(0, 2)))
    return tuple(int(h) for h in np.bitwise_xor.accumulate(flips))


def noisy(hashes: tuple[int, ...], bits: int, rng: np.random.Generator) -> tuple[int, ...]:
    """A re-encode: every hash ``bits`` bits off."""
    return tuple(flip(h, bits, rng) for h in hashes)


def fp(hashes: tuple[int, ...], rate: float = RATE) -> FP:
    return FP(rate, hashes)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def index(rng: np.random.Generator) -> tuple[FingerprintIndex, dict[str, tuple[int, ...]]]:
    clips = {f"a{i}": clip(int(rng.integers(20, 121)), rng) for i in range(200)}
    idx = FingerprintIndex(RATE)
    idx.add_many((k, fp(v), {"n": i}) for i, (k, v) in enumerate(clips.items()))
    return idx, clips


def only(matches: list[Match]) -> Match:
    assert len(matches) == 1, matches
    return matches[0]


def test_a_reencode_of_the_same_clip_is_equal(index, rng) -> None:  # type: ignore[no-untyped-def]
    idx, clips = index
    m = only(idx.lookup(fp(noisy(clips["a7"], 3, rng))))
    assert m.asset_id == "a7" and m.relation == "equal"
    n = len(clips["a7"])
    assert m.query_range == (0.0, n / RATE) and m.other_range == (0.0, n / RATE)
    assert m.similarity == 1.0 and m.distance == pytest.approx(3 / 64, abs=1e-4)
    assert m.meta == {"n": 7}


def test_a_trimmed_copy_at_an_offset_is_contained_with_both_time_ranges(index, rng) -> None:  # type: ignore[no-untyped-def]
    idx, clips = index
    a = max(clips, key=lambda k: len(clips[k]))
    part = clips[a][13:53]  # 10 s starting 3.25 s in
    m = only(idx.lookup(fp(noisy(part, 2, rng))))
    assert m.asset_id == a and m.relation == "contained_in"
    assert m.query_range == (0.0, 10.0) and m.other_range == (3.25, 13.25)
    assert m.samples == 40


def test_a_copy_with_another_start_that_runs_on_into_new_frames_overlaps(index, rng) -> None:  # type: ignore[no-untyped-def]
    idx, clips = index
    a = max(clips, key=lambda k: len(clips[k]))
    tail = clips[a][-20:]
    query = tail + clip(30, rng)  # the last 5 s of a, then 7.5 s of other frames
    m = only(idx.lookup(fp(query)))
    n = len(clips[a])
    assert m.asset_id == a and m.relation == "overlaps"
    assert m.query_range == (0.0, 5.0) and m.other_range == ((n - 20) / RATE, n / RATE)


def test_a_loop_made_of_a_clip_contains_it_three_times_and_the_clip_is_inside_the_loop(index, rng) -> None:  # type: ignore[no-untyped-def]
    idx, clips = index
    a = clips["a3"]
    m = only(idx.lookup(fp(noisy(a + a + a, 1, rng))))
    assert m.asset_id == "a3" and m.relation == "contains" and m.occurrences == 3
    assert m.other_range == (0.0, len(a) / RATE)
    # The other way round: the loop is held, the clip is asked about.
    idx.add("loop", fp(a + a + a))
    back = {x.asset_id: x for x in idx.lookup(fp(a), exclude={"a3"})}
    assert set(back) == {"loop"} and back["loop"].relation == "contained_in"


def test_unrelated_clips_and_look_alikes_do_not_match(index, rng) -> None:  # type: ignore[no-untyped-def]
    idx, clips = index
    for _ in range(50):
        assert idx.lookup(fp(clip(int(rng.integers(20, 121)), rng))) == []
    # The same scene with another seed: every hash 16 bits off (pHashes of look-alike frames).
    assert idx.lookup(fp(noisy(clips["a9"], 16, rng))) == []


def test_near_identical_hashes_within_a_few_bits_still_match_and_the_threshold_is_the_params(index, rng) -> None:  # type: ignore[no-untyped-def]
    idx, clips = index
    for bits in (0, 1, 4, 6):
        assert [m.asset_id for m in idx.lookup(fp(noisy(clips["a11"], bits, rng)))] == ["a11"], bits
    strict = FingerprintIndex(RATE, IndexParams(mean_bits=2.0))
    strict.add("a11", fp(clips["a11"]))
    assert strict.lookup(fp(noisy(clips["a11"], 1, rng)))
    assert strict.lookup(fp(noisy(clips["a11"], 4, rng))) == []


def test_the_same_id_twice_is_one_entry_and_new_hashes_replace_it(rng) -> None:  # type: ignore[no-untyped-def]
    a, b = clip(40, rng), clip(40, rng)
    idx = FingerprintIndex(RATE)
    assert idx.add("x", fp(a)) is True
    assert idx.add("x", fp(a), {"again": True}) is False
    assert len(idx) == 1 and idx.samples == 40 and idx.meta_of("x") == {"again": True}
    assert len(idx.lookup(fp(a))) == 1
    assert idx.add("x", fp(b)) is True  # another picture under the same id replaces it
    assert len(idx) == 1 and idx.lookup(fp(a)) == [] and only(idx.lookup(fp(b))).asset_id == "x"


def test_remove_and_exclude(index) -> None:  # type: ignore[no-untyped-def]
    idx, clips = index
    assert only(idx.lookup(fp(clips["a5"]))).asset_id == "a5"
    assert idx.lookup(fp(clips["a5"]), exclude={"a5"}) == []
    assert idx.remove("a5") is True and idx.remove("a5") is False
    assert "a5" not in idx and len(idx) == 199
    assert idx.lookup(fp(clips["a5"])) == []
    idx.merge()  # compaction keeps every other entry findable
    assert only(idx.lookup(fp(clips["a6"]))).asset_id == "a6"
    assert idx.lookup(fp(clips["a5"])) == []


def test_entries_added_after_the_build_are_found_from_the_delta_and_after_a_merge(index, rng) -> None:  # type: ignore[no-untyped-def]
    idx, _ = index
    new = clip(60, rng)
    idx.add("late", fp(new))
    assert only(idx.lookup(fp(new))).asset_id == "late"
    idx.merge()
    assert only(idx.lookup(fp(new))).asset_id == "late"


def test_another_sample_rate_is_resampled_to_the_index_rate(rng) -> None:  # type: ignore[no-untyped-def]
    a = clip(80, rng)
    idx = FingerprintIndex(RATE)
    idx.add("a", fp(a))
    half = tuple(a[::2])  # the same clip sampled at 2 per second
    m = only(idx.lookup(FP(2.0, half)))
    assert m.asset_id == "a" and m.relation == "equal"


def test_round_trip_persistence_keeps_ids_meta_and_answers(index, rng) -> None:  # type: ignore[no-untyped-def]
    idx, clips = index
    idx.remove("a0")
    back = FingerprintIndex.from_bytes(idx.to_bytes())
    assert back.asset_ids() == idx.asset_ids() and len(back) == 199 and back.rate == RATE
    assert back.meta_of("a4") == {"n": 4}
    assert np.array_equal(back.hashes_of("a4"), idx.hashes_of("a4"))
    q = fp(noisy(clips["a4"][5:40], 2, rng))
    assert back.lookup(q) == idx.lookup(q)
    assert back.lookup(fp(clips["a0"])) == []
    with pytest.raises(ValueError, match="not a fingerprint index"):
        import io  # noqa: PLC0415

        out = io.BytesIO()
        np.savez(out, header=np.frombuffer(b'{"format":"x"}', np.uint8), lengths=np.zeros(0), hashes=np.zeros(0))
        FingerprintIndex.from_bytes(out.getvalue())


def test_ten_thousand_entries_every_copy_found_and_nothing_else(rng) -> None:  # type: ignore[no-untyped-def]
    clips = {f"v{i}": clip(int(rng.integers(20, 121)), rng) for i in range(10_000)}
    idx = FingerprintIndex(RATE)
    idx.add_many((k, fp(v), None) for k, v in clips.items())
    assert len(idx) == 10_000
    for i in rng.choice(10_000, size=100, replace=False).tolist():
        a = clips[f"v{i}"]
        start = int(rng.integers(0, len(a) - 16))
        part = a[start : start + int(rng.integers(16, len(a) - start + 1))]
        assert [m.asset_id for m in idx.lookup(fp(noisy(part, 3, rng)))] == [f"v{i}"]
    for _ in range(100):
        assert idx.lookup(fp(clip(int(rng.integers(20, 121)), rng))) == []


def test_flat_frames_shared_by_everyone_are_skipped_not_matched_everywhere(rng) -> None:  # type: ignore[no-untyped-def]
    idx = FingerprintIndex(RATE, IndexParams(max_postings=100))
    black = (0,) * 40
    for i in range(10):
        idx.add(f"b{i}", fp(black))
    assert idx.lookup(fp(black)) == []  # 400 samples share every band value: stop words


def test_popcount() -> None:
    x = np.array([0, 1, 2**64 - 1, 0xF0F0], dtype=np.uint64)
    assert popcount64(x).tolist() == [0, 1, 64, 8]


def test_real_videos_a_reencode_and_a_trimmed_copy_are_found(tmp_path: Path) -> None:
    """With the decode pass's fingerprint (worldmill.qa.fingerprint), on real encoded files."""
    pytest.importorskip("worldmill.qa.fingerprint")
    from tests.helpers.video import write_video  # noqa: PLC0415
    from worldmill.qa.measure import analyze  # noqa: PLC0415

    a = analyze(write_video(tmp_path / "a.mp4", width=64, height=48, fps=24, frames=240, seed=1))
    other = analyze(write_video(tmp_path / "b.mp4", width=64, height=48, fps=24, frames=240, seed=2))
    fa, fb = a.fingerprint, other.fingerprint
    assert fa is not None and fb is not None
    idx = FingerprintIndex(fa.rate)
    idx.add("a", fa)
    assert [m.relation for m in idx.lookup(fa)] == ["equal"]
    assert idx.lookup(fb) == []


# -- cases the labelled corpus found (bench/qa.py part 3), each fixed in the index --------------------


def test_a_trim_cut_half_a_sample_off_is_found_where_a_plain_distance_misses_it(rng) -> None:  # type: ignore[no-untyped-def]
    """A copy cut between two samples shows frames between the other's samples: 5-9 bits off each, plainly."""
    fine = clip(161, rng)  # the same motion sampled 8 times a second
    held = fine[0::2]  # what the index holds: 4 a second
    query = noisy(fine[21:101:2], 1, rng)  # 10 s starting 2.625 s in: every sample half a sample off
    q, h = np.array(query, np.uint64), np.array(held, np.uint64)
    plain = min(popcount64(q ^ h[d : d + 40]).mean() for d in (10, 11))  # the two alignments it lies between
    assert plain > IndexParams().mean_bits  # the case is real: a plain distance would reject this copy
    idx = FingerprintIndex(RATE)
    idx.add("a", fp(held))
    m = only(idx.lookup(fp(query)))
    assert m.relation == "contained_in" and m.query_range == (0.0, 10.0)
    assert abs(m.other_range[0] - 2.625) <= 0.25 and abs(m.other_range[1] - 12.625) <= 0.25


def test_between_counts_only_the_bits_both_neighbours_share_scaled_to_64() -> None:
    a, b = 0x0000_0000_0000_00FF, 0x0000_0000_0000_FF00  # 16 bits change from a to b
    half = 0x0000_0000_0000_0FF0  # half of them changed: between a and b
    other = np.array([a, b], np.uint64)
    q = np.array([half, half ^ (1 << 40) ^ (1 << 50)], np.uint64)  # the second: 2 shared bits off
    d = between(q, other, 0)
    assert d[0] == 0.0
    assert d[1] == bin(half ^ (1 << 40) ^ (1 << 50) ^ b).count("1")  # the last sample: a plain distance
    two_off = between(np.array([half ^ (1 << 40) ^ (1 << 50)], np.uint64), other, 0)
    assert two_off[0] == pytest.approx(64 * 2 / 48)  # 2 of the 48 shared bits, scaled to 64
    rng = np.random.default_rng(3)
    unrelated = rng.integers(0, 2**63, size=(3, 2000), dtype=np.uint64)
    scores = between(unrelated[0], np.stack([unrelated[1], unrelated[2]], 1).reshape(-1), 0)[::2]
    assert 28 < scores.mean() < 36  # an unrelated sample still scores about 32


def _still_background_with(object_bits: list[list[int]], background: int) -> tuple[int, ...]:
    """A fixed camera: one background hash, an object flipping a few of its bits per sample."""
    out = []
    for bits in object_bits:
        h = background
        for b in bits:
            h ^= 1 << b
        out.append(h)
    return tuple(out)


def test_one_still_background_with_other_motion_on_it_is_no_copy_and_a_copy_of_it_is(rng) -> None:  # type: ignore[no-untyped-def]
    """Two seeds of a fixed-camera scene: the background is the same, the object moves otherwise.

    4-5 bits apart at every offset (a plain threshold of 6 calls that a copy); a copy moves as its original does.
    """
    background = int(rng.integers(0, 2**63))
    pool = rng.choice(64, size=10, replace=False)

    def moving(n: int) -> list[list[int]]:
        return [[int(b) for b in rng.choice(pool, size=4, replace=False)] for _ in range(n)]

    x = _still_background_with(moving(40), background)
    y = _still_background_with(moving(40), background)
    idx = FingerprintIndex(RATE)
    idx.add("x", fp(x))
    assert idx.lookup(fp(y)) == []
    untimed = FingerprintIndex(RATE, IndexParams(min_specificity=0.0))
    untimed.add("x", fp(x))
    assert [m.asset_id for m in untimed.lookup(fp(y))] == ["x"]  # without the timing test: a false copy
    m = only(idx.lookup(fp(noisy(x, 1, rng))))  # a re-encode of x: its object moves as x's does
    assert m.asset_id == "x" and m.relation == "equal"
    part = only(idx.lookup(fp(x[8:32])))
    assert part.relation == "contained_in" and part.other_range == (2.0, 8.0)


def test_a_still_picture_is_a_copy_only_within_still_mean_bits(rng) -> None:  # type: ignore[no-untyped-def]
    """Nothing moves, so nothing can be timed: the picture alone decides (re-encodes of a still: 0-2 bits)."""
    still = int(rng.integers(0, 2**63))
    held = tuple(flip(still, int(rng.integers(0, 2)), rng) for _ in range(40))
    idx = FingerprintIndex(RATE)
    idx.add("still", fp(held))
    copy = tuple(flip(still, 1, rng) for _ in range(40))
    assert only(idx.lookup(fp(copy))).relation == "equal"
    detail = flip(still, 5, rng)  # another seed of the same still scene: 5 bits of detail differ
    look_alike = tuple(flip(detail, int(rng.integers(0, 2)), rng) for _ in range(40))
    assert idx.lookup(fp(look_alike)) == []
    loose = FingerprintIndex(RATE, IndexParams(still_mean_bits=6.0))
    loose.add("still", fp(held))
    assert [m.asset_id for m in loose.lookup(fp(look_alike))] == ["still"]
