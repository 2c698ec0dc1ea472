"""Synthetic procedural video: a CPU stand-in so the whole system runs without a GPU.

**This is NOT a world model.** It reads neither the prompt nor the guidance: it draws a
deterministic procedural scene from the seed (or, for Cosmos-Transfer requests, a fixed image
filter of the given input and control frames), so that pipelines, chunking, encoding, QA and
benchmarks can be exercised end to end on any machine. Nothing it makes is training data.

The scene
    A textured background (a sum of seed-chosen sinusoidal waves that slowly pans) and three to
    five shapes (circles, squares, diamonds) whose colours, sizes, speeds and Lissajous paths come
    from the seed. Everything is a pure function of ``(scene seed, t)`` with ``t = frame index /
    fps`` in seconds, evaluated in resolution-independent coordinates: the same seed gives
    identical frames, different seeds give visibly different videos, and the motion happens at
    the requested frame rate.

Continuing from conditioning frames (chunk boundaries)
    Every frame the scene renders carries its ``(scene seed, frame index)`` in the least
    significant bits of its first 80 colour values (an invisible timecode, with a magic number and
    a checksum). A chunk conditioned on ``n`` frames reads the timecode of the last one: the chunk
    then renders the same scene from index ``last − n + 1``, so its first ``n`` frames are the
    conditioning frames again (as Cosmos returns them; the plan's ``keep_from`` skips them) and
    the next one is exactly the frame that would have followed. The boundary is seamless and the
    chunk's own seed is not used. Frames without a valid timecode (an input video, or frames that
    went through a lossy codec) are copied as the chunk's first ``n`` frames, and the seed's scene
    then fades in from the last of them over half a second; timecodes are written only on frames
    that are pure scene renders, so a later chunk either continues exactly or fades again.

Transfer stand-in (requests with ``controls`` and/or ``input_video``)
    Instead of the scene, each frame is a filter of the same frame of the input and the controls
    (no learning, no prompt; it only shows visibly that the output derives from them):

    * the base is the input frame (without an input: the mean of the non-edge control frames,
      else mid-grey); a ``vis`` (blur) control is blended into it by ``0.5 × weight``, ``seg``
      colours by ``0.4 × weight``, and a ``depth`` control shades it (far = dark) by ``0.5 × weight``;
    * the base is colour-graded with seed-chosen per-channel gains and lift, then posterized to a
      seed-chosen 4–6 levels per channel: clearly "another rendering" of the same picture;
    * an ``edge`` control (white edges on black, as Cosmos' Canny control) is drawn over it in a
      seed-chosen bright line colour, with opacity ``edge luminance × weight``.

    Control weights are used as given. Input and control videos shorter than the chunk are padded
    by repeating their last frame, longer ones cut; frames of another size are resized (nearest).
    Conditioning frames are returned as the chunk's first frames, as for the scene. The seed that
    chose the look travels as an invisible timecode (another magic number than the scene's) in
    every rendered frame; a chunk conditioned on such a frame keeps that look rather than its own
    seed's, so a multi-chunk Transfer video has no jump in colour at chunk boundaries.

Simulated cost
    ``setup()`` sleeps ``load_seconds`` and ``generate()`` sleeps ``seconds_per_frame`` per
    generated frame, spread over ``request.steps`` steps, each followed by ``on_step``, so runners
    and benchmarks see a model-like load time, step progress and cancellation.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from worldmill.contracts.backends import builtin_backends
from worldmill.gpu_runner.backends.base import (
    VERSION_PREFIX,
    BackendConfig,
    ChunkRequest,
    Frames,
    StepCallback,
    VideoProgress,
    VideoRequest,
)
from worldmill.runtime.errors import InvalidInputError, PermanentError

__all__ = ["ALGORITHM", "SyntheticBackend", "read_timecode"]

#: Names the procedural algorithm in provenance; bump it when the pictures change.
ALGORITHM = "worldmill-synthetic/2"

_MAGIC = 0x574D  # "WM": a frame of the procedural scene
_TRANSFER_MAGIC = 0x5754  # "WT": a frame of the transfer stand-in; its seed is the look's seed
_MAGIC_BITS, _SEED_BITS, _INDEX_BITS, _CHECK_BITS = 16, 32, 24, 8
_TIMECODE_BITS = _MAGIC_BITS + _SEED_BITS + _INDEX_BITS + _CHECK_BITS
_FADE_SECONDS = 0.5
#: Control types the transfer stand-in draws (Cosmos-Transfer2.5's: ``vis`` is its blur control).
_CONTROL_KINDS = ("edge", "depth", "seg", "vis")

F32 = npt.NDArray[np.float32]
_FrameFn = Callable[[int], Frames]


def _check(seed: int, index: int) -> int:
    return zlib.crc32(seed.to_bytes(4, "big") + index.to_bytes(3, "big")) & 0xFF


def _stamp(frame: Frames, seed: int, index: int, magic: int = _MAGIC) -> None:
    """Write the timecode into ``frame`` (in place) when it has room for it."""
    flat = frame.reshape(-1)
    if flat.size < _TIMECODE_BITS or not 0 <= index < 2**_INDEX_BITS:
        return
    payload = magic
    for value, bits in ((seed, _SEED_BITS), (index, _INDEX_BITS), (_check(seed, index), _CHECK_BITS)):
        payload = (payload << bits) | value
    bits_array = np.array([(payload >> (_TIMECODE_BITS - 1 - i)) & 1 for i in range(_TIMECODE_BITS)], dtype=np.uint8)
    flat[:_TIMECODE_BITS] = (flat[:_TIMECODE_BITS] & np.uint8(0xFE)) | bits_array


def read_timecode(frame: Frames, magic: int = _MAGIC) -> tuple[int, int] | None:
    """``(scene seed, frame index)`` of a frame the synthetic scene rendered, or None.

    With ``magic=_TRANSFER_MAGIC``: ``(look seed, frame index in its chunk)`` of a transfer frame.
    """
    flat = frame.reshape(-1)
    if flat.size < _TIMECODE_BITS:
        return None
    payload = 0
    for bit in (flat[:_TIMECODE_BITS] & 1).tolist():
        payload = (payload << 1) | int(bit)
    check = payload & 0xFF
    index = (payload >> _CHECK_BITS) & (2**_INDEX_BITS - 1)
    seed = (payload >> (_CHECK_BITS + _INDEX_BITS)) & (2**_SEED_BITS - 1)
    if payload >> (_CHECK_BITS + _INDEX_BITS + _SEED_BITS) != magic or check != _check(seed, index):
        return None
    return seed, index


@dataclass(frozen=True)
class _Shape:
    kind: int  # 0 circle, 1 square, 2 diamond
    colour: F32  # (3,)
    size: float  # half-size, as a fraction of the frame's short side
    centre: tuple[float, float]  # path centre (u, v) in frame fractions
    amplitude: tuple[float, float]
    omega: tuple[float, float]  # rad/s
    phase: tuple[float, float]
    spin: float  # rad/s (squares and diamonds)


class _Scene:
    """Everything the seed decides; ``render(t, h, w)`` is a pure function of the time in seconds."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.seed = seed
        self.base = rng.uniform(50.0, 150.0, 3).astype(np.float32)
        n_waves = 4
        signs = rng.choice(np.array([-1, 1]), size=(n_waves, 2))
        self.k = (rng.integers(1, 5, size=(n_waves, 2)) * signs).astype(np.float32)
        self.wave_amp = rng.uniform(6.0, 28.0, size=(n_waves, 3)).astype(np.float32)
        self.wave_phase = rng.uniform(0.0, 2 * math.pi, n_waves).astype(np.float32)
        angle = rng.uniform(0.0, 2 * math.pi)
        speed = rng.uniform(0.02, 0.08)  # frame sizes per second
        self.pan = (speed * math.cos(angle), speed * math.sin(angle))
        self.shapes = [
            _Shape(
                kind=int(rng.integers(0, 3)),
                colour=rng.uniform(0.0, 255.0, 3).astype(np.float32),
                size=float(rng.uniform(0.06, 0.16)),
                centre=(float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.7))),
                amplitude=(float(rng.uniform(0.1, 0.3)), float(rng.uniform(0.1, 0.3))),
                omega=(float(rng.uniform(0.4, 1.6)), float(rng.uniform(0.4, 1.6))),
                phase=(float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi))),
                spin=float(rng.uniform(-1.5, 1.5)),
            )
            for _ in range(int(rng.integers(3, 6)))
        ]

    def render(self, t: float, height: int, width: int) -> F32:
        """The frame at ``t`` seconds, float32 (H, W, 3) in [0, 255] before rounding."""
        u = ((np.arange(width, dtype=np.float32) + 0.5) / width)[None, :]
        v = ((np.arange(height, dtype=np.float32) + 0.5) / height)[:, None]
        pu, pv = np.float32(self.pan[0] * t), np.float32(self.pan[1] * t)
        img = np.empty((height, width, 3), dtype=np.float32)
        img[:] = self.base
        for j in range(len(self.k)):
            wave = np.sin(2 * np.pi * (self.k[j, 0] * (u - pu) + self.k[j, 1] * (v - pv)) + self.wave_phase[j])
            img += wave[:, :, None] * self.wave_amp[j]
        short = min(height, width)
        for shape in self.shapes:
            self._draw(img, shape, t, short)
        return img

    @staticmethod
    def _draw(img: F32, shape: _Shape, t: float, short: int) -> None:
        height, width = img.shape[:2]
        cx = (shape.centre[0] + shape.amplitude[0] * math.sin(shape.omega[0] * t + shape.phase[0])) * width
        cy = (shape.centre[1] + shape.amplitude[1] * math.sin(shape.omega[1] * t + shape.phase[1])) * height
        r = shape.size * short
        reach = r * 1.5 + 2
        x0, x1 = max(0, int(cx - reach)), min(width, int(cx + reach) + 1)
        y0, y1 = max(0, int(cy - reach)), min(height, int(cy + reach) + 1)
        if x0 >= x1 or y0 >= y1:
            return
        dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
        dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
        if shape.kind == 0:
            dist = np.sqrt(dx * dx + dy * dy) - r
        else:
            c, s = math.cos(shape.spin * t), math.sin(shape.spin * t)
            ru, rv = np.abs(c * dx + s * dy), np.abs(-s * dx + c * dy)
            dist = (np.maximum(ru, rv) if shape.kind == 1 else (ru + rv) / math.sqrt(2)) - r
        alpha = np.clip(0.5 - dist, 0.0, 1.0)[:, :, None]  # one pixel of anti-aliasing
        patch = img[y0:y1, x0:x1]
        patch *= 1 - alpha
        patch += alpha * shape.colour


#: Bright line colours for the edge control; the look's seed picks one.
_LINE_COLOURS = ((255, 236, 0), (0, 255, 255), (255, 64, 255), (96, 255, 64), (255, 140, 0))
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class _Look:
    """What the seed decides for the transfer stand-in: a colour grade, posterize levels, a line colour."""

    seed: int
    gain: F32  # (3,)
    lift: F32  # (3,)
    levels: int
    line: F32  # (3,)

    @classmethod
    def of(cls, seed: int) -> _Look:
        rng = np.random.default_rng([seed, _TRANSFER_MAGIC])
        gain = rng.uniform(0.55, 1.3, 3).astype(np.float32)
        gain[int(rng.integers(0, 3))] = np.float32(rng.uniform(1.2, 1.45))  # a clear tint in one channel
        line = _LINE_COLOURS[int(rng.integers(0, len(_LINE_COLOURS)))]
        return cls(
            seed=seed,
            gain=gain,
            lift=rng.uniform(-20.0, 30.0, 3).astype(np.float32),
            levels=int(rng.integers(4, 7)),
            line=np.array(line, dtype=np.float32),
        )

    def grade(self, img: F32) -> F32:
        """Colour-grade and posterize ``img`` (float32 H×W×3 in [0, 255])."""
        graded = np.clip(img * self.gain + self.lift, 0.0, 255.0)
        step = np.float32(255.0 / (self.levels - 1))
        out: F32 = np.rint(graded / step) * step
        return out


def _fit(frames: Frames, total: int, height: int, width: int) -> Frames:
    """``total`` frames at ``height`` × ``width``: resized, cut, or padded by repeating the last frame."""
    picked = frames[np.minimum(np.arange(total), len(frames) - 1)]
    return _resize_nearest(picked, height, width)


def _to_uint8(img: F32) -> Frames:
    return np.rint(np.clip(img, 0.0, 255.0)).astype(np.uint8)


def _resize_nearest(frames: Frames, height: int, width: int) -> Frames:
    if frames.shape[1:3] == (height, width):
        return frames
    rows = (np.arange(height) * frames.shape[1] // height).astype(np.intp)
    cols = (np.arange(width) * frames.shape[2] // width).astype(np.intp)
    return np.ascontiguousarray(frames[:, rows][:, :, cols])


class SyntheticBackend:
    """Procedural stand-in backend (see the module docstring): CPU only, deterministic, NOT a world model."""

    name = "synthetic"
    capabilities = builtin_backends()["synthetic"]

    def __init__(self, config: BackendConfig | None = None, *, model: str = "synthetic") -> None:
        self.config = config or BackendConfig()
        self.model = model
        self._ready = False

    def setup(self) -> None:
        """Nothing to load; sleeps ``config.load_seconds`` to simulate a model load."""
        if self.config.load_seconds > 0:
            time.sleep(self.config.load_seconds)
        self._ready = True

    def close(self) -> None:
        """Nothing to free."""
        self._ready = False

    def memory_bytes(self) -> int:
        """No weights: nothing held between calls."""
        return 0

    def memory_parts(self) -> dict[str, int]:
        """No weights, no parts."""
        return {}

    def screen_prompt(self, prompt: str) -> None:
        """Procedural content reads no prompt: nothing to screen."""

    def screen_video(self, frames: Frames) -> Frames:
        """Procedural content: nothing to screen."""
        return frames

    def generate_video(self, request: VideoRequest, on_progress: VideoProgress) -> Frames:  # noqa: ARG002
        """The stand-in chains nothing itself: the runner calls :meth:`generate` per chunk."""
        raise PermanentError("the synthetic backend makes one chunk per call; the runner chains its chunks")

    def describe(self) -> dict[str, str]:
        """Provenance: procedural, no checkpoint and so no checkpoint hash."""
        return {
            "backend": self.name,
            "model": self.model,
            "checkpoint": "none (procedural, not a world model)",
            "algorithm": ALGORITHM,
            "dtype": "uint8",
            "device": "cpu",
            "safety_checker": "not applicable (procedural content)",
            f"{VERSION_PREFIX}numpy": np.__version__,
        }

    def generate(self, request: ChunkRequest, on_step: StepCallback) -> Frames:
        """Render the chunk; ``on_step`` runs ``request.steps`` times and may raise ``Canceled``."""
        if not self._ready:
            raise RuntimeError("SyntheticBackend.generate() called before setup()")
        n_cond = 0 if request.condition is None else len(request.condition)
        if n_cond >= request.frames:
            raise InvalidInputError(
                "condition", f"{n_cond} conditioning frames leave nothing to generate in a {request.frames}-frame chunk"
            )
        h, w, total = request.height, request.width, request.frames
        out = np.empty((total, h, w, 3), dtype=np.uint8)
        render = self._renderer(request, n_cond)
        bounds = np.linspace(0, total, request.steps + 1).round().astype(int)
        pause = self.config.seconds_per_frame * total / request.steps
        for step in range(request.steps):
            for i in range(bounds[step], bounds[step + 1]):
                out[i] = render(i)
            if pause > 0:
                time.sleep(pause)
            on_step(step + 1, request.steps)
        return out

    def _renderer(self, request: ChunkRequest, n_cond: int) -> _FrameFn:
        if request.controls or request.input_video is not None:
            return self._transfer_renderer(request, n_cond)
        h, w, fps = request.height, request.width, request.fps
        cond = request.condition
        timecode = read_timecode(cond[-1]) if cond is not None else None
        if timecode is not None and timecode[1] - (n_cond - 1) >= 0:
            # Conditioned on frames of a synthetic scene: continue that scene exactly.
            scene, start = _Scene(timecode[0]), timecode[1] - (n_cond - 1)

            def continued(i: int) -> Frames:
                frame = _to_uint8(scene.render((start + i) / fps, h, w))
                _stamp(frame, scene.seed, start + i)
                return frame

            return continued
        scene = _Scene(request.seed)
        if cond is None:

            def fresh(i: int) -> Frames:
                frame = _to_uint8(scene.render(i / fps, h, w))
                _stamp(frame, scene.seed, i)
                return frame

            return fresh
        given = _resize_nearest(cond, h, w)
        last = given[-1].astype(np.float32)
        fade = max(1, round(fps * _FADE_SECONDS))

        def faded(i: int) -> Frames:
            if i < n_cond:
                kept: Frames = given[i]
                return kept
            alpha = min(1.0, (i - n_cond + 1) / (fade + 1))
            img = scene.render(i / fps, h, w)
            frame = _to_uint8(img if alpha >= 1.0 else (1 - alpha) * last + alpha * img)
            if alpha >= 1.0:
                _stamp(frame, scene.seed, i)
            return frame

        return faded

    @staticmethod
    def _transfer_renderer(request: ChunkRequest, n_cond: int) -> _FrameFn:
        """The transfer stand-in (see the module docstring): a seeded filter of the input and controls."""
        h, w, total = request.height, request.width, request.frames
        unknown = sorted(set(request.controls) - set(_CONTROL_KINDS))
        if unknown:
            raise InvalidInputError("controls", f"unknown control types {unknown}; known: {list(_CONTROL_KINDS)}")
        controls = {kind: _fit(video, total, h, w) for kind, video in request.controls.items()}
        weights = {kind: float(request.control_weights.get(kind, 1.0)) for kind in controls}
        source = None if request.input_video is None else _fit(request.input_video, total, h, w)
        cond = None if request.condition is None else _resize_nearest(request.condition, h, w)
        previous = None if cond is None else read_timecode(cond[-1], _TRANSFER_MAGIC)
        look = _Look.of(previous[0] if previous is not None else request.seed)
        plain = [kind for kind in ("vis", "seg", "depth") if kind in controls]

        def base(i: int) -> F32:
            img: F32
            if source is not None:
                img = source[i].astype(np.float32)
            elif plain:
                img = np.mean([controls[k][i].astype(np.float32) for k in plain], axis=0, dtype=np.float32)
            else:
                img = np.full((h, w, 3), 96.0, dtype=np.float32)
            return img

        def transferred(i: int) -> Frames:
            if cond is not None and i < n_cond:
                kept: Frames = cond[i]
                return kept
            img = base(i)
            if "vis" in controls:
                a = np.float32(0.5 * weights["vis"])
                img = (1 - a) * img + a * controls["vis"][i].astype(np.float32)
            if "seg" in controls:
                a = np.float32(0.4 * weights["seg"])
                img = (1 - a) * img + a * controls["seg"][i].astype(np.float32)
            if "depth" in controls:
                near = (controls["depth"][i].astype(np.float32) @ _LUMA) / np.float32(255.0)
                a = np.float32(0.5 * weights["depth"])
                img = img * ((1 - a) + a * near)[:, :, None]
            img = look.grade(img)
            if "edge" in controls:
                edge = (controls["edge"][i].astype(np.float32) @ _LUMA) / np.float32(255.0)
                alpha = (edge * np.float32(weights["edge"]))[:, :, None]
                img = img * (1 - alpha) + look.line * alpha
            frame = _to_uint8(img)
            _stamp(frame, look.seed, i, _TRANSFER_MAGIC)
            return frame

        return transferred
