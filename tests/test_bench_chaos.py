"""bench/chaos.py --quick: 20 jobs through the whole pipeline while each kind of process is SIGKILLed once.

Real servers (a 3-node nats-server cluster, SeaweedFS) and real service processes. Asserted: nothing
lost, duplicated, stuck or of the wrong frame count, by the bench's own counts (event log, S3 listing
decoded with PyAV, the catalog's database, WM_DLQ), and every fault kind happened. Never a time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "chaos.py"
KINDS = ("runner", "cpu-service", "nats-node", "object-store")


@pytest.mark.slow
def test_quick_chaos_loses_duplicates_and_strands_nothing() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=420,
        cwd=REPO,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-4000:]
    report = json.loads(lines[-1])  # the last stdout line is the JSON
    assert "per fault kind" in "\n".join(lines[:-1])  # the table came first

    totals = report["totals"]
    assert totals["jobs"] == totals["expected_specs"] == 20, totals
    assert totals["lost"] == 0, report["counts"]["lost"]
    assert totals["duplicated"] == 0, report["counts"]["duplicated"]
    assert totals["stuck"] == 0, (report["counts"]["stuck_runs"], report["counts"]["unverdicted_specs"])
    assert totals["wrong_frames"] == 0, report["counts"]["wrong_frames"]
    assert totals["submit_failed"] == 0
    counts = report["counts"]
    assert counts["catalog_assets"] == 20 and counts["catalog_assets_not_expected"] == []
    assert sum(counts["qa_verdicts"].values()) == 20
    assert counts["decoded_frames"].get("16", 0) >= 20  # every delivered video decoded: 2 s at 8 fps

    kinds = {f["kind"] for f in report["faults"]}
    assert kinds == set(KINDS), report["faults"]
    for fault in report["faults"]:
        assert fault["restart_error"] is None, fault
    assert all(report["per_kind"][k]["count"] >= 1 for k in KINDS)
    assert report["settled"] is True
    assert report["ok"] is True and done.returncode == 0, done.stderr[-4000:]
