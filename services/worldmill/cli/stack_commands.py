"""``worldmill up | down | doctor``: the local stack.

``up --runners N --gpus 0,1,…`` starts N GPU-runner processes (``gpu-runner``, ``gpu-runner-1``, …),
runner i pinned to GPU ``gpus[i % len(gpus)]`` through ``CUDA_VISIBLE_DEVICES``; without ``--gpus``
they use the synthetic CPU stand-in, as a laptop has no GPU.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import signal
import socket
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from worldmill.cli.console import EXIT_FAILED, console, fail, fail_usage
from worldmill.cli.serve_command import ServiceName, entry_module
from worldmill.contracts.permissions import ADMIN_USER
from worldmill.runtime.checks import CheckResult, check_nats, check_s3, check_services
from worldmill.runtime.errors import WorldmillError
from worldmill.runtime.servers import ServerStartError
from worldmill.runtime.stack import (
    LocalStack,
    ServiceCommand,
    StackState,
    load_state,
    python_module_argv,
    running_state,
    service_port,
    start_stack,
    stop_stack_by_state,
)

DataDir = Annotated[
    Path,
    typer.Option("--data-dir", envvar="WM_DATA_DIR", help="Folder for the stack's data, logs and state."),
]


def _built(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


#: Most GPU-runner processes one ``up`` starts (a big host has 8–16 GPUs; 64 leaves room to share).
MAX_RUNNERS = 64
#: nats-server nodes `up --cluster` starts at most (JetStream clusters are odd-sized: 3 or 5 in practice).
MAX_NATS_NODES = 7
_GPU_ID = re.compile(r"[0-9]+")


class RunnerOptionError(ValueError):
    """``--runners`` / ``--gpus`` break a rule; the message names the option and the rule."""


@dataclass(frozen=True)
class RunnerPlan:
    """How many GPU-runner processes to start and the GPUs they are spread over (none: CPU stand-in)."""

    runners: int = 1
    gpus: tuple[int, ...] = ()


def plan_runners(runners: int | None, gpus: str | None) -> RunnerPlan:
    """Check ``--runners`` and ``--gpus``; default N is one runner per GPU, else 1."""
    ids: list[int] = []
    if gpus is not None:
        for item in gpus.split(","):
            text = item.strip()
            if not _GPU_ID.fullmatch(text):
                raise RunnerOptionError(
                    f"--gpus: {text!r} is not a GPU id (give non-negative integers as nvidia-smi numbers them, "
                    "e.g. --gpus 0,1,2,3)"
                )
            if int(text) in ids:
                raise RunnerOptionError(f"--gpus: GPU {int(text)} is listed twice (each GPU once)")
            ids.append(int(text))
    count = runners if runners is not None else max(len(ids), 1)
    option = "--runners" if runners is not None else "--gpus"
    if count < 1:
        raise RunnerOptionError(f"--runners: must be at least 1, got {count}")
    if count > MAX_RUNNERS:
        raise RunnerOptionError(f"{option}: at most {MAX_RUNNERS} runner processes, got {count}")
    if count < len(ids):
        raise RunnerOptionError(
            f"--runners: {count} runner(s) for {len(ids)} GPUs (--gpus {gpus}) leaves a GPU without a runner; "
            f"give at least {len(ids)} (or leave --runners out: one per GPU)"
        )
    return RunnerPlan(runners=count, gpus=tuple(ids))


def runner_process_name(index: int) -> str:
    """``gpu-runner`` for the first runner (what existing code and doctor know), then ``gpu-runner-<i>``."""
    return ServiceName.GPU_RUNNER.value if index == 0 else f"{ServiceName.GPU_RUNNER.value}-{index}"


def is_runner_process(name: str) -> bool:
    """Whether a stack process name is one of the GPU runners."""
    base = ServiceName.GPU_RUNNER.value
    return name == base or (name.startswith(f"{base}-") and name.removeprefix(f"{base}-").isdigit())


def runner_commands(
    plan: RunnerPlan,
    *,
    environ: Mapping[str, str] | None = None,
    hostname: str | None = None,
    port: Callable[[], int] = service_port,
) -> list[ServiceCommand]:
    """The GPU-runner processes of a plan, each with its own name, port and environment.

    With GPUs, runner i sees only GPU ``gpus[i % len(gpus)]`` (``CUDA_VISIBLE_DEVICES``, numbered in
    PCI bus order like nvidia-smi), runs on ``cuda`` with the real backends (``auto``) unless
    ``WM_GPU_RUNNER_BACKEND`` says otherwise, and is named ``<host>-gpu<id>`` (``-<k>`` added when
    several share a GPU). Without GPUs the runners use the synthetic CPU stand-in, as before. ``<host>``
    is ``WM_GPU_RUNNER_NAME`` when set, else the hostname.
    """
    environ = os.environ if environ is None else environ
    base = environ.get("WM_GPU_RUNNER_NAME") or hostname or socket.gethostname()
    argv = python_module_argv("worldmill.cli", "serve", ServiceName.GPU_RUNNER.value)
    per_gpu = Counter(plan.gpus[i % len(plan.gpus)] for i in range(plan.runners)) if plan.gpus else Counter[int]()
    commands = []
    for i in range(plan.runners):
        gpu: str | None = None
        if plan.gpus:
            gpu_id = plan.gpus[i % len(plan.gpus)]
            gpu = str(gpu_id)
            share = f"-{i // len(plan.gpus)}" if per_gpu[gpu_id] > 1 else ""
            env: tuple[tuple[str, str], ...] = (
                ("CUDA_VISIBLE_DEVICES", gpu),
                ("CUDA_DEVICE_ORDER", environ.get("CUDA_DEVICE_ORDER", "PCI_BUS_ID")),
                ("WM_GPU_RUNNER_DEVICE", "cuda"),
                ("WM_GPU_RUNNER_BACKEND", environ.get("WM_GPU_RUNNER_BACKEND", "auto")),
                ("WM_GPU_RUNNER_NAME", f"{base}-gpu{gpu}{share}"),
            )
        else:
            # A laptop has no GPU: the local runner uses the synthetic CPU stand-in unless told otherwise.
            env = (("WM_GPU_RUNNER_BACKEND", environ.get("WM_GPU_RUNNER_BACKEND", "synthetic")),)
            if plan.runners > 1:
                env += (("WM_GPU_RUNNER_NAME", f"{base}-runner{i}"),)
        commands.append(
            ServiceCommand(
                name=runner_process_name(i),
                argv=argv,
                port=port(),
                env=env,
                service=ServiceName.GPU_RUNNER.value,
                gpu=gpu,
            )
        )
    return commands


def local_services(plan: RunnerPlan | None = None) -> list[ServiceCommand]:
    """Every service of this build; the GPU runners (one by default, synthetic backend) join last."""
    commands = []
    for service in ServiceName:
        if not _built(entry_module(service)):
            continue
        if service is ServiceName.GPU_RUNNER:
            commands += runner_commands(plan or RunnerPlan())
            continue
        argv = python_module_argv("worldmill.cli", "serve", service.value)
        env: tuple[tuple[str, str], ...] = ()
        if service is ServiceName.GENERATE:
            env = (("WM_GENERATE_BACKENDS", generate_backends(plan or RunnerPlan())),)
        commands.append(ServiceCommand(name=service.value, argv=argv, port=service_port(), env=env))
    return commands


def generate_backends(plan: RunnerPlan, environ: Mapping[str, str] | None = None) -> str:
    """What the generate service plans for: the backends the stack's runners run.

    Synthetic runners (no ``--gpus``, or ``WM_GPU_RUNNER_BACKEND=synthetic``): the stand-in for
    every model. Runners on GPUs: diffusers for Cosmos, the stand-in for the synthetic card.
    ``WM_GENERATE_BACKENDS`` in the environment wins.
    """
    environ = os.environ if environ is None else environ
    if given := environ.get("WM_GENERATE_BACKENDS"):
        return given
    synthetic = not plan.gpus or environ.get("WM_GPU_RUNNER_BACKEND") == "synthetic"
    return "synthetic" if synthetic else "diffusers,cosmos3,synthetic"


def start_local_stack(data_dir: Path, plan: RunnerPlan | None = None, *, nats_nodes: int = 1) -> LocalStack:
    """Start the local stack and create its streams and buckets (exits 1 with the reason on failure)."""
    try:
        # start_stack creates the streams, the cancel bucket and the buckets before the services start.
        stack = start_stack(data_dir, local_services(plan), nats_nodes=nats_nodes)
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
        where = ""
        if name in state.gpus:
            where = f"  (GPU {state.gpus[name]})"
        elif is_runner_process(name):
            where = "  (no GPU pinned)"
        table.add_row(f"service {name}", url + where)
    table.add_row("PIDs", ", ".join(f"{k}={v}" for k, v in state.pids.items()))
    console.print(table)


def up(
    data_dir: DataDir = Path(".worldmill"),
    detach: Annotated[bool, typer.Option(help="Start and return; stop later with `worldmill down`.")] = False,
    runners: Annotated[
        int | None,
        typer.Option(
            "--runners",
            help=f"GPU-runner processes to start (1–{MAX_RUNNERS}; default: one per --gpus id, else 1).",
        ),
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(
            "--gpus",
            help="GPU ids (nvidia-smi numbering), e.g. 0,1,2,3: runner i gets GPU gpus[i % len] and the real "
            "backends; without it the runners use the synthetic CPU stand-in.",
        ),
    ] = None,
    cluster: Annotated[
        int,
        typer.Option(
            "--cluster",
            help=f"nats-server nodes (1–{MAX_NATS_NODES}): more than one starts a routed JetStream cluster on "
            "loopback with every stream replicated 3 times (or once per node, if fewer); services get every "
            "node's URL.",
        ),
    ] = 1,
) -> None:
    """Start nats-server (JetStream), SeaweedFS (S3) and the services; Ctrl-C stops them all."""
    try:
        plan = plan_runners(runners, gpus)
    except RunnerOptionError as exc:
        fail_usage(str(exc))
    if not 1 <= cluster <= MAX_NATS_NODES:
        fail_usage(f"--cluster: must be 1 to {MAX_NATS_NODES} nats-server nodes, got {cluster}")
    if (existing := running_state(data_dir)) is not None:
        console.print("[yellow]A stack is already running from this folder.[/]")
        if runners is not None or gpus is not None or cluster != 1:
            console.print("[yellow]It is kept as it is: `worldmill down` first to change its runners or cluster.[/]")
        print_state(existing)
        return
    stack = start_local_stack(data_dir, plan, nats_nodes=cluster)
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
    results += await check_nats(
        state.nats_url, user=state.bus("doctor").user, password=state.nats_passwords.get(ADMIN_USER)
    )
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
