"""Takes of a scene: the same place seen with another seed, the same shot extended, forked or cut short.

What two variants of one scenario look like (issue #15's hard negatives for ``copy_of``): the same
layout, palette and object, seen from the same camera start, but with the seed's own fine detail,
sensor noise, camera path and object path. A :class:`Take` renders that:

* the **scene** (an int, with ``size``) fixes what a scenario fixes: a smooth random landscape (its
  layout and palette: a sum of 48 plane waves, wavelengths 8 %-200 % of the frame width), the
  object's colour and size, where the camera and the object start;
* the **seed** fixes what another seed changes: a fine detail layer on the landscape (wavelengths
  2 %-15 % of the width, as strong as 60 % of the layout) and the sensor noise;
* the **path** says how the camera pans and tilts and how the object moves (pixels a frame), from
  a frame on: a second entry forks the take (the same frames up to there, then other motion).

Frame ``i`` is a pure function of the take and ``i`` (the landscape is a continuous function of
position, the noise is picked per frame index), so ``frames(0, 240)`` and ``frames(0, 432)``
start with the same 240 frames: a longer take is the shorter one extended, and two takes with one
scene and seed share every frame before their paths part.

numpy only; ~1 ms a 320x192 frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import numpy.typing as npt

Frames = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]

_MODES = 48
_NOISE_BANK = 8


@dataclass(frozen=True)
class Motion:
    """How a take moves from a frame on: camera ``pan``/``tilt`` and ``drift`` of the object (px a frame)."""

    pan: float = 2.0
    tilt: float = 0.0
    drift: tuple[float, float] = (3.0, 0.6)
    #: Standard deviation of the sensor noise in gray levels.
    noise: float = 2.0


@dataclass(frozen=True)
class _Waves:
    fx: npt.NDArray[np.float64]
    fy: npt.NDArray[np.float64]
    phase: npt.NDArray[np.float64]
    amplitude: npt.NDArray[np.float64]  # (3 colours, modes)

    def at(self, xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64]) -> Floats:
        """``(len(ys), len(xs), 3)`` values: separable, ``cos(a + b) = cos a cos b - sin a sin b``."""
        px = self.fx[:, None] * xs[None, :] + self.phase[:, None]
        py = self.fy[:, None] * ys[None, :]
        cx, sx, cy, sy = np.cos(px), np.sin(px), np.cos(py), np.sin(py)
        planes = [(cy.T * a) @ cx - (sy.T * a) @ sx for a in self.amplitude]
        return np.stack(planes, axis=-1).astype(np.float32)


@lru_cache(maxsize=64)
def _waves(seed: int, width: int, shortest: float, longest: float, strength: float) -> _Waves:
    """Plane waves with log-uniform wavelengths in ``[shortest, longest] × width`` and random directions."""
    rng = np.random.default_rng(seed)
    wavelength = np.exp(rng.uniform(math.log(shortest * width), math.log(longest * width), _MODES))
    angle = rng.uniform(0, 2 * np.pi, _MODES)
    k = 2 * np.pi / wavelength
    amplitude = strength * rng.normal(size=(3, _MODES)) * np.sqrt(wavelength / width)
    return _Waves(k * np.cos(angle), k * np.sin(angle), rng.uniform(0, 2 * np.pi, _MODES), amplitude)


@lru_cache(maxsize=4)
def _noise(seed: int, width: int, height: int) -> Floats:
    bank = np.random.default_rng([seed, 99]).normal(0.0, 1.0, (_NOISE_BANK, height, width, 3))
    return bank.astype(np.float32)


@dataclass(frozen=True)
class Take:
    """One shot of ``scene`` with ``seed`` along ``path`` (``(first frame, motion)`` pairs, the first at 0)."""

    scene: int
    seed: int
    width: int = 320
    height: int = 192
    path: tuple[tuple[int, Motion], ...] = ((0, Motion()),)
    #: The object's side as a share of the frame height (part of the scene).
    size: float = 1 / 6

    def __post_init__(self) -> None:
        if (
            not self.path
            or self.path[0][0] != 0
            or any(a >= b for (a, _), (b, _) in zip(self.path, self.path[1:], strict=False))
        ):
            raise ValueError(f"a path starts at frame 0 and its frames increase, got {self.path!r}")

    @property
    def side(self) -> int:
        return max(8, round(self.height * self.size))

    def fork(self, at: int, motion: Motion) -> Take:
        """The same take up to frame ``at - 1``; from frame ``at`` on it moves by ``motion``."""
        kept = tuple((f, m) for f, m in self.path if f < at)
        return replace(self, path=(*kept, (at, motion)))

    def _start(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        rng = np.random.default_rng([self.scene, 7])
        camera = np.array([rng.uniform(0, 4000), rng.uniform(0, 4000)])
        thing = np.array([rng.uniform(0, self.width - self.side), rng.uniform(0, self.height - self.side)])
        return camera, thing, rng.integers(150, 256, size=3)

    def _positions(self, frames: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.float64], ...]:
        """Camera and object position and noise level of each frame (each motion counts from one frame before)."""
        camera0, thing0, _ = self._start()
        camera = np.tile(camera0, (len(frames), 1))
        thing = np.tile(thing0, (len(frames), 1))
        noise = np.zeros(len(frames))
        ends = [f for f, _ in self.path[1:]] + [1 << 40]
        for (first, m), end in zip(self.path, ends, strict=True):
            a, b = max(0, first - 1), max(0, end - 1)  # steps a -> a + 1 ... of this motion
            steps = np.clip(frames - a, 0, b - a)[:, None]
            camera += steps * np.array([m.pan, m.tilt])
            thing += steps * np.array(m.drift)
            noise[(frames >= first) & (frames < end)] = m.noise
        return camera, thing, noise

    def frames(self, start: int, stop: int) -> Iterator[Frames]:
        """RGB frames ``start .. stop - 1``."""
        index = np.arange(start, stop)
        if len(index) == 0:
            return
        camera, thing, noise = self._positions(index)
        cam = np.rint(camera).astype(np.int64)
        x0, y0 = cam.min(axis=0)
        x1, y1 = cam.max(axis=0) + np.array([self.width, self.height])
        xs, ys = np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64)
        layout = _waves(self.scene, self.width, 0.08, 2.0, 32.0).at(xs, ys)
        detail = _waves(10_000 + self.seed, self.width, 0.02, 0.15, 20.0).at(xs, ys)
        land = 128 + layout + detail
        bank = _noise(self.seed, self.width, self.height)
        colour = self._start()[2]
        room = np.array([self.width - self.side, self.height - self.side], dtype=np.float64)
        for k, i in enumerate(index.tolist()):
            cx, cy = int(cam[k, 0] - x0), int(cam[k, 1] - y0)
            img = land[cy : cy + self.height, cx : cx + self.width].copy()
            if noise[k]:
                img += np.float32(noise[k]) * bank[(5 * i + 3) % _NOISE_BANK]
            p = np.abs(thing[k] % (2 * room))
            px, py = np.where(p > room, 2 * room - p, p).astype(np.int64)  # bounces off the frame's edges
            img[py : py + self.side, px : px + self.side] = colour
            yield np.clip(img, 0, 255).astype(np.uint8)
