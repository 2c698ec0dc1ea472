"""Test clips for the benches: a smooth random texture panning 2 px a frame, a bright square moving across.

Shared by ``bench/qa.py`` and ``bench/controls.py`` (run as scripts, so this folder is on ``sys.path``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
from PIL import Image


def panning_frames(
    width: int, height: int, count: int, seed: int, *, square_step: int = 7, drift: bool = False
) -> Iterator[npt.NDArray[np.uint8]]:
    """``count`` RGB frames; ``drift`` adds a slow brightness swing (so frames differ in more than position)."""
    rng = np.random.default_rng(seed)
    pan = 2 * count
    cell = 16
    small = rng.integers(0, 256, size=(height // cell + 2, (width + pan) // cell + 2, 3), dtype=np.uint8)
    big = Image.fromarray(small).resize(
        ((width + pan) // cell * cell + 2 * cell, height + 2 * cell), Image.Resampling.BILINEAR
    )
    texture = np.asarray(big, dtype=np.uint8)[cell : cell + height]
    side = max(8, height // 6)
    for i in range(count):
        img = texture[:, 2 * i : 2 * i + width].astype(np.int16)
        if drift:
            img = img + int(12 * np.sin(i / 40))
        x = (i * square_step) % max(1, width - side)
        y = (height - side) // 2
        img[y : y + side, x : x + side] = 235
        yield np.clip(img, 0, 255).astype(np.uint8)
