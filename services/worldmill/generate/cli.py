"""``worldmill generate``, ``worldmill runs ls|show|cancel`` and ``worldmill follow``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from worldmill.contracts.catalog import GenerationStatus
from worldmill.contracts.generation import (
    ACTIVE_STATES,
    FINAL_STATES,
    GenerationAccepted,
    JobCanceled,
    JobCompleted,
    JobFailed,
    JobProgress,
    RunPage,
    RunRecord,
)
from worldmill.contracts.subjects import EVENTS, event_subject
from worldmill.generate.backlog import Backlog, backlog_request_id, plan_backlog
from worldmill.runtime import cli_support
from worldmill.runtime.cli_support import (
    EXIT_FAILED,
    EXIT_USAGE,
    fail_response,
    fail_usage,
    is_manifest_file,
    manifest_name,
    post_once_specs_are_known,
    progress_bar,
    prompt_ids_or_manifest,
    service_client,
)
from worldmill.runtime.client import (
    ServiceClient,
)
from worldmill.runtime.stack import running_state

console, err = cli_support.console, cli_support.err_console

runs_app = typer.Typer(help="List, show and cancel generation runs.", no_args_is_help=True)
DataDir = Annotated[Path, typer.Option("--data-dir", envvar="WM_DATA_DIR", help="The local stack's folder.")]


def request_generation(
    client: ServiceClient,
    prompt_ids: list[str],
    *,
    max_attempts: int,
    request_id: str | None = None,
    wait_for_specs_s: float = 10.0,
) -> GenerationAccepted:
    """POST /generations; prompt ids just created may take a moment to reach the generate service."""
    body: dict[str, Any] = {"prompt_ids": prompt_ids, "max_attempts": max_attempts, "requested_by": "cli"}
    if request_id:
        body["request_id"] = request_id
    resp = post_once_specs_are_known(client, "/generations", body, wait_s=wait_for_specs_s)
    if resp.status_code >= 400:
        fail_response(resp)
    return GenerationAccepted.model_validate(resp.json())


def wait_for_runs(client: ServiceClient, request_id: str, total: int, *, timeout_s: float) -> list[RunRecord]:
    """Poll the request's runs until all are final (or the timeout), with a progress bar."""
    deadline = time.monotonic() + timeout_s
    runs: list[RunRecord] = []
    with progress_bar() as bar:
        task = bar.add_task("runs finished", total=total)
        while time.monotonic() < deadline:
            runs = list_runs(client, request_id=request_id)
            finished = sum(r.state in FINAL_STATES for r in runs)
            bar.update(task, completed=finished)
            if finished >= total:
                break
            time.sleep(0.5)
    return runs


def generate(
    prompt_ids: Annotated[list[str] | None, typer.Argument(help="Prompt ids to generate.")] = None,
    manifest: Annotated[
        str | None,
        typer.Option(help="Generate all specs of this manifest: its name, or its file (submitted first)."),
    ] = None,
    missing: Annotated[
        bool, typer.Option("--missing", help="Only the manifest's specs `worldmill report` lists as missing.")
    ] = False,
    failed: Annotated[
        bool, typer.Option("--failed", help="Only its failed specs: each is regenerated with a new seed.")
    ] = False,
    unverified: Annotated[
        bool, typer.Option("--unverified", help="Only its specs whose videos never got a QA verdict.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="With --missing/--failed/--unverified: list what would be queued.")
    ] = False,
    data_dir: DataDir = Path(".worldmill"),
    max_attempts: Annotated[int, typer.Option(min=1, max=20)] = 3,
    wait: Annotated[bool, typer.Option(help="Wait until every run is finished.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 3600.0,
) -> None:
    """Generate videos for prompt specs (or a whole manifest, or what its report lists as missing/failed)."""
    states = [s for s, on in (("missing", missing), ("failed", failed), ("unverified", unverified)) if on]
    if states:
        _generate_backlog(
            prompt_ids,
            manifest,
            states,
            dry_run=dry_run,
            data_dir=data_dir,
            max_attempts=max_attempts,
            wait=wait,
            timeout=timeout,
        )
        return
    if dry_run:
        fail_usage("--dry-run: only with --missing, --failed or --unverified")
    ids = prompt_ids_or_manifest(prompt_ids, manifest, data_dir)
    with service_client("generate", data_dir) as client:
        accepted = request_generation(client, ids, max_attempts=max_attempts)
        console.print(f"request {accepted.request_id}: {len(accepted.runs)} run(s) queued{_estimate(accepted)}")
        if not wait:
            return
        runs = wait_for_runs(client, accepted.request_id, len(accepted.runs), timeout_s=timeout)
    print_runs(runs)
    if any(r.state != "ready" for r in runs):
        raise typer.Exit(EXIT_FAILED)


def _estimate(*accepted: GenerationAccepted) -> str:
    seconds = sum(r.plan.estimated_gpu_seconds for a in accepted for r in a.runs)
    return f", estimated {seconds:,.0f} GPU-seconds" if seconds else ""


def list_runs(client: ServiceClient, **filters: str) -> list[RunRecord]:
    """Every run ``GET /runs`` lists for these filters, page by page (exit on an error answer)."""
    runs: list[RunRecord] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {**filters, "limit": 500}
        if cursor:
            params["cursor"] = cursor
        resp = client.request("GET", "/runs", params=params)
        if resp.status_code >= 400:
            fail_response(resp)
        page = RunPage.model_validate(resp.json())
        runs.extend(page.items)
        cursor = page.next_cursor
        if not cursor:
            return runs


def _active_prompt_ids(client: ServiceClient) -> set[str]:
    """Prompt ids with a run queued, running or post-processing, as the generate service knows them."""
    return {r.prompt_id for state in ACTIVE_STATES for r in list_runs(client, state=state)}


def _print_dry_run(backlog: Backlog) -> None:
    for pid in backlog.generate:
        console.print(f"would generate {pid}")
    for rep in backlog.regenerate:
        console.print(f"would regenerate {rep.prompt_id} (new seed, replaces {rep.regeneration.replaces})")


def _queue_backlog(
    client: ServiceClient, backlog: Backlog, states: list[str], *, max_attempts: int
) -> list[GenerationAccepted]:
    """One request for the specs made as they are, one per failed spec regenerated."""
    accepted: list[GenerationAccepted] = []
    if backlog.generate:
        accepted.append(
            request_generation(
                client, list(backlog.generate), max_attempts=max_attempts, request_id=backlog_request_id(states)
            )
        )
    for rep in backlog.regenerate:
        body = {
            "prompt_ids": [rep.prompt_id],
            "request_id": rep.request_id,
            "max_attempts": max_attempts,
            "requested_by": "cli",
            "regeneration": rep.regeneration.model_dump(mode="json"),
        }
        resp = client.request("POST", "/generations", json=body)
        if resp.status_code >= 400:
            fail_response(resp)
        accepted.append(GenerationAccepted.model_validate(resp.json()))
    return accepted


def _generate_backlog(
    prompt_ids: list[str] | None,
    manifest: str | None,
    states: list[str],
    *,
    dry_run: bool,
    data_dir: Path,
    max_attempts: int,
    wait: bool,
    timeout: float,
) -> None:
    """``--missing|--failed|--unverified``: what the manifest's report lists in those states, once."""
    flags = "/".join(f"--{s}" for s in states)
    if manifest is None:
        fail_usage(f"{flags}: give --manifest NAME|FILE (the report these states come from)")
    if prompt_ids:
        fail_usage(f"PROMPT_IDS: not with {flags} (they select the specs themselves)")
    if is_manifest_file(manifest) and not dry_run:
        prompt_ids_or_manifest(None, manifest, data_dir)  # submit it first: new specs are missing too
    name = manifest_name(manifest)
    with service_client("catalog", data_dir) as catalog:
        resp = catalog.request("GET", f"/manifests/{name}/status")
    if resp.status_code != 200:
        fail_response(resp)
    status = GenerationStatus.model_validate(resp.json())
    with service_client("generate", data_dir) as client:
        backlog = plan_backlog(status.items, states, _active_prompt_ids(client))
        found = ", ".join(f"{n} {state}" for state, n in backlog.counts.items())
        console.print(f"manifest {name}: {found} of {status.total} spec(s)")
        if backlog.in_flight:
            console.print(
                f"{len(backlog.in_flight)} already in flight, left alone: {', '.join(backlog.in_flight[:10])}"
            )
        if backlog.empty:
            console.print("nothing to queue")
            return
        if dry_run:
            _print_dry_run(backlog)
            return
        accepted = _queue_backlog(client, backlog, states, max_attempts=max_attempts)
        total = sum(len(a.runs) for a in accepted)
        console.print(f"{total} run(s) queued in {len(accepted)} request(s){_estimate(*accepted)}")
        if not wait:
            return
        runs: list[RunRecord] = []
        deadline = time.monotonic() + timeout
        for a in accepted:
            left = max(1.0, deadline - time.monotonic())
            runs += wait_for_runs(client, a.request_id, len(a.runs), timeout_s=left)
    print_runs(runs)
    if any(r.state != "ready" for r in runs):
        raise typer.Exit(EXIT_FAILED)


def print_runs(runs: list[RunRecord]) -> None:
    """One line per run: state, attempts, frames, fps, video key."""
    table = Table(title=f"{len(runs)} run(s)")
    for col in ("run", "prompt", "state", "attempts", "frames", "fps", "video"):
        table.add_column(col)
    for r in runs:
        table.add_row(
            r.run_id,
            r.prompt_id,
            r.state,
            str(len(r.attempts)),
            str(r.plan.expected.frames),
            f"{r.plan.expected.fps:g}",
            r.video.key if r.video else (r.error or "")[:60],
        )
    console.print(table)


@runs_app.command("ls")
def ls(
    data_dir: DataDir = Path(".worldmill"),
    state: str | None = None,
    prompt_id: str | None = None,
    request_id: str | None = None,
    limit: int = 100,
) -> None:
    """List runs, filtered by state, prompt or request."""
    params = {
        k: v
        for k, v in {"state": state, "prompt_id": prompt_id, "request_id": request_id, "limit": limit}.items()
        if v is not None
    }
    with service_client("generate", data_dir) as client:
        resp = client.request("GET", "/runs", params=params)
    if resp.status_code >= 400:
        fail_response(resp)
    print_runs(list(RunPage.model_validate(resp.json()).items))


@runs_app.command("show")
def show(run_id: str, data_dir: DataDir = Path(".worldmill")) -> None:
    """Show a run: its plan, attempts, video and provenance references."""
    with service_client("generate", data_dir) as client:
        resp = client.request("GET", f"/runs/{run_id}")
    if resp.status_code >= 400:
        fail_response(resp)
    console.print_json(RunRecord.model_validate(resp.json()).model_dump_json())


@runs_app.command("cancel")
def cancel(run_id: str, data_dir: DataDir = Path(".worldmill")) -> None:
    """Cancel a queued or running run (a finished one is left as it is, exit 2)."""
    with service_client("generate", data_dir) as client:
        resp = client.request("POST", f"/runs/{run_id}/cancel")
    if resp.status_code >= 400:
        fail_response(resp)
    run = RunRecord.model_validate(resp.json())
    console.print(f"run {run.run_id}: {run.state}" + (" (stops between two steps)" if run.state != "canceled" else ""))


async def _follow(data_dir: Path, run_ids: set[str], follow_all: bool) -> None:
    state = running_state(data_dir)
    if state is None:
        err.print("[bold red]failed:[/] no running stack to follow (start it with `worldmill up`)")
        raise typer.Exit(EXIT_FAILED)
    bus = state.bus("worldmill-follow")
    await bus.connect()
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[phase]}"),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            tasks: dict[str, Any] = {}
            done: set[str] = set()
            async for _, msg in bus.follow(EVENTS.name, event_subject("job.>")):
                run_id = getattr(msg, "run_id", None)
                if run_id is None or (not follow_all and run_id not in run_ids):
                    continue
                if run_id not in tasks:
                    tasks[run_id] = bar.add_task(run_id, total=1.0, phase="")
                if isinstance(msg, JobProgress):
                    bar.update(
                        tasks[run_id],
                        completed=msg.fraction,
                        phase=f"{msg.phase} chunk {msg.chunk + 1}/{msg.chunks} step {msg.step}/{msg.steps}",
                    )
                elif isinstance(msg, JobCompleted | JobFailed | JobCanceled):
                    bar.update(tasks[run_id], completed=1.0, phase=msg.TYPE.removeprefix("job."))
                    done.add(run_id)
                    if not follow_all and run_ids <= done:
                        return
    finally:
        await bus.close()


def follow(
    run_ids: Annotated[list[str] | None, typer.Argument(help="Runs to follow.")] = None,
    follow_all: Annotated[bool, typer.Option("--all", help="Follow every run until Ctrl-C.")] = False,
    data_dir: DataDir = Path(".worldmill"),
) -> None:
    """Live progress bars fed by the runners' progress events."""
    if not run_ids and not follow_all:
        err.print("[bold red]error:[/] give RUN_IDS or --all")
        raise typer.Exit(EXIT_USAGE)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_follow(data_dir, set(run_ids or []), follow_all))
