"""Stable identities: prompt ids and seeds derived from what a spec *is*, never from chance.

The seed of (manifest, scenario, duration, variant) is the first four bytes of a sha256 over
those values (and the manifest's ``seed_salt``), so expanding the same manifest again gives the
same seeds, variants get different seeds, and seed 0 never appears by accident.
"""

from __future__ import annotations

import hashlib
import re

SEED_LIMIT = 2**32


def duration_token(duration_s: float) -> str:
    """``5`` → ``"5s"``, ``2.5`` → ``"2_5s"``."""
    text = f"{duration_s:g}".replace(".", "_")
    return f"{text}s"


def slug(text: str, max_len: int = 48) -> str:
    """Lower-case letters, digits and dashes only."""
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (out or "x")[:max_len].strip("-") or "x"


def prompt_id(manifest: str, scenario: str, duration_s: float, variant: int) -> str:
    """``<manifest>-<scenario>-<duration>-v<variant>``: readable and stable across submissions."""
    return f"{slug(manifest)}-{scenario}-{duration_token(duration_s)}-v{variant}"[:128]


def derive_seed(manifest: str, scenario: str, duration_s: float, variant: int, salt: str = "") -> int:
    """A seed in [1, 2³²) from a stable hash of the spec's identity."""
    material = "\x1f".join((manifest, scenario, f"{duration_s:g}", str(variant), salt)).encode()
    digest = hashlib.sha256(material).digest()
    for i in range(0, len(digest) - 3, 4):
        seed = int.from_bytes(digest[i : i + 4], "big")
        if seed != 0:
            return seed
    return 1  # unreachable in practice: all eight words of a sha256 being zero


def distinct_seeds(seeds: list[int]) -> list[int]:
    """The same seeds, with any repeat bumped to the next free value (keeps variants distinct)."""
    seen: set[int] = set()
    out = []
    for wanted in seeds:
        seed = wanted
        while seed in seen or seed == 0:
            seed = (seed + 1) % SEED_LIMIT
        seen.add(seed)
        out.append(seed)
    return out
