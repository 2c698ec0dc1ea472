"""A labelled corpus for QA (issue #15): clean clips, loops, cut compilations, copies and look-alikes.

Two kinds, both written with PyAV as ``tests/helpers/video.py`` does:

* ``structure`` (the within-video checks): clean clips of :func:`scene` (a smooth random landscape
  that pans, plus a bright square moving across it, different per seed) at several sizes, frame
  rates and encoder settings; ``loop``: a longer "variant" that is a short clip played again (a
  10 s = the 5 s clip twice, a 30 s = six times; also a 16 fps 93-frame clip looped, whose period
  is no whole number of samples); ``cuts``: a "continuous" 30 s (or 10 s) video that is unrelated
  shots back to back; and two re-encodes of a clean clip.
* ``copies`` (``copy_of``, the dataset-wide fingerprint index), made of takes
  (``tests/helpers/qa_takes.py``): sources at 256x144 to 960x544 and 16-30 fps; their copies the
  way a careless pipeline makes them: re-encoded under another name (crf 20-38, scaled 1/3-1x, cropped
  2-3 %, presets ultrafast to medium, re-timed to another frame rate: the fingerprint samples the
  frame *shown* at each time, so a re-timing that keeps the playback speed keeps its samples), a
  trimmed copy (a sub-range), a copy that starts later, a longer take that holds a clip (extended after
  it or before it), a take that starts inside a clip and runs on past its end, a take forked from a
  clip after 4 s, loops of a clip; and hard negatives that must *not* be copies: takes of one scene
  with other seeds (the same layout, palette, object and camera start; their own detail, noise, camera
  and object path: what two variants of one scenario look like), with a panning and with a fixed
  camera, low-motion and near-static clips, and a take forked from a clip after 1 s (a shared opening
  shorter than 2 s is not a copy: see ``tests/helpers/qa_relations.py``).

Every item knows how it was made (:attr:`Item.pieces`) and so its true relation to every other item
(:attr:`Item.relations`: which item, which relation, which time ranges). :func:`build` writes the
corpus and returns the items in a fixed order: sources before the copies made of them (the order the
QA service would see them in; ``tests/helpers/qa_random_corpus.py`` writes random ones of the same
kind). Used by ``tests/test_qa_structure.py``, ``tests/test_qa_corpus.py`` and ``bench/qa.py``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from PIL import Image

from tests.helpers.qa_relations import Piece, Truth, length_s, relation
from tests.helpers.qa_takes import Motion, Take

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
        return [np.asarray(f.to_ndarray(format="rgb24"), dtype=np.uint8) for f in container.decode(video=0)]


def retime(frames: Sequence[Frames], fps: float, to_fps: float) -> list[Frames]:
    """The same playback at ``to_fps``: output frame ``j`` is the source frame shown at ``j / to_fps`` seconds."""
    count = round(len(frames) * to_fps / fps)
    return [frames[min(len(frames) - 1, math.floor(j * fps / to_fps + 1e-9))] for j in range(count)]


def reencode(
    src: Path,
    dst: Path,
    *,
    fps: float,
    crf: int = 30,
    scale: float = 1.0,
    crop: float = 0.0,
    preset: str = "veryfast",
    to_fps: float | None = None,
    frames: tuple[int, int] | None = None,
    decoded: Sequence[Frames] | None = None,
) -> Path:
    """A copy with other bytes: decoded (or ``decoded``, the frames of ``src`` already), ``frames`` kept (a trim),
    cropped by ``crop`` of each side, rescaled by ``scale``, re-timed to ``to_fps``, encoded at ``crf`` with ``preset``."""
    source = decode(src) if decoded is None else decoded
    if frames is not None:
        source = source[frames[0] : frames[1]]
    out = []
    for img in source:
        h, w = img.shape[:2]
        dy, dx = int(h * crop), int(w * crop)
        part = img[dy : h - dy, dx : w - dx]
        size = (max(2, round(part.shape[1] * scale / 2) * 2), max(2, round(part.shape[0] * scale / 2) * 2))
        out.append(np.asarray(Image.fromarray(part).resize(size, Image.Resampling.BILINEAR), dtype=np.uint8))
    if to_fps is not None and to_fps != fps:
        out, fps = retime(out, fps, to_fps), to_fps
    return write(dst, out, fps=fps, crf=crf, preset=preset)


def looped(frames: list[Frames], total: int) -> list[Frames]:
    """``frames`` played again and again up to ``total`` frames."""
    return [frames[i % len(frames)] for i in range(total)]


def compilation(seeds: list[int], shot_frames: list[int], **kwargs: int) -> Iterator[Frames]:
    """Unrelated shots back to back: shot ``k`` is ``shot_frames[k]`` frames of scene ``seeds[k]``."""
    for seed, count in zip(seeds, shot_frames, strict=True):
        yield from scene(seed, count, **kwargs)


def cut(pieces: Sequence[Piece], start_s: float, end_s: float) -> tuple[Piece, ...]:
    """The pieces of ``start_s`` to ``end_s`` of a video made of ``pieces`` (a trim)."""
    out, at = [], 0.0
    for p in pieces:
        lo, hi = max(start_s, at), min(end_s, at + p.length_s)
        if hi - lo > 1e-9:
            out.append(Piece(p.material, p.start_s + lo - at, p.start_s + hi - at))
        at += p.length_s
    return tuple(out)


def repeat(pieces: Sequence[Piece], total_s: float) -> tuple[Piece, ...]:
    """The pieces of a video made of ``pieces`` played again and again up to ``total_s``."""
    period = length_s(pieces)
    out: list[Piece] = []
    for k in range(math.ceil(total_s / period - 1e-9)):
        out += cut(pieces, 0.0, min(period, total_s - k * period))
    return tuple(out)


@dataclass(frozen=True)
class Item:
    """One corpus file and the truth about it.

    ``loop``/``loop_period_s``, ``cuts``/``cut_frames``: what is wrong inside it. ``pieces``: what it
    is made of; ``relations``: its true relation to each other item of the corpus it shares picture
    with (read "this <relation> other", as ``worldmill.qa.fpindex.Match``), none for the others.
    """

    path: Path
    fps: float
    loop: bool = False
    cuts: bool = False
    loop_period_s: float | None = None
    cut_frames: tuple[int, ...] = ()
    tags: tuple[str, ...] = field(default_factory=tuple)
    pieces: tuple[Piece, ...] = ()
    relations: tuple[Truth, ...] = ()

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def duration_s(self) -> float:
        return length_s(self.pieces)

    def truth(self, other: str) -> Truth | None:
        """The true relation of this item to ``other`` (a name), None when they share no picture."""
        return next((t for t in self.relations if t.other == other), None)


KINDS = ("structure", "copies")


def build(folder: Path, *, small: bool = False, kinds: Collection[str] = KINDS) -> list[Item]:
    """Write the corpus under ``folder``; ``small`` keeps only a few files of each class (fast tests).

    ``kinds``: ``structure`` (clean clips, loops, cut compilations, two re-encodes) and/or ``copies``
    (sources, their copies and the hard negatives). The relations are labelled across every item built.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown corpus kinds {sorted(unknown)}, expected some of {KINDS}")
    items: list[Item] = []
    if "structure" in kinds:
        items += _structure(folder, small)
    if "copies" in kinds:
        items += _copies(folder, small)
    return [replace(it, relations=relations_of(it, items)) for it in items]


def relations_of(item: Item, items: Sequence[Item]) -> tuple[Truth, ...]:
    """The true relations of ``item`` to each other item of ``items`` it shares picture with."""
    found = (relation(item.pieces, o.pieces, o.name) for o in items if o.name != item.name)
    return tuple(t for t in found if t is not None)


def _structure(folder: Path, small: bool) -> list[Item]:
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
        items.append(Item(path, float(fps), tags=("clean",), pieces=(Piece(name, 0.0, float(seconds)),)))
    # loops: a short clip played again
    loops = [("loop_10s_from_5s", 11, 24, 120, 240), ("loop_30s_from_5s", 12, 24, 120, 720)]
    if not small:
        loops += [("loop_10s_from_93f_16fps", 13, 16, 93, 160), ("loop_30s_from_4s", 14, 30, 120, 900)]
    for name, seed, fps, base, total in loops:
        frames = list(scene(seed, base, width=320, height=192, speed=2.0))
        path = write(folder / f"{name}.mp4", looped(frames, total), fps=fps, crf=23)
        pieces = repeat((Piece(f"{name}:clip", 0.0, base / fps),), total / fps)
        items.append(Item(path, float(fps), loop=True, loop_period_s=base / fps, tags=("loop",), pieces=pieces))
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
        pieces = tuple(Piece(f"{name}:shot{k}", 0.0, n / fps) for k, n in enumerate(shots))
        items.append(Item(path, float(fps), cuts=True, cut_frames=cut_frames, tags=("cuts",), pieces=pieces))
    # copies of clean clips (other bytes, same picture): not a within-video fault
    source = items[0]
    copies = [("copy_a_crf35_half.mp4", {"crf": 35, "scale": 0.5})]
    if not small:
        copies.append(("copy_a_crop2.mp4", {"crf": 26, "crop": 0.02}))
    for name, options in copies:
        path = reencode(source.path, folder / name, fps=source.fps, **options)  # type: ignore[arg-type]
        items.append(Item(path, source.fps, tags=("copy", "reencode"), pieces=source.pieces))
    return items


# -- the copy class and its hard negatives ----------------------------------------------------------


@dataclass(frozen=True)
class _Shot:
    """A file rendered from ``take`` frames ``first .. last - 1`` (its material is named ``material``)."""

    name: str
    take: Take
    frames: tuple[int, int]
    fps: float
    tags: tuple[str, ...]
    material: str
    crf: int = 23
    preset: str = "veryfast"
    #: ``(frame, material)``: from this take frame on, the picture is another material (a fork).
    fork: tuple[int, str] | None = None
    small: bool = False


def _pan(pan: float, tilt: float = 0.0, drift: tuple[float, float] = (3.0, 0.6), noise: float = 2.0) -> Motion:
    return Motion(pan=pan, tilt=tilt, drift=drift, noise=noise)


def _takes() -> dict[str, Take]:
    """The takes: scene numbers fix what a scenario fixes, seeds (unique per take) what another seed changes."""
    t = Take(105, 1051, path=((0, _pan(-1.8, 0.5, (-3.0, 1.1))),))
    return {
        "p": Take(101, 1011, path=((0, _pan(2.0)),)),
        "t": t,
        "t_fork1": t.fork(24, _pan(0.8, 2.4, (3.0, -1.5))),  # same take for 1 s, then down and to the right
        "t_fork4": t.fork(96, _pan(-0.5, -2.6, (-2.0, -2.0))),  # same take for 4 s, then up
        "s": Take(104, 1041, 256, 144, ((0, _pan(1.5, 0.0, (2.5, -0.7))),)),
        "q": Take(102, 1021, 480, 272, ((0, _pan(-2.5, 0.4, (4.0, -1.0))),)),
        "r": Take(103, 1031, 640, 352, ((0, _pan(3.0, 0.0, (-5.0, 2.0))),)),
        "u": Take(106, 1061, path=((0, _pan(3.0, -0.5, (2.0, 2.0))),)),
        "v": Take(108, 1081, path=((0, _pan(2.2, 0.0, (-2.5, 0.8))),)),
        "hd": Take(107, 1071, 960, 544, ((0, _pan(4.5, 0.0, (6.0, -2.0), noise=1.5)),)),
        "still_a": Take(109, 1091, path=((0, _pan(0.0, 0.0, (0.0, 0.0))),)),
        "still_b": Take(110, 1101, 480, 272, ((0, _pan(0.0, 0.0, (0.1, 0.0), noise=1.0)),)),
        "slow_a": Take(111, 1111, path=((0, _pan(0.25, 0.0, (0.4, 0.1))),)),
        "slow_b": Take(112, 1121, path=((0, _pan(-0.15, 0.1, (0.3, -0.2))),)),
        # one scene, other seeds: a panning camera (the same start, other pans and object paths) ...
        "m1": Take(120, 1201, path=((0, _pan(2.0, 0.0, (3.0, 0.6))),)),
        "m2": Take(120, 1202, path=((0, _pan(-1.5, 0.3, (-2.0, 1.2))),)),
        "m3": Take(120, 1203, path=((0, _pan(3.0, 0.0, (2.5, -0.8))),)),
        "m4": Take(120, 1204, path=((0, _pan(1.0, -0.4, (-3.5, 0.4))),)),
        # ... a fixed camera (only the object's path, the detail and the noise differ) ...
        "n1": Take(121, 1211, path=((0, _pan(0.0, 0.0, (3.0, 0.6))),)),
        "n2": Take(121, 1212, path=((0, _pan(0.0, 0.0, (-2.0, 1.5))),)),
        "n3": Take(121, 1213, path=((0, _pan(0.0, 0.0, (1.0, -2.5))),)),
        "k1": Take(123, 1231, path=((0, _pan(0.0, 0.0, (2.5, 1.0))),), size=1 / 10),  # a smaller object
        "k2": Take(123, 1232, path=((0, _pan(0.0, 0.0, (-1.5, -2.0))),), size=1 / 10),
        # ... and a slowly drifting one
        "o1": Take(122, 1221, path=((0, _pan(0.2, 0.0, (0.5, 0.1))),)),
        "o2": Take(122, 1222, path=((0, _pan(-0.2, 0.0, (-0.5, 0.2))),)),
        # beyond what a fingerprint can tell: nothing moves, so two seeds of one scene are one picture
        "z1": Take(124, 1241, path=((0, _pan(0.0, 0.0, (0.0, 0.0))),)),
        "z2": Take(124, 1242, path=((0, _pan(0.0, 0.0, (0.0, 0.0), noise=3.0)),)),
    }


def _shots(takes: dict[str, Take]) -> list[_Shot]:
    """Sources and negatives, rendered (each material is its take's, unless the shot says otherwise)."""

    def shot(name: str, key: str, frames: tuple[int, int], fps: float, tags: tuple[str, ...], **kw: object) -> _Shot:
        return _Shot(name, takes[key], frames, fps, tags, f"take:{key}", **kw)  # type: ignore[arg-type]

    src, same = ("clean", "source"), ("clean", "same_scene")
    return [
        shot("src_p_8s", "p", (0, 192), 24, src, crf=20, small=True),
        shot("src_t_8s", "t", (0, 192), 24, src, small=True),
        shot("src_s_5s_256", "s", (0, 120), 24, src, crf=21, small=True),
        shot("src_q_10s_480", "q", (0, 240), 24, src),
        shot("src_r_8s_640_30fps", "r", (0, 240), 30, src),
        shot("src_u_10s_16fps", "u", (0, 160), 16, src, crf=25, preset="ultrafast"),
        shot("src_v_10s_from_4s", "v", (96, 336), 24, src, crf=22),
        shot("src_hd_5s_960", "hd", (0, 120), 24, src),
        shot("still_a_8s", "still_a", (0, 192), 24, ("clean", "near_static"), small=True),
        shot("still_b_10s_480", "still_b", (0, 240), 24, ("clean", "near_static")),
        shot("slow_a_10s", "slow_a", (0, 240), 24, ("clean", "low_motion")),
        shot("slow_b_20s_30fps", "slow_b", (0, 600), 30, ("clean", "low_motion"), crf=26),
        shot("scene_m_seed1", "m1", (0, 192), 24, same, small=True),
        shot("scene_m_seed2", "m2", (0, 192), 24, same, small=True),
        shot("scene_m_seed3", "m3", (0, 192), 24, same, crf=28),
        shot("scene_m_seed4", "m4", (0, 192), 24, same, preset="ultrafast"),
        shot("scene_n_fixed_seed1", "n1", (0, 192), 24, same, small=True),
        shot("scene_n_fixed_seed2", "n2", (0, 192), 24, same, small=True),
        shot("scene_n_fixed_seed3", "n3", (0, 192), 24, same),
        shot("scene_k_fixed_small_seed1", "k1", (0, 192), 24, same),
        shot("scene_k_fixed_small_seed2", "k2", (0, 192), 24, same, crf=27),
        shot("scene_o_slow_seed1", "o1", (0, 240), 24, same),
        shot("scene_o_slow_seed2", "o2", (0, 240), 24, same),
        shot("still_z_seed1", "z1", (0, 192), 24, ("clean", "same_scene", "limit")),
        shot("still_z_seed2", "z2", (0, 192), 24, ("clean", "same_scene", "limit")),
        shot(
            "opening_1s_of_t",
            "t_fork1",
            (0, 192),
            24,
            ("clean", "short_opening"),
            fork=(24, "take:t_fork1"),
            small=True,
        ),
        # made of a source: a longer take holding it, a take starting inside it, a fork after 4 s
        shot("extended_t_12s", "t", (0, 288), 24, ("copy", "extended"), crf=26, preset="ultrafast", small=True),
        shot("extended_u_18s_16fps", "u", (0, 288), 16, ("copy", "extended"), crf=22),
        shot("prefixed_v_14s", "v", (0, 336), 24, ("copy", "prefixed"), crf=25),
        shot("tail_p_from_5s", "p", (120, 264), 24, ("copy", "tail"), crf=24, small=True),
        shot("tail_q_from_6s", "q", (144, 384), 24, ("copy", "tail"), crf=27),
        shot("opening_4s_of_t", "t_fork4", (0, 192), 24, ("copy", "opening"), fork=(96, "take:t_fork4"), small=True),
    ]


def _shot_pieces(s: _Shot) -> tuple[Piece, ...]:
    a, b = s.frames
    if s.fork is None:
        return (Piece(s.material, a / s.fps, b / s.fps),)
    at, material = s.fork
    parent = s.material.split("_fork")[0]
    return (Piece(parent, a / s.fps, at / s.fps), Piece(material, at / s.fps, b / s.fps))


#: ``(name, source, reencode options, tags, in the small corpus)``: copies of a source's file.
_REENCODES: list[tuple[str, str, dict[str, object], tuple[str, ...], bool]] = [
    ("copy_p_crf35_half", "src_p_8s", {"crf": 35, "scale": 0.5}, ("reencode",), True),
    ("copy_p_retimed_30fps", "src_p_8s", {"crf": 26, "to_fps": 30.0}, ("retimed",), True),
    ("copy_still_a_crf30", "still_a_8s", {"crf": 30}, ("reencode", "near_static"), True),
    ("trim_p_3.1s_to_7.1s", "src_p_8s", {"crf": 26, "frames": (75, 171)}, ("trim", "half_sample"), True),
    ("copy_n1_crf30_half", "scene_n_fixed_seed1", {"crf": 30, "scale": 0.5}, ("reencode", "fixed"), True),
    ("trim_p_2.9s_to_6.1s", "src_p_8s", {"crf": 26, "frames": (70, 146)}, ("trim",), False),
    ("trim_u_1.6s_to_7.6s", "src_u_10s_16fps", {"crf": 27, "frames": (26, 122)}, ("trim", "half_sample"), False),
    ("trim_n1_1s_to_6s", "scene_n_fixed_seed1", {"crf": 24, "frames": (25, 145)}, ("trim", "fixed"), False),
    ("copy_q_crop2_crf28", "src_q_10s_480", {"crf": 28, "crop": 0.02}, ("reencode", "crop"), False),
    ("copy_q_crop3_crf28", "src_q_10s_480", {"crf": 28, "crop": 0.03}, ("reencode", "crop", "beyond_claim"), False),
    ("copy_q_medium_up", "src_q_10s_480", {"crf": 20, "preset": "medium", "scale": 1.25}, ("reencode",), False),
    ("copy_r_half_24fps", "src_r_8s_640_30fps", {"crf": 28, "scale": 0.5, "to_fps": 24.0}, ("retimed",), False),
    ("copy_u_retimed_24fps", "src_u_10s_16fps", {"crf": 23, "to_fps": 24.0}, ("retimed",), False),
    ("copy_hd_third", "src_hd_5s_960", {"crf": 30, "scale": 1 / 3}, ("reencode",), False),
    ("copy_s_ultrafast_crf38", "src_s_5s_256", {"crf": 38, "preset": "ultrafast"}, ("reencode",), False),
    ("copy_slow_b_crop2", "slow_b_20s_30fps", {"crf": 32, "crop": 0.02}, ("reencode", "low_motion"), False),
    ("copy_slow_a_crf36", "slow_a_10s", {"crf": 36}, ("reencode", "low_motion"), False),
    # a fixed camera whose small object hardly moves the fingerprint (still to it), re-encoded hard: 4 bits off
    ("copy_k1_crf36_half", "scene_k_fixed_small_seed1", {"crf": 36, "scale": 0.5}, ("reencode", "beyond_claim"), False),
    ("late_q_from_4.2s", "src_q_10s_480", {"crf": 24, "frames": (100, 240)}, ("late_start",), False),
    (
        "trim_r_2.1s_to_6s_small",
        "src_r_8s_640_30fps",
        {"crf": 27, "frames": (62, 181), "scale": 0.75},
        ("trim",),
        False,
    ),
]
#: ``(name, source, repeats, in the small corpus)``: a source's frames played again.
_LOOPS: list[tuple[str, str, int, bool]] = [
    ("loop_s_x2_10s", "src_s_5s_256", 2, True),
    ("loop_s_x6_30s", "src_s_5s_256", 6, False),
    ("loop_r_x2_16s_30fps", "src_r_8s_640_30fps", 2, False),
]


def _copies(folder: Path, small: bool) -> list[Item]:
    takes = _takes()
    made: dict[str, Item] = {}
    for s in _shots(takes):
        if small and not s.small:
            continue
        path = write(folder / f"{s.name}.mp4", s.take.frames(*s.frames), fps=s.fps, crf=s.crf, preset=s.preset)
        made[s.name] = Item(path, s.fps, tags=s.tags, pieces=_shot_pieces(s))
    decoded: dict[str, list[Frames]] = {}

    def frames_of(source: str) -> list[Frames]:
        """A source's frames, decoded once."""
        if source not in decoded:
            decoded[source] = decode(made[source].path)
        return decoded[source]

    for name, source, options, tags, in_small in _REENCODES:
        if small and not in_small:
            continue
        src = made[source]
        frames = frames_of(source)
        path = reencode(src.path, folder / f"{name}.mp4", fps=src.fps, decoded=frames, **options)  # type: ignore[arg-type]
        span = options.get("frames")
        pieces = src.pieces
        if isinstance(span, tuple):
            pieces = cut(src.pieces, span[0] / src.fps, span[1] / src.fps)
        fps = float(options.get("to_fps") or src.fps)  # type: ignore[arg-type]
        made[name] = Item(path, fps, tags=("copy", *tags), pieces=pieces)
    for name, source, times, in_small in _LOOPS:
        if small and not in_small:
            continue
        src = made[source]
        frames = frames_of(source)
        path = write(folder / f"{name}.mp4", looped(frames, times * len(frames)), fps=src.fps, crf=23)
        pieces = repeat(src.pieces, times * src.duration_s)
        made[name] = Item(path, src.fps, loop=True, loop_period_s=src.duration_s, tags=("copy", "loop"), pieces=pieces)
    return list(made.values())
