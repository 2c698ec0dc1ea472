"""Random corpora for ``copy_of`` (``bench/qa.py`` part 3): scenes of two seeds and one random copy each.

The labelled corpus (``tests/helpers/qa_corpus.py``) was written by hand, and the index's thresholds
were chosen on it; a random corpus is drawn from a seed, so the measure can be repeated on corpora
nobody looked at (``bench/qa.py --random-seeds``: seeds 1-5 were looked at while choosing, 11 was not).
Items are :class:`~tests.helpers.qa_corpus.Item` s labelled the same way.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from tests.helpers.qa_corpus import Item, cut, decode, looped, reencode, relations_of, repeat, write
from tests.helpers.qa_relations import Piece
from tests.helpers.qa_takes import Motion, Take


def build(folder: Path, *, scenes: int, seed: int) -> list[Item]:
    """``scenes`` random scenes, each two takes with other seeds and one random copy of the first take.

    Per scene: a size (256x144 to 480x272), an object size (1/12 to 1/5 of the height), a frame rate
    (16, 24, 30), 6-10 s; per take a camera kind (``fixed``, ``slow``: a drift under 0.4 px a frame,
    ``pan``: 0.8-4 px a frame either way) and motion, noise and crf drawn at random; the copy is one of
    a re-encode (crf 20-36, scale 1/3-1.25, crop 0-2 %, a preset), a re-timing, a trim (at least 2.5 s,
    cut anywhere), a loop (2-3 times) or the take extended by 3-8 s. Tags: the operation and the
    first take's camera kind. Relations are labelled as in :func:`build`.
    """
    rng = np.random.default_rng(seed)
    items: list[Item] = []

    def motion() -> tuple[Motion, str]:
        kind = str(rng.choice(["fixed", "slow", "pan"]))
        pan = {"fixed": 0.0, "slow": rng.uniform(-0.4, 0.4), "pan": rng.choice([-1, 1]) * rng.uniform(0.8, 4)}[kind]
        tilt = 0.0 if kind == "fixed" else rng.uniform(-0.5, 0.5)
        drift = (float(rng.uniform(-3, 3)), float(rng.uniform(-3, 3)))
        return Motion(pan=float(pan), tilt=float(tilt), drift=drift, noise=float(rng.uniform(0.5, 3))), kind

    for k in range(scenes):
        scene = 5000 + 100 * seed + k
        width, height = [(320, 192), (256, 144), (480, 272)][int(rng.integers(3))]
        size = float(rng.choice([1 / 12, 1 / 8, 1 / 6, 1 / 5]))
        fps = float(rng.choice([16, 24, 30]))
        count = int(fps * rng.uniform(6, 10))
        takes: list[tuple[Take, Item, str]] = []
        for variant in (1, 2):
            m, kind = motion()
            take = Take(scene, 10 * scene + variant, width, height, ((0, m),), size=size)
            crf = int(rng.integers(18, 30))
            path = write(folder / f"r{seed}_{k:02d}_take{variant}_{kind}.mp4", take.frames(0, count), fps=fps, crf=crf)
            material = Piece(f"take:{scene}/{variant}", 0.0, count / fps)
            takes.append((take, Item(path, fps, tags=("clean", "same_scene", kind), pieces=(material,)), kind))
        take, src, kind = takes[0]
        items += [t[1] for t in takes]
        op = str(rng.choice(["reencode", "retime", "trim", "loop", "extend"]))
        path = folder / f"r{seed}_{k:02d}_copy_{op}.mp4"
        pieces, out_fps = src.pieces, fps
        if op == "reencode":
            scale = float(rng.choice([1 / 3, 0.5, 0.75, 1.0, 1.25]))
            crop = float(rng.choice([0.0, 0.01, 0.02]))
            preset = str(rng.choice(["ultrafast", "veryfast", "medium"]))
            reencode(src.path, path, fps=fps, crf=int(rng.integers(20, 37)), scale=scale, crop=crop, preset=preset)
        elif op == "retime":
            out_fps = float(rng.choice([f for f in (16.0, 24.0, 30.0) if f != fps]))
            reencode(src.path, path, fps=fps, crf=int(rng.integers(20, 32)), to_fps=out_fps)
        elif op == "trim":
            a = int(rng.integers(0, count // 3))
            b = int(rng.integers(a + round(2.5 * fps), count + 1))
            reencode(src.path, path, fps=fps, crf=int(rng.integers(20, 32)), frames=(a, b))
            pieces = cut(src.pieces, a / fps, b / fps)
        elif op == "loop":
            frames = decode(src.path)
            times = int(rng.integers(2, 4))
            write(path, looped(frames, times * len(frames)), fps=fps, crf=23)
            pieces = repeat(src.pieces, times * src.duration_s)
        else:
            extra = int(fps * rng.uniform(3, 8))
            write(path, take.frames(0, count + extra), fps=fps, crf=int(rng.integers(20, 30)))
            pieces = (Piece(src.pieces[0].material, 0.0, (count + extra) / fps),)
        period = src.duration_s if op == "loop" else None
        items.append(
            Item(path, out_fps, loop=op == "loop", loop_period_s=period, tags=("copy", op, kind), pieces=pieces)
        )
    return [replace(it, relations=relations_of(it, items)) for it in items]
