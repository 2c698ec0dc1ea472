"""What a deletion removes (pure): the lineage of the assets, runs and specs asked for.

* an **asset**: its video and every object of its attempt (``runs/<run>/attempt-<n>/``: video,
  provenance) and of its QA (``qa/<asset>/``: screenshots, contact sheet);
* a **run**: every asset it made, and its whole folder ``runs/<run>/``;
* a **spec** (prompt id): every run of it and every asset made from it; the spec itself stays (it
  belongs to its manifest), so the manifest's report lists it as missing again.

An asset that an export holds (lineage edge asset → dataset) blocks the deletion unless it is
forced. The service gathers the rows (``queries``), asks this module for the plan, lists the
prefixes, deletes the objects and publishes ``asset.deleted`` / ``run.deleted``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from worldmill.catalog.verify import expected_objects
from worldmill.contracts.catalog import DeletedAsset, DeletionPlan, DeletionRequest
from worldmill.contracts.keys import ARTIFACTS_BUCKET, run_prefix

Row = Mapping[str, Any]


def known_objects(row: Row) -> list[str]:
    """The objects an asset row names: its video, contact sheet and screenshots (as s3:// URIs)."""
    return list(dict.fromkeys(e.uri for e in expected_objects([row])))


def asset_prefixes(row: Row) -> list[tuple[str, str]]:
    """(bucket, prefix) folders that hold only this asset's objects."""
    out = [(ARTIFACTS_BUCKET, f"qa/{row['asset_id']}/")]
    if row.get("run_id") and row.get("attempt"):
        out.append((ARTIFACTS_BUCKET, f"{run_prefix(row['run_id'], int(row['attempt']))}/"))
    return out


def run_folder(run_id: str) -> tuple[str, str]:
    """(bucket, prefix) of every attempt of a run."""
    return ARTIFACTS_BUCKET, f"runs/{run_id}/"


def plan_deletion(
    request: DeletionRequest,
    *,
    assets: Sequence[Row],
    runs: Sequence[Row],
    prompts_known: Iterable[str],
    exports: Mapping[str, Sequence[str]],
) -> DeletionPlan:
    """The plan for ``request`` from the rows the lineage reaches.

    ``assets`` are the rows of the assets named, of the runs named and of the specs named; ``runs``
    the rows of the runs named and of the specs' runs; ``exports`` the exports holding each asset.
    """
    found_assets = {str(a["asset_id"]) for a in assets}
    found_runs = {str(r["run_id"]) for r in runs}
    known = set(prompts_known) | {str(r["prompt_id"]) for r in runs if r.get("prompt_id")}
    unknown = [
        *(f"asset {a}" for a in request.assets if a not in found_assets),
        *(f"run {r}" for r in request.runs if r not in found_runs),
        *(f"prompt {p}" for p in request.prompts if p not in known),
    ]
    deleted: dict[str, DeletedAsset] = {}
    for row in assets:
        asset_id = str(row["asset_id"])
        if asset_id in deleted:
            continue
        deleted[asset_id] = DeletedAsset(
            asset_id=asset_id,
            run_id=row.get("run_id"),
            prompt_id=row.get("prompt_id"),
            scenario=row.get("scenario"),
            qa_status=row.get("qa_status") or "pending",
            objects=tuple(known_objects(row)),
            exports=tuple(exports.get(asset_id, ())),
        )
    holding = sorted({e for a in deleted.values() for e in a.exports})
    return DeletionPlan(
        assets=tuple(deleted.values()),
        runs=tuple(dict.fromkeys(str(r["run_id"]) for r in runs)),
        prompts=tuple(p for p in request.prompts if p in known),
        unknown=tuple(unknown),
        exports=tuple(holding),
        blocked=bool(holding) and not request.force,
    )
