"""``worldmill report MANIFEST`` and ``worldmill catalog rebuild|stats``: the catalog from a terminal.

``report`` takes a manifest's name or its file (the name is read from it), prints the status table
(per series: passed, in flight, unverified, failed, missing; then every spec that is not passed) and
with ``--json FILE`` writes ``generation_status.json``. ``--check`` exits 1 unless every spec has a
QA-passed video (for scripts and CI).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from worldmill.catalog.export.write import write_atomic
from worldmill.contracts.catalog import CatalogCounts, GenerationStatus
from worldmill.runtime.cli_support import (
    EXIT_FAILED,
    console,
    fail,
    fail_response,
    fail_usage,
    manifest_name,
    service_client,
)
from worldmill.runtime.stack import running_state

catalog_app = typer.Typer(
    help="The catalog: rebuild it from the event stream, count what it holds.", no_args_is_help=True
)
DataDir = Annotated[Path, typer.Option("--data-dir", envvar="WM_DATA_DIR", help="The local stack's folder.")]
#: Specs listed one per row under the table (the JSON has all of them).
MAX_ROWS = 40
STYLE = {"passed": "green", "in_flight": "cyan", "unverified": "yellow", "failed": "red", "missing": "magenta"}


def _write_report(path: Path, status: GenerationStatus) -> None:
    try:
        write_atomic(path, status_json(status))
    except OSError as exc:
        fail_usage(f"--json: cannot write {escape(str(path))} ({escape(exc.strerror or str(exc))})")


def status_json(status: GenerationStatus) -> bytes:
    """``generation_status.json``'s bytes."""
    return (json.dumps(status.model_dump(mode="json"), indent=2) + "\n").encode()


def status_table(status: GenerationStatus) -> Table:
    """The per-series table of a report."""
    table = Table(title=f"{status.manifest}: {status.counts.get('passed', 0)}/{status.total} passed")
    table.add_column("series")
    for state, style in STYLE.items():
        table.add_column(state.replace("_", " "), justify="right", style=style)
    table.add_column("total", justify="right")
    for series, counts in status.by_series.items():
        table.add_row(series, *(str(counts.get(s, 0)) for s in STYLE), str(sum(counts.values())))
    table.add_row("[bold]all[/]", *(f"[bold]{status.counts.get(s, 0)}[/]" for s in STYLE), f"[bold]{status.total}[/]")
    return table


def report(
    manifest: Annotated[str, typer.Argument(help="The manifest's name, or its file.")],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the report here (generation_status.json).")
    ] = None,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 unless every spec has a QA-passed video.")] = False,
    data_dir: DataDir = Path(".worldmill"),
) -> None:
    """Print a manifest's status: what exists, passed, failed, is missing or in flight."""
    name = manifest_name(manifest, "MANIFEST")
    with service_client("catalog", data_dir) as client:
        resp = client.request("GET", f"/manifests/{name}/status")
    if resp.status_code != 200:
        fail_response(resp)
    status = GenerationStatus.model_validate(resp.json())
    console.print(status_table(status))
    pending = [i for i in status.items if i.state != "passed"]
    if pending:
        rows = Table(title="not passed yet", title_justify="left")
        for column in ("spec", "series", "scenario", "duration", "variant", "state", "failed checks"):
            rows.add_column(column)
        for item in pending[:MAX_ROWS]:
            rows.add_row(
                item.prompt_id,
                item.series or "-",
                escape(item.scenario),
                f"{item.duration_s:g}s",
                str(item.variant),
                f"[{STYLE[item.state]}]{item.state}[/]",
                ", ".join(item.failed_checks) or "-",
            )
        console.print(rows)
        if len(pending) > MAX_ROWS:
            console.print(f"… and {len(pending) - MAX_ROWS} more (see --json)")
    if json_out is not None:
        _write_report(json_out, status)
        console.print(f"wrote {escape(str(json_out))}")
    if check and not status.complete:
        raise typer.Exit(EXIT_FAILED)


def _counts_table(counts: CatalogCounts, title: str) -> Table:
    table = Table(title=title)
    table.add_column("what")
    table.add_column("count", justify="right")
    for key, value in counts.model_dump().items():
        table.add_row(key, str(value))
    return table


def _counts(method: str, path: str, title: str, data_dir: Path) -> None:
    with service_client("catalog", data_dir) as client:
        resp = client.request(method, path)
    if resp.status_code != 200:
        fail_response(resp)
    console.print(_counts_table(CatalogCounts.model_validate(resp.json()), title))


@catalog_app.command()
def rebuild(data_dir: DataDir = Path(".worldmill")) -> None:
    """Empty the catalog and apply the whole event stream again (ratings and notes are events too)."""
    _counts("POST", "/rebuild", "catalog rebuilt from the event stream", data_dir)


@catalog_app.command()
def stats(data_dir: DataDir = Path(".worldmill")) -> None:
    """How many events, manifests, prompts, runs, assets and exports the catalog holds."""
    _counts("GET", "/stats", "catalog", data_dir)


@catalog_app.command()
def gallery(data_dir: DataDir = Path(".worldmill")) -> None:
    """Print the local stack's gallery address, with its token in the fragment (never sent to a server)."""
    state = running_state(data_dir)
    if state is None or "catalog" not in state.services:
        fail("the catalog service is not running: start the stack with `worldmill up`")
    console.print(f"{state.services['catalog']}/gallery#token={state.api_token}", soft_wrap=True)
