"""The local stack and the CLI around it: up, doctor, down, demo, serve — real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.conftest import REPO
from tests.helpers.video import write_video
from worldmill.cli.main import app
from worldmill.cli.stack_commands import run_checks
from worldmill.contracts.keys import ARTIFACTS_BUCKET
from worldmill.runtime.servers import ServerStartError, pid_alive
from worldmill.runtime.stack import load_state, start_stack
from worldmill.runtime.store import ObjectStore

CLI = [sys.executable, "-m", "worldmill.cli"]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WM_")}
    env["COLUMNS"] = "200"
    return env


async def test_stack_starts_is_healthy_stops_and_reuses_its_data(tmp_path: Path) -> None:
    """up → every doctor check passes → a second up is refused → stop → up again keeps data and ports."""
    data = tmp_path / "wm"
    stack = start_stack(data)
    try:
        results = await run_checks(load_state(data), data)
        assert [r for r in results if not r.ok] == []
        assert {r.name for r in results} >= {"nats", "jetstream", "streams", "s3", "s3 signatures", "buckets"}
        with pytest.raises(ServerStartError, match="already running"):
            start_stack(data)
        st = stack.state
        store = ObjectStore(st.s3_endpoint, st.s3_access_key, st.s3_secret_key)
        ref = await store.put_bytes(ARTIFACTS_BUCKET, "probes/keep.bin", b"still here")
        first_ports, pids = dict(st.ports), dict(st.pids)
    finally:
        stack.stop()
    assert not any(pid_alive(p) for p in pids.values())
    assert load_state(data) is None
    again = start_stack(data)
    try:
        st = again.state
        assert st.s3_access_key == stack.state.s3_access_key  # credentials are kept per data folder
        assert st.ports["nats"] == first_ports["nats"]
        store = ObjectStore(st.s3_endpoint, st.s3_access_key, st.s3_secret_key)
        assert await store.get_bytes(ARTIFACTS_BUCKET, "probes/keep.bin") == b"still here"
        assert (await store.stat(ARTIFACTS_BUCKET, "probes/keep.bin")).sha256 == ref.sha256
    finally:
        again.stop()
    assert (data / "credentials.json").stat().st_mode & 0o777 == 0o600


def test_doctor_without_a_stack_says_what_to_do(tmp_path: Path) -> None:
    """doctor on an empty folder exits 1 and tells to run `worldmill up`; a missing folder is usage (2)."""
    (tmp_path / "empty").mkdir()
    runner = CliRunner()
    result = runner.invoke(app, ["doctor", "--data-dir", str(tmp_path / "empty")], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "worldmill up" in result.output
    missing = runner.invoke(app, ["doctor", "--data-dir", str(tmp_path / "nope")], env={"COLUMNS": "200"})
    assert missing.exit_code == 2


def test_up_runs_until_ctrl_c_and_doctor_reports_healthy(tmp_path: Path) -> None:
    """`worldmill up` in the foreground: doctor passes while it runs; SIGINT stops every process."""
    data = tmp_path / "wm"
    proc = subprocess.Popen(
        [*CLI, "up", "--data-dir", str(data)],
        env=_cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while load_state(data) is None:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "stack did not come up"
            time.sleep(0.2)
        time.sleep(1.0)  # streams and buckets are created right after the state file
        doctor = subprocess.run(
            [*CLI, "doctor", "--data-dir", str(data)], env=_cli_env(), capture_output=True, text=True, timeout=60
        )
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "The stack is healthy" in doctor.stdout
        assert "service prompt" in doctor.stdout
        # Every service process logged in to NATS as its own user (contracts.permissions), none as admin.
        state = load_state(data)
        assert state is not None
        connz = httpx.get(f"{state.nats_monitor_url}/connz", params={"auth": "true", "limit": 1024}, timeout=5).json()
        users = {c.get("name"): c.get("authorized_user") for c in connz["connections"]}
        for service in state.services:
            assert users.get(service) == service, (service, users)
        manifest = REPO / "examples" / "security-cameras-demo.yaml"
        submit = subprocess.run(
            [*CLI, "manifest", "submit", str(manifest), "--data-dir", str(data)],
            env=_cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert submit.returncode == 0, submit.stdout + submit.stderr
        assert "18 new spec version(s), 0 unchanged" in submit.stdout
        ls = subprocess.run(
            [*CLI, "prompts", "ls", "--series", "R", "--data-dir", str(data), "--json"],
            env=_cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ls.returncode == 0, ls.stderr
        ids = [item["prompt_id"] for item in json.loads(ls.stdout)["items"]]
        assert ids == sorted(f"security-cameras-demo-R14-{d}s-v0" for d in (5, 10, 30))
        show = subprocess.run(
            [*CLI, "prompts", "show", ids[0], "--data-dir", str(data)],
            env=_cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert show.returncode == 0 and '"risk_level": "high"' in show.stdout
        missing = subprocess.run(
            [*CLI, "prompts", "show", "nope", "--data-dir", str(data)],
            env=_cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert missing.returncode == 2 and "nope" in missing.stderr
        # Coverage is the catalog's status: poll while it is still reading the manifest's events.
        deadline = time.monotonic() + 30
        while True:
            cov = subprocess.run(
                [*CLI, "manifest", "coverage", "security-cameras-demo", "--data-dir", str(data)],
                env=_cli_env(),
                capture_output=True,
                text=True,
                timeout=60,
            )
            settled = cov.returncode not in (0, 2) or (cov.returncode == 0 and "(of 18)" in cov.stdout)
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert cov.returncode == 0, cov.stderr
        # Every state is counted (the catalog's five), nothing made yet: all 18 missing.
        assert "missing: 18," in cov.stdout and "passed: 0," in cov.stdout and "(of 18)" in cov.stdout
        clips = tmp_path / "clips"
        write_video(clips / "door.mp4", width=320, height=180, fps=24, frames=24)
        write_video(clips / "sub" / "yard.mp4", width=240, height=320, fps=25, frames=25, seed=3)
        made = subprocess.run(
            [
                *CLI,
                "prompts",
                "from-videos",
                str(clips),
                "--controls",
                "edge=0.6,vis=0.4",
                "--template",
                "security-camera",
                "--data-dir",
                str(data),
            ],
            env=_cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        assert "uploaded 2 video(s)" in made.stdout and made.stdout.count("created") == 2
        again = subprocess.run(
            [*CLI, "prompts", "from-videos", str(clips), "--data-dir", str(data)],
            env=_cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 0 and again.stdout.count("kept") == 2, again.stdout
        bad = subprocess.run(
            [*CLI, "prompts", "from-videos", str(clips), "--controls", "edge=2", "--data-dir", str(data)],
            env=_cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == 2 and "--controls" in bad.stderr
        state = load_state(data)
        assert state is not None
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "Stack stopped" in out
    assert not any(pid_alive(p) for p in state.pids.values())
    assert load_state(data) is None


def test_detached_up_is_stopped_by_down(tmp_path: Path) -> None:
    """`up --detach` returns with the stack running; `down` stops it by PID."""
    data = tmp_path / "wm"
    up = subprocess.run(
        [*CLI, "up", "--detach", "--data-dir", str(data)], env=_cli_env(), capture_output=True, text=True, timeout=120
    )
    state = load_state(data)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert state is not None and all(state.alive().values())
    finally:
        down = subprocess.run(
            [*CLI, "down", "--data-dir", str(data)], env=_cli_env(), capture_output=True, text=True, timeout=120
        )
    assert down.returncode == 0, down.stdout
    assert state is not None and not any(pid_alive(p) for p in state.pids.values())


def test_demo_runs_the_round_trip_and_cleans_up(tmp_path: Path) -> None:
    """`worldmill demo --json` starts its own stack, passes every step, writes JSON, stops what it started."""
    out = tmp_path / "summary.json"
    manifest = REPO / "examples" / "security-cameras-demo.yaml"
    result = subprocess.run(
        [*CLI, "demo", "--json", str(out), "--manifest", str(manifest)],
        cwd=tmp_path,
        env=_cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(out.read_text())
    assert summary["ok"] is True
    assert [s["step"] for s in summary["steps"]] == [
        "store object",
        "publish event",
        "consume event",
        "verify object",
        "dedup",
        "presigned URL",
    ]
    assert all(s["ok"] for s in summary["steps"])
    assert len(summary["object"]["sha256"]) == 64
    m = summary["manifest"]
    assert m["manifest"] == "security-cameras-demo"
    assert m["created"] == m["counts"]["specs"] == len(m["specs"]) == 18
    assert m["created_on_resubmit"] == 0 and m["unchanged_on_resubmit"] == 18
    frames = {(s["duration_s"], s["frames"]) for s in m["specs"]}
    assert frames == {(5.0, 120), (10.0, 240), (30.0, 720)}
    assert len({s["seed"] for s in m["specs"]}) == 18
    g = summary["generation"]
    assert g["ok"] and len(g["videos"]) == 18 and g["distinct_files"] == 18
    assert {(v["duration_s"], v["frames"], v["fps"]) for v in g["videos"]} == {
        (5.0, 120, 24.0),
        (10.0, 240, 24.0),
        (30.0, 720, 24.0),
    }
    assert all(v["exact"] and "X-Amz-Signature" in v["presigned_url"] for v in g["videos"])
    assert g["qa"] == {"ok": True, "checked": 18, "passed": 18, "missing": 0}
    assert all(len(v["qa"]["screenshots"]) == 3 and v["qa"]["contact_sheet"] for v in g["videos"])
    assert load_state(tmp_path / ".worldmill") is None
    ports = json.loads((tmp_path / ".worldmill" / "ports.json").read_text())
    assert not _listening(ports["nats"]) and not _listening(ports["s3_s3"])


def test_every_service_serve_knows_is_built_and_an_unknown_one_is_a_usage_error() -> None:
    """Each name `worldmill serve` accepts has its app module; any other name exits 2 naming the choices."""
    import importlib  # noqa: PLC0415

    from worldmill.cli.serve_command import ServiceName, entry_module  # noqa: PLC0415

    for service in ServiceName:
        assert callable(importlib.import_module(entry_module(service)).create_app), service
    bad = CliRunner().invoke(app, ["serve", "nonsense"], env={"COLUMNS": "200"})
    assert bad.exit_code == 2 and "catalog" in bad.output


def test_a_process_that_exited_but_is_not_reaped_yet_counts_as_stopped() -> None:
    """`down` stops processes another process started: an exited child its parent has not reaped is gone."""
    # The inner sleep exits at once; its parent (exec'd into `sleep 5`) never reaps it: a zombie.
    parent = subprocess.Popen(["sh", "-c", "sleep 0.05 & echo $!; exec sleep 5"], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 5
        while (
            time.monotonic() < deadline and Path(f"/proc/{child}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
        ):
            time.sleep(0.05)
        assert Path(f"/proc/{child}/stat").exists()  # still in the process table…
        assert not pid_alive(child)  # …but gone for us
        assert pid_alive(parent.pid)
    finally:
        parent.kill()
        parent.wait()
