"""Cost of worldmill's video QA: one ``analyze()`` next to a plain decode, and ``audit`` next to the hand audit of docs/background.md#security-cameras.

Part 1 - per video. ``worldmill.qa.measure.analyze(path)`` (one decode pass that measures every
check, hashes the file in a second thread and takes three screenshots and a contact sheet) is
timed against a plain PyAV decode of every frame of the same file
(``for f in container.decode(video=0): pass``), interleaved (the order alternates per round) on
two files: a 720-frame 320x192 24 fps clip and a 93-frame 1280x704 16 fps clip (Cosmos' default
output). Reported: median wall seconds of each, ratio = median analyze / median decode
(target <= 1.5, judged on this ratio), the same ratio in process CPU seconds (the hashing thread
included; less sensitive to other processes on the machine), the ratio of the fastest runs, the
spread of the per-round ratios and, from one cProfile run, the functions where analyze() spends
its time.

Part 2 - a folder. N short videos ``<id>_<5|10|30>s.mp4`` (small size, distinct content) are
audited by

* ``ours`` - the CLI function ``worldmill.qa.cli.audit`` called in this process (its terminal
  output discarded), writing the JSON and HTML reports; no interpreter start;
* ``ours_cli`` - the same as a subprocess: ``python -m worldmill.cli audit FOLDER --json OUT
  --html OUT`` if that command is registered, else ``python -c`` running the same function with
  typer (the command used is reported); interpreter start and imports included;
* ``seeds000`` - what the security-camera team did by hand (docs/background.md#security-cameras), per file and sequentially: one
  ``ffprobe -v error -show_entries format=duration -of csv=p=0 FILE``, one ``md5sum FILE`` and
  three ``ffmpeg -ss T -i FILE -frames:v 1 -y out.jpg`` (T = 0.5 s, the middle, end - 0.5 s).

The three variants run interleaved (the order rotates per round, after one untimed warm-up of
each, so every file is in the page cache); medians of wall time and files/s are reported with
what each variant actually checks (ours: the check names found in its own JSON report). Without
ffmpeg/ffprobe on PATH the seeds000 baseline is skipped with a note (the JSON says so).

Part 3 - the labelled corpus (issue #15) of ``tests/helpers/qa_corpus.py``: clean clips at several
sizes, frame rates and encoder settings, loops of a 4-5.8 s clip to 10 and 30 s, compilations of
unrelated shots, and the copy class (sources from 256x144 to 960x544 at 16-30 fps; re-encodes,
rescales, 2 % crops, re-timings, trims, later starts, extensions, tails, a 4 s fork, loops of a
source; hard negatives: takes of one scene with other seeds with a panning, a fixed and a drifting
camera, near-static and low-motion clips, a 1 s fork). Each file is analysed once (``analyze()``,
the service's decode pass) and checked; reported per fault class (``loop``, ``cuts``): precision
and recall of the failed finding (target ≥ 0.95 each) and whether the reported period / cut
times match the truth. For copies, the decode pass's fingerprints (``worldmill.qa.service.fingerprint_of``)
go into the real ``FingerprintIndex`` (default parameters, as the service and ``worldmill audit``
build it) and are scored by ``tests/helpers/qa_copy_scores.py``: every ordered pair of files (all
held, each looked up with itself excluded: the audit's way) by relation (``equal``, ``contains``,
``contained_in``, ``overlaps``) and for "shares picture" overall, with the share of found ranges
within 0.5 s of the truth; and "is a copy of an earlier file" per file in corpus order (each looked
up with ``limit=20`` before it is added: the service's way). Pairs beyond what the fingerprint claims
(a 3 % crop; two seeds of one still scene; a hard re-encode of a still) are listed apart, outside
the precision and recall. Then the same on random corpora (``--random-seeds``, default 11; 20 scenes
each: two takes with other seeds and a random copy of one, ``qa_random_corpus.build``), every pair
counted; the index's thresholds were chosen on the labelled corpus and random seeds 1-5, never on 11.

QA cost: part 1 times ``analyze()`` + ``check()`` (the fingerprint is made in the decode pass,
loops and cuts are checked by ``check()``) + one ``copy_of`` lookup and add in an index holding
``--held`` (10,000) fingerprints, reported in plain decodes (target ≤ 1.3).

The last line of stdout is one JSON object with every figure.

    .venv/bin/python bench/qa.py [--files 12] [--frames 720] [--width 320 --height 192] [--repeats 9]
        [--random-seeds 11] [--held 10000]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import typer
from clips import panning_frames  # bench/clips.py: this folder is on sys.path
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # tests.helpers.video (--encoder test)
    sys.path.insert(0, str(REPO))

from tests.helpers import qa_copy_scores, qa_corpus, qa_random_corpus  # noqa: E402
from tests.helpers.video import write_video  # noqa: E402
from worldmill.gpu_runner.video import encode_mp4  # noqa: E402
from worldmill.qa import cli as qa_cli  # noqa: E402
from worldmill.qa.fingerprint import Fingerprint  # noqa: E402
from worldmill.qa.fpindex import FingerprintIndex, FingerprintLike  # noqa: E402
from worldmill.qa.judge import check  # noqa: E402
from worldmill.qa.measure import analyze  # noqa: E402
from worldmill.qa.service import fingerprint_of  # noqa: E402

TARGET_RATIO = 1.5
#: Issue #15: QA (decode pass + every check, loops and cuts included) in plain decodes.
TARGET_QA_COST = 1.3
#: Issue #15: precision and recall of the loop, cuts and copy_of findings on the corpus (each class).
TARGET_PR = 0.95
#: What each folder approach checks (ours: confirmed against the check names of its own report).
OUR_CHECKS = (
    "decodes (every declared frame)",
    "container / codec",
    "frames (exact)",
    "fps",
    "duration (± 0.5 s)",
    "resolution (with a manifest)",
    "vfr",
    "static (motion)",
    "black / flat frames",
    "flicker",
    "seams (with a plan)",
    "identical (sha256)",
    "near_duplicate (dHash)",
    "fingerprint (pHash 4/s)",
    "loop, cuts (one shot)",
    "copy_of (across files, any offset)",
    "missing variants",
    "3 screenshots",
)
SEEDS_CHECKS = ("duration (ffprobe, compared by eye)", "md5 (duplicates, by eye)", "3 screenshots (looked at by eye)")
SEEDS_PROCESSES_PER_FILE = 5  # ffprobe + md5sum + 3 × ffmpeg

console = Console(width=150)


# -- test videos -------------------------------------------------------------------------------


def frames(width: int, height: int, count: int, seed: int) -> Iterator[npt.NDArray[np.uint8]]:
    """The bench's test clip (see ``clips.panning_frames``)."""
    return panning_frames(width, height, count, seed, square_step=3, drift=True)


def make_video(path: Path, *, width: int, height: int, count: int, fps: float, seed: int, encoder: str) -> Path:
    if encoder == "test":  # tests/helpers/video.py: random texture, ultrafast, crf 30
        return write_video(path, width=width, height=height, fps=Fraction(fps), frames=count, seed=seed)
    encode_mp4(frames(width, height, count, seed), path, fps=fps)  # the pipeline's encoder: crf 20, veryfast
    return path


# -- helpers -----------------------------------------------------------------------------------


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, process CPU seconds, result) of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def held_index(count: int, seed: int = 7) -> FingerprintIndex:
    """An index holding ``count`` video-like fingerprints of 5-30 s (a random start, ~7 bits change a sample)."""
    rng = np.random.default_rng(seed)
    index = FingerprintIndex()
    entries = []
    for i in range(count):
        n = int(rng.integers(20, 121))
        flips = np.packbits(rng.random((n, 64)) < 7 / 64, axis=1).view(">u8").reshape(-1).astype(np.uint64)
        flips[0] = np.uint64(int(rng.integers(0, 2**63)))
        hashes = np.bitwise_xor.accumulate(flips)
        entries.append((f"held-{i}", Fingerprint(hashes=tuple(int(h) for h in hashes)), None))
    index.add_many(entries)
    return index


def qa(path: Path, index: FingerprintIndex) -> Any:
    """The QA of one file as the service runs it: the decode pass, every check (loop and cuts included) and
    the ``copy_of`` lookup and add (the same id each round: the add is a no-op after the first)."""
    analysis = analyze(path)
    check(analysis, None)
    fp = fingerprint_of(analysis)
    if fp is not None:
        index.lookup(fp, exclude={"bench"}, limit=20)
        index.add("bench", fp)
    return analysis


def plain_decode(path: Path) -> int:
    n = 0
    with av.open(str(path)) as container:
        for _ in container.decode(video=0):
            n += 1
    return n


def profile_top(fn: Callable[[], Any], top: int) -> list[dict[str, Any]]:
    """The ``top`` functions by own time in one cProfile run of ``fn`` (share of the profiled total)."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    stats = pstats.Stats(prof)
    total = stats.total_tt or 1e-9  # type: ignore[attr-defined]
    rows = []
    for (file, line, name), (_cc, calls, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = name if file == "~" else f"{Path(file).name}:{line}:{name}"
        rows.append({"function": where, "calls": calls, "own_s": tt, "cum_s": ct, "own_share": tt / total})
    rows.sort(key=lambda r: -r["own_s"])
    return [
        {**r, "own_s": round(r["own_s"], 4), "cum_s": round(r["cum_s"], 4), "own_share": round(r["own_share"], 3)}
        for r in rows[:top]
    ]


# -- part 1 ------------------------------------------------------------------------------------


def part1(videos: list[dict[str, Any]], repeats: int, profile: int, held: int) -> list[dict[str, Any]]:
    out = []
    index = held_index(held)
    for v in videos:
        path: Path = v["path"]
        decoded = plain_decode(path)  # warm-up: page cache, codec init
        first = analyze(path)
        walls: dict[str, list[float]] = {"decode": [], "analyze": []}
        cpus: dict[str, list[float]] = {"decode": [], "analyze": []}
        for r in range(repeats):
            order = ("decode", "analyze") if r % 2 == 0 else ("analyze", "decode")
            for which in order:
                run = functools.partial(plain_decode, path) if which == "decode" else functools.partial(qa, path, index)
                wall, cpu, _ = timed(run)
                walls[which].append(wall)
                cpus[which].append(cpu)
        dec, ana = median(walls["decode"]), median(walls["analyze"])
        dec_cpu, ana_cpu = median(cpus["decode"]), median(cpus["analyze"])
        ratios = sorted(a / d for a, d in zip(walls["analyze"], walls["decode"], strict=True))
        out.append(
            {
                "name": v["name"],
                "width": v["width"],
                "height": v["height"],
                "fps": v["fps"],
                "frames": decoded,
                "bytes": path.stat().st_size,
                "analyze_status": first.status,
                "analyze_frames": first.frames,
                "decode_s": round(dec, 5),
                "analyze_s": round(ana, 5),
                "ratio": round(ana / dec, 3),
                "ratio_cpu": round(ana_cpu / dec_cpu, 3),
                "ratio_best": round(min(walls["analyze"]) / min(walls["decode"]), 3),
                "decode_cpu_s": round(dec_cpu, 5),
                "analyze_cpu_s": round(ana_cpu, 5),
                "decode_us_per_frame": round(1e6 * dec / decoded, 1),
                "analyze_overhead_us_per_frame": round(1e6 * (ana - dec) / decoded, 1),
                "pair_ratio_min": round(ratios[0], 3),
                "pair_ratio_max": round(ratios[-1], 3),
                "within_target": ana / dec <= TARGET_RATIO,
                "decode_runs_s": [round(x, 5) for x in walls["decode"]],
                "analyze_runs_s": [round(x, 5) for x in walls["analyze"]],
                "profile_top": profile_top(functools.partial(analyze, path), profile) if profile else [],
            }
        )
    return out


# -- part 3 ------------------------------------------------------------------------------------


def part3(folder: Path, random_scenes: int, random_seeds: list[int]) -> dict[str, Any]:
    """Precision and recall of ``loop``, ``cuts`` and ``copy_of`` on the labelled corpus, and how right the ranges are;
    then ``copy_of`` on a random corpus of ``random_scenes`` scenes per seed (``qa_random_corpus.build``)."""
    t0 = time.perf_counter()
    items = qa_corpus.build(folder)
    made = time.perf_counter() - t0
    rows = []
    fingerprints: dict[str, FingerprintLike] = {}
    for item in items:
        analysis = analyze(item.path)
        fp = fingerprint_of(analysis)
        if fp is not None:
            fingerprints[item.name] = fp
        named = {f.check: f for f in check(analysis, None)}
        loop_f, cuts_f = named["loop"], named["cuts"]
        cut_times = [float(x) for x in cuts_f.measured] if isinstance(cuts_f.measured, list) else []
        truth_times = [b / item.fps for b in item.cut_frames]
        rows.append(
            {
                "name": item.name,
                "tags": list(item.tags),
                "frames": analysis.frames,
                "loop_true": item.loop,
                "loop_found": not loop_f.passed,
                "loop_ranges": loop_f.measured,
                "loop_period_true": item.loop_period_s,
                "cuts_true": item.cuts,
                "cuts_found": not cuts_f.passed,
                "cut_times": cut_times,
                "cut_times_true": [round(t, 3) for t in truth_times],
                "cut_times_match": len(cut_times) == len(truth_times)
                and all(abs(a - b) <= 1.5 / item.fps for a, b in zip(cut_times, truth_times, strict=True)),
            }
        )
    classes = {}
    for what in ("loop", "cuts"):
        tp = sum(1 for r in rows if r[f"{what}_true"] and r[f"{what}_found"])
        fp = sum(1 for r in rows if not r[f"{what}_true"] and r[f"{what}_found"])
        fn = sum(1 for r in rows if r[f"{what}_true"] and not r[f"{what}_found"])
        pr = qa_copy_scores.precision_recall(tp, fp, fn)
        classes[what] = {
            "positives": tp + fn,
            "negatives": len(rows) - tp - fn,
            **pr,
            "met": pr["precision"] >= TARGET_PR and pr["recall"] >= TARGET_PR,
        }
    missing = [it.name for it in items if it.name not in fingerprints]
    printed = [it for it in items if it.name in fingerprints]
    held_out = []
    for seed in random_seeds if random_scenes else []:
        t1 = time.perf_counter()
        extra = qa_random_corpus.build(folder / f"random{seed}", scenes=random_scenes, seed=seed)
        prints = {it.name: fp for it in extra if (fp := fingerprint_of(analyze(it.path))) is not None}
        part = copy_part(
            [it for it in extra if it.name in prints], prints, [it.name for it in extra if it.name not in prints]
        )
        held_out.append(part | {"scenes": random_scenes, "seed": seed, "seconds": round(time.perf_counter() - t1, 1)})
    return {
        "files": len(rows),
        "make_s": round(made, 2),
        "classes": classes,
        "rows": rows,
        "copies": copy_part(printed, fingerprints, missing),
        "copies_random": held_out,
        "copies_random_total": _total([h["pair_scores"]["copy"] for h in held_out]) if held_out else None,
    }


def _total(scores: list[dict[str, Any]]) -> dict[str, Any]:
    """Precision and recall over several corpora (their counts summed)."""
    tp, fp, fn = (sum(s[k] for s in scores) for k in ("tp", "fp", "fn"))
    return {"corpora": len(scores), "positives": tp + fn, **qa_copy_scores.precision_recall(tp, fp, fn)}


def copy_part(
    items: list[qa_corpus.Item], fingerprints: dict[str, FingerprintLike], missing: list[str]
) -> dict[str, Any]:
    """``copy_of`` on the corpus: per relation over every ordered pair, per file in service order, ranges, negatives."""
    pairs = qa_copy_scores.pairs(items, fingerprints)
    arrivals = qa_copy_scores.in_service_order(items, fingerprints)
    scores = qa_copy_scores.scores(pairs)
    for v in scores.values():
        v["met"] = v["precision"] >= TARGET_PR and v["recall"] >= TARGET_PR
    inside = [p for p in pairs if not p.beyond]
    agreed = [p for p in inside if p.truth is not None and p.true_relation == p.found_relation]
    errors = [e for p in agreed if (e := p.range_error_s) is not None]
    tags = {it.name: it.tags for it in items}
    groups = ("same_scene", "short_opening", "near_static", "low_motion", "clean")
    negatives = {
        g: {
            "pairs": sum(1 for p in inside if p.truth is None and g in tags[p.query]),
            "flagged": sum(1 for p in inside if p.truth is None and p.found is not None and g in tags[p.query]),
        }
        for g in groups
    }

    def show(p: qa_copy_scores.Pair) -> dict[str, Any]:
        return {
            "query": p.query,
            "other": p.other,
            "true": p.true_relation,
            "true_ranges": [list(map(list, s)) for s in p.truth.stretches] if p.truth else None,
            "found": p.found.describe() if p.found else None,
        }

    return {
        "order": [it.name for it in items],
        "no_fingerprint": missing,
        "pairs": len(inside),
        "pair_scores": scores,
        "service_order": qa_copy_scores.arrival_scores(arrivals),
        "ranges": {
            "agreed": len(agreed),
            "within_tolerance": sum(e <= qa_copy_scores.TOLERANCE_S for e in errors),
            "tolerance_s": qa_copy_scores.TOLERANCE_S,
            "max_error_s": round(max(errors, default=0.0), 3),
            "occurrences_right": sum(bool(p.occurrences_right) for p in agreed),
        },
        "negatives": negatives,
        "largest_range_errors": [
            {**show(p), "error_s": round(p.range_error_s or 0.0, 3)}
            for p in sorted(agreed, key=lambda p: -(p.range_error_s or 0.0))[:3]
        ],
        "occurrences_wrong": [
            {**show(p), "true_occurrences": p.truth.occurrences if p.truth else None}
            for p in agreed
            if p.occurrences_right is False
        ],
        "wrong": [show(p) for p in inside if p.true_relation != p.found_relation or p.ranges_right is False],
        "beyond_claim": [{**show(p), "right": p.true_relation == p.found_relation} for p in pairs if p.beyond],
        "missed_in_service_order": [a.name for a in arrivals if a.is_copy and not a.flagged],
        "flagged_in_service_order": [
            {"name": a.name, "found": [m.describe() for m in a.matches[:3]]}
            for a in arrivals
            if a.flagged and not a.is_copy
        ],
    }


def print_part3(p3: dict[str, Any]) -> None:
    table = Table(title=f"part 3 - loops and cuts on the labelled corpus ({p3['files']} files)")
    for col in ("class", "positives", "negatives", "tp", "fp", "fn", "precision", "recall", f"≥ {TARGET_PR}"):
        table.add_column(col, justify="right")
    for what, c in p3["classes"].items():
        table.add_row(
            what,
            *(str(c[k]) for k in ("positives", "negatives", "tp", "fp", "fn", "precision", "recall")),
            "yes" if c["met"] else "no",
        )
    console.print(table)
    files = Table(title="part 3 - per file")
    for col in ("file", "loop (truth/found)", "loop ranges", "cuts (truth/found)", "cut times", "times right"):
        files.add_column(col)
    for r in p3["rows"]:
        files.add_row(
            r["name"],
            f"{r['loop_true']}/{r['loop_found']}",
            ", ".join(r["loop_ranges"] or []) if isinstance(r["loop_ranges"], list) else "",
            f"{r['cuts_true']}/{r['cuts_found']}",
            ", ".join(f"{t:g}" for t in r["cut_times"]),
            "" if not r["cuts_true"] else str(r["cut_times_match"]),
        )
    console.print(files)
    print_copies(p3["copies"])
    for held in p3["copies_random"]:
        print_copies(held, f"a random corpus ({held['scenes']} scenes, seed {held['seed']})")
    total = p3["copies_random_total"]
    if total and total["corpora"] > 1:
        console.print(
            f"random corpora together ({total['corpora']}): copy precision {total['precision']}, recall "
            f"{total['recall']} ({total['tp']} tp, {total['fp']} fp, {total['fn']} fn of {total['positives']} positives)"
        )


def print_copies(c: dict[str, Any], what: str = "the labelled corpus") -> None:
    table = Table(
        title=f"part 3 - copy_of on {what}: {c['pairs']} ordered pairs of {len(c['order'])} files (audit's way: all held)",
        caption="copy = shares picture (any relation); a pair with the wrong relation is a miss of its true one "
        "and a false find of the one reported",
        caption_justify="left",
    )
    for col in ("relation", "positives", "tp", "fp", "fn", "precision", "recall", f"≥ {TARGET_PR}"):
        table.add_column(col, justify="right")
    for rel, v in c["pair_scores"].items():
        table.add_row(
            rel,
            *(str(v[k]) for k in ("positives", "tp", "fp", "fn", "precision", "recall")),
            "yes" if v["met"] else "no",
        )
    s = c["service_order"]
    table.add_row(
        "copy of an earlier file (service order)",
        *(str(s[k]) for k in ("positives", "tp", "fp", "fn", "precision", "recall")),
        "yes" if s["precision"] >= TARGET_PR and s["recall"] >= TARGET_PR else "no",
    )
    console.print(table)
    r = c["ranges"]
    console.print(
        f"ranges: {r['within_tolerance']} of {r['agreed']} agreed pairs within ± {r['tolerance_s']} s of the truth "
        f"(largest error {r['max_error_s']} s); loop occurrences right in {r['occurrences_right']} of {r['agreed']}"
    )
    neg = ", ".join(f"{g} {v['flagged']}/{v['pairs']}" for g, v in c["negatives"].items())
    console.print(f"negative pairs flagged (by the query's tag): {neg}")
    for w in c["wrong"]:
        console.print(
            f"[red]wrong[/]: {w['query']} -> {w['other']}: true {w['true']} {w['true_ranges']}, found {w['found']}"
        )
    for w in c["occurrences_wrong"]:
        console.print(f"occurrences: {w['query']} -> {w['other']}: true ×{w['true_occurrences']}, found {w['found']}")
    for b in c["beyond_claim"]:
        console.print(f"beyond the claim: {b['query']} -> {b['other']}: true {b['true']}, found {b['found']}")


# -- part 2 ------------------------------------------------------------------------------------


def cli_command(folder: Path, out: Path) -> tuple[list[str], str]:
    """``python -m worldmill.cli audit`` if registered, else the same typer function via ``python -c``."""
    py = sys.executable
    probe = subprocess.run(
        [py, "-m", "worldmill.cli", "audit", "--help"], cwd=REPO, capture_output=True, text=True, check=False
    )
    tail = [str(folder), "--json", str(out / "cli.json"), "--html", str(out / "cli.html")]
    if probe.returncode == 0:
        return [py, "-m", "worldmill.cli", "audit", *tail], "python -m worldmill.cli audit"
    code = "import typer; from worldmill.qa.cli import audit; typer.run(audit)"
    return [
        py,
        "-c",
        code,
        *tail,
    ], "python -c 'typer.run(worldmill.qa.cli.audit)' (audit not registered in worldmill.cli)"


def ours_in_process(folder: Path, out: Path) -> dict[str, Any]:
    """The CLI function ``audit`` called directly, its terminal output discarded; reads back its JSON report."""
    report = out / "inproc.json"
    saved = qa_cli.console, qa_cli.err
    qa_cli.console = qa_cli.err = Console(file=io.StringIO(), width=120)
    code = 0
    try:
        qa_cli.audit(str(folder), manifest=None, json_out=report, html_out=out / "inproc.html", fps=24.0)
    except typer.Exit as exc:
        code = exc.exit_code
    finally:
        qa_cli.console, qa_cli.err = saved
    return {"exit_code": code, "report": json.loads(report.read_text(encoding="utf-8"))}


def ours_subprocess(cmd: list[str]) -> dict[str, Any]:
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return {"exit_code": proc.returncode}


def seeds000(paths: list[Path], shots: Path) -> dict[str, Any]:
    """The security-camera team's audit by hand (docs/background.md#security-cameras), per file: ffprobe (duration), md5sum, three ffmpeg screenshots. Sequential."""
    durations: dict[str, float] = {}
    md5: dict[str, str] = {}
    written = 0
    for p in paths:
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(p)],
            capture_output=True,
            text=True,
            check=True,
        )
        d = float(probe.stdout.strip())
        durations[p.name] = d
        md5[p.name] = subprocess.run(["md5sum", str(p)], capture_output=True, text=True, check=True).stdout.split()[0]
        for k, t in enumerate((0.5, d / 2, d - 0.5), start=1):
            jpg = shots / f"{p.stem}_frame{k}.jpg"
            subprocess.run(
                ["ffmpeg", "-ss", f"{t:.3f}", "-i", str(p), "-frames:v", "1", "-y", str(jpg)],
                capture_output=True,
                check=True,
            )
            written += jpg.stat().st_size > 0
    return {"durations": durations, "duplicates": len(md5) - len(set(md5.values())), "screenshots": written}


def part2(paths: list[Path], folder: Path, work: Path, repeats: int, have_ffmpeg: bool) -> dict[str, Any]:
    cmd, cmd_label = cli_command(folder, work)
    shots = work / "shots"
    shots.mkdir(exist_ok=True)
    variants: dict[str, Callable[[], Any]] = {
        "ours": lambda: ours_in_process(folder, work),
        "ours_cli": lambda: ours_subprocess(cmd),
    }
    if have_ffmpeg:
        variants["seeds000"] = lambda: seeds000(paths, shots)
    last: dict[str, Any] = {name: fn() for name, fn in variants.items()}  # warm-up, untimed
    walls: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            wall, _cpu, last[name] = timed(variants[name])
            walls[name].append(wall)
    startup = [
        timed(lambda: subprocess.run([sys.executable, "-c", "import worldmill.qa.cli"], cwd=REPO, check=True))[0]
        for _ in range(3)
    ]
    report = last["ours"]["report"]
    files = report["files"]
    checks = sorted({f["check"] for r in files for f in r["findings"]})
    per_file = [r["seconds"] for r in files]
    n = len(paths)
    out: dict[str, Any] = {
        "files": n,
        "frames_total": sum(r["measured"]["frames"] for r in files),
        "bytes_total": sum(p.stat().st_size for p in paths),
        "cli_command": cmd_label,
        "cli_import_s": round(median(startup), 3),
        "ours_report": {
            "exit_code": last["ours"]["exit_code"],
            "ok": report["ok"],
            "totals": report["totals"],
            "checks_run": checks,
            "analyze_check_sum_s": round(sum(per_file), 3),
        },
        "variants": {},
        "seeds000_skipped": None if have_ffmpeg else "ffmpeg/ffprobe not on PATH: seeds/000 baseline not run",
    }
    for name, xs in walls.items():
        m = median(xs)
        out["variants"][name] = {
            "wall_s": round(m, 3),
            "files_per_s": round(n / m, 2),
            "ms_per_file": round(1000 * m / n, 1),
            "processes": {"ours": 0, "ours_cli": 1, "seeds000": SEEDS_PROCESSES_PER_FILE * n}[name],
            "runs_s": [round(x, 3) for x in xs],
        }
    if have_ffmpeg:
        seeds = last["seeds000"]
        out["seeds000_result"] = {"duplicates": seeds["duplicates"], "screenshots": seeds["screenshots"]}
        base = out["variants"]["seeds000"]["wall_s"]
        for name in ("ours", "ours_cli"):
            out["variants"][name]["speedup_vs_seeds000"] = round(base / out["variants"][name]["wall_s"], 2)
    return out


# -- output ------------------------------------------------------------------------------------


def print_part1(rows: list[dict[str, Any]], repeats: int) -> None:
    table = Table(
        title=f"Part 1 - analyze() vs a plain PyAV decode of every frame (median of {repeats}, interleaved)",
        title_justify="left",
        caption="ratio (wall) = median analyze / median decode (the target); CPU: process CPU seconds, hashing "
        "thread included; best: fastest analyze / fastest decode; pairs: per-round ratios; +µs/frame: wall",
        caption_justify="left",
    )
    for col in (
        "video",
        "frames",
        "KiB",
        "decode ms",
        "analyze ms",
        "ratio (wall)",
        "ratio (CPU)",
        "ratio (best)",
        "pairs min-max",
        "+µs/frame",
        f"≤ {TARGET_RATIO}",
    ):
        table.add_column(col, justify="left" if col == "video" else "right")
    for r in rows:
        ok = "[green]yes[/]" if r["within_target"] else "[red]no[/]"
        table.add_row(
            f"{r['name']} {r['width']}x{r['height']}@{r['fps']:g}",
            str(r["frames"]),
            f"{r['bytes'] / 1024:.0f}",
            f"{1000 * r['decode_s']:.1f}",
            f"{1000 * r['analyze_s']:.1f}",
            f"{r['ratio']:.2f}",
            f"{r['ratio_cpu']:.2f}",
            f"{r['ratio_best']:.2f}",
            f"{r['pair_ratio_min']:.2f}-{r['pair_ratio_max']:.2f}",
            f"{r['analyze_overhead_us_per_frame']:.0f}",
            ok,
        )
    console.print(table)
    for r in rows:
        if not r["profile_top"]:
            continue
        prof = Table(
            title=f"where analyze() spends its time: {r['name']} (one cProfile run, own time)", title_justify="left"
        )
        for col in ("function", "calls", "own ms", "share"):
            prof.add_column(col, justify="left" if col == "function" else "right")
        for p in r["profile_top"]:
            prof.add_row(p["function"], str(p["calls"]), f"{1000 * p['own_s']:.1f}", f"{100 * p['own_share']:.0f} %")
        console.print(prof)


def print_part2(p2: dict[str, Any], repeats: int) -> None:
    title = (
        f"Part 2 - audit of {p2['files']} files ({p2['frames_total']} frames, {p2['bytes_total'] / 1e6:.1f} MB)"
        f" vs seeds/000 (median of {repeats}, interleaved)"
    )
    table = Table(title=title, title_justify="left")
    for col in ("approach", "wall s", "files/s", "ms/file", "processes", "vs seeds/000", "checks"):
        table.add_column(col, justify="left" if col in ("approach", "checks") else "right")
    labels = {
        "ours": "ours: audit() in-process",
        "ours_cli": "ours: CLI subprocess",
        "seeds000": "seeds/000: ffprobe+md5sum+3×ffmpeg",
    }
    for name, v in p2["variants"].items():
        what = f"{len(p2['ours_report']['checks_run'])} checks" if name != "seeds000" else "3 (by eye)"
        speed = v.get("speedup_vs_seeds000")
        table.add_row(
            labels[name],
            f"{v['wall_s']:.2f}",
            f"{v['files_per_s']:.1f}",
            f"{v['ms_per_file']:.0f}",
            str(v["processes"]),
            "-" if speed is None else f"{speed:.2f}×",
            what,
        )
    if p2["seeds000_skipped"]:
        table.add_row(labels["seeds000"], "-", "-", "-", "-", "-", f"[yellow]skipped: {p2['seeds000_skipped']}[/]")
    console.print(table)
    checks = Table(title="what each approach checks", title_justify="left")
    checks.add_column("ours (audit)")
    checks.add_column("seeds/000")
    for i in range(max(len(OUR_CHECKS), len(SEEDS_CHECKS))):
        checks.add_row(OUR_CHECKS[i] if i < len(OUR_CHECKS) else "", SEEDS_CHECKS[i] if i < len(SEEDS_CHECKS) else "")
    console.print(checks)
    rep = p2["ours_report"]
    console.print(
        f"check names in our report: {', '.join(rep['checks_run'])}; verdict ok={rep['ok']} "
        f"(exit {rep['exit_code']}); analyze+check per file sum {rep['analyze_check_sum_s']:.2f} s; "
        f"CLI: {p2['cli_command']}; `import worldmill.qa.cli` in a fresh interpreter {p2['cli_import_s']:.2f} s"
    )


def make_inputs(args: argparse.Namespace, tmp: Path) -> tuple[list[dict[str, Any]], Path, list[Path]]:
    """Part 1's videos and part 2's folder of ``<id>_<duration>s.mp4`` files (distinct content each)."""
    videos: list[dict[str, Any]] = [
        {"name": "small", "width": args.width, "height": args.height, "fps": args.fps, "count": args.frames}
    ]
    if args.big_frames:
        videos.append(
            {
                "name": "large",
                "width": args.big_width,
                "height": args.big_height,
                "fps": args.big_fps,
                "count": args.big_frames,
            }
        )
    for seed, v in enumerate(videos, start=1):
        v["path"] = make_video(
            tmp / f"part1_{v['name']}.mp4",
            width=v["width"],
            height=v["height"],
            count=v["count"],
            fps=v["fps"],
            seed=seed,
            encoder=args.encoder,
        )
    folder = tmp / "delivered"
    durations = [float(d) for d in args.durations.split(",") if d.strip()]
    paths = []
    for i in range(args.files):
        d = durations[i % len(durations)]
        name = f"C{i // len(durations) + 1:02d}_{d:g}s.mp4"
        paths.append(
            make_video(
                folder / name,
                width=args.width,
                height=args.height,
                count=round(d * args.fps),
                fps=args.fps,
                seed=100 + i,
                encoder=args.encoder,
            )
        )
    return videos, folder, paths


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 (one flat script)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--frames", type=int, default=720, help="part 1 small video: frames (default 720)")
    add("--width", type=int, default=320, help="part 1 small video and part 2 folder: width (default 320)")
    add("--height", type=int, default=192, help="part 1 small video and part 2 folder: height (default 192)")
    add("--fps", type=float, default=24.0, help="part 1 small video and part 2 folder: fps (default 24)")
    add("--big-frames", type=int, default=93, help="part 1 large video: frames (default 93; 0 skips it)")
    add("--big-width", type=int, default=1280, help="part 1 large video: width (default 1280)")
    add("--big-height", type=int, default=704, help="part 1 large video: height (default 704)")
    add("--big-fps", type=float, default=16.0, help="part 1 large video: fps (default 16)")
    add("--repeats", type=int, default=15, help="part 1 interleaved rounds; medians (default 15)")
    add("--files", type=int, default=12, help="part 2 folder size (default 12; 0 skips part 2)")
    add("--durations", default="5,10,30", help="part 2 durations in seconds, cycled per file (default 5,10,30)")
    add("--audit-repeats", type=int, default=5, help="part 2 interleaved rounds; medians (default 5)")
    add(
        "--encoder",
        choices=("production", "test"),
        default="production",
        help="production: gpu_runner encode_mp4 (crf 20 veryfast, smooth panning texture); "
        "test: tests/helpers write_video (ultrafast crf 30, random texture)",
    )
    add("--random-scenes", type=int, default=20, help="part 3: scenes per random corpus (default 20; 0: none)")
    add("--random-seeds", default="11", help="part 3: seeds of the random corpora, comma-separated (default 11)")
    add("--held", type=int, default=10_000, help="part 1: fingerprints held by the copy_of index (default 10000)")
    add("--profile", type=int, default=8, help="functions listed from one cProfile run of analyze() (0: none)")
    add("--keep", action="store_true", help="keep the temporary folder (printed)")
    add("--strict", action="store_true", help="exit 1 when a part 1 ratio is over the target")
    add("--no-structure", action="store_true", help="skip part 3 (loops, cuts and copies on the labelled corpus)")
    args = parser.parse_args(argv)

    have_ffmpeg = bool(shutil.which("ffmpeg") and shutil.which("ffprobe") and shutil.which("md5sum"))
    if not have_ffmpeg:
        console.print(
            "[yellow]note:[/] ffmpeg/ffprobe/md5sum not on PATH: the seeds/000 baseline of part 2 is "
            "skipped (install: apt-get install -y --no-install-recommends ffmpeg)"
        )
    tmp = Path(tempfile.mkdtemp(prefix="wm-bench-qa-"))
    started = time.perf_counter()
    try:
        t0 = time.perf_counter()
        videos, folder, paths = make_inputs(args, tmp)
        make_s = time.perf_counter() - t0

        p1 = part1(videos, args.repeats, args.profile, args.held)
        print_part1(p1, args.repeats)
        p2 = None
        if args.files:
            p2 = part2(paths, folder, tmp, args.audit_repeats, have_ffmpeg)
            print_part2(p2, args.audit_repeats)
        seeds = [int(x) for x in args.random_seeds.split(",") if x.strip()]
        p3 = None if args.no_structure else part3(tmp / "corpus", args.random_scenes, seeds)
        if p3 is not None:
            print_part3(p3)
        verdict = all(r["within_target"] for r in p1)
        console.print(
            ("[green]" if verdict else "[red]")
            + f"target analyze/decode ≤ {TARGET_RATIO}: "
            + ", ".join(f"{r['name']} {r['ratio']:.2f}" for r in p1)
            + (" - holds[/]" if verdict else " - missed[/]")
        )
    finally:
        if args.keep:
            console.print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "pyav": av.__version__,
        "libavcodec": av.library_versions.get("libavcodec"),
        "cpus": os.cpu_count(),
        "ffmpeg_cli": None,
    }
    if have_ffmpeg:
        with contextlib.suppress(OSError):
            out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=False).stdout
            env["ffmpeg_cli"] = out.split("\n", 1)[0]
    report = {
        "bench": "qa",
        "target_ratio": TARGET_RATIO,
        "target_met": verdict,
        "part1": [dict(r) for r in p1],
        "part2": p2,
        "qa_cost_decodes": {r["name"]: r["ratio"] for r in p1},
        "qa_cost_target": TARGET_QA_COST,
        "qa_cost_met": all(r["ratio"] <= TARGET_QA_COST for r in p1),
        "part3": p3,
        "structure_pr": None if p3 is None else {k: [v["precision"], v["recall"]] for k, v in p3["classes"].items()},
        "structure_met": None if p3 is None else all(v["met"] for v in p3["classes"].values()),
        "copy_pr": None
        if p3 is None
        else {k: [v["precision"], v["recall"]] for k, v in p3["copies"]["pair_scores"].items()},
        "copy_service_order_pr": None
        if p3 is None
        else [p3["copies"]["service_order"]["precision"], p3["copies"]["service_order"]["recall"]],
        "copy_ranges_right": None
        if p3 is None
        else [p3["copies"]["ranges"]["within_tolerance"], p3["copies"]["ranges"]["agreed"]],
        "copy_met": None if p3 is None else all(v["met"] for v in p3["copies"]["pair_scores"].values()),
        "copy_random_pr": None
        if p3 is None or not p3["copies_random"]
        else [p3["copies_random_total"]["precision"], p3["copies_random_total"]["recall"]],
        "ffmpeg_available": have_ffmpeg,
        "seeds000_skipped": None if have_ffmpeg else "ffmpeg/ffprobe not on PATH",
        "config": dict(vars(args)),
        "make_videos_s": round(make_s, 2),
        "total_s": round(time.perf_counter() - started, 1),
        "env": env,
    }
    print(json.dumps(report, separators=(",", ":"), default=str))
    return 1 if args.strict and not verdict else 0


if __name__ == "__main__":
    raise SystemExit(main())
