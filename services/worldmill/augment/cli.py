"""``worldmill augment PATH…|--all PREFIX [--output-dir DIR]``: Transfer augmentations, waited for, summarised.

With ``--output-dir`` each passing augmentation's video is written there as ``<name>_aug.mp4`` as its
verdict arrives (see ``worldmill.augment.outputs`` for how existing files are treated).

Local files are uploaded to the inputs bucket first (control videos and a sidecar with the
parameters before the videos, so the upload trigger and this command describe the same
augmentation); ``s3://bucket/key`` names an object already there.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from worldmill.augment.inputs import VIDEO_SUFFIXES, classify
from worldmill.augment.outputs import (
    SUMMARY_NAME,
    Delivered,
    OutputDirError,
    deliver,
    output_name,
    prepare_dir,
    target_path,
)
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


def wait_for(
    client: ServiceClient,
    ids: list[str],
    *,
    timeout_s: float,
    on_final: Callable[[Augmentation], None] | None = None,
) -> dict[str, Augmentation]:
    """Poll each augmentation until it is passed, failed or rejected (or the timeout), with a progress bar.

    ``on_final`` is called once per augmentation as it reaches its verdict (to write its video at once).
    """
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
                    if on_final is not None and found[aug_id].state in AUGMENT_FINAL_STATES:
                        on_final(found[aug_id])
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
    local = any("local_file" in row for row in report["inputs"])
    for col in ("input", "status", "output / reason", "controls", *(("local file",) if local else ())):
        table.add_column(col, overflow="fold")
    for row in report["inputs"]:
        cells = [
            escape(row["input"]),
            row["status"],
            escape(row["output"] or row["reason"] or ""),
            ", ".join(row["controls"]),
        ]
        if local:
            where = row.get("local_file") or ""
            status = row.get("local_status") or ""
            cells.append(escape(f"{status}: {where}" if where else status))
        table.add_row(*cells)
    console.print(table)
    c = report["counts"]
    console.print(f"done {c['done']}, skipped {c['skipped']}, failed {c['failed']}, still running {c['in_progress']}")


@dataclass
class OutputWriter:
    """Writes each passing augmentation's video into the output folder as its verdict arrives."""

    folder: Path
    per_video_folders: bool
    overwrite: bool
    data_dir: Path
    delivered: dict[str, Delivered] = field(default_factory=dict)
    _targets: dict[Path, str] = field(default_factory=dict)
    _store: ObjectStore | None = None

    def __call__(self, aug: Augmentation) -> None:
        if aug.state != "passed" or aug.augmentation_id in self.delivered:
            return
        target = target_path(self.folder, output_name(aug), per_video_folders=self.per_video_folders)
        other = self._targets.setdefault(target, aug.augmentation_id)
        if other != aug.augmentation_id:
            result = Delivered(
                target,
                "error",
                f"{target} is the output of another input of this run ({other}); give one of them another "
                '"name" in its sidecar',
            )
        else:
            if self._store is None:
                self._store = locate_store(self.data_dir)
            result = asyncio.run(deliver(self._store, aug, target, overwrite=self.overwrite))
        self.delivered[aug.augmentation_id] = result
        if result.status == "kept":
            err.print(f"[yellow]warning:[/] {escape(result.note)}")
        elif result.status == "error":
            err.print(f"[bold red]not written:[/] {escape(result.note)}")
        else:
            console.print(f"{result.status} {escape(str(target))}")

    def annotate(self, report: dict[str, Any]) -> None:
        """Add each input's local file and what happened to it to the report."""
        for row in report["inputs"]:
            got = self.delivered.get(row["augmentation_id"] or "")
            if got is None:
                row["local_file"], row["local_status"] = None, "not written" if row["status"] != "done" else "missing"
                continue
            row["local_file"], row["local_status"] = str(got.path), got.status
            row["local_note"] = got.note
        counts: dict[str, int] = {}
        for got in self.delivered.values():
            counts[got.status] = counts.get(got.status, 0) + 1
        report["local"] = {"folder": str(self.folder), "per_video_folders": self.per_video_folders, "counts": counts}

    def failed(self) -> bool:
        """True when a passing augmentation's video could not be written."""
        return any(d.status == "error" for d in self.delivered.values())


def _check_local_sidecars(files: list[tuple[Path, str]], params: AugmentParams) -> None:
    """Flags and a local ``{name}.json`` for the same video would describe two augmentations: refused (exit 2)."""
    if params == AugmentParams():
        return
    names = {p for p, _ in files}
    for path, _ in files:
        if path.suffix.lower() in VIDEO_SUFFIXES and path.with_suffix(".json") in names:
            fail_usage(
                f"{escape(str(path.with_suffix('.json')))} gives the parameters of {escape(path.name)}: edit it, "
                "or drop --controls/--template/--prompt"
            )


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
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            help="Write each passing augmentation's video here as <name>_aug.mp4 (verified by sha256), and "
            f"{SUMMARY_NAME}. A different file already there is kept (with a warning) unless --overwrite.",
        ),
    ] = None,
    per_video_folders: Annotated[
        bool, typer.Option("--per-video-folders", help="With --output-dir: DIR/<name>/<name>_aug.mp4.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="With --output-dir: replace a different file of the same name.")
    ] = False,
) -> None:
    """Augment videos with Cosmos-Transfer: {name}_aug.mp4 with the input's frames, fps and size, controls and QA.

    A ``{name}.json`` next to a video (``worldmill prompts from-videos DIR --write-sidecars`` writes
    one) gives that video's name, prompt, negative prompt, seed, guidance and controls.
    """
    if not paths and all_under is None:
        fail_usage("give PATH… or --all PREFIX")
    writer = _writer(output_dir, per_video_folders=per_video_folders, overwrite=overwrite, wait=wait, data_dir=data_dir)
    params = _params(controls, template, prompt)
    body: dict[str, Any] = {"params": params.model_dump(mode="json"), "force": force, "requested_by": "cli"}
    try:
        body["inputs"] = _inputs(paths or [], params, prefix=prefix, data_dir=data_dir)
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
            found = wait_for(client, ids, timeout_s=timeout, on_final=writer) if wait and ids else {}
            if writer is not None:
                _deliver_skipped(client, accepted, writer)
    except ServiceUnavailableError as exc:
        err.print(f"[bold red]failed:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILED) from exc
    result = summary(accepted, found)
    if writer is not None:
        writer.annotate(result)
    print_summary(result)
    if report is not None:
        report.write_text(json.dumps(result, indent=2))
    if writer is not None:
        _write_summary(writer.folder / SUMMARY_NAME, result)
    if result["counts"]["failed"] or (wait and result["counts"]["in_progress"]) or (writer and writer.failed()):
        raise typer.Exit(EXIT_FAILED)


def _writer(
    output_dir: Path | None, *, per_video_folders: bool, overwrite: bool, wait: bool, data_dir: Path
) -> OutputWriter | None:
    """The writer of ``--output-dir`` (checked writable before anything is uploaded; exit 2 naming it if not)."""
    if output_dir is None:
        if per_video_folders or overwrite:
            fail_usage("--per-video-folders and --overwrite go with --output-dir DIR")
        return None
    if not wait:
        fail_usage("--output-dir needs the verdicts: drop --no-wait")
    try:
        prepare_dir(output_dir)
    except OutputDirError as exc:
        fail_usage(escape(str(exc)))
    return OutputWriter(output_dir, per_video_folders, overwrite, data_dir)


def _inputs(paths: list[str], params: AugmentParams, *, prefix: str, data_dir: Path) -> list[dict[str, str]]:
    """The request's inputs: ``s3://`` objects as named, local files uploaded first."""
    inputs: list[dict[str, str]] = []
    for p in paths:
        if p.startswith("s3://"):
            bucket, _, key = p.removeprefix("s3://").partition("/")
            inputs.append({"bucket": bucket, "key": key})
    local = [Path(p) for p in paths if not p.startswith("s3://")]
    if local:
        files = _local_files(local)
        _check_local_sidecars(files, params)
        keys = asyncio.run(_upload(locate_store(data_dir), files, params, prefix))
        inputs += [{"bucket": INPUTS_BUCKET, "key": k} for k in keys]
        console.print(f"uploaded {len(keys)} video(s) to s3://{INPUTS_BUCKET}/{prefix}")
    return inputs


def _deliver_skipped(client: ServiceClient, accepted: AugmentAccepted, writer: OutputWriter) -> None:
    """Inputs augmented already (skipped): their passing video is wanted in the output folder too."""
    for outcome in accepted.outcomes:
        if outcome.outcome == "skipped" and outcome.augmentation_id:
            resp = client.request("GET", f"/augmentations/{outcome.augmentation_id}")
            if resp.status_code == 200:
                writer(Augmentation.model_validate(resp.json()))


def _write_summary(path: Path, result: dict[str, Any]) -> None:
    """The JSON summary next to the videos (written to a temp file, then renamed); a failure is only a warning."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        err.print(f"[yellow]warning:[/] cannot write the summary {escape(str(path))}: {escape(str(exc))}")
    else:
        console.print(f"summary: {escape(str(path))}")
