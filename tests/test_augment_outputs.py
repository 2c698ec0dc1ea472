"""``worldmill augment … --output-dir DIR``: each passing video written locally, verified, never clobbering a user's file.

The pipeline test runs every service on the real servers (nats-server, SeaweedFS, the synthetic
runner) and drives the CLI over real HTTP, as tests/test_augment_cli.py does. The delivery rules
(temp file + rename, sha256, a full disk) are also checked on ``deliver`` itself with a store
that misbehaves on purpose.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from tests.helpers.generation import AUTH, generate_client, runner_client, settings
from tests.helpers.serve import serve
from tests.helpers.video import write_video
from worldmill.augment.app import create_app as create_augment_app
from worldmill.augment.cli import augment
from worldmill.augment.outputs import SUMMARY_NAME, deliver
from worldmill.augment.settings import AugmentSettings
from worldmill.contracts.augment import Augmentation, AugmentParams
from worldmill.contracts.base import ObjectLocation, ObjectRef
from worldmill.contracts.keys import ARTIFACTS_BUCKET
from worldmill.prompt.app import create_app as create_prompt_app
from worldmill.qa.app import create_app as create_qa_app
from worldmill.runtime.media import probe
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.settings import RuntimeSettings
from worldmill.runtime.store import ObjectStore


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(augment)
    app.command("version")(lambda: None)  # a second command keeps `augment` a named sub-command
    return app


@contextmanager
def cli_pipeline(nats: NatsEndpoint, s3: S3Endpoint, tmp: Path) -> Iterator[tuple[dict[str, str], TestClient]]:
    """Every service running; the CLI's environment (augment over real HTTP) and the prompt service's client."""
    with ExitStack() as stack:
        prompts = stack.enter_context(
            TestClient(create_prompt_app(RuntimeSettings(**settings(nats, s3, tmp, "prompt"))))
        )
        stack.enter_context(generate_client(nats, s3, tmp))
        stack.enter_context(runner_client(nats, s3, tmp))
        stack.enter_context(TestClient(create_qa_app(RuntimeSettings(**settings(nats, s3, tmp, "qa")))))
        prefix = f"out-{uuid.uuid4().hex[:8]}/"
        aug = AugmentSettings(
            **settings(nats, s3, tmp, "augment"), poll_prefix=prefix, poll_interval_s=0.3, settle_s=0.5
        )
        url = stack.enter_context(serve(create_augment_app(aug)))
        env = {
            "WM_AUGMENT_URL": url,
            "WM_API_TOKEN": "tok",
            "WM_S3_ENDPOINT": s3.url,
            "WM_S3_ACCESS_KEY": s3.access_key,
            "WM_S3_SECRET_KEY": s3.secret_key,
            "COLUMNS": "250",
            "PREFIX": prefix,
        }
        yield env, prompts


def run_cli(args: list[str], env: dict[str, str]) -> Result:
    """``worldmill augment ARGS`` in-process."""
    return CliRunner().invoke(_app(), ["augment", *args], env=env)


def augmentation(env: dict[str, str], aug_id: str) -> dict[str, Any]:
    """The augmentation record, from the augment service over HTTP."""
    resp = httpx.get(f"{env['WM_AUGMENT_URL']}/augmentations/{aug_id}", headers=AUTH, timeout=10)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def lineage(env: dict[str, str], record: dict[str, Any]) -> dict[str, Any]:
    """The ``_aug.json`` lineage next to an output (it holds the plan)."""
    store = ObjectStore(env["WM_S3_ENDPOINT"], env["WM_S3_ACCESS_KEY"], env["WM_S3_SECRET_KEY"])
    return dict(json.loads(asyncio.run(store.get_bytes(ARTIFACTS_BUCKET, record["provenance"]["key"]))))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cli_env(nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path) -> Iterator[dict[str, str]]:
    with cli_pipeline(nats, s3, tmp_path) as (env, _):
        yield env


def test_output_dir_gets_each_video_at_the_inputs_size_and_keeps_a_users_file(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """a (96x64) and b (100x70) → out/a_aug.mp4 96x64, out/b_aug.mp4 rounded to 96x64 (recorded); reruns are safe."""
    prefix = cli_env["PREFIX"]
    folder, out = tmp_path / "inputs", tmp_path / "outputs"
    write_video(folder / "a.mp4", width=96, height=64, fps=24, frames=20, seed=1)
    write_video(folder / "b.mp4", width=100, height=70, fps=24, frames=16, seed=2)
    first = run_cli([str(folder), "--prefix", prefix, "--output-dir", str(out)], cli_env)
    assert first.exit_code == 0, first.output
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["counts"]["done"] == 2, summary
    rows = {Path(r["input"]).name: r for r in summary["inputs"]}
    assert {n: (r["local_status"], r["local_file"]) for n, r in rows.items()} == {
        "a.mp4": ("written", str(out / "a_aug.mp4")),
        "b.mp4": ("written", str(out / "b_aug.mp4")),
    }
    assert sorted(p.name for p in out.iterdir()) == sorted(["a_aug.mp4", "b_aug.mp4", SUMMARY_NAME])  # no temp files
    for name, frames in (("a", 20), ("b", 16)):
        record = augmentation(cli_env, rows[f"{name}.mp4"]["augmentation_id"])
        local = out / f"{name}_aug.mp4"
        assert sha256(local) == record["output"]["sha256"]
        info = probe(local)  # decodable, the input's frames and fps, the input's size (b: rounded to 16s)
        assert (info.frames, float(info.fps), info.width, info.height) == (frames, 24.0, 96, 64)
    plan_a = lineage(cli_env, augmentation(cli_env, rows["a.mp4"]["augmentation_id"]))["plan"]
    assert plan_a["resolution"] == {"width": 96, "height": 64}
    assert [a for a in plan_a["adaptations"] if a["field"] == "resolution"] == []
    plan_b = lineage(cli_env, augmentation(cli_env, rows["b.mp4"]["augmentation_id"]))["plan"]
    [rounded] = [a for a in plan_b["adaptations"] if a["field"] == "resolution"]
    assert (rounded["requested"], rounded["delivered"]) == ("100x70 (the input's size)", "96x64")
    assert "multiples of 16" in rounded["reason"]

    # A user's own file under a's name is kept (warning), b's identical file is left alone.
    (out / "a_aug.mp4").write_bytes(b"my own edit")
    again = run_cli(["--all", prefix, "--output-dir", str(out)], cli_env)
    assert again.exit_code == 0, again.output
    assert "--overwrite replaces it" in again.output
    assert (out / "a_aug.mp4").read_bytes() == b"my own edit"
    statuses = {
        Path(r["input"]).name: r["local_status"] for r in json.loads((out / SUMMARY_NAME).read_text())["inputs"]
    }
    assert statuses == {"a.mp4": "kept", "b.mp4": "unchanged"}
    forced = run_cli(["--all", prefix, "--output-dir", str(out), "--overwrite"], cli_env)
    assert forced.exit_code == 0, forced.output
    assert sha256(out / "a_aug.mp4") == augmentation(cli_env, rows["a.mp4"]["augmentation_id"])["output"]["sha256"]

    # The nested layout, from the passing augmentations (skipped now) of the same inputs.
    nested = tmp_path / "nested"
    third = run_cli(["--all", prefix, "--output-dir", str(nested), "--per-video-folders"], cli_env)
    assert third.exit_code == 0, third.output
    assert sorted(p.relative_to(nested).as_posix() for p in nested.rglob("*.mp4")) == ["a/a_aug.mp4", "b/b_aug.mp4"]
    assert sha256(nested / "b" / "b_aug.mp4") == sha256(out / "b_aug.mp4")


def test_an_output_dir_that_cannot_be_written_exits_2_naming_it_before_any_upload(tmp_path: Path) -> None:
    """A folder under a regular file cannot be made: exit 2, the path named, nothing contacted."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    write_video(tmp_path / "in" / "a.mp4", width=64, height=48, fps=24, frames=4)
    env = {"WM_AUGMENT_URL": "http://127.0.0.1:9", "COLUMNS": "300", "WM_S3_ENDPOINT": "http://127.0.0.1:9"}
    env |= {"WM_S3_ACCESS_KEY": "k", "WM_S3_SECRET_KEY": "s"}
    result = run_cli([str(tmp_path / "in"), "--output-dir", str(blocker / "out")], env)
    assert result.exit_code == 2, result.output
    assert str(blocker / "out") in result.output and "cannot write there" in result.output
    flag = run_cli([str(tmp_path / "in"), "--per-video-folders"], env)
    assert flag.exit_code == 2 and "go with --output-dir" in flag.output


# -- deliver() on its own: a store that fails or lies ------------------------------------------------


class _Store:
    """Writes ``payload`` to the destination, then optionally fails as a full disk would."""

    def __init__(self, payload: bytes, *, fail: OSError | None = None) -> None:
        self.payload, self.fail = payload, fail

    async def download(self, bucket: str, key: str, dest: Path) -> None:  # noqa: ARG002 - the store's signature
        dest.write_bytes(self.payload[: len(self.payload) // 2] if self.fail else self.payload)
        if self.fail is not None:
            raise self.fail


def _aug(payload: bytes) -> Augmentation:
    now = datetime.now(UTC)
    ref = ObjectRef(
        bucket="wm-artifacts",
        key="augmented/clip_aug.mp4",
        size=len(payload),
        sha256=hashlib.sha256(payload).hexdigest(),
        content_type="video/mp4",
    )
    return Augmentation(
        augmentation_id="aug-1",
        request_id="r-1",
        requested_by="cli",
        state="passed",
        input=ObjectLocation(bucket="wm-inputs", key="clip.mp4"),
        params=AugmentParams(),
        output=ref,
        created_at=now,
        updated_at=now,
    )


async def test_a_full_disk_or_wrong_bytes_leave_nothing_under_the_final_name(tmp_path: Path) -> None:
    """ENOSPC mid-download and bytes that do not match the record: an error naming the path, no file, no temp."""
    target = tmp_path / "clip_aug.mp4"
    full = _Store(b"video bytes", fail=OSError(errno.ENOSPC, "No space left on device"))
    got = await deliver(cast(ObjectStore, full), _aug(b"video bytes"), target, overwrite=False)
    assert got.status == "error" and "no space left" in got.note and str(target) in got.note
    assert list(tmp_path.iterdir()) == []
    wrong = await deliver(cast(ObjectStore, _Store(b"other bytes")), _aug(b"video bytes"), target, overwrite=True)
    assert wrong.status == "error" and "nothing written" in wrong.note
    assert list(tmp_path.iterdir()) == []
    right = await deliver(cast(ObjectStore, _Store(b"video bytes")), _aug(b"video bytes"), target, overwrite=False)
    assert (right.status, target.read_bytes()) == ("written", b"video bytes")
    assert [p.name for p in tmp_path.iterdir()] == ["clip_aug.mp4"]
