"""The demo's generation step: every spec of the manifest becomes a video, checked independently.

Each video is downloaded again and probed (frames counted by demuxing, fps from the container),
so the summary states what the files *are*, not what the pipeline believes it made.
"""

from __future__ import annotations

import asyncio
import tempfile
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


def print_videos(result: dict[str, Any], console: Console) -> None:
    """Videos per series and duration, with what the files really contain."""
    if "videos" not in result:
        console.print(f"[red]generation: {result.get('error')}[/]")
        return
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for v in result["videos"]:
        groups.setdefault((v["series"] or "-", duration_token(v["duration_s"] or 0)), []).append(v)
    table = Table(title="videos (downloaded and probed)")
    for col in ("series", "duration", "videos", "frames", "fps", "exact", "where"):
        table.add_column(col)
    for (series, dur), items in sorted(groups.items(), key=lambda kv: (kv[0][0], float(kv[0][1][:-1]))):
        frames = sorted({str(v.get("frames")) for v in items})
        fps = sorted({f"{v.get('fps', 0):g}" for v in items})
        exact = all(v["exact"] for v in items)
        where = items[0].get("key", "").rsplit("/", 2)[0] + "/…" if items[0].get("key") else items[0].get("error", "")
        table.add_row(
            series,
            dur,
            str(len(items)),
            ",".join(frames),
            ",".join(fps),
            "[green]yes[/]" if exact else "[red]NO[/]",
            where,
        )
    console.print(table)
    console.print(
        f"{result['distinct_files']} distinct files (sha256) for {len(result['videos'])} videos; presigned "
        f"URLs valid {result['url_valid_hours']:g} h are in the JSON summary."
    )
