"""Cost of computing Cosmos-Transfer edge/vis control videos on CPU (``worldmill.augment.controls``).

One generated test video (default 1280x720, 24 fps, 96 frames: a smooth random texture panning
2 px a frame with a bright square moving across, encoded by the pipeline's ``encode_mp4``) is
processed by four variants, interleaved over ``--rounds`` rounds (the order rotates per round,
after one untimed warm-up of each):

* ``decode`` - a plain PyAV decode of every frame to an rgb24 ndarray (threaded decoding, as in
  ``compute_controls``): the floor, nothing computed or written;
* ``edge`` - ``compute_controls`` with the edge control only (decode, Canny, encode one MP4);
* ``vis`` - ``compute_controls`` with the vis (blur) control only;
* ``edge+vis`` - ``compute_controls`` with both from one decode pass (two MP4s).

Reported per variant: median wall seconds, frames/s, time relative to the plain decode and the
spread over rounds; then what one pass saves (edge+vis next to edge and vis run separately) and,
from one instrumented pass, where the time goes per frame (decode+RGB, edge_frame, blur_frame and
the bilateral filter inside it, the rest being encoding and muxing). The vis control is dominated
by Transfer's bilateral filter (d = 30 on the pre-downsized frame), which is why its cost depends
so much on the preset's pre-blur factor (1 for very_low and high: the full frame).

The last line of stdout is one JSON object with every figure.

    .venv/bin/python bench/controls.py [--width 1280 --height 720] [--fps 24] [--frames 96] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt
from clips import panning_frames  # bench/clips.py: this folder is on sys.path
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from worldmill.augment.controls import (  # noqa: E402
    BILATERAL_DIAMETER,
    BILATERAL_SIGMA_COLOR,
    BILATERAL_SIGMA_SPACE,
    ControlRequest,
    blur_frame,
    compute_controls,
    edge_frame,
)
from worldmill.contracts.cards import ControlType, Preset, builtin_cards  # noqa: E402
from worldmill.gpu_runner.video import encode_mp4  # noqa: E402
from worldmill.runtime.media import probe  # noqa: E402

console = Console(width=140)
VARIANTS = ("decode", "edge", "vis", "edge+vis")


# -- test video --------------------------------------------------------------------------------


def frames(width: int, height: int, count: int, seed: int) -> Iterator[npt.NDArray[np.uint8]]:
    """The bench's test clip (see ``clips.panning_frames``)."""
    return panning_frames(width, height, count, seed, square_step=7, drift=False)


# -- variants ----------------------------------------------------------------------------------


def plain_decode(path: Path) -> int:
    n = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frame.to_ndarray(format="rgb24")
            n += 1
    return n


def run_controls(path: Path, out: Path, requests: list[ControlRequest]) -> int:
    try:
        outputs = compute_controls(path, requests, out, stem="bench")
        return outputs[0].frames
    finally:
        shutil.rmtree(out, ignore_errors=True)


def variant_functions(path: Path, tmp: Path, edge: Preset, vis: Preset) -> dict[str, Callable[[], int]]:
    e, v = ControlRequest(ControlType.EDGE, edge), ControlRequest(ControlType.VIS, vis)
    return {
        "decode": lambda: plain_decode(path),
        "edge": lambda: run_controls(path, tmp / "edge", [e]),
        "vis": lambda: run_controls(path, tmp / "vis", [v]),
        "edge+vis": lambda: run_controls(path, tmp / "both", [e, v]),
    }


def timed(fn: Callable[[], int]) -> tuple[float, float, int]:
    """(wall seconds, process CPU seconds, frames) of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    n = fn()
    return time.perf_counter() - t0, time.process_time() - c0, n


def stages(path: Path, edge: Preset, vis: Preset) -> dict[str, float]:
    """Seconds per stage over one pass (decode+RGB, edge_frame, blur_frame, its bilateral filter alone)."""
    card = builtin_cards()["cosmos-transfer2.5-2b"]
    downsize, _ = card.blur_presets[vis]
    out = {"decode_rgb": 0.0, "edge_frame": 0.0, "blur_frame": 0.0, "bilateral_only": 0.0}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames_iter = container.decode(stream)
        while True:
            t0 = time.perf_counter()
            frame = next(frames_iter, None)
            if frame is None:
                break
            rgb = np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
            t1 = time.perf_counter()
            edge_frame(rgb, edge)
            t2 = time.perf_counter()
            blur_frame(rgb, vis)
            t3 = time.perf_counter()
            h, w = rgb.shape[:2]
            small = (
                rgb if downsize == 1 else cv2.resize(rgb, (w // downsize, h // downsize), interpolation=cv2.INTER_AREA)
            )
            t4 = time.perf_counter()
            cv2.bilateralFilter(small, BILATERAL_DIAMETER, BILATERAL_SIGMA_COLOR, BILATERAL_SIGMA_SPACE)
            t5 = time.perf_counter()
            out["decode_rgb"] += t1 - t0
            out["edge_frame"] += t2 - t1
            out["blur_frame"] += t3 - t2
            out["bilateral_only"] += t5 - t4
    return out


# -- measurement and report -------------------------------------------------------------------


def measure(args: argparse.Namespace, edge: Preset, vis: Preset) -> dict[str, Any]:
    """Make the test video, time every variant over the rounds and take the stage breakdown."""
    tmp = Path(tempfile.mkdtemp(prefix="wm-bench-controls-"))
    try:
        t0 = time.perf_counter()
        video = tmp / "input.mp4"
        encode_mp4(frames(args.width, args.height, args.frames, args.seed), video, fps=args.fps)
        make_s = time.perf_counter() - t0
        info = probe(video)
        size_bytes = video.stat().st_size
        console.print(
            f"input: {info.width}x{info.height} @ {info.fps} fps, {info.frames} frames, "
            f"{size_bytes / 1e6:.1f} MB (made in {make_s:.1f} s); edge preset {edge}, vis preset {vis}; "
            f"{os.cpu_count()} CPUs, OpenCV threads {cv2.getNumThreads()}",
            highlight=False,
        )
        fns = variant_functions(video, tmp, edge, vis)
        for name in VARIANTS:  # warm-up: page cache, codec and OpenCV initialisation
            got = fns[name]()
            if got != info.frames:
                raise SystemExit(f"{name}: {got} frames, the input has {info.frames}")
        walls: dict[str, list[float]] = {name: [] for name in VARIANTS}
        cpus: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for r in range(args.rounds):
            order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
            for name in order:
                wall, cpu, _ = timed(fns[name])
                walls[name].append(wall)
                cpus[name].append(cpu)
            console.print(
                f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {walls[n][-1]:.2f} s" for n in VARIANTS),
                highlight=False,
            )
        stage_s = stages(video, edge, vis)
    finally:
        if args.keep:
            console.print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"info": info, "bytes": size_bytes, "make_s": make_s, "walls": walls, "cpus": cpus, "stage_s": stage_s}


def summarize(m: dict[str, Any]) -> dict[str, Any]:
    """Medians, frames/s and ratios to the plain decode; the one-pass saving; per-frame stage times."""
    n = m["info"].frames
    walls, cpus = m["walls"], m["cpus"]
    med = {name: statistics.median(walls[name]) for name in VARIANTS}
    rows = {
        name: {
            "wall_s": round(med[name], 3),
            "cpu_s": round(statistics.median(cpus[name]), 3),
            "fps": round(n / med[name], 2),
            "ms_per_frame": round(1000 * med[name] / n, 2),
            "x_decode_time": round(med[name] / med["decode"], 2),
            "fps_ratio_to_decode": round(med["decode"] / med[name], 4),
            "wall_min_s": round(min(walls[name]), 3),
            "wall_max_s": round(max(walls[name]), 3),
        }
        for name in VARIANTS
    }
    separate = med["edge"] + med["vis"]
    one_pass = {
        "edge_plus_vis_separately_s": round(separate, 3),
        "edge_vis_one_pass_s": round(med["edge+vis"], 3),
        "saved_s": round(separate - med["edge+vis"], 3),
        "one_pass_over_separate": round(med["edge+vis"] / separate, 3),
    }
    per_frame = {k: round(1000 * v / n, 2) for k, v in m["stage_s"].items()}
    computed = per_frame["decode_rgb"] + per_frame["edge_frame"] + per_frame["blur_frame"]
    per_frame["rest_encode_mux"] = round(1000 * med["edge+vis"] / n - computed, 2)
    return {"variants": rows, "one_pass": one_pass, "stage_ms_per_frame": per_frame}


def print_report(info: Any, rounds: int, edge: Preset, vis: Preset, summary: dict[str, Any]) -> None:
    rows, one_pass, per_frame = summary["variants"], summary["one_pass"], summary["stage_ms_per_frame"]
    table = Table(
        title=f"control videos for a {info.width}x{info.height} {info.frames}-frame input "
        f"(median of {rounds}, interleaved)",
        title_justify="left",
        caption="× decode = median wall / median plain-decode wall; fps ratio = its inverse (share of decode speed); "
        "edge/vis include writing their MP4 (libx264 crf 18 veryfast)",
        caption_justify="left",
    )
    for col in ("variant", "wall s", "frames/s", "ms/frame", "× decode", "fps ratio", "min-max s", "CPU s"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    labels = {
        "decode": "plain PyAV decode → rgb24",
        "edge": f"edge ({edge})",
        "vis": f"vis ({vis})",
        "edge+vis": "edge + vis, one pass",
    }
    for name in VARIANTS:
        r = rows[name]
        table.add_row(
            labels[name],
            f"{r['wall_s']:.2f}",
            f"{r['fps']:.1f}",
            f"{r['ms_per_frame']:.1f}",
            f"{r['x_decode_time']:.1f}",
            f"{r['fps_ratio_to_decode']:.3f}",
            f"{r['wall_min_s']:.2f}-{r['wall_max_s']:.2f}",
            f"{r['cpu_s']:.2f}",
        )
    console.print(table)
    stage_table = Table(title="where one edge+vis pass spends its time (ms per frame)", title_justify="left")
    for col in ("stage", "ms/frame", "share"):
        stage_table.add_column(col, justify="left" if col == "stage" else "right")
    total_ms = rows["edge+vis"]["ms_per_frame"]
    stage_labels = {
        "decode_rgb": "decode + rgb24",
        "edge_frame": "edge_frame (Canny)",
        "blur_frame": "blur_frame (all of vis)",
        "bilateral_only": "  of which bilateral filter d=30",
        "rest_encode_mux": "rest: encode + mux 2 MP4s",
    }
    for key, label in stage_labels.items():
        ms = per_frame[key]
        stage_table.add_row(label, f"{ms:.1f}", f"{100 * ms / total_ms:.0f} %")
    console.print(stage_table)
    console.print(
        f"one pass: edge+vis {one_pass['edge_vis_one_pass_s']:.2f} s vs edge and vis separately "
        f"{one_pass['edge_plus_vis_separately_s']:.2f} s (saves {one_pass['saved_s']:.2f} s: one decode, one pass)",
        highlight=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--width", type=int, default=640, help="test video width (default 640; 1280 for a 720p figure)")
    add("--height", type=int, default=360, help="test video height (default 360)")
    add("--fps", type=float, default=24.0, help="test video frame rate (default 24)")
    add("--frames", type=int, default=48, help="test video frames (default 48)")
    add("--rounds", type=int, default=2, help="interleaved rounds; medians (default 2)")
    add("--edge-preset", choices=[p.value for p in Preset], default="medium", help="edge preset (default medium)")
    add("--vis-preset", choices=[p.value for p in Preset], default="medium", help="vis preset (default medium)")
    add("--seed", type=int, default=7, help="test video content seed (default 7)")
    add("--keep", action="store_true", help="keep the temporary folder (printed)")
    args = parser.parse_args(argv)
    edge, vis = Preset(args.edge_preset), Preset(args.vis_preset)

    started = time.perf_counter()
    m = measure(args, edge, vis)
    info = m["info"]
    summary = summarize(m)
    print_report(info, args.rounds, edge, vis, summary)
    report = {
        "bench": "controls",
        "input": {
            "width": info.width,
            "height": info.height,
            "fps": str(info.fps),
            "frames": info.frames,
            "bytes": m["bytes"],
        },
        "presets": {"edge": edge.value, "vis": vis.value},
        **summary,
        "config": dict(vars(args)),
        "make_video_s": round(m["make_s"], 2),
        "total_s": round(time.perf_counter() - started, 1),
        "env": {
            "python": platform.python_version(),
            "pyav": av.__version__,
            "opencv": cv2.__version__,
            "cpus": os.cpu_count(),
            "opencv_threads": cv2.getNumThreads(),
        },
    }
    print(json.dumps(report, separators=(",", ":"), default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
