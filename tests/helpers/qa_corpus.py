"""A labelled corpus for the within-video QA checks (issue #15): clean clips, loops, cut compilations, copies.

Every clip is a moving textured scene (a smooth random landscape that pans, plus a bright square
moving across it), different per seed, written with PyAV as ``tests/helpers/video.py`` does. The
faults are made the way a careless pipeline would make them:

* ``loop``: a longer "variant" that is a short clip played again (a 10 s = the 5 s clip twice, a
  30 s = six times; also a 16 fps 93-frame clip looped, whose period is no whole number of samples);
* ``cuts``: a "continuous" 30 s (or 10 s) video that is unrelated shots back to back;
* ``copy``: a re-encode of a clean clip at another crf and size (or slightly cropped).

:func:`build` writes the whole corpus and returns each file with its labels (used by
``tests/test_qa_structure.py`` and ``bench/qa.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from PIL import Image

Frames = npt.NDArray[np.uint8]


def scene(seed: int, count: int, *, width: int = 320, height: int = 192, speed: float = 2.0) -> Iterator[Frames]:
    """``count`` RGB frames of a landscape panning ``speed`` px a frame with a square crossing it."""
    rng = np.random.default_rng(seed)
    span = width + int(count * speed) + 32
    cell = max(8, width // 20)
    coarse = rng.integers(0, 256, size=(height // cell + 3, span // cell + 3, 3), dtype=np.uint8)
    big = np.asarray(
        Image.fromarray(coarse).resize((coarse.shape[1] * cell, coarse.shape[0] * cell), Image.Resampling.BICUBIC),
        dtype=np.uint8,
    )
    side = max(8, height // 6)
    colour = rng.integers(150, 256, size=3)
    vy = float(rng.uniform(-0.8, 0.8))
    for i in range(count):
        x = int(i * speed)
        img = big[:height, x : x + width].copy()
        sx = int((i * 3) % max(1, width - side))
        sy = int((height - side) // 2 + vy * i) % max(1, height - side)
        img[sy : sy + side, sx : sx + side] = colour
        yield img


def write(path: Path, frames: Iterable[Frames], *, fps: float, crf: int = 23, preset: str = "veryfast") -> Path:
    """Encode RGB frames as H.264 yuv420p in MP4 (even sizes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": preset, "crf": str(crf)}
        started = False
        for img in frames:
            if not started:
                stream.height, stream.width = img.shape[:2]
                started = True
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode(path: Path) -> list[Frames]:
    """Every frame of a file as RGB."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def reencode(src: Path, dst: Path, *, fps: float, crf: int = 30, scale: float = 1.0, crop: float = 0.0) -> Path:
    """A copy with other bytes: decoded, cropped by ``crop`` of each side, rescaled by ``scale``, encoded at ``crf``."""
    out = []
    for img in decode(src):
        h, w = img.shape[:2]
        dy, dx = int(h * crop), int(w * crop)
        part = img[dy : h - dy, dx : w - dx]
        size = (max(2, round(part.shape[1] * scale / 2) * 2), max(2, round(part.shape[0] * scale / 2) * 2))
        out.append(np.asarray(Image.fromarray(part).resize(size, Image.Resampling.BILINEAR), dtype=np.uint8))
    return write(dst, out, fps=fps, crf=crf)


def looped(frames: list[Frames], total: int) -> list[Frames]:
    """``frames`` played again and again up to ``total`` frames."""
    return [frames[i % len(frames)] for i in range(total)]


def compilation(seeds: list[int], shot_frames: list[int], **kwargs: int) -> Iterator[Frames]:
    """Unrelated shots back to back: shot ``k`` is ``shot_frames[k]`` frames of scene ``seeds[k]``."""
    for seed, count in zip(seeds, shot_frames, strict=True):
        yield from scene(seed, count, **kwargs)


@dataclass(frozen=True)
class Item:
    """One corpus file and what is wrong with it (``loop_period_s``/``cut_frames``: the truth)."""

    path: Path
    fps: float
    loop: bool = False
    cuts: bool = False
    loop_period_s: float | None = None
    cut_frames: tuple[int, ...] = ()
    copy_of: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return self.path.name


def build(folder: Path, *, small: bool = False) -> list[Item]:
    """Write the corpus under ``folder``; ``small`` keeps only a few files of each class (fast tests)."""
    items: list[Item] = []
    # clean unique clips: several sizes, frame rates, encoder settings, speeds
    clean = [
        ("clean_a_5s", 1, 24, 5, 320, 192, 20, "veryfast", 2.0),
        ("clean_b_10s", 2, 24, 10, 320, 192, 28, "ultrafast", 1.0),
        ("clean_c_30s", 3, 24, 30, 256, 144, 23, "veryfast", 1.5),
        ("clean_d_10s", 4, 16, 10, 480, 272, 18, "veryfast", 3.0),
        ("clean_e_30s", 5, 30, 30, 320, 180, 32, "ultrafast", 0.7),
        ("clean_f_10s", 6, 24, 10, 640, 352, 23, "veryfast", 4.0),
    ]
    if small:
        clean = clean[:3]
    for name, seed, fps, seconds, w, h, crf, preset, speed in clean:
        path = write(
            folder / f"{name}.mp4",
            scene(seed, fps * seconds, width=w, height=h, speed=speed),
            fps=fps,
            crf=crf,
            preset=preset,
        )
        items.append(Item(path, float(fps), tags=("clean",)))
    # loops: a short clip played again
    loops = [("loop_10s_from_5s", 11, 24, 120, 240), ("loop_30s_from_5s", 12, 24, 120, 720)]
    if not small:
        loops += [("loop_10s_from_93f_16fps", 13, 16, 93, 160), ("loop_30s_from_4s", 14, 30, 120, 900)]
    for name, seed, fps, base, total in loops:
        frames = list(scene(seed, base, width=320, height=192, speed=2.0))
        path = write(folder / f"{name}.mp4", looped(frames, total), fps=fps, crf=23)
        items.append(Item(path, float(fps), loop=True, loop_period_s=base / fps, tags=("loop",)))
    # cut compilations: unrelated shots back to back
    comps = [("cuts_30s", [21, 22, 23, 24, 25, 26, 27], [96, 120, 72, 120, 96, 120, 96], 24)]
    if not small:
        comps += [
            ("cuts_10s_one_cut", [31, 32], [120, 120], 24),
            ("cuts_30s_16fps", [41, 42, 43, 44, 45, 46], [80, 64, 96, 80, 80, 80], 16),
        ]
    for name, seeds, shots, fps in comps:
        path = write(folder / f"{name}.mp4", compilation(seeds, shots), fps=fps, crf=23)
        cut_frames = tuple(int(x) for x in np.cumsum(shots)[:-1])
        items.append(Item(path, float(fps), cuts=True, cut_frames=cut_frames, tags=("cuts",)))
    # copies of clean clips (other bytes, same picture): not a within-video fault
    source = items[0]
    items.append(
        Item(
            reencode(source.path, folder / "copy_a_crf35_half.mp4", fps=source.fps, crf=35, scale=0.5),
            source.fps,
            copy_of=source.name,
            tags=("copy",),
        )
    )
    if not small:
        items.append(
            Item(
                reencode(source.path, folder / "copy_a_crop3.mp4", fps=source.fps, crf=26, crop=0.03),
                source.fps,
                copy_of=source.name,
                tags=("copy",),
            )
        )
    return items
