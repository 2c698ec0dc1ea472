"""Quality and cost of frame-rate conversion 16 → 24 fps: optical flow next to the linear blend.

A moving scene is rendered at 48 fps (a smooth random texture panning 1 px a frame, with four
textured objects - two squares, two discs - moving at different speeds, one of them bouncing
vertically, passing over each other and off the edges); every 3rd frame is the 16 fps source
(Cosmos-Predict2.5's rate), every 2nd frame is the true 24 fps video. The source is converted with
``worldmill.gpu_runner.video.convert_fps_with`` (``interpolation="flow"``, what ``convert_fps``
uses, and ``"blend"``, the old linear blend), and with the flow at the other DIS presets (the private
``_interpolate_flow(preset=...)``, to show the choice of preset), over ``--rounds`` rounds, the order
rotating per round, after one untimed warm-up of each.

Quality is measured against the true frames, on the in-between target frames only (those on a source
frame are copies, checked bit-exact; the last, after the last source frame, holds it): PSNR over RGB
(mean and worst frame), SSIM on luma (gaussian window, sigma 1.5, the usual constants; mean) and the
share of "ghost" pixels (luma off by more than 40 levels: the half-bright double images blending
leaves at moving edges). Cost: median wall seconds, target frames/s, process CPU seconds.

The last line of stdout is one JSON object with every figure (ratios from the same run).

    .venv/bin/python bench/fps_interp.py [--width 320 --height 192] [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from worldmill.contracts.generation import FpsConversion  # noqa: E402
from worldmill.gpu_runner.video import (  # noqa: E402
    FlowPreset,
    _interpolate_flow,
    _source_positions,
    convert_fps_with,
)

Frames = npt.NDArray[np.uint8]
console = Console(width=140)
GHOST_LEVELS = 40
PRESETS: tuple[FlowPreset, ...] = ("medium", "fast", "ultrafast")


# -- the scene ---------------------------------------------------------------------------------


def texture(height: int, width: int, *, cell: int, seed: int, low: int, high: int) -> Frames:
    """Smooth random RGB texture (random cells upscaled bicubically) with values in [low, high]."""
    rng = np.random.default_rng(seed)
    rows, cols = height // cell + 3, width // cell + 3
    coarse = rng.integers(0, 256, size=(rows, cols, 3), dtype=np.uint8)
    fine = cv2.resize(coarse, (cols * cell, rows * cell), interpolation=cv2.INTER_CUBIC)[:height, :width]
    return (low + fine.astype(np.float32) * ((high - low) / 255)).astype(np.uint8)


def render(width: int, height: int, frames: int, seed: int) -> Frames:
    """``frames`` frames at 48 fps; object speeds are whole pixels per frame, so the truth is exact."""
    background = texture(height, width + frames + 1, cell=max(8, width // 32), seed=seed, low=25, high=150)
    unit = max(1, round(width / 320))
    # (size as a share of the height, px per 48 fps frame across, px per frame down (bouncing), disc?)
    specs = [(0.34, 1 * unit, 0, False), (0.26, 3 * unit, 2 * unit, True), (0.22, 5 * unit, 0, False)]
    specs.append((0.18, 8 * unit, 0, True))
    objects = []
    for k, (share, vx, vy, disc) in enumerate(specs):
        side = max(8, round(height * share))
        tex = texture(side, side, cell=max(4, side // 8), seed=seed + 10 + k, low=140, high=255)
        yy, xx = np.mgrid[0:side, 0:side]
        r = (side - 1) / 2
        mask = ((yy - r) ** 2 + (xx - r) ** 2 <= r * r) if disc else np.ones((side, side), dtype=bool)
        y0 = round((k + 0.5) * (height - side) / len(specs))
        x0 = (k * width) // len(specs)
        objects.append((tex, mask, side, vx, vy, x0, y0))
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for i in range(frames):
        img = background[:, i : i + width].copy()
        for tex, mask, side, vx, vy, x0, y0 in objects:
            x = (x0 + vx * i) % (width + side) - side  # leaves on the right, comes back on the left
            span = height - side
            y = y0
            if vy and span > 0:
                t = (y0 + vy * i) % (2 * span)
                y = t if t <= span else 2 * span - t
            xs, xe = max(0, x), min(width, x + side)
            if xe > xs:
                region = img[y : y + side, xs:xe]
                m = mask[:, xs - x : xe - x]
                region[m] = tex[:, xs - x : xe - x][m]
        out[i] = img
    return out


# -- quality -----------------------------------------------------------------------------------


def luma(frame: Frames) -> npt.NDArray[np.float64]:
    return np.asarray(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), dtype=np.float64)


def psnr(a: Frames, b: Frames) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def ssim(a: Frames, b: Frames) -> float:
    """Mean SSIM of the lumas (Wang et al. 2004: gaussian window sigma 1.5, K1 0.01, K2 0.03, L 255)."""
    x, y = luma(a), luma(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.asarray(cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT), dtype=np.float64)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def quality(out: Frames, truth: Frames, source: Frames, positions: npt.NDArray[np.float64]) -> dict[str, Any]:
    """PSNR/SSIM/ghost share on the in-between frames; on-source frames checked bit-exact."""
    last = source.shape[0] - 1
    on = [i for i, p in enumerate(positions) if p == int(p) or p > last]
    on_set = set(on)
    between = [i for i in range(positions.shape[0]) if i not in on_set]
    exact = all(np.array_equal(out[i], source[min(int(p), last)]) for i, p in zip(on, positions[on], strict=True))
    p = [psnr(out[i], truth[i]) for i in between]
    s = [ssim(out[i], truth[i]) for i in between]
    g = [float(np.mean(np.abs(luma(out[i]) - luma(truth[i])) > GHOST_LEVELS)) for i in between]
    return {
        "psnr_mean": round(statistics.fmean(p), 2),
        "psnr_min": round(min(p), 2),
        "ssim_mean": round(statistics.fmean(s), 4),
        "ghost_pct": round(100 * statistics.fmean(g), 3),
        "frames_measured": len(between),
        "on_source_exact": exact,
    }


# -- runs --------------------------------------------------------------------------------------


def variants(
    source: Frames, conversion: FpsConversion, presets: list[FlowPreset]
) -> dict[str, Callable[[], tuple[Frames, str]]]:
    positions = _source_positions(conversion)

    def flow_at(preset: FlowPreset) -> Callable[[], tuple[Frames, str]]:
        return lambda: _interpolate_flow(source, positions, preset=preset)

    fns: dict[str, Callable[[], tuple[Frames, str]]] = {
        "flow": lambda: convert_fps_with(source, conversion, interpolation="flow"),
        "blend": lambda: convert_fps_with(source, conversion, interpolation="blend"),
    }
    fns.update({f"flow-{preset}": flow_at(preset) for preset in presets if preset != "medium"})  # "flow" is medium
    return fns


def measure(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    scene = render(args.width, args.height, 48 * args.seconds, args.seed)
    source, truth = scene[0::3], scene[0::2]
    render_s = time.perf_counter() - t0
    conversion = FpsConversion(
        source_fps=16, target_fps=24, method="interpolate", source_frames=source.shape[0], target_frames=truth.shape[0]
    )
    positions = _source_positions(conversion)
    console.print(
        f"scene: {args.width}x{args.height}, {scene.shape[0]} frames at 48 fps (rendered in {render_s:.1f} s) → "
        f"{source.shape[0]} at 16 fps → {truth.shape[0]} at 24 fps; {os.cpu_count()} CPUs, "
        f"OpenCV {cv2.__version__} threads {cv2.getNumThreads()}",
        highlight=False,
    )
    fns = variants(source, conversion, args.presets)
    names = list(fns)
    described: dict[str, str] = {}
    rows: dict[str, dict[str, Any]] = {}
    for name in names:  # warm-up, and the quality of each (the output does not depend on the round)
        out, how = fns[name]()
        if out.shape != truth.shape:
            raise SystemExit(f"{name}: {out.shape}, expected {truth.shape}")
        described[name] = how
        rows[name] = quality(out, truth, source, positions)
    walls: dict[str, list[float]] = {n: [] for n in names}
    cpus: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            c0, w0 = time.process_time(), time.perf_counter()
            fns[name]()
            walls[name].append(time.perf_counter() - w0)
            cpus[name].append(time.process_time() - c0)
        console.print(
            f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {walls[n][-1]:.2f} s" for n in names), highlight=False
        )
    for name in names:
        wall = statistics.median(walls[name])
        rows[name].update(
            method=described[name],
            wall_s=round(wall, 3),
            wall_min_s=round(min(walls[name]), 3),
            wall_max_s=round(max(walls[name]), 3),
            cpu_s=round(statistics.median(cpus[name]), 3),
            frames_per_s=round(truth.shape[0] / wall, 1),
            ms_per_frame=round(1000 * wall / truth.shape[0], 2),
        )
    return {"rows": rows, "frames": {"rendered": scene.shape[0], "source": source.shape[0], "target": truth.shape[0]}}


def print_report(args: argparse.Namespace, m: dict[str, Any], ratios: dict[str, float]) -> None:
    rows = m["rows"]
    table = Table(
        title=f"16 → 24 fps, {args.width}x{args.height}, {m['frames']['target']} target frames "
        f"(quality on {next(iter(rows.values()))['frames_measured']} in-between frames; time: median of {args.rounds})",
        title_justify="left",
        caption=f"ghost = pixels whose luma is off by > {GHOST_LEVELS} levels (double images); "
        "on-source frames are bit-exact copies in every variant",
        caption_justify="left",
    )
    for col in ("method", "PSNR mean dB", "PSNR min dB", "SSIM mean", "ghost %", "seconds", "frames/s", "CPU s"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in rows.values():
        table.add_row(
            r["method"],
            f"{r['psnr_mean']:.2f}",
            f"{r['psnr_min']:.2f}",
            f"{r['ssim_mean']:.4f}",
            f"{r['ghost_pct']:.2f}",
            f"{r['wall_s']:.2f}",
            f"{r['frames_per_s']:.0f}",
            f"{r['cpu_s']:.2f}",
        )
    console.print(table)
    console.print(
        f"flow vs blend: PSNR {ratios['psnr_gain_db']:+.2f} dB (worst frame {ratios['psnr_min_gain_db']:+.2f} dB), "
        f"SSIM {ratios['ssim_gain']:+.4f}, ghost pixels × {ratios['ghost_ratio']:.3f}, "
        f"time × {ratios['time_ratio']:.1f}",
        highlight=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--width", type=int, default=320, help="frame width (default 320)")
    add("--height", type=int, default=192, help="frame height (default 192)")
    add("--seconds", type=int, default=3, help="scene length in seconds (default 3: 48 source, 72 target frames)")
    add("--rounds", type=int, default=3, help="interleaved timing rounds; medians (default 3)")
    add("--presets", default="medium,fast,ultrafast", help="DIS presets to run (medium is 'flow'; default all)")
    add("--seed", type=int, default=7, help="scene content seed (default 7)")
    args = parser.parse_args(argv)
    names = [p for p in args.presets.split(",") if p]
    if not set(names) <= set(PRESETS):
        parser.error(f"--presets takes {', '.join(PRESETS)}")
    args.presets = [p for p in PRESETS if p in names]

    started = time.perf_counter()
    m = measure(args)
    flow, blend = m["rows"]["flow"], m["rows"]["blend"]
    ratios = {
        "psnr_gain_db": round(flow["psnr_mean"] - blend["psnr_mean"], 2),
        "psnr_min_gain_db": round(flow["psnr_min"] - blend["psnr_min"], 2),
        "ssim_gain": round(flow["ssim_mean"] - blend["ssim_mean"], 4),
        "ghost_ratio": round(flow["ghost_pct"] / blend["ghost_pct"], 4) if blend["ghost_pct"] else float("nan"),
        "time_ratio": round(flow["wall_s"] / blend["wall_s"], 2),
        "cpu_ratio": round(flow["cpu_s"] / blend["cpu_s"], 2) if blend["cpu_s"] else float("nan"),
    }
    print_report(args, m, ratios)
    report = {
        "bench": "fps_interp",
        "scene": {"width": args.width, "height": args.height, "seconds": args.seconds, **m["frames"]},
        "variants": m["rows"],
        "flow_vs_blend": ratios,
        "config": dict(vars(args)),
        "total_s": round(time.perf_counter() - started, 1),
        "env": {
            "python": platform.python_version(),
            "opencv": cv2.__version__,
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
            "opencv_threads": cv2.getNumThreads(),
        },
    }
    print(json.dumps(report, separators=(",", ":"), default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
