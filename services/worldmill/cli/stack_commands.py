"""``worldmill up | down | doctor``: the local stack."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from worldmill.cli.console import EXIT_FAILED, console, fail, fail_usage
from worldmill.cli.serve_command import ServiceName, entry_module
from worldmill.runtime.bus import Bus
from worldmill.runtime.checks import CheckResult, check_nats, check_s3, check_services
from worldmill.runtime.errors import WorldmillError
from worldmill.runtime.servers import ServerStartError
from worldmill.runtime.stack import (
    LocalStack,
    ServiceCommand,
    StackState,
    bootstrap,
    load_state,
    python_module_argv,
    running_state,
    service_port,
    start_stack,
    stop_stack_by_state,
)
from worldmill.runtime.store import ObjectStore

DataDir = Annotated[
    Path,
    typer.Option("--data-dir", envvar="WM_DATA_DIR", help="Folder for the stack's data, logs and state."),
]


async def _bootstrap(state: StackState) -> None:
    bus = Bus(state.nats_url, name="worldmill-up")
    await bus.connect()
    try:
        await bootstrap(bus, ObjectStore(state.s3_endpoint, state.s3_access_key, state.s3_secret_key))
    finally:
        await bus.close()


def _built(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def local_services() -> list[ServiceCommand]:
    """Every service of this build; the GPU runner joins with the synthetic backend by default."""
    commands = []
    for service in ServiceName:
        if not _built(entry_module(service)):
            continue
        argv = python_module_argv("worldmill.cli", "serve", service.value)
        # A laptop has no GPU: the local runner uses the synthetic CPU stand-in unless told otherwise.
        env = (("WM_GPU_RUNNER_BACKEND", os.environ.get("WM_GPU_RUNNER_BACKEND", "synthetic")),)
        commands.append(
            ServiceCommand(
                name=service.value, argv=argv, port=service_port(), env=env if service is ServiceName.GPU_RUNNER else ()
            )
        )
    return commands


def start_local_stack(data_dir: Path) -> LocalStack:
    """Start the local stack and create its streams and buckets (exits 1 with the reason on failure)."""
    try:
        stack = start_stack(data_dir, local_services())
        asyncio.run(_bootstrap(stack.state))
    except (ServerStartError, WorldmillError) as exc:
        fail(str(exc))
    return stack


def print_state(state: StackState) -> None:
    """The stack's endpoints as a table."""
    table = Table(title="worldmill local stack", show_header=False)
    table.add_row("data", state.data_dir)
    table.add_row("NATS", f"{state.nats_url}  (monitor {state.nats_monitor_url})")
    table.add_row("S3", f"{state.s3_endpoint}  (credentials in {state.data_dir}/credentials.json)")
    for name, url in state.services.items():
        table.add_row(f"service {name}", url)
    table.add_row("PIDs", ", ".join(f"{k}={v}" for k, v in state.pids.items()))
    console.print(table)


def up(
    data_dir: DataDir = Path(".worldmill"),
    detach: Annotated[bool, typer.Option(help="Start and return; stop later with `worldmill down`.")] = False,
) -> None:
    """Start nats-server (JetStream), SeaweedFS (S3) and the services; Ctrl-C stops them all."""
    if (existing := running_state(data_dir)) is not None:
        console.print("[yellow]A stack is already running from this folder.[/]")
        print_state(existing)
        return
    stack = start_local_stack(data_dir)
    print_state(stack.state)
    if detach:
        console.print("Running in the background. Stop it with [bold]worldmill down[/].")
        return
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    console.print("Stack is up. Press Ctrl-C to stop it.")
    try:
        while not stopping.wait(0.5):
            dead = [n for n, ok in stack.state.alive().items() if not ok]
            if dead:
                console.print(f"[red]{', '.join(dead)} exited; stopping the stack.[/]")
                break
    finally:
        stack.stop()
        console.print("Stack stopped.")


def down(data_dir: DataDir = Path(".worldmill")) -> None:
    """Stop a stack started with ``up --detach`` (by PID, services first)."""
    state = load_state(data_dir)
    if state is None:
        console.print("No stack is running from this folder.")
        return
    stopped = stop_stack_by_state(state)
    for name, ok in stopped.items():
        console.print(f"{name}: {'stopped' if ok else '[red]still running[/]'}")
    if not all(stopped.values()):
        raise typer.Exit(EXIT_FAILED)


async def run_checks(state: StackState | None, data_dir: Path) -> list[CheckResult]:
    """Every doctor check against a stack's state (or a report that none runs)."""
    if state is None:
        return [CheckResult("stack", False, f"no stack state in {data_dir}", "start one with `worldmill up`")]
    alive = state.alive()
    results = [
        CheckResult(
            f"process {n}",
            ok,
            f"pid {state.pids[n]} {'running' if ok else 'not running'}",
            "" if ok else f"see {state.data_dir}/logs/{n}.log",
        )
        for n, ok in alive.items()
    ]
    results += await check_nats(state.nats_url)
    results += await check_s3(state.s3_endpoint, state.s3_access_key, state.s3_secret_key)
    results += await check_services(state.services)
    return results


def doctor(data_dir: DataDir = Path(".worldmill")) -> None:
    """Check the local stack and say in plain words what is wrong."""
    if not data_dir.exists():
        fail_usage(f"--data-dir: {data_dir} does not exist; start a stack with `worldmill up`")
    results = asyncio.run(run_checks(load_state(data_dir), data_dir))
    table = Table(title="worldmill doctor")
    for col in ("check", "", "detail", "what to do"):
        table.add_column(col)
    for r in results:
        table.add_row(r.name, "[green]ok[/]" if r.ok else "[red]FAIL[/]", r.detail, r.hint)
    console.print(table)
    bad = [r for r in results if not r.ok]
    if bad:
        console.print(f"[red]{len(bad)} problem(s) found.[/]")
        raise typer.Exit(EXIT_FAILED)
    console.print("[green]The stack is healthy.[/]")
