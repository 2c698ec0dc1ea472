"""The fingerprint index's postings (pure numpy): per 16-bit band of a pHash, which samples hold each value.

Each 64-bit hash is split into :data:`BANDS` bands of :data:`BAND_BITS` bits (:func:`band_values`). A
:class:`Segment` keeps, per band, every sample of a contiguous range sorted by that band's value
(``order``) and where each of the 65,536 values starts (``starts``), so the samples sharing a band
value are one slice (:meth:`Segment.postings`). :class:`~worldmill.qa.fpindex.FingerprintIndex`
holds a base and a delta segment and votes with these postings before verifying.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["BANDS", "BAND_BITS", "I64", "U64", "VALUES", "Segment", "band_values"]

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

BANDS = 4
BAND_BITS = 16
#: Values one band can take.
VALUES = 1 << BAND_BITS


def band_values(hashes: U64) -> npt.NDArray[np.uint16]:
    """``(BANDS, n)`` 16-bit band values."""
    shifts = np.arange(BANDS, dtype=np.uint64)[:, None] * np.uint64(BAND_BITS)
    return ((hashes[None, :] >> shifts) & np.uint64(VALUES - 1)).astype(np.uint16)


@dataclass
class Segment:
    """Sorted postings of a set of samples: per band, sample numbers ordered by band value."""

    first: int  # the global number of the segment's first sample (a segment is a contiguous range)
    order: npt.NDArray[np.int32]  # (BANDS, n): positions into sample_ids sorted by band value
    starts: npt.NDArray[np.int64]  # (BANDS, 65537)

    @classmethod
    def build(cls, first: int, hashes: U64) -> Segment:
        bands = band_values(hashes)
        order = np.empty(bands.shape, dtype=np.int32)
        starts = np.zeros((BANDS, VALUES + 1), dtype=np.int64)
        for b in range(BANDS):
            order[b] = np.argsort(bands[b], kind="stable")
            np.cumsum(np.bincount(bands[b], minlength=VALUES), out=starts[b, 1:])
        return cls(first, order, starts)

    def postings(self, band: int, values: npt.NDArray[np.uint16], limit: int) -> tuple[I64, I64]:
        """``(query positions, global sample numbers)`` of every stored sample sharing a band value."""
        lo = self.starts[band, values.astype(np.int64)]
        hi = self.starts[band, values.astype(np.int64) + 1]
        count = hi - lo
        count[count > limit] = 0
        total = int(count.sum())
        if total == 0:
            empty = np.zeros(0, np.int64)
            return empty, empty
        qpos = np.repeat(np.arange(len(values), dtype=np.int64), count)
        first = np.repeat(lo - (np.cumsum(count) - count), count)
        at = first + np.arange(total, dtype=np.int64)
        return qpos, self.order[band, at].astype(np.int64) + self.first

    @property
    def nbytes(self) -> int:
        return int(self.order.nbytes + self.starts.nbytes)
