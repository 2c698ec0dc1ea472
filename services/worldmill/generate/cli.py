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

from worldmill.contracts.generation import (
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
from worldmill.runtime import cli_support
from worldmill.runtime.cli_support import (
    EXIT_FAILED,
    EXIT_USAGE,
    fail_response,
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
            runs = []
            cursor = None
            while True:
                params: dict[str, Any] = {"request_id": request_id, "limit": 500}
                if cursor:
                    params["cursor"] = cursor
                page = RunPage.model_validate(client.request("GET", "/runs", params=params).json())
                runs.extend(page.items)
                cursor = page.next_cursor
                if not cursor:
                    break
            finished = sum(r.state in FINAL_STATES for r in runs)
            bar.update(task, completed=finished)
            if finished >= total:
                break
            time.sleep(0.5)
    return runs


def generate(
    prompt_ids: Annotated[list[str] | None, typer.Argument(help="Prompt ids to generate.")] = None,
    manifest: Annotated[Path | None, typer.Option(help="Submit this manifest and generate all its specs.")] = None,
    data_dir: DataDir = Path(".worldmill"),
    max_attempts: Annotated[int, typer.Option(min=1, max=20)] = 3,
    wait: Annotated[bool, typer.Option(help="Wait until every run is finished.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 3600.0,
) -> None:
    """Generate videos for prompt specs (or a whole manifest) and wait for them."""
    ids = prompt_ids_or_manifest(prompt_ids, manifest, data_dir)
    with service_client("generate", data_dir) as client:
        accepted = request_generation(client, ids, max_attempts=max_attempts)
        console.print(f"request {accepted.request_id}: {len(accepted.runs)} run(s) queued")
        if not wait:
            return
        runs = wait_for_runs(client, accepted.request_id, len(accepted.runs), timeout_s=timeout)
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
