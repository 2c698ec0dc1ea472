"""Content digests and canonical JSON: the one place that hashes a file or writes JSON to be hashed.

* :func:`sha256_file`: a file's SHA-256 (hex) and size, read with :func:`hashlib.file_digest`.
* :func:`canonical_json`: sorted keys and compact separators, so the same value always gives the same
  text (and the same hash). Stored documents use it as it is (UTF-8 kept, NaN refused); ids hashed from
  it since before this module (prompt content hashes, augmentation ids, upsample cache keys) pass
  ``ensure_ascii=True, allow_nan=True``, the bytes those stored ids were computed from.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = ["canonical_json", "sha256_file", "sha256_hex"]


def sha256_file(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size in bytes of a file, streamed."""
    with path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256")
        return digest.hexdigest(), fh.tell()


def sha256_hex(text: str | bytes) -> str:
    """SHA-256 (hex) of bytes, or of a string's UTF-8."""
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def canonical_json(value: Any, *, ensure_ascii: bool = False, allow_nan: bool = False) -> str:
    """``value`` as JSON with sorted keys and no spaces (``","`` and ``":"``).

    :class:`TypeError` for what JSON cannot hold, :class:`ValueError` for NaN or infinity unless
    ``allow_nan``. ``ensure_ascii`` escapes non-ASCII characters as ``\\uXXXX``.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=ensure_ascii, allow_nan=allow_nan)
