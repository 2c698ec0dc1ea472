"""``worldmill augment`` over HTTP against the whole pipeline: upload, wait, summary; a rerun skips what passed."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from tests.helpers.generation import generate_client, runner_client, settings
from tests.helpers.serve import serve
from tests.helpers.video import write_video
from worldmill.augment.app import create_app as create_augment_app
from worldmill.augment.cli import augment, parse_controls
from worldmill.augment.settings import AugmentSettings
from worldmill.contracts.keys import INPUTS_BUCKET
from worldmill.prompt.app import create_app as create_prompt_app
from worldmill.qa.app import create_app as create_qa_app
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.settings import RuntimeSettings
from worldmill.runtime.store import ObjectStore


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(augment)
    app.command("version")(lambda: None)  # a second command keeps `augment` a named sub-command
    return app


@pytest.fixture
def cli_env(nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The pipeline running; the environment that points the CLI at it (augment over real HTTP)."""
    with ExitStack() as stack:
        stack.enter_context(TestClient(create_prompt_app(RuntimeSettings(**settings(nats, s3, tmp_path, "prompt")))))
        stack.enter_context(generate_client(nats, s3, tmp_path))
        stack.enter_context(runner_client(nats, s3, tmp_path))
        stack.enter_context(TestClient(create_qa_app(RuntimeSettings(**settings(nats, s3, tmp_path, "qa")))))
        prefix = f"cli-{uuid.uuid4().hex[:8]}/"
        aug = AugmentSettings(
            **settings(nats, s3, tmp_path, "augment"), poll_prefix=prefix, poll_interval_s=0.3, settle_s=0.5
        )
        url = stack.enter_context(serve(create_augment_app(aug)))
        yield {
            "WM_AUGMENT_URL": url,
            "WM_API_TOKEN": "tok",
            "WM_S3_ENDPOINT": s3.url,
            "WM_S3_ACCESS_KEY": s3.access_key,
            "WM_S3_SECRET_KEY": s3.secret_key,
            "COLUMNS": "250",
            "PREFIX": prefix,
        }


def _run(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(_app(), ["augment", *args], env=env)


def test_augment_a_folder_then_rerun_the_prefix_and_skip_what_passed(cli_env: dict[str, str], tmp_path: Path) -> None:
    """Two local clips → two passing augmentations; `--all` again skips both; a broken upload then fails."""
    prefix = cli_env["PREFIX"]
    folder = tmp_path / "shoot"
    write_video(folder / "a.mp4", width=64, height=48, fps=24, frames=24, seed=1)
    write_video(folder / "b.mp4", width=48, height=64, fps=25, frames=20, seed=2)
    report = tmp_path / "report.json"
    first = _run([str(folder), "--prefix", prefix, "--controls", "edge=1:low", "--report", str(report)], cli_env)
    assert first.exit_code == 0, first.output
    summary = json.loads(report.read_text())
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 0, "in_progress": 0}
    outputs = sorted(row["output"] for row in summary["inputs"])
    assert outputs == [
        f"s3://wm-artifacts/augmented/{prefix}shoot/a_aug.mp4",
        f"s3://wm-artifacts/augmented/{prefix}shoot/b_aug.mp4",
    ]
    store = ObjectStore(cli_env["WM_S3_ENDPOINT"], cli_env["WM_S3_ACCESS_KEY"], cli_env["WM_S3_SECRET_KEY"])
    sidecar = json.loads(asyncio.run(store.get_bytes(INPUTS_BUCKET, f"{prefix}shoot/a.json")))
    assert sidecar["controls"] == [{"type": "edge", "preset": "low"}]
    again = _run(["--all", prefix, "--controls", "edge=1:low"], cli_env)
    assert again.exit_code == 0, again.output
    assert "done 0, skipped 2, failed 0" in again.output
    other = _run(["--all", prefix, "--controls", "edge=1"], cli_env)  # same inputs, another preset: new outputs
    assert other.exit_code == 0, other.output  # renditions of one input may look alike: not near-duplicates
    assert "done 2, skipped 0, failed 0" in other.output
    asyncio.run(store.put_bytes(INPUTS_BUCKET, f"{prefix}shoot/broken.mp4", b"\x00" * 64))
    third = _run(["--all", prefix, "--controls", "edge=1:low", "--report", str(report)], cli_env)
    assert third.exit_code == 1, third.output
    rows = {r["input"]: r for r in json.loads(report.read_text())["inputs"]}
    broken = rows[f"s3://wm-inputs/{prefix}shoot/broken.mp4"]
    assert broken["status"] == "failed" and "not a readable video" in broken["reason"]
    assert sum(r["status"] == "skipped" for r in rows.values()) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give PATH… or --all PREFIX"),
        (["x.mp4", "--controls", "edge"], "is not TYPE=WEIGHT"),
        (["x.mp4", "--controls", "edge=lots"], "is not a number"),
        (["x.mp4", "--controls", "edge=2"], "controls"),
        (["/no/such/file.mp4"], "neither a file"),
    ],
    ids=["nothing", "no-weight", "bad-weight", "weight-above-1", "missing-file"],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    """Bad command lines are refused before anything is uploaded."""
    result = _run(
        args,
        {
            "WM_AUGMENT_URL": "http://127.0.0.1:9",
            "COLUMNS": "200",
            "WM_S3_ENDPOINT": "http://127.0.0.1:9",
            "WM_S3_ACCESS_KEY": "k",
            "WM_S3_SECRET_KEY": "s",
        },
    )
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_parse_controls_reads_weights_and_presets() -> None:
    """edge=0.6:low,depth=0.4 → two controls, the first with a preset."""
    assert parse_controls("edge=0.6:low, depth=0.4") == [
        {"type": "edge", "weight": 0.6, "preset": "low"},
        {"type": "depth", "weight": 0.4},
    ]
