"""The demo's catalog step: every video of the manifest catalogued, its report written, its dataset exported.

Waits until the catalog's status report says every spec of the manifest has a QA-passed video (the
catalog hears the verdicts asynchronously), writes ``generation_status.json`` into the data folder,
and exports the manifest's QA-passed videos as webdataset shards with ``worldmill export``'s own code.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from worldmill.catalog.cli import status_json, status_table
from worldmill.catalog.export.cli import export
from worldmill.catalog.export.write import write_atomic
from worldmill.contracts.catalog import GenerationStatus
from worldmill.runtime.client import ServiceClient
from worldmill.runtime.stack import StackState


def catalog_manifest(
    state: StackState, manifest: str, data_dir: Path, run_id: str, *, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Wait for the manifest to be complete in the catalog, write its report, export its dataset."""
    if "catalog" not in state.services:
        return {"ok": False, "error": "the catalog service is not running"}
    status: GenerationStatus | None = None
    deadline = time.monotonic() + timeout_s
    with ServiceClient("catalog", state.services["catalog"], state.api_token) as client:
        while time.monotonic() < deadline:
            resp = client.request("GET", f"/manifests/{manifest}/status")
            if resp.status_code == 200:
                status = GenerationStatus.model_validate(resp.json())
                if status.complete:
                    break
            time.sleep(0.5)
        stats = client.request("GET", "/stats").json()
    if status is None:
        return {"ok": False, "error": f"the catalog never heard of manifest {manifest}"}
    report = data_dir / "generation_status.json"
    write_atomic(report, status_json(status))
    dest = data_dir / "exports" / f"{manifest}-{run_id}"
    try:
        export(dest, manifest=manifest, data_dir=data_dir)
        exported: dict[str, Any] = json.loads((dest / "export_manifest.json").read_text())["content"]["totals"]
    except (typer.Exit, OSError, KeyError, ValueError) as exc:
        return {"ok": False, "error": f"the export failed ({exc!r})", "status": status.model_dump(mode="json")}
    return {
        "ok": status.complete,
        "counts": status.counts,
        "total": status.total,
        "report": str(report),
        "export": str(dest),
        "exported": exported,
        "catalog": stats,
        "gallery": f"{state.services['catalog']}/gallery",
        "status": status.model_dump(mode="json"),
    }


def print_catalog(result: dict[str, Any], console: Console) -> None:
    """The manifest's status table, where its report and dataset are, and the gallery's address."""
    if "status" not in result:
        console.print(f"[red]catalog: {result.get('error')}[/]")
        return
    console.print(status_table(GenerationStatus.model_validate(result["status"])))
    if not result["ok"]:
        console.print(f"[red]catalog: {result.get('error', 'not every spec has a QA-passed video')}[/]")
        return
    console.print(
        f"catalog: report {result['report']}; webdataset of {result['exported'].get('samples')} samples in "
        f"{result['export']}; gallery {result['gallery']} (the API token is in the data folder's stack.json)"
    )
