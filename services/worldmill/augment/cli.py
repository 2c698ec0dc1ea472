"""``worldmill augment PATH…|--all PREFIX``: Cosmos-Transfer augmentations, waited for, with a summary report.

Local files are uploaded to the inputs bucket first (control videos and a sidecar with the
parameters before the videos, so the upload trigger and this command describe the same
augmentation); ``s3://bucket/key`` names an object already there.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from worldmill.augment.inputs import classify
from worldmill.contracts.augment import AUGMENT_FINAL_STATES, AugmentAccepted, Augmentation, AugmentParams
from worldmill.contracts.keys import INPUTS_BUCKET
from worldmill.runtime import cli_support
from worldmill.runtime.cli_support import EXIT_FAILED, fail_response, fail_usage, progress_bar, service_client
from worldmill.runtime.client import ServiceClient, ServiceUnavailableError, locate_store
from worldmill.runtime.store import ObjectStore

console, err = cli_support.console, cli_support.err_console


def parse_controls(text: str | None) -> list[dict[str, Any]]:
    """``edge=0.6,depth=0.4`` (optionally ``edge=0.6:low``: a preset) as control specs; exit 2 when malformed."""
    if not text:
        return []
    controls: list[dict[str, Any]] = []
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or not name:
            fail_usage(f"--controls: {part!r} is not TYPE=WEIGHT (e.g. edge=0.6,depth=0.4)")
        weight, _, preset = value.partition(":")
        try:
            entry: dict[str, Any] = {"type": name.strip(), "weight": float(weight)}
        except ValueError:
            fail_usage(f"--controls: the weight of {name!r} is not a number: {weight!r}")
        if preset:
            entry["preset"] = preset.strip()
        controls.append(entry)
    return controls


def _params(controls: str | None, template: str | None, prompt: str | None) -> AugmentParams:
    body: dict[str, Any] = {"controls": parse_controls(controls)}
    if template:
        body["template"] = template
    if prompt:
        body["prompt"] = prompt
    try:
        return AugmentParams.model_validate(body)
    except ValueError as exc:
        fail_usage(f"--controls/--template: {escape(str(exc).splitlines()[-1] if str(exc) else str(exc))}")


def _local_files(paths: list[Path]) -> list[tuple[Path, str]]:
    """(file, key) for every file named or inside a named folder; keys keep the folder's name."""
    files: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            files += [
                (f, f"{path.name}/{f.relative_to(path).as_posix()}") for f in sorted(path.rglob("*")) if f.is_file()
            ]
        elif path.is_file():
            files.append((path, path.name))
        else:
            fail_usage(f"PATH: {escape(str(path))} is neither a file, a folder nor s3://bucket/key")
    return files


async def _upload(store: ObjectStore, files: list[tuple[Path, str]], params: AugmentParams, prefix: str) -> list[str]:
    """Upload controls and sidecars first, then the videos; the videos' keys."""
    keys = [prefix + key for _, key in files]
    videos = [(f, prefix + k) for f, k in files if classify(prefix + k, keys) == "video"]
    others = [(f, prefix + k) for f, k in files if classify(prefix + k, keys) != "video"]
    if params != AugmentParams():
        for _, key in videos:
            sidecar = key.rsplit(".", 1)[0] + ".json"
            text = json.dumps(params.model_dump(mode="json", exclude_defaults=True), indent=2).encode()
            await store.put_bytes(INPUTS_BUCKET, sidecar, text, content_type="application/json")
    for path, key in [*others, *videos]:
        await store.put_file(
            INPUTS_BUCKET, key, path, content_type="video/mp4" if path.suffix else "application/octet-stream"
        )
    return [k for _, k in videos]


def wait_for(client: ServiceClient, ids: list[str], *, timeout_s: float) -> dict[str, Augmentation]:
    """Poll each augmentation until it is passed, failed or rejected (or the timeout), with a progress bar."""
    found: dict[str, Augmentation] = {}
    deadline = time.monotonic() + timeout_s
    with progress_bar() as bar:
        task = bar.add_task("augmentations finished", total=len(ids))
        while time.monotonic() < deadline:
            for aug_id in ids:
                if aug_id in found and found[aug_id].state in AUGMENT_FINAL_STATES:
                    continue
                resp = client.request("GET", f"/augmentations/{aug_id}")
                if resp.status_code == 200:
                    found[aug_id] = Augmentation.model_validate(resp.json())
            finished = sum(a.state in AUGMENT_FINAL_STATES for a in found.values())
            bar.update(task, completed=finished)
            if finished >= len(ids):
                break
            time.sleep(0.5)
    return found


def summary(accepted: AugmentAccepted, found: dict[str, Augmentation]) -> dict[str, Any]:
    """Done, skipped, failed (with reasons) and still running, per input."""
    rows: list[dict[str, Any]] = []
    for outcome in accepted.outcomes:
        aug = found.get(outcome.augmentation_id or "")
        if outcome.outcome == "skipped":
            status, reason = "skipped", outcome.reason
        elif outcome.outcome == "rejected" and aug is None:
            status, reason = "failed", outcome.reason
        elif aug is None or aug.state not in AUGMENT_FINAL_STATES:
            status, reason = "in_progress", aug.state if aug else outcome.outcome
        else:
            status = "done" if aug.state == "passed" else "failed"
            reason = aug.reason or ""
        rows.append(
            {
                "input": outcome.input.uri(),
                "status": status,
                "augmentation_id": outcome.augmentation_id,
                "output": aug.output.uri() if aug and aug.output else None,
                "frames": aug.input_frames if aug else None,
                "fps": aug.input_fps if aug else None,
                "controls": [f"{c.type.value}:{c.source}" for c in aug.controls] if aug else [],
                "reason": reason,
            }
        )
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed", "in_progress")}
    return {"request_id": accepted.request_id, "counts": counts, "inputs": rows}


def print_summary(report: dict[str, Any]) -> None:
    """The per-input table and the counts."""
    table = Table(title=f"augmentations of request {report['request_id']}")
    for col in ("input", "status", "output / reason", "controls"):
        table.add_column(col, overflow="fold")
    for row in report["inputs"]:
        table.add_row(
            escape(row["input"]),
            row["status"],
            escape(row["output"] or row["reason"] or ""),
            ", ".join(row["controls"]),
        )
    console.print(table)
    c = report["counts"]
    console.print(f"done {c['done']}, skipped {c['skipped']}, failed {c['failed']}, still running {c['in_progress']}")


def augment(
    paths: Annotated[list[str] | None, typer.Argument(help="Local videos/folders, or s3://bucket/key objects.")] = None,
    all_under: Annotated[
        str | None,
        typer.Option("--all", help="Every video under this prefix (s3://bucket/prefix or a wm-inputs prefix)."),
    ] = None,
    controls: Annotated[str | None, typer.Option(help="e.g. edge=0.6,depth=0.4 or edge=1:low (default: edge).")] = None,
    template: Annotated[str | None, typer.Option(help="Category template of the prompt.")] = None,
    prompt: Annotated[str | None, typer.Option(help="An explicit prompt (instead of the template's).")] = None,
    prefix: Annotated[str, typer.Option(help="Where local files go in the inputs bucket.")] = "",
    force: Annotated[bool, typer.Option(help="Augment again even where a passing augmentation exists.")] = False,
    data_dir: Annotated[Path, typer.Option("--data-dir", envvar="WM_DATA_DIR")] = Path(".worldmill"),
    wait: Annotated[bool, typer.Option(help="Wait for every verdict.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 3600.0,
    report: Annotated[Path | None, typer.Option(help="Also write the summary report as JSON here.")] = None,
) -> None:
    """Augment videos with Cosmos-Transfer: {name}_aug.mp4 with the input's frames and fps, controls and QA."""
    if not paths and all_under is None:
        fail_usage("give PATH… or --all PREFIX")
    params = _params(controls, template, prompt)
    body: dict[str, Any] = {"params": params.model_dump(mode="json"), "force": force, "requested_by": "cli"}
    try:
        inputs: list[dict[str, str]] = []
        local = [Path(p) for p in paths or [] if not p.startswith("s3://")]
        for p in paths or []:
            if p.startswith("s3://"):
                bucket, _, key = p.removeprefix("s3://").partition("/")
                inputs.append({"bucket": bucket, "key": key})
        if local:
            store = locate_store(data_dir)
            keys = asyncio.run(_upload(store, _local_files(local), params, prefix))
            inputs += [{"bucket": INPUTS_BUCKET, "key": k} for k in keys]
            console.print(f"uploaded {len(keys)} video(s) to s3://{INPUTS_BUCKET}/{prefix}")
        body["inputs"] = inputs
        if all_under is not None:
            if all_under.startswith("s3://"):
                bucket, _, under = all_under.removeprefix("s3://").partition("/")
            else:
                bucket, under = INPUTS_BUCKET, all_under
            body["prefix"] = {"bucket": bucket, "prefix": under}
        with service_client("augment", data_dir) as client:
            resp = client.request("POST", "/augmentations", json=body)
            if resp.status_code >= 400:
                fail_response(resp)
            accepted = AugmentAccepted.model_validate(resp.json())
            ids = [o.augmentation_id for o in accepted.outcomes if o.augmentation_id and o.outcome != "skipped"]
            console.print(f"request {accepted.request_id}: {len(accepted.outcomes)} input(s)")
            found = wait_for(client, ids, timeout_s=timeout) if wait and ids else {}
    except ServiceUnavailableError as exc:
        err.print(f"[bold red]failed:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILED) from exc
    result = summary(accepted, found)
    print_summary(result)
    if report is not None:
        report.write_text(json.dumps(result, indent=2))
    if result["counts"]["failed"] or (wait and result["counts"]["in_progress"]):
        raise typer.Exit(EXIT_FAILED)
