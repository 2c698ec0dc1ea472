"""A video's content fingerprint: a 64-bit DCT perceptual hash (pHash) of a frame every ``1 / rate`` seconds.

Why: QA caught byte copies but passed a re-encoded copy under another id, a "10 s" that is a 5 s
clip twice and a "continuous" video that is several shots back to back (issue #15). The same
picture re-encoded, rescaled or slightly cropped has (nearly) the same pHash, so two videos with the
same content have fingerprints a few bits apart sample by sample, and a video that repeats itself
has a fingerprint that repeats (see :mod:`worldmill.qa.structure`). Measured on ``bench/qa.py``'s
labelled corpus (mean bits per sample): re-encodes at crf 20-38, scaled 1/3-1.25x, 0-2 bits; a crop
of 2 % of each side 4-5; of 3 % 8 (too far: not claimed). Because a sample is the frame *shown* at
a time, a copy re-timed to another frame rate at the same playback speed (16, 24, 30 fps) samples
the same moments: 1-1.5 bits. A dataset-wide index builds on
exactly this API (:class:`Fingerprint`, :func:`phash`, :func:`hamming`, :func:`sample_indices`).

pHash (:func:`phash`): the luma is area-resized to 32x32, a 2-D DCT-II is taken and its top-left
8x8 (the lowest frequencies) is compared with the median of those 64 coefficients without the DC
term: bit ``8 × row + column`` (most significant first) is set where the coefficient is above that
median. Both steps are linear, so :func:`phash_batch` folds them into two small matrices per image
size (``8 × height`` and ``width × 8``): about a microsecond a frame for the ~64-pixel-wide gray
images the QA pass already makes. Gains and offsets of the luma do not change the hash (the DC term
is excluded from the median and every AC coefficient scales alike), so full- and limited-range
luma give the same bits.

Sampling (:func:`sample_indices`): sample ``k`` (``k = 0, 1, ...`` while ``k / rate`` is before the
end of the video) is the frame shown at time ``k / rate`` seconds after the first frame: the last
frame that starts at or before it (1 ms of slack for timestamp rounding). A 5 s clip at 24 fps has
20 samples (frames 0, 6, 12, ...), a 10 s one 40: a clip played twice has its 20 hashes twice.

numpy only; pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_RATE",
    "HASH_BITS",
    "Fingerprint",
    "area_weights",
    "hamming",
    "phash",
    "phash_batch",
    "sample_indices",
    "sample_times",
]

#: Samples per second of video time.
DEFAULT_RATE = 4.0
#: Bits in one hash.
HASH_BITS = 64
#: The side of the image the DCT is taken of.
_DCT_SIZE = 32
#: The side of the low-frequency corner kept.
_KEEP = 8
#: Slack for timestamp rounding when picking the frame shown at a sample time.
_SLACK_S = 1e-3

Hashes = npt.NDArray[np.uint64]


def hamming(a: int, b: int) -> int:
    """Bits that differ between two 64-bit hashes."""
    return (a ^ b).bit_count()


@dataclass(frozen=True)
class Fingerprint:
    """``hashes[k]`` is the :func:`phash` of the frame shown at ``k / rate`` seconds (unsigned 64-bit ints)."""

    rate: float = DEFAULT_RATE
    hashes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"rate must be a positive number of samples per second, got {self.rate!r}")
        for h in self.hashes:
            if not 0 <= h < 1 << HASH_BITS:
                raise ValueError(f"a hash is an unsigned 64-bit integer, got {h!r}")

    def __len__(self) -> int:
        return len(self.hashes)

    @property
    def duration_s(self) -> float:
        """The video time the samples cover (``len / rate``)."""
        return len(self.hashes) / self.rate

    def array(self) -> Hashes:
        """The hashes as a ``uint64`` array."""
        return np.asarray(self.hashes, dtype=np.uint64)

    def to_json(self) -> dict[str, Any]:
        """``{"rate": 4.0, "bits": 64, "hashes": ["0123456789abcdef", ...]}`` (16 hex digits each: JSON-safe)."""
        return {"rate": self.rate, "bits": HASH_BITS, "hashes": [f"{h:016x}" for h in self.hashes]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fingerprint:
        """The inverse of :meth:`to_json` (hashes may also be given as integers)."""
        bits = data.get("bits", HASH_BITS)
        if bits != HASH_BITS:
            raise ValueError(f"a fingerprint of {bits}-bit hashes, expected {HASH_BITS}")
        hashes = tuple(int(h, 16) if isinstance(h, str) else int(h) for h in data.get("hashes", ()))
        return cls(rate=float(data.get("rate", DEFAULT_RATE)), hashes=hashes)


# -- pHash -----------------------------------------------------------------------------------


def area_weights(size_in: int, size_out: int) -> npt.NDArray[np.float64]:
    """``(size_out, size_in)`` weights averaging input pixels into output cells (area resampling)."""
    edges = np.linspace(0.0, size_in, size_out + 1)
    pixels = np.arange(size_in, dtype=np.float64)
    overlap = np.minimum(pixels[None, :] + 1, edges[1:, None]) - np.maximum(pixels[None, :], edges[:-1, None])
    return np.asarray(np.clip(overlap, 0.0, None) / np.diff(edges)[:, None], dtype=np.float64)


def _dct(size: int) -> npt.NDArray[np.float64]:
    """The orthonormal DCT-II matrix (``size × size``)."""
    n = np.arange(size)
    m = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * size)) * math.sqrt(2 / size)
    m[0] /= math.sqrt(2)
    return m


@lru_cache(maxsize=32)
def _matrices(height: int, width: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """``left`` (8 × height) and ``right`` (width × 8): ``left @ image @ right`` = DCT(resize32(image))[:8, :8]."""
    d = _dct(_DCT_SIZE)[:_KEEP]
    left = d @ area_weights(height, _DCT_SIZE)
    right = (d @ area_weights(width, _DCT_SIZE)).T
    return np.ascontiguousarray(left, np.float32), np.ascontiguousarray(right, np.float32)


def phash_batch(images: npt.NDArray[Any]) -> Hashes:
    """The pHash of each of ``n`` gray images ``(n, height, width)`` (any real dtype), as ``uint64``."""
    if images.ndim != 3 or images.shape[1] < 1 or images.shape[2] < 1:
        raise ValueError(f"expected (n, height, width) gray images, got shape {images.shape}")
    count, height, width = images.shape
    if count == 0:
        return np.zeros(0, np.uint64)
    left, right = _matrices(height, width)
    coefficients = np.matmul(left, np.matmul(images.astype(np.float32, copy=False), right)).reshape(count, 64)
    median = np.median(coefficients[:, 1:], axis=1, keepdims=True)
    bits = np.packbits(coefficients > median, axis=1)
    return bits.view(">u8").reshape(-1).astype(np.uint64)


def phash(luma: npt.NDArray[Any]) -> int:
    """The 64-bit DCT perceptual hash of one gray image ``(height, width)`` (an RGB one is averaged to gray)."""
    image = np.asarray(luma)
    if image.ndim == 3:
        image = image.astype(np.float32).mean(axis=2)
    if image.ndim != 2:
        raise ValueError(f"expected a (height, width) gray image, got shape {image.shape}")
    return int(phash_batch(image[None])[0])


# -- sampling ----------------------------------------------------------------------------------


def sample_times(duration_s: float, rate: float = DEFAULT_RATE) -> list[float]:
    """The sample times ``k / rate`` before ``duration_s`` (less the timestamp slack)."""
    if duration_s <= 0 or rate <= 0:
        return []
    count = max(0, math.ceil(duration_s * rate - _SLACK_S * rate))
    return [k / rate for k in range(count)]


def sample_indices(
    times: Sequence[float] | npt.NDArray[Any], duration_s: float, rate: float = DEFAULT_RATE
) -> list[int]:
    """Which frames are sampled: for each :func:`sample_times` time, the last frame starting at or before it.

    ``times`` are the frames' start times in seconds from the first frame, in presentation order;
    ``duration_s`` is the video's duration (the last frame's start plus its length).
    """
    starts = np.asarray(times, dtype=np.float64)
    if len(starts) == 0:
        return []
    wanted = np.asarray(sample_times(duration_s, rate), dtype=np.float64)
    at = np.searchsorted(starts, wanted + _SLACK_S, side="right") - 1
    return [int(i) for i in np.clip(at, 0, len(starts) - 1)]
