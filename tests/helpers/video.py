"""Write small real H.264 MP4 files with PyAV for tests (a moving gradient, different per seed)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(path: Path, *, width: int, height: int, fps: Fraction | int, frames: int, seed: int = 0) -> Path:
    """Encode ``frames`` frames at ``fps`` (yuv420p, so width and height must be even)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    xs = np.arange(width, dtype=np.int32)[None, :, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "30"}
        for i in range(frames):
            img = ((base.astype(np.int32) + (xs + i * 4)) % 256).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
