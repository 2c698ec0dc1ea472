"""A dataset-wide near-duplicate index over per-video perceptual fingerprints (pure numpy, no I/O).

A fingerprint is a sequence of unsigned 64-bit pHashes sampled at a fixed ``rate`` (samples per
second of video time; see ``worldmill.qa.fingerprint.Fingerprint``). The index finds, for a new
video, every stored video that shares a stretch of frames with it at some time offset: the same
clip re-encoded (``equal``), a trimmed copy or a copy starting elsewhere (``contained_in``: the
query lies inside the other), a loop made of a clip or a clip extended (``contains``), and a
partial overlap (``overlaps``).

How (banded LSH, then verification):

* Each hash is split into 4 bands of 16 bits. A near-identical hash (a re-encode flips a few bits)
  keeps at least one band exact with high probability. Per band, the index keeps every sample of
  every video sorted by that band's value (``order``) and where each of the 65,536 values starts
  (``starts``): the samples sharing a band value are one slice, no hashing, no Python objects.
* A lookup gathers, per query sample and band, the stored samples with the same band value and
  votes for ``(video, offset)`` where ``offset = stored position - query position``. A true copy
  piles its votes on one offset; chance collisions spread thin. Band values shared by more than
  ``max_postings`` samples (flat or black frames in every other video) are skipped like stop words.
* The best-voted ``(video, offset)`` pairs (and the offsets next to them) are verified: per query
  sample, the distance to the stretch between the two samples of the other it falls between
  (:func:`between`: a trimmed copy is rarely cut on a sample boundary, and half a sample of motion
  would otherwise cost a copy as much as 6 bits); the longest run of matching samples (distance ≤
  ``sample_bits``, gaps of at most ``max_gap`` samples) must be ``min_samples`` long with
  ``min_fraction`` of its samples matching and a mean distance ≤ ``mean_bits``.
* The run must then hold *in time* (``_timed``): a copy moves as its original, so a second off
  the alignment it is about as far from the other as the other is from itself. Two takes of one
  still background with other motion on it (a fixed camera, two seeds of one scenario) match about
  as well at every offset and are rejected. Where the other hardly moves there is nothing to time:
  the plain mean distance must then be ≤ ``still_mean_bits`` (a still picture re-encoded: 0-2 bits).
  Whether the run covers the query, the other video, or both decides the relation.

Limits (measured with ``bench/qa.py``'s corpora): to a 64-bit frame pHash, two seeds of one scene
seen by a fixed or slowly drifting camera can stay within a few bits for seconds, as close as a
hard re-encode of one of them: such pairs are the remaining errors both ways (random corpora:
precision 0.97, recall 0.98; all other copies and look-alikes right). Two seeds of a truly still
scene are one picture (flagged). A crop of 3 % of each side (8 bits off) is beyond the claim.

New entries go to a small delta segment that is re-sorted on the next lookup; it is merged into
the base segment when it grows past a quarter of it, so adds stay amortised O(samples). Removal
marks an entry dead (its samples are dropped at the next merge). Entries are keyed by asset id:
adding the same id with the same hashes again is a no-op; with other hashes it replaces the entry.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from worldmill.qa.fpsegments import BANDS, I64, U64, Segment, band_values

__all__ = ["FingerprintIndex", "FingerprintLike", "IndexParams", "Match", "Relation", "between"]

Relation = Literal["equal", "contains", "contained_in", "overlaps"]
_FORMAT = "worldmill-fpindex-1"


class FingerprintLike(Protocol):
    """What the index needs of a fingerprint (``worldmill.qa.fingerprint.Fingerprint`` has it)."""

    @property
    def rate(self) -> float: ...

    @property
    def hashes(self) -> tuple[int, ...]: ...


@dataclass(frozen=True)
class IndexParams:
    """Thresholds of a match, in samples (at the index rate) and bits (of 64)."""

    #: A sample matches when its distance to the other (to the stretch between its two nearest samples) is at most this.
    sample_bits: int = 10
    #: The matched run's mean distance must be at most this (re-encodes: 0-5, a trim cut mid-sample
    #: included; same scene, other seed: 15+ with a moving camera, 4-6 with a fixed one: see ``min_specificity``).
    mean_bits: float = 6.0
    #: The matched run must be this long (8 samples = 2 s at 4/s) ...
    min_samples: int = 8
    #: ... with at least this share of its samples matching.
    min_fraction: float = 0.8
    #: Non-matching samples allowed in a row inside a run (a dropped or a changed frame).
    max_gap: int = 2
    #: A run within this many samples of an end covers that end (cuts rarely fall on a sample).
    edge_samples: int = 2
    #: A (video, offset) needs this many band votes to be verified.
    min_votes: int = 3
    #: At most this many (video, offset) candidates are verified per lookup.
    max_candidates: int = 64
    #: Band values held by more samples than this are skipped (flat frames); bounds lookup time.
    max_postings: int = 4096
    #: The timing test compares the alignment with the other's samples this many samples earlier and later (1 s).
    lag_samples: int = 4
    #: ... when the other changes by at least this many bits over that lag ...
    min_motion_bits: float = 4.0
    #: ... and the query must then be farther from those samples than from the aligned ones by this share of
    #: the other's own change (copies: 0.45-1.0; one still background with other motion on it: 0.2-0.3).
    min_specificity: float = 0.4
    #: Where the other changes less (still to the fingerprint: nothing to time), the picture alone decides and
    #: the run's plain mean distance must be at most this (re-encodes of a still: 0-2 bits; two seeds of one
    #: still scene and hard re-encodes or crops of a still: 2-8 both, beyond what the fingerprint can tell).
    still_mean_bits: float = 3.0


@dataclass(frozen=True)
class Match:
    """Another video sharing frames with the query.

    ``relation`` reads "query <relation> other": ``contains`` = the other video lies inside the query
    (the query is a loop or an extension of it), ``contained_in`` = the query is a trimmed copy of it.
    Ranges are ``(start_s, end_s)`` of video time in each; ``distance`` is the mean Hamming distance
    of the aligned samples / 64 and ``similarity`` the share of them that match (within ``sample_bits``
    of the stretch between the other's two nearest samples).
    ``occurrences`` counts the separate places where the other video lies inside the query (a loop).
    """

    asset_id: str
    relation: Relation
    query_range: tuple[float, float]
    other_range: tuple[float, float]
    distance: float
    similarity: float
    samples: int
    occurrences: int = 1
    meta: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: ``equal to a (0.0-10.0 s ↔ 0.0-10.0 s, 98% of 40 samples match)``."""
        verb = {
            "equal": "equal to",
            "contains": "contains",
            "contained_in": "contained in",
            "overlaps": "overlaps",
        }[self.relation]
        (qa, qb), (oa, ob) = self.query_range, self.other_range
        times = f" ×{self.occurrences}" if self.occurrences > 1 else ""
        return (
            f"{verb} {self.asset_id}{times} ({qa:.2f}-{qb:.2f} s here = {oa:.2f}-{ob:.2f} s there, "
            f"{self.similarity:.0%} of {self.samples} samples match, distance {self.distance:.3f})"
        )


def popcount64(x: U64) -> npt.NDArray[np.int64]:
    """Set bits of each uint64 (numpy >= 2.0's ``bitwise_count``, one instruction per element)."""
    out: npt.NDArray[np.int64] = np.bitwise_count(x).astype(np.int64)
    return out


def between(query: U64, other: U64, first: int) -> npt.NDArray[np.float64]:
    """Per sample ``k``, the distance of ``query[k]`` to the stretch from ``other[first + k]`` to the sample after it.

    A copy trimmed between two samples shows, at each sample time, a frame between two of the
    other's samples: its bits are the ones those two share, plus either value of the ones that
    change between them (the motion). So only the bits the two share are compared (where the query
    differs from both), scaled to 64 bits: ``64 × differing / shared``. A cut half a sample off then
    costs nothing where a plain distance would count half a sample of motion (5-6 bits for a 2 px/frame
    pan at 320 px), and an unrelated sample still scores about 32, however fast the other moves.
    The other's last sample has no successor and is compared plainly.
    """
    here = other[first : first + len(query)]
    after = other[first + 1 : first + 1 + len(query)]
    out = popcount64(query ^ here).astype(np.float64)
    k = len(after)
    shared = 64 - popcount64(here[:k] ^ after)
    differing = popcount64((query[:k] ^ here[:k]) & (query[:k] ^ after))
    out[:k] = 64.0 * differing / np.maximum(shared, 1)
    return out


def as_hashes(values: Iterable[int] | U64) -> U64:
    """Hashes as a uint64 array (each must fit 64 bits unsigned)."""
    if isinstance(values, np.ndarray):
        array: U64 = values.astype(np.uint64, copy=False)
        return array
    return np.fromiter((int(v) & 0xFFFFFFFFFFFFFFFF for v in values), dtype=np.uint64)


def resample(hashes: U64, rate: float, to_rate: float) -> U64:
    """The sample nearest each ``1/to_rate`` step of video time."""
    if rate == to_rate or len(hashes) == 0:
        return hashes
    n = max(1, round(len(hashes) * to_rate / rate))
    idx = np.minimum(np.rint(np.arange(n) * rate / to_rate).astype(np.int64), len(hashes) - 1)
    out: U64 = hashes[idx]
    return out


class FingerprintIndex:
    """Every video's fingerprint, looked up by shared frames at any time offset. Not thread-safe."""

    def __init__(self, rate: float = 4.0, params: IndexParams | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.rate = float(rate)
        self.params = params or IndexParams()
        # Per video slot: asset id, start in the sample arrays, length, alive, meta.
        self._ids: list[str] = []
        self._slot: dict[str, int] = {}
        self._start: list[int] = []
        self._length: list[int] = []
        self._meta: list[dict[str, Any]] = []
        self._alive = np.zeros(0, dtype=bool)  # per slot; grown by doubling, len(self._ids) are used
        self._max_length = 0
        self._hashes = np.zeros(0, dtype=np.uint64)  # every sample of every slot, base then delta
        self._chunks: list[U64] = []  # delta samples not yet in _hashes
        self._total = 0  # samples in _hashes and _chunks
        self._owner = np.zeros(0, dtype=np.int32)  # slot of each sample
        self._pos = np.zeros(0, dtype=np.int32)  # position of each sample in its video
        self._base: Segment | None = None
        self._base_samples = 0  # samples [0, _base_samples) are in the base segment
        self._delta: Segment | None = None
        self._dead_samples = 0

    # -- content -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, asset_id: object) -> bool:
        return asset_id in self._slot

    @property
    def samples(self) -> int:
        """Samples held (live entries only)."""
        return sum(self._length[s] for s in self._slot.values())

    def asset_ids(self) -> list[str]:
        """The ids held, in the order they were added."""
        return [a for a in self._ids if a in self._slot and self._ids[self._slot[a]] == a]

    def hashes_of(self, asset_id: str) -> U64:
        """The stored (resampled) hashes of an entry."""
        slot = self._slot[asset_id]
        self._flush_chunks()
        return self._hashes[self._start[slot] : self._start[slot] + self._length[slot]].copy()

    def meta_of(self, asset_id: str) -> dict[str, Any]:
        """The meta stored with an entry."""
        return dict(self._meta[self._slot[asset_id]])

    def add(self, asset_id: str, fp: FingerprintLike, meta: Mapping[str, Any] | None = None) -> bool:
        """Hold ``fp`` under ``asset_id``; False (a no-op) when the same hashes are held under it already."""
        hashes = resample(as_hashes(fp.hashes), float(fp.rate), self.rate)
        if asset_id in self._slot:
            if np.array_equal(self.hashes_of(asset_id), hashes):
                self._meta[self._slot[asset_id]] = dict(meta or {})
                return False
            self.remove(asset_id)
        slot = len(self._ids)
        start = self._total
        self._total += len(hashes)
        self._ids.append(asset_id)
        self._slot[asset_id] = slot
        self._start.append(start)
        self._length.append(len(hashes))
        self._meta.append(dict(meta or {}))
        if slot >= len(self._alive):
            self._alive = np.concatenate([self._alive, np.zeros(max(16, slot), dtype=bool)])
        self._alive[slot] = True
        self._max_length = max(self._max_length, len(hashes))
        self._chunks.append(hashes)
        self._delta = None
        return True

    def add_many(self, items: Iterable[tuple[str, FingerprintLike, Mapping[str, Any] | None]]) -> int:
        """Add several entries, then merge once (a rebuild); how many were new or changed."""
        added = sum(self.add(a, fp, m) for a, fp, m in items)
        self.merge()
        return added

    def remove(self, asset_id: str) -> bool:
        """Forget an entry; False when it is not held."""
        slot = self._slot.pop(asset_id, None)
        if slot is None:
            return False
        self._alive[slot] = False
        self._dead_samples += self._length[slot]
        return True

    # -- segments ------------------------------------------------------------------------------

    def _flush_chunks(self) -> None:
        if not self._chunks:
            return
        new = np.concatenate(self._chunks)
        first = len(self._ids) - len(self._chunks)
        slots = np.arange(first, len(self._ids), dtype=np.int64)
        lengths = np.array(self._length[first:], dtype=np.int64)
        owner = np.repeat(slots, lengths)
        pos = np.arange(len(new), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        self._hashes = np.concatenate([self._hashes, new])
        self._owner = np.concatenate([self._owner, owner.astype(np.int32)])
        self._pos = np.concatenate([self._pos, pos.astype(np.int32)])
        self._chunks = []

    def merge(self) -> None:
        """Fold the delta into the base segment, dropping removed entries (a full re-sort)."""
        self._flush_chunks()
        if self._dead_samples:
            keep = self._alive[self._owner]
            live = [s for s in range(len(self._ids)) if self._alive[s]]
            remap = np.full(len(self._ids), -1, dtype=np.int64)
            remap[live] = np.arange(len(live))
            self._ids = [self._ids[s] for s in live]
            self._length = [self._length[s] for s in live]
            self._meta = [self._meta[s] for s in live]
            self._start = (np.cumsum([0, *self._length[:-1]]).tolist()) if live else []
            self._slot = {a: i for i, a in enumerate(self._ids)}
            self._alive = np.ones(len(live), dtype=bool)
            self._max_length = max(self._length, default=0)
            self._hashes, self._pos = self._hashes[keep], self._pos[keep]
            self._owner = remap[self._owner[keep]].astype(np.int32)
            self._total = len(self._hashes)
            self._dead_samples = 0
        n = len(self._hashes)
        self._base = Segment.build(0, self._hashes) if n else None
        self._base_samples, self._delta = n, None

    def _segments(self) -> list[Segment]:
        self._flush_chunks()
        delta = len(self._hashes) - self._base_samples
        if delta > max(65536, self._base_samples // 4) or self._dead_samples > max(65536, len(self._hashes) // 4):
            self.merge()
            delta = 0
        if delta and self._delta is None:
            self._delta = Segment.build(self._base_samples, self._hashes[self._base_samples :])
        return [s for s in (self._base, self._delta if delta else None) if s is not None]

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays (hashes, sample maps, postings)."""
        arrays = (self._hashes, self._owner, self._pos, self._alive)
        return sum(int(a.nbytes) for a in arrays) + sum(s.nbytes for s in (self._base, self._delta) if s)

    # -- lookup --------------------------------------------------------------------------------

    def lookup(self, fp: FingerprintLike, *, exclude: Iterable[str] = (), limit: int = 20) -> list[Match]:
        """Every held video sharing a verified stretch of frames with ``fp``, best first."""
        query = resample(as_hashes(fp.hashes), float(fp.rate), self.rate)
        p = self.params
        if len(query) == 0 or not self._slot:
            return []
        segments = self._segments()
        qbands = band_values(query)
        qpos_all: list[I64] = []
        sid_all: list[I64] = []
        for seg in segments:
            for b in range(BANDS):
                qpos, sid = seg.postings(b, qbands[b], p.max_postings)
                qpos_all.append(qpos)
                sid_all.append(sid)
        qpos = np.concatenate(qpos_all)
        sid = np.concatenate(sid_all)
        if len(sid) == 0:
            return []
        owner = self._owner[sid].astype(np.int64)
        alive = self._alive[owner]
        skip = {self._slot[a] for a in exclude if a in self._slot}
        if skip:
            alive &= ~np.isin(owner, np.fromiter(skip, dtype=np.int64))
        owner, offset = owner[alive], (self._pos[sid].astype(np.int64) - qpos)[alive]
        if len(owner) == 0:
            return []
        # Votes per (video, offset): one per query sample and band whose value the aligned sample shares.
        span = len(query) + self._max_length + 1
        key = owner * (2 * span) + (offset + span)
        keys, votes = np.unique(key, return_counts=True)
        strong = votes >= p.min_votes
        keys, votes = keys[strong], votes[strong]
        if len(keys) == 0:
            return []
        best = np.argsort(-votes, kind="stable")[: p.max_candidates]
        candidates: dict[int, set[int]] = {}
        for k in keys[best].tolist():
            slot, off = divmod(k, 2 * span)
            candidates.setdefault(slot, set()).update({off - span - 1, off - span, off - span + 1})
        matches = [m for slot, offs in candidates.items() if (m := self._verify(query, slot, sorted(offs)))]
        matches.sort(key=lambda m: (-m.samples * m.similarity, m.distance, m.asset_id))
        return matches[:limit]

    def _verify(self, query: U64, slot: int, offsets: list[int]) -> Match | None:
        """The best verified alignment of ``query`` with one held video (and how often it recurs)."""
        p = self.params
        start, m = self._start[slot], self._length[slot]
        other = self._hashes[start : start + m]
        n = len(query)
        runs: list[tuple[int, int, int, float, float, float]] = []  # (qa, qb, offset, fraction, mean, mean plain)
        for d in offsets:
            lo, hi = max(0, -d), min(n, m - d)
            if hi - lo < p.min_samples:
                continue
            plain = popcount64(query[lo:hi] ^ other[lo + d : hi + d])
            dist = between(query[lo:hi], other, lo + d)
            run = _longest_run(dist <= p.sample_bits, p.max_gap)
            if run is None:
                continue
            a, b = run
            seg = dist[a:b]
            ok = seg <= p.sample_bits
            if (
                b - a >= p.min_samples
                and ok.mean() >= p.min_fraction
                and seg.mean() <= p.mean_bits
                and self._timed(query, other, lo + a, lo + b, d, still=float(plain[a:b].mean()))
            ):
                runs.append((lo + a, lo + b, d, float(ok.mean()), float(seg.mean()), float(plain[a:b].mean())))
        if not runs:
            return None
        # Longest best-matching run first (between equals, the one whose own samples are nearer).
        runs.sort(key=lambda r: (-(r[1] - r[0]) * r[3], r[5], r[4]))
        qa, qb, d, fraction, _, mean = runs[0]
        qa, qb, d, mean = self._nearer(query, other, qa, qb, d, mean=mean)
        # Separate places of the query holding the other video: runs that do not overlap the best one.
        taken = [(qa, qb)]
        for ra, rb, *_ in runs[1:]:
            if all(rb <= ta or ra >= tb for ta, tb in taken):
                taken.append((ra, rb))
        relation = _relation(
            qa <= p.edge_samples and qb >= n - p.edge_samples, qa + d <= p.edge_samples and qb + d >= m - p.edge_samples
        )
        r = self.rate
        return Match(
            asset_id=self._ids[slot],
            relation=relation,
            query_range=(round(qa / r, 3), round(qb / r, 3)),
            other_range=(round((qa + d) / r, 3), round((qb + d) / r, 3)),
            distance=round(mean / 64, 4),
            similarity=round(fraction, 4),
            samples=qb - qa,
            occurrences=len(taken) if relation == "contains" else 1,
            meta=dict(self._meta[slot]),
        )

    def _nearer(self, query: U64, other: U64, qa: int, qb: int, d: int, *, mean: float) -> tuple[int, int, int, float]:
        """The run ``qa..qb`` at offset ``d`` or ``d + 1``, whichever sample of the other is nearer.

        At offset ``d`` a query sample lies between the other's samples ``k + d`` and ``k + d + 1``;
        reporting the nearer puts the ranges within half a sample. At ``d + 1`` the run may start a
        sample earlier (out of reach at ``d``) and must end where the other does. Returns the run,
        the offset and its plain mean distance.
        """
        end = min(qb, len(other) - d - 1)
        if end <= qa:
            return qa, qb, d, mean
        here = float(popcount64(query[qa:end] ^ other[qa + d : end + d]).mean())
        later = float(popcount64(query[qa:end] ^ other[qa + d + 1 : end + d + 1]).mean())
        if later >= here:
            return qa, qb, d, mean
        d, qb = d + 1, end
        while (
            qa > 0
            and qa + d > 0
            and int(popcount64(query[qa - 1 : qa] ^ other[qa + d - 1 : qa + d])[0]) <= self.params.sample_bits
        ):
            qa -= 1
        return qa, qb, d, float(popcount64(query[qa:qb] ^ other[qa + d : qb + d]).mean())

    def _timed(self, query: U64, other: U64, qa: int, qb: int, d: int, *, still: float) -> bool:
        """Whether the match holds in time: the query's samples ``qa..qb`` match the other's at offset ``d``
        clearly better than the other's own samples ``lag_samples`` earlier and later do.

        A copy moves as its original: a second away from the alignment it is about as far from the
        other's samples as they are from each other. Two takes of one still background with other
        motion on it (a fixed camera, two seeds) match nearly as well at every offset, because what
        they share does not move: ``(cross - aligned) / own`` is small. Where the other hardly moves
        (``own`` below ``min_motion_bits``) there is nothing to time, and the run's plain mean distance
        ``still`` must be within ``still_mean_bits`` instead (plain: with nothing moving, a sample between
        two others is no excuse for a difference).
        """
        p = self.params
        at = np.arange(qa, qb)
        own: list[npt.NDArray[np.int64]] = []
        cross: list[npt.NDArray[np.int64]] = []
        for lag in (p.lag_samples, -p.lag_samples):
            k = at[(at + d + lag >= 0) & (at + d + lag < len(other))]
            own.append(popcount64(other[k + d] ^ other[k + d + lag]))
            cross.append(popcount64(query[k] ^ other[k + d + lag]))
        moved = np.concatenate(own)
        if len(moved) == 0 or moved.mean() < p.min_motion_bits:
            return still <= p.still_mean_bits
        aligned = popcount64(query[qa:qb] ^ other[qa + d : qb + d]).mean()
        return bool(np.concatenate(cross).mean() - aligned >= p.min_specificity * moved.mean())

    # -- persistence ---------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The live entries (ids, meta, hashes) as one npz blob; postings are rebuilt on load."""
        ids = self.asset_ids()
        hashes = [self.hashes_of(a) for a in ids]
        header = {
            "format": _FORMAT,
            "rate": self.rate,
            "ids": ids,
            "meta": [self._meta[self._slot[a]] for a in ids],
        }
        out = io.BytesIO()
        np.savez_compressed(
            out,
            header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
            lengths=np.array([len(h) for h in hashes], dtype=np.int64),
            hashes=np.concatenate(hashes) if hashes else np.zeros(0, np.uint64),
        )
        return out.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes, params: IndexParams | None = None) -> FingerprintIndex:
        """An index from :meth:`to_bytes`."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode())
            if header.get("format") != _FORMAT:
                raise ValueError(f"not a fingerprint index: format {header.get('format')!r}")
            lengths, hashes = data["lengths"], data["hashes"]
        index = cls(rate=header["rate"], params=params)
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        index.add_many(
            (a, _Raw(index.rate, hashes[bounds[i] : bounds[i + 1]]), header["meta"][i])
            for i, a in enumerate(header["ids"])
        )
        return index


@dataclass(frozen=True)
class _Raw:
    """A fingerprint whose hashes are an array already (what the index stores)."""

    rate: float
    hashes: Any


def _relation(covers_query: bool, covers_other: bool) -> Relation:
    """What a run that covers the query, the other video, both or neither makes the query."""
    if covers_query and covers_other:
        return "equal"
    if covers_other:
        return "contains"
    return "contained_in" if covers_query else "overlaps"


def _longest_run(ok: npt.NDArray[np.bool_], max_gap: int) -> tuple[int, int] | None:
    """``[a, b)`` of the longest stretch that starts and ends with a match, with gaps ≤ ``max_gap``."""
    hits = np.flatnonzero(ok)
    if len(hits) == 0:
        return None
    breaks = np.flatnonzero(np.diff(hits) > max_gap + 1)
    firsts = np.concatenate([[0], breaks + 1])
    lasts = np.concatenate([breaks, [len(hits) - 1]])
    lengths = hits[lasts] - hits[firsts]
    i = int(np.argmax(lengths))
    return int(hits[firsts[i]]), int(hits[lasts[i]]) + 1
