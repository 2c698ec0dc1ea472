"""A manifest's status report (``generation_status.json``): pure, from the catalog's rows.

Each spec of the manifest (its latest version) is in exactly one state, the first that applies:
``passed`` (a video of it passed QA), ``in_flight`` (a run of it is queued or running),
``unverified`` (a video exists and awaits its verdict), ``failed`` (videos exist and every one
failed), ``missing`` (nothing was made yet).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from worldmill.contracts.catalog import GenerationStatus, StatusItem, StatusState
from worldmill.contracts.generation import ACTIVE_STATES

STATES: tuple[StatusState, ...] = ("passed", "in_flight", "unverified", "failed", "missing")

#: A row as the queries return it (SQLAlchemy's RowMapping) or a plain dict in tests.
Row = Mapping[Any, Any]


def spec_state(assets: Sequence[Row], runs: Sequence[Row]) -> StatusState:
    """The state of one spec from its videos and runs (see the module docstring for the order)."""
    statuses = {a["qa_status"] for a in assets}
    if "passed" in statuses:
        return "passed"
    if any(r["state"] in ACTIVE_STATES for r in runs):
        return "in_flight"
    if "pending" in statuses:
        return "unverified"
    if statuses:
        return "failed"
    return "missing"


def build_status(
    name: str,
    sha256: str | None,
    specs: Sequence[Row],
    assets: Sequence[Row],
    runs: Sequence[Row],
    *,
    now: datetime,
) -> GenerationStatus:
    """The report of manifest ``name``: one item per spec, counts overall and per series."""
    by_spec: dict[tuple[str, int], list[Row]] = {}
    for a in assets:
        if a.get("video") is not None:
            by_spec.setdefault((a["prompt_id"], a["prompt_version"]), []).append(a)
    runs_by_spec: dict[tuple[str, int], list[Row]] = {}
    for r in runs:
        runs_by_spec.setdefault((r["prompt_id"], r["prompt_version"]), []).append(r)
    items: list[StatusItem] = []
    for s in specs:
        key = (s["prompt_id"], s["version"])
        mine, my_runs = by_spec.get(key, []), runs_by_spec.get(key, [])
        failed = sorted({c for a in mine if a["qa_status"] == "failed" for c in (a.get("failed_checks") or [])})
        items.append(
            StatusItem(
                prompt_id=s["prompt_id"],
                version=s["version"],
                series=s["series"],
                scenario=s["scenario"],
                duration_s=s["duration_s"],
                variant=s["variant"],
                state=spec_state(mine, my_runs),
                assets=tuple(a["asset_id"] for a in mine),
                passed_assets=tuple(a["asset_id"] for a in mine if a["qa_status"] == "passed"),
                failed_checks=tuple(failed),
                run_state=my_runs[-1]["state"] if my_runs else None,
            )
        )
    counts = Counter(i.state for i in items)
    by_series: dict[str, dict[str, int]] = {}
    for i in items:
        series = by_series.setdefault(i.series or "-", dict.fromkeys(STATES, 0))
        series[i.state] += 1
    return GenerationStatus(
        manifest=name,
        manifest_sha256=sha256,
        generated_at=now,
        total=len(items),
        counts={state: counts.get(state, 0) for state in STATES},
        by_series=dict(sorted(by_series.items())),
        items=tuple(items),
        complete=bool(items) and counts.get("passed", 0) == len(items),
    )
