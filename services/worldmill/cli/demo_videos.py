"""The demo's generation step: every spec of the manifest becomes a video, checked independently.

Each video is downloaded again and probed (frames counted by demuxing, fps from the container),
so the summary states what the files *are*, not what the pipeline believes it made.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from worldmill.contracts.generation import RunRecord
from worldmill.generate.cli import request_generation, wait_for_runs
from worldmill.prompt.identity import duration_token
from worldmill.runtime.client import ServiceClient
from worldmill.runtime.media import probe
from worldmill.runtime.stack import StackState
from worldmill.runtime.store import ObjectStore

URL_VALID = timedelta(hours=2)


async def _check(store: ObjectStore, runs: list[RunRecord], specs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    videos = []
    with tempfile.TemporaryDirectory(prefix="wm-demo-") as tmp:
        for run in runs:
            spec = specs.get(run.prompt_id, {})
            entry: dict[str, Any] = {
                "prompt_id": run.prompt_id,
                "series": spec.get("series"),
                "scenario": spec.get("scenario"),
                "duration_s": spec.get("duration_s"),
                "variant": spec.get("variant"),
                "seed": spec.get("seed"),
                "run_id": run.run_id,
                "asset_id": run.asset_id,
                "state": run.state,
                "expected_frames": run.plan.expected.frames,
                "expected_fps": run.plan.expected.fps,
            }
            if run.video is not None:
                path = Path(tmp) / f"{run.run_id}.mp4"
                await store.download(run.video.bucket, run.video.key, path)
                info = await asyncio.to_thread(probe, path)
                path.unlink()
                entry.update(
                    {
                        "frames": info.frames,
                        "fps": float(info.fps),
                        "duration": round(info.duration_s, 6),
                        "resolution": f"{info.width}x{info.height}",
                        "sha256": run.video.sha256,
                        "bytes": run.video.size,
                        "bucket": run.video.bucket,
                        "key": run.video.key,
                        "presigned_url": store.presigned_url(run.video.bucket, run.video.key, expires=URL_VALID),
                        "provenance_key": run.provenance_ref.key if run.provenance_ref else None,
                        "exact": info.frames == run.plan.expected.frames and float(info.fps) == run.plan.expected.fps,
                    }
                )
            else:
                entry.update({"exact": False, "error": run.error})
            videos.append(entry)
    return videos


def generate_videos(state: StackState, specs: list[dict[str, Any]], *, timeout_s: float = 900.0) -> dict[str, Any]:
    """Ask the generate service for every spec, wait, then download and probe every video."""
    if "generate" not in state.services:
        return {"ok": False, "error": "the generate service is not running"}
    by_id = {s["prompt_id"]: s for s in specs}
    with ServiceClient("generate", state.services["generate"], state.api_token) as client:
        accepted = request_generation(client, list(by_id), max_attempts=2)
        runs = wait_for_runs(client, accepted.request_id, len(accepted.runs), timeout_s=timeout_s)
    store = ObjectStore(state.s3_endpoint, state.s3_access_key, state.s3_secret_key)
    videos = asyncio.run(_check(store, runs, by_id))
    hashes = [v["sha256"] for v in videos if v.get("sha256")]
    return {
        "ok": len(videos) == len(specs) and all(v["exact"] for v in videos) and len(set(hashes)) == len(hashes),
        "request_id": accepted.request_id,
        "videos": videos,
        "distinct_files": len(set(hashes)),
        "url_valid_hours": URL_VALID.total_seconds() / 3600,
    }


def wait_for_verdicts(state: StackState, result: dict[str, Any], *, timeout_s: float = 300.0) -> None:
    """Attach each video's QA verdict (the qa service checks every video.ready on its own)."""
    if "qa" not in state.services or "videos" not in result:
        result["qa"] = {"ok": False, "error": "the qa service is not running"}
        return
    pending = {v["run_id"]: v for v in result["videos"] if v.get("asset_id")}
    deadline = time.monotonic() + timeout_s
    with ServiceClient("qa", state.services["qa"], state.api_token) as client:
        while pending and time.monotonic() < deadline:
            for run_id, video in list(pending.items()):
                resp = client.request("GET", f"/qa/{video['asset_id']}")
                if resp.status_code == 200:
                    body = resp.json()
                    failed = [f["check"] for f in body["findings"] if not f["passed"] and f["severity"] == "error"]
                    video["qa"] = {
                        "passed": not failed,
                        "failed_checks": failed,
                        "checks": len(body["findings"]),
                        "screenshots": [s["key"] for s in body["screenshots"]],
                        "contact_sheet": (body.get("contact_sheet") or {}).get("key"),
                    }
                    del pending[run_id]
            time.sleep(0.5)
    verdicts = [v["qa"] for v in result["videos"] if "qa" in v]
    result["qa"] = {
        "ok": not pending and len(verdicts) == len(result["videos"]) and all(q["passed"] for q in verdicts),
        "checked": len(verdicts),
        "passed": sum(q["passed"] for q in verdicts),
        "missing": len(pending),
    }


def print_videos(result: dict[str, Any], console: Console) -> None:
    """Videos per series and duration, with what the files really contain."""
    if "videos" not in result:
        console.print(f"[red]generation: {result.get('error')}[/]")
        return
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for v in result["videos"]:
        groups.setdefault((v["series"] or "-", duration_token(v["duration_s"] or 0)), []).append(v)
    table = Table(title="videos (downloaded and probed; QA verdicts from the qa service)")
    for col in ("series", "duration", "videos", "frames", "fps", "exact", "QA", "where"):
        table.add_column(col)
    for (series, dur), items in sorted(groups.items(), key=lambda kv: (kv[0][0], float(kv[0][1][:-1]))):
        frames = sorted({str(v.get("frames")) for v in items})
        fps = sorted({f"{v.get('fps', 0):g}" for v in items})
        exact = all(v["exact"] for v in items)
        where = items[0].get("key", "").rsplit("/", 2)[0] + "/…" if items[0].get("key") else items[0].get("error", "")
        verdicts = [v.get("qa") for v in items]
        if all(q and q["passed"] for q in verdicts):
            qa_text = "[green]passed[/]"
        else:
            failed = sorted({c for q in verdicts if q for c in q["failed_checks"]}) or ["no verdict"]
            qa_text = "[red]" + ",".join(failed) + "[/]"
        exact_text = "[green]yes[/]" if exact else "[red]NO[/]"
        table.add_row(series, dur, str(len(items)), ",".join(frames), ",".join(fps), exact_text, qa_text, where)
    console.print(table)
    console.print(
        f"{result['distinct_files']} distinct files (sha256) for {len(result['videos'])} videos; presigned "
        f"URLs valid {result['url_valid_hours']:g} h are in the JSON summary."
    )
    qa = result.get("qa", {})
    if "checked" in qa:
        console.print(
            f"QA: {qa['passed']} of {qa['checked']} videos passed every check; {qa['missing']} without verdict."
        )
