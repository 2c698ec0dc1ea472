"""``worldmill up --runners N --gpus 0,1,…``: one GPU-runner process per GPU (or N synthetic ones).

The environment each runner gets is checked on the pure function that builds the commands (no GPU
needed); the processes themselves on a real stack with two synthetic runners.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from worldmill.cli.console import console
from worldmill.cli.main import app
from worldmill.cli.stack_commands import (
    MAX_RUNNERS,
    RunnerOptionError,
    RunnerPlan,
    generate_backends,
    is_runner_process,
    local_services,
    plan_runners,
    print_state,
    runner_commands,
)
from worldmill.runtime.servers import pid_alive
from worldmill.runtime.stack import ServiceCommand, StackState, load_state, start_stack

CLI = [sys.executable, "-m", "worldmill.cli"]


def _cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WM_", "CUDA_"))}
    env["COLUMNS"] = "200"
    return env


def _commands(plan: RunnerPlan, environ: dict[str, str] | None = None) -> list[ServiceCommand]:
    ports = itertools.count(41000)
    return runner_commands(plan, environ=environ or {}, hostname="box", port=lambda: next(ports))


def test_four_gpus_give_four_pinned_runners_on_cuda_with_the_real_backends() -> None:
    """--gpus 0,1,2,3: runner i sees GPU i only, runs on cuda with backend auto, has its own name and port."""
    commands = _commands(plan_runners(None, "0,1,2,3"))
    assert [c.name for c in commands] == ["gpu-runner", "gpu-runner-1", "gpu-runner-2", "gpu-runner-3"]
    assert [c.gpu for c in commands] == ["0", "1", "2", "3"]
    assert len({c.port for c in commands}) == 4
    for i, command in enumerate(commands):
        assert command.service == "gpu-runner" and command.argv[-2:] == ("serve", "gpu-runner")
        assert dict(command.env) == {
            "CUDA_VISIBLE_DEVICES": str(i),
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "WM_GPU_RUNNER_DEVICE": "cuda",
            "WM_GPU_RUNNER_BACKEND": "auto",
            "WM_GPU_RUNNER_NAME": f"box-gpu{i}",
        }


def test_gpus_respect_the_environment_and_runners_can_share_a_gpu() -> None:
    """WM_GPU_RUNNER_BACKEND and CUDA_DEVICE_ORDER from the environment win; sharing runners get -<k>."""
    environ = {"WM_GPU_RUNNER_BACKEND": "synthetic", "CUDA_DEVICE_ORDER": "FASTEST_FIRST", "WM_GPU_RUNNER_NAME": "rig"}
    commands = _commands(plan_runners(3, "4,7"), environ)
    envs = [dict(c.env) for c in commands]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["4", "7", "4"]
    assert [e["WM_GPU_RUNNER_NAME"] for e in envs] == ["rig-gpu4-0", "rig-gpu7", "rig-gpu4-1"]
    assert {e["WM_GPU_RUNNER_BACKEND"] for e in envs} == {"synthetic"}
    assert {e["CUDA_DEVICE_ORDER"] for e in envs} == {"FASTEST_FIRST"}
    assert {e["WM_GPU_RUNNER_DEVICE"] for e in envs} == {"cuda"}


def test_without_gpus_runners_keep_the_synthetic_stand_in_with_distinct_names() -> None:
    """No --gpus: the CPU stand-in, nothing pinned; several runners get distinct names, one keeps today's default."""
    one = _commands(plan_runners(None, None))
    assert [(c.name, dict(c.env), c.gpu) for c in one] == [("gpu-runner", {"WM_GPU_RUNNER_BACKEND": "synthetic"}, None)]
    three = _commands(plan_runners(3, None))
    assert [c.name for c in three] == ["gpu-runner", "gpu-runner-1", "gpu-runner-2"]
    assert [dict(c.env) for c in three] == [
        {"WM_GPU_RUNNER_BACKEND": "synthetic", "WM_GPU_RUNNER_NAME": f"box-runner{i}"} for i in range(3)
    ]
    assert _commands(plan_runners(2, None), {"WM_GPU_RUNNER_BACKEND": "auto"})[1].env[0] == (
        "WM_GPU_RUNNER_BACKEND",
        "auto",
    )


def test_local_services_put_every_runner_after_the_services() -> None:
    """The stack gets each service once and then the plan's runners; by default, one runner."""
    default = [c.name for c in local_services()]
    assert default[-1] == "gpu-runner" and default.count("gpu-runner") == 1
    names = [c.name for c in local_services(RunnerPlan(runners=3, gpus=(0, 1, 2)))]
    assert names[:-3] == default[:-1] and names[-3:] == ["gpu-runner", "gpu-runner-1", "gpu-runner-2"]
    assert all(is_runner_process(n) for n in names[-3:]) and not any(is_runner_process(n) for n in names[:-3])
    assert not is_runner_process("gpu-runner-x")


def test_the_generate_service_plans_for_the_backends_the_runners_have(monkeypatch: pytest.MonkeyPatch) -> None:
    """Synthetic runners: the stand-in for every model; runners on GPUs: the real backends; the environment wins."""
    gpus = RunnerPlan(runners=2, gpus=(0, 1))
    assert generate_backends(RunnerPlan(), {}) == "synthetic"
    assert generate_backends(gpus, {}) == "diffusers,cosmos3,synthetic"
    assert generate_backends(gpus, {"WM_GPU_RUNNER_BACKEND": "synthetic"}) == "synthetic"
    assert generate_backends(RunnerPlan(), {"WM_GENERATE_BACKENDS": "nim,synthetic"}) == "nim,synthetic"
    monkeypatch.delenv("WM_GENERATE_BACKENDS", raising=False)
    monkeypatch.delenv("WM_GPU_RUNNER_BACKEND", raising=False)
    [generate] = [c for c in local_services(gpus) if c.name == "generate"]
    assert dict(generate.env)["WM_GENERATE_BACKENDS"] == "diffusers,cosmos3,synthetic"


@pytest.mark.parametrize(
    ("runners", "gpus", "expected"),
    [
        (None, None, RunnerPlan(1, ())),
        (4, None, RunnerPlan(4, ())),
        (None, "0,1,2,3", RunnerPlan(4, (0, 1, 2, 3))),
        (None, " 3, 1 ", RunnerPlan(2, (3, 1))),
        (8, "0,1", RunnerPlan(8, (0, 1))),
        (MAX_RUNNERS, None, RunnerPlan(MAX_RUNNERS, ())),
    ],
)
def test_runner_plans(runners: int | None, gpus: str | None, expected: RunnerPlan) -> None:
    """Default N: one per GPU with --gpus, else 1; more runners than GPUs share them."""
    assert plan_runners(runners, gpus) == expected


BAD_OPTIONS = [
    pytest.param(["--runners", "0"], "--runners: must be at least 1", id="no runner"),
    pytest.param(["--runners", "-2", "--gpus", "0"], "--runners: must be at least 1", id="negative"),
    pytest.param(["--runners", str(MAX_RUNNERS + 1)], f"--runners: at most {MAX_RUNNERS}", id="too many"),
    pytest.param(["--gpus", ",".join(map(str, range(65)))], f"--gpus: at most {MAX_RUNNERS}", id="too many GPUs"),
    pytest.param(["--gpus", "0,one"], "--gpus: 'one' is not a GPU id", id="not a number"),
    pytest.param(["--gpus", "-1"], "--gpus: '-1' is not a GPU id", id="negative id"),
    pytest.param(["--gpus", "0,,1"], "--gpus: '' is not a GPU id", id="empty id"),
    pytest.param(["--gpus", "1.5"], "--gpus: '1.5' is not a GPU id", id="fraction"),
    pytest.param(["--gpus", "0,1,0"], "--gpus: GPU 0 is listed twice", id="duplicate"),
    pytest.param(["--gpus", "2,02"], "--gpus: GPU 2 is listed twice", id="duplicate written twice"),
    pytest.param(["--runners", "2", "--gpus", "0,1,2"], "leaves a GPU without a runner", id="GPU without runner"),
]


@pytest.mark.parametrize(("args", "expected"), BAD_OPTIONS)
def test_bad_runner_options_exit_2_before_anything_starts(tmp_path: Path, args: list[str], expected: str) -> None:
    """Each rule: exit 2 with the option and the rule, and no stack (not even its folder) is made."""
    data = tmp_path / "wm"
    result = CliRunner().invoke(app, ["up", "--data-dir", str(data), *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split()), result.output
    assert not data.exists()
    with pytest.raises(RunnerOptionError, match=r"^--(runners|gpus): "):
        plan_runners(
            int(args[args.index("--runners") + 1]) if "--runners" in args else None,
            args[args.index("--gpus") + 1] if "--gpus" in args else None,
        )


def test_process_names_must_be_unique_in_a_stack(tmp_path: Path) -> None:
    """Two processes of one name would share a log, a PID entry and a port entry: refused before starting."""
    twice = [ServiceCommand(name="gpu-runner", argv=("true",), port=1)] * 2
    with pytest.raises(ValueError, match="unique in a stack: gpu-runner"):
        start_stack(tmp_path / "wm", twice)
    assert not (tmp_path / "wm").exists()


def test_print_state_shows_each_runners_gpu() -> None:
    """The up table says which GPU each runner has, and that an unpinned runner has none."""
    state = StackState.model_validate(
        {
            "data_dir": "/tmp/wm",
            "started_at": "2026-01-01T00:00:00Z",
            "owner_pid": 1,
            "nats_url": "nats://127.0.0.1:1",
            "nats_monitor_url": "http://127.0.0.1:2",
            "s3_endpoint": "http://127.0.0.1:3",
            "s3_access_key": "a",
            "s3_secret_key": "s",
            "api_token": "t",
            "ports": {},
            "pids": {},
            "services": {"qa": "http://q", "gpu-runner": "http://r0", "gpu-runner-1": "http://r1", "gpu-runner-2": "x"},
            "gpus": {"gpu-runner": "0", "gpu-runner-1": "3"},
        }
    )
    with console.capture() as captured:
        print_state(state)
    lines = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in captured.get().splitlines()
        if "service" in line
    }
    assert lines == {
        "service qa": "http://q",
        "service gpu-runner": "http://r0  (GPU 0)",
        "service gpu-runner-1": "http://r1  (GPU 3)",
        "service gpu-runner-2": "x  (no GPU pinned)",
    }


def _runner_env(pid: int) -> dict[str, str]:
    """The environment a process was started with (Linux /proc)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_up_with_two_runners_starts_two_named_runners_and_down_stops_them(tmp_path: Path) -> None:
    """`up --detach --runners 2`: gpu-runner and gpu-runner-1 ready on their own ports, distinct names; `down` stops both."""
    data = tmp_path / "wm"
    up = subprocess.run(
        [*CLI, "up", "--detach", "--runners", "2", "--data-dir", str(data)],
        env=_cli_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    state = load_state(data)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert state is not None
        runners = [name for name in state.pids if is_runner_process(name)]
        assert runners == ["gpu-runner", "gpu-runner-1"]
        assert all(state.alive().values())
        assert state.gpus == {}
        assert "service gpu-runner-1" in up.stdout and "(no GPU pinned)" in up.stdout
        urls = [state.services[name] for name in runners]
        assert len(set(urls)) == 2
        for url in urls:
            ready = httpx.get(f"{url}/readyz", timeout=10)
            assert ready.status_code == 200, ready.text
            assert httpx.get(f"{url}/healthz", timeout=10).json()["service"] == "gpu-runner"
        envs = [_runner_env(state.pids[name]) for name in runners]
        assert {e["WM_GPU_RUNNER_BACKEND"] for e in envs} == {"synthetic"}
        assert len({e["WM_GPU_RUNNER_NAME"] for e in envs}) == 2
        assert not any("CUDA_VISIBLE_DEVICES" in e for e in envs)
        again = subprocess.run(
            [*CLI, "up", "--detach", "--runners", "3", "--data-dir", str(data)],
            env=_cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 0 and "already running" in again.stdout and "worldmill down" in again.stdout
        assert load_state(data) == state
    finally:
        down = subprocess.run(
            [*CLI, "down", "--data-dir", str(data)], env=_cli_env(), capture_output=True, text=True, timeout=120
        )
    assert down.returncode == 0, down.stdout + down.stderr
    assert "gpu-runner: stopped" in down.stdout and "gpu-runner-1: stopped" in down.stdout
    assert not any(pid_alive(p) for p in state.pids.values())
    assert load_state(data) is None
