"""bench/throughput.py --quick: the whole path on real servers and service processes, 10 jobs.

Only the plumbing is asserted (every hop measured for every job, every figure present, every job in
the catalog exactly once, the last stdout line one JSON object), never a time or a rate.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "throughput.py"
HOPS = ("submit", "plan", "queue", "run", "ready", "qa", "catalog")
SERVICES = {"nats", "seaweedfs", "prompt", "generate", "qa", "catalog", "gpu-runner", "bench"}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.slow
def test_quick_run_follows_every_job_to_the_catalog_once() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--timeout-s", "240"],
        capture_output=True,
        text=True,
        timeout=290,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    report = json.loads(lines[-1])  # the last stdout line is the JSON; NaN never appears (strict JSON)
    text = "\n".join(lines[:-1])
    assert "submit → catalog row" in text and "bottleneck" in text  # the table came first

    cfg = report["config"]
    assert cfg["jobs"] == 10 and cfg["warmup_jobs"] == 2 and cfg["runners"] == 1
    once = report["exactly_once"]
    assert once["ok"] is True, once
    total = cfg["jobs"] + cfg["warmup_jobs"]
    assert once["catalog_assets"] == once["catalog_distinct_specs"] == once["specs_created"] == total
    assert once["specs_not_exactly_once"] == {} and once["catalog_specs_more_than_once"] == []
    assert once["catalog_pending"] == [] and once["duplicate_event_ids"] == 0
    assert once["generation_requested_events"] == 0  # auto_generate plans from prompt.created
    assert report["timed_out"] is False
    assert sum(report["qa_verdicts"].values()) == total
    events = report["events"]
    for kind in ("prompt.created", "job.completed", "video.ready"):
        assert events[kind] == total, (kind, events)
    assert events["run.updated"] >= total

    assert list(report["hops"]) == list(HOPS)
    for key, hop in report["hops"].items():
        assert hop["n"] == cfg["jobs"], key
        for figure in ("p50_ms", "p99_ms", "max_ms"):
            assert _number(hop[figure]) and hop[figure] >= 0, (key, figure)
        assert hop["p50_ms"] <= hop["p99_ms"] <= hop["max_ms"]
        assert isinstance(hop["p99_target_met"], bool)
    assert report["end_to_end"]["n"] == cfg["jobs"]

    t = report["throughput"]
    assert t["jobs"] == cfg["jobs"] and _number(t["jobs_per_s"]) and t["jobs_per_s"] > 0
    assert isinstance(t["target_met"], bool)
    cpu = report["cpu"]
    assert set(cpu["processes"]) == SERVICES
    for name, proc in cpu["processes"].items():
        assert _number(proc["cpu_s"]) and proc["cpu_s"] >= 0, name
    assert _number(cpu["pipeline_cpu_ms_per_job"]) and cpu["pipeline_cpu_ms_per_job"] > 0
    cal = report["calibration"]
    assert cal["jobs"] == 4 and cal["delivered_frames_per_job"] == 16  # 2 s at 8 fps
    assert cal["rendered_frames_per_job"] >= cal["delivered_frames_per_job"]
    assert set(report["breakdown"]) >= {"runner_engine_cpu_ms_per_job", "qa_decode_pass_cpu_ms_per_job"}
    b = report["bottleneck"]
    assert b["limit"] and b["summary"] and b["slowest_hop"] in HOPS
    assert b["process_most_cpu_per_job"] in SERVICES
    assert isinstance(report["targets_met"], bool)
