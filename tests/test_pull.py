"""``worldmill pull``: the users' layout (docs/background.md#security-cameras) from the catalog and the object store.

The naming and planning are pure (first half). The command runs in-process (typer's CliRunner)
against a real catalog service over HTTP, fed by real NATS events, and real SeaweedFS holding real
H.264 videos (second half): 2 scenarios × 1 duration (2 s) × 2 variants, one of which failed QA.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import random
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import av
import httpx
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner, Result

from tests.helpers.catalog_events import family, manifest_accepted
from tests.helpers.generation import settings
from tests.helpers.serve import serve
from tests.helpers.video import write_video
from tests.test_catalog_service import publish
from worldmill.catalog.app import create_app
from worldmill.catalog.pull import (
    Candidate,
    PullPlan,
    UnsafePathError,
    duration_token,
    parse_sums,
    plan_pull,
    render_sums,
    safe_relative,
    screenshot_times,
    stem_for,
)
from worldmill.catalog.pull_cli import grab_frames
from worldmill.cli.main import app as cli_app
from worldmill.contracts.base import ObjectRef
from worldmill.prompt import identity
from worldmill.prompt.expand import check_text
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.settings import RuntimeSettings
from worldmill.runtime.store import ObjectStore

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
AUTH = {"Authorization": "Bearer tok"}
WIDTH, HEIGHT, FPS, FRAMES = 64, 48, 24, 48  # 2 s


# -- pure naming and planning --------------------------------------------------------------------


def _cand(
    asset_id: str,
    scenario: str = "C01",
    *,
    duration: float = 5,
    variant: int = 0,
    qa: str = "passed",
    kind: str = "video",
    at: datetime | None = T0,
) -> Candidate:
    ref = ObjectRef(bucket="bkt", key=f"{asset_id}.mp4", size=1, sha256=hashlib.sha256(asset_id.encode()).hexdigest())
    return Candidate(asset_id, scenario, duration, variant, qa, kind, at, ref)


def test_names_follow_the_handoff_layout_and_the_variant_rule() -> None:
    assert stem_for("C01", 30, 0) == "C01_30s"
    assert stem_for("C01", 5.0, 1) == "C01_5s_v1"
    assert stem_for("R14", 2.5, 3) == "R14_2_5s_v3"
    for seconds in (1, 2.5, 5, 10, 30, 0.75, 120):
        assert duration_token(seconds) == identity.duration_token(seconds)
    plan = plan_pull([_cand("a", variant=1), _cand("b"), _cand("c", "C02", duration=2.5)])
    assert [v.video for v in plan.videos] == ["outputs/C01_5s.mp4", "outputs/C01_5s_v1.mp4", "outputs/C02_2_5s.mp4"]
    assert plan.videos[0].screenshots == (
        "screenshots/C01_5s_frame1.jpg",
        "screenshots/C01_5s_frame2.jpg",
        "screenshots/C01_5s_frame3.jpg",
    )
    assert plan.skipped == ()


@pytest.mark.parametrize("scenario", ["../../etc/passwd", "/etc/cron.d/x", "a/../../b", "..\\..\\win", "C01/.."])
def test_a_scenario_name_cannot_lead_outside_dest(scenario: str) -> None:
    plan = plan_pull([_cand("a", scenario)])
    for path in plan.files:
        parts = PurePosixPath(path).parts
        assert parts[0] in ("outputs", "screenshots") and len(parts) == 2, path
        assert ".." not in parts and "/" not in parts[1] and "\\" not in parts[1]
        assert safe_relative(path) == path


def test_a_scenario_with_nothing_usable_is_skipped_and_unsafe_paths_are_refused() -> None:
    plan = plan_pull([_cand("dots", "../.."), _cand("ok", "C01")])
    assert [v.candidate.asset_id for v in plan.videos] == ["ok"]
    assert [(s.asset_id, "no usable characters" in s.reason) for s in plan.skipped] == [("dots", True)]
    for bad in ("../x.mp4", "/abs.mp4", "outputs/../../x", "outputs//x", "outputs\\x", "./x", ""):
        with pytest.raises(UnsafePathError):
            safe_relative(bad)


def test_collisions_keep_the_passed_then_the_original_then_the_newest() -> None:
    failed_newer = _cand("regen-failed", qa="failed", at=T0 + timedelta(hours=1))
    passed_older = _cand("first-passed", at=T0)
    passed_newest = _cand("second-passed", variant=1, at=T0 + timedelta(hours=2))
    passed_old_v1 = _cand("first-v1", variant=1, at=T0)
    augmented = _cand("aug", "C02", kind="augmentation", at=T0 + timedelta(days=1))
    original = _cand("orig", "C02", at=T0)
    same_time = [_cand("tie-a", "C03", at=None), _cand("tie-b", "C03", at=None)]
    upper, lower = _cand("upper", "D01", at=T0), _cand("lower", "d01", at=T0 + timedelta(seconds=1))
    items = [failed_newer, passed_older, passed_newest, passed_old_v1, augmented, original, *same_time, upper, lower]
    plans: list[PullPlan] = []
    for seed in range(5):
        shuffled = items[:]
        random.Random(seed).shuffle(shuffled)
        plans.append(plan_pull(shuffled))
    assert all(p == plans[0] for p in plans)  # deterministic, whatever the order
    plan = plans[0]
    chosen = {v.video: v.candidate.asset_id for v in plan.videos}
    assert chosen == {
        "outputs/C01_5s.mp4": "first-passed",
        "outputs/C01_5s_v1.mp4": "second-passed",
        "outputs/C02_5s.mp4": "orig",
        "outputs/C03_5s.mp4": "tie-b",
        "outputs/d01_5s.mp4": "lower",  # one name on a case-insensitive disk: the newer wins
    }
    reasons = {s.asset_id: s.reason for s in plan.skipped}
    assert set(reasons) == {"regen-failed", "first-v1", "aug", "tie-a", "upper"}
    assert "first-passed" in reasons["regen-failed"] and "passed QA" in reasons["regen-failed"]
    assert "second-passed" in reasons["first-v1"] and "newer" in reasons["first-v1"]
    assert "original" in reasons["aug"]


def test_screenshot_times_for_long_and_short_videos() -> None:
    assert screenshot_times(30) == (0.5, 15.0, 29.5)
    assert screenshot_times(5) == (0.5, 2.5, 4.5)
    assert screenshot_times(1.0) == (0.5, 0.5, 0.5)
    assert screenshot_times(0.6) == pytest.approx((0.3, 0.3, 0.3))
    assert screenshot_times(0.0) == (0.0, 0.0, 0.0)
    for length in (0.1, 0.9, 1.7, 12.3):
        first, middle, last = screenshot_times(length)
        assert 0 <= first <= middle <= last <= length


def test_sha256sums_are_written_and_read_as_sha256sum_does() -> None:
    digests = {"outputs/b.mp4": "b" * 64, "outputs/a.mp4": "a" * 64}
    text = render_sums(digests).decode()
    assert text == f"{'a' * 64}  outputs/a.mp4\n{'b' * 64}  outputs/b.mp4\n"
    assert parse_sums(text + f"junk line\n{'c' * 64} *screenshots/c.jpg\n") == {
        **digests,
        "screenshots/c.jpg": "c" * 64,
    }


def _start(frame: av.VideoFrame) -> float:
    assert frame.pts is not None and frame.time_base is not None
    return float(frame.pts * frame.time_base)


def test_grab_frames_takes_the_frame_shown_at_each_time(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", width=WIDTH, height=HEIGHT, fps=FPS, frames=FRAMES)
    frames = grab_frames(video, (0.5, 1.0, 1.5))
    starts = [_start(f) for f in frames]
    assert starts == pytest.approx([0.5, 1.0, 1.5])
    late = grab_frames(video, (0.49, 99.0, 99.0))
    assert [_start(f) for f in late] == pytest.approx([11 / 24, 47 / 24, 47 / 24])
    short = write_video(tmp_path / "s.mp4", width=WIDTH, height=HEIGHT, fps=FPS, frames=6)  # 0.25 s
    shots = grab_frames(short, screenshot_times(0.25))
    assert [_start(f) for f in shots] == pytest.approx([0.125] * 3)
    assert all((f.width, f.height) == (WIDTH, HEIGHT) for f in shots)


# -- the command against real services -----------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    name: str
    manifest_file: Path
    env: dict[str, str]
    videos: dict[str, str]  # the expected file name → sha256 of its bytes
    failed: str  # the file name of the video that failed QA


def _specs(name: str) -> list[Any]:
    doc = {
        "name": name,
        "defaults": {"model": "synthetic", "fps": FPS, "resolution": f"{WIDTH}x{HEIGHT}", "steps": 4},
        "durations": [2],
        "variants": 2,
        "series": [{"id": "C", "scenarios": [{"id": s, "prompt": f"{s}: a parcel at a door"} for s in ("C01", "C02")]}],
    }
    expansion = check_text(yaml.safe_dump(doc), now=datetime.now(UTC))
    assert expansion.ok, expansion.problems
    assert len(expansion.specs) == 4
    return list(expansion.specs)


@pytest.fixture(scope="module")
def stack(nats: NatsEndpoint, s3: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("pull-stack")
    name = f"pull-{uuid.uuid4().hex[:8]}"
    items = _specs(name)
    store = ObjectStore(s3.url, s3.access_key, s3.secret_key)
    bucket = f"t-pull-{uuid.uuid4().hex[:8]}"
    asyncio.run(store.ensure_buckets([bucket]))
    events: list[Any] = [manifest_accepted(name, items)]
    videos: dict[str, str] = {}
    failed = ""
    for i, spec in enumerate(items):
        data = write_video(
            tmp / f"{i}.mp4", width=WIDTH, height=HEIGHT, fps=FPS, frames=FRAMES, seed=i + 1
        ).read_bytes()
        ref = asyncio.run(store.put_bytes(bucket, f"videos/{spec.prompt_id}.mp4", data, content_type="video/mp4"))
        file = f"{spec.scenario}_2s{f'_v{spec.variant}' if spec.variant else ''}.mp4"
        passed = not (spec.scenario == "C02" and spec.variant == 1)
        if not passed:
            failed = file
        videos[file] = hashlib.sha256(data).hexdigest()
        events += family(spec, passed=passed, at=T0 + timedelta(minutes=i), video=ref)
    manifest_file = tmp / "manifest.yaml"
    manifest_file.write_text(f"name: {name}\n")
    with serve(create_app(RuntimeSettings(**settings(nats, s3, tmp, "catalog")))) as base:
        asyncio.run(publish(nats, events))
        deadline_items: list[Any] = []
        for _ in range(300):
            page = httpx.get(f"{base}/assets", params={"manifest": name, "limit": 100}, headers=AUTH).json()
            deadline_items = page["items"]
            if len(deadline_items) == 4 and all(i["qa_status"] != "pending" for i in deadline_items):
                break
            asyncio.run(asyncio.sleep(0.1))
        assert sorted(i["qa_status"] for i in deadline_items) == ["failed", "passed", "passed", "passed"]
        env = {
            "WM_CATALOG_URL": base,
            "WM_API_TOKEN": "tok",
            "WM_S3_ENDPOINT": s3.url,
            "WM_S3_ACCESS_KEY": s3.access_key,
            "WM_S3_SECRET_KEY": s3.secret_key,
            "WM_DATA_DIR": str(tmp / "no-stack"),
            "COLUMNS": "200",
        }
        yield Stack(name, manifest_file, env, videos, failed)


@pytest.fixture
def run_pull(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    for var in ("WM_CATALOG_URL", "WM_API_TOKEN", "WM_S3_ENDPOINT", "WM_S3_ACCESS_KEY", "WM_S3_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(cli_app, ["pull", *args], env=env or {"WM_DATA_DIR": "/nonexistent/no-stack"})

    return run


def _row(output: str, label: str) -> dict[str, int]:
    """The summary table's row ``label`` as outcome → count."""
    line = next(line for line in output.splitlines() if line.strip("│ ").startswith(label))
    cells = [c.strip() for c in line.strip().strip("│").split("│")]
    return dict(zip(("written", "kept", "replaced", "skipped", "failed"), map(int, cells[1:]), strict=True))


def _tree(dest: Path) -> dict[str, tuple[str, int]]:
    """Every file under DEST: relative path → (sha256, mtime in ns)."""
    return {
        p.relative_to(dest).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in dest.rglob("*")
        if p.is_file()
    }


def _expected(stack: Stack, *, with_failed: bool = False) -> set[str]:
    stems = [f.removesuffix(".mp4") for f in stack.videos if with_failed or f != stack.failed]
    return {f"outputs/{s}.mp4" for s in stems} | {f"screenshots/{s}_frame{i}.jpg" for s in stems for i in (1, 2, 3)}


def _sha256sum_check(dest: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("sha256sum")
    assert tool is not None
    return subprocess.run([tool, "-c", "SHA256SUMS"], cwd=dest, capture_output=True, text=True, timeout=30)


def test_pull_writes_the_handoff_layout_and_a_second_run_keeps_everything(
    stack: Stack, run_pull: Callable[..., Result], tmp_path: Path
) -> None:
    dest = tmp_path / "delivery"
    result = run_pull(str(dest), "--manifest", str(stack.manifest_file), env=stack.env)
    assert result.exit_code == 0, result.output
    files = set(_tree(dest))
    assert files == _expected(stack) | {"generation_status.json", "SHA256SUMS"}
    for name, digest in stack.videos.items():
        if name != stack.failed:
            assert hashlib.sha256((dest / "outputs" / name).read_bytes()).hexdigest() == digest
    for shot in sorted(p for p in files if p.startswith("screenshots/")):
        with Image.open(dest / shot) as image:
            assert image.format == "JPEG" and image.size == (WIDTH, HEIGHT)
            image.load()
    # the three screenshots of a moving video are three different frames
    assert len({(dest / f"screenshots/C01_2s_frame{i}.jpg").read_bytes() for i in (1, 2, 3)}) == 3
    status = json.loads((dest / "generation_status.json").read_text())
    assert status["manifest"] == stack.name and status["total"] == 4
    assert status["counts"]["passed"] == 3 and status["counts"]["failed"] == 1
    sums = parse_sums((dest / "SHA256SUMS").read_text())
    assert set(sums) == _expected(stack) | {"generation_status.json"}
    check = _sha256sum_check(dest)
    assert check.returncode == 0 and check.stdout.count(": OK") == len(sums), check.stdout + check.stderr
    assert _row(result.output, "videos") == {"written": 3, "kept": 0, "replaced": 0, "skipped": 0, "failed": 0}
    assert _row(result.output, "screenshots")["written"] == 9
    assert "SHA256SUMS" in result.output and str(dest) in result.output

    before = _tree(dest)
    again = run_pull(str(dest), "--manifest", stack.name, env=stack.env)  # by name this time
    assert again.exit_code == 0, again.output
    assert _tree(dest) == before  # same bytes, not even rewritten
    assert _row(again.output, "videos") == {"written": 0, "kept": 3, "replaced": 0, "skipped": 0, "failed": 0}
    assert _row(again.output, "screenshots") == {"written": 0, "kept": 9, "replaced": 0, "skipped": 0, "failed": 0}
    assert _row(again.output, "status and sums")["kept"] == 2


def test_a_corrupted_file_is_replaced_and_the_users_files_are_left_alone(
    stack: Stack, run_pull: Callable[..., Result], tmp_path: Path
) -> None:
    dest = tmp_path / "delivery"
    (dest / "outputs").mkdir(parents=True)
    mine = {"notes.txt": b"my notes\n", "outputs/mine.mp4": b"not ours", "screenshots.txt": b"x"}
    for rel, data in mine.items():
        (dest / rel).write_bytes(data)
    first = run_pull(str(dest), "--manifest", stack.name, env=stack.env)
    assert first.exit_code == 0, first.output
    good = _tree(dest)
    (dest / "outputs/C01_2s.mp4").write_bytes(b"garbage, not the catalog's video")
    (dest / "screenshots/C02_2s_frame2.jpg").write_bytes(b"not a jpeg")
    (dest / "screenshots/C01_2s_v1_frame3.jpg").unlink()
    second = run_pull(str(dest), "--manifest", stack.name, env=stack.env)
    assert second.exit_code == 0, second.output
    assert {k: v[0] for k, v in _tree(dest).items()} == {k: v[0] for k, v in good.items()}
    assert _row(second.output, "videos") == {"written": 0, "kept": 2, "replaced": 1, "skipped": 0, "failed": 0}
    # the replaced video's screenshots come out byte for byte the same: kept
    assert _row(second.output, "screenshots") == {"written": 1, "kept": 7, "replaced": 1, "skipped": 0, "failed": 0}
    for rel, data in mine.items():
        assert (dest / rel).read_bytes() == data
    assert "mine.mp4" not in (dest / "SHA256SUMS").read_text()
    assert _sha256sum_check(dest).returncode == 0


def test_all_pulls_failed_videos_too_and_a_query_has_no_status_file(
    stack: Stack, run_pull: Callable[..., Result], tmp_path: Path
) -> None:
    everything = tmp_path / "all"
    result = run_pull(str(everything), "--manifest", stack.name, "--all", env=stack.env)
    assert result.exit_code == 0, result.output
    assert set(_tree(everything)) == _expected(stack, with_failed=True) | {"generation_status.json", "SHA256SUMS"}
    failed = everything / "outputs" / stack.failed
    assert hashlib.sha256(failed.read_bytes()).hexdigest() == stack.videos[stack.failed]

    picked = tmp_path / "query"
    result = run_pull(str(picked), "--query", "scenario=C01&series=C", env=stack.env)
    assert result.exit_code == 0, result.output
    assert set(_tree(picked)) == {p for p in _expected(stack) if "C01_" in p} | {"SHA256SUMS"}
    assert "no generation_status.json" in result.output
    assert _sha256sum_check(picked).returncode == 0


def test_a_full_disk_leaves_no_partial_file_and_exits_1_naming_the_path(
    stack: Stack, run_pull: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def half_then_full(self: ObjectStore, bucket: str, key: str, dest: Path) -> None:
        dest.write_bytes(b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ObjectStore, "download", half_then_full)
    dest = tmp_path / "full"
    result = run_pull(str(dest), "--manifest", stack.name, env=stack.env)
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.split())
    assert "No space left on device" in flat and str(dest / "outputs" / "C01_2s.mp4") in flat
    assert [p.name for p in dest.rglob("*") if p.is_file()] == []


def test_bad_usage_exits_2_naming_the_argument(stack: Stack, run_pull: Callable[..., Result], tmp_path: Path) -> None:
    dest = str(tmp_path / "d")
    neither = run_pull(dest)  # no catalog configured: usage is checked first
    assert neither.exit_code == 2 and "--manifest" in neither.output and "--query" in neither.output
    both = run_pull(dest, "--manifest", "x", "--query", "series=C")
    assert both.exit_code == 2 and "exactly one" in both.output
    bad_key = run_pull(dest, "--query", "colour=red")
    assert bad_key.exit_code == 2 and "--query" in bad_key.output and "colour" in bad_key.output
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    as_file = run_pull(str(a_file), "--manifest", "x")
    assert as_file.exit_code == 2 and "DEST" in as_file.output and "is a file" in as_file.output
    assert a_file.read_text() == "mine"
    under_file = run_pull(str(a_file / "sub"), "--manifest", "x")
    assert under_file.exit_code == 2 and "DEST" in under_file.output and "cannot write" in under_file.output
    unknown = run_pull(dest, "--manifest", "no-such-manifest", env=stack.env)
    flat = " ".join(unknown.output.split())
    assert unknown.exit_code == 2 and "no-such-manifest" in flat and "nothing to pull" in flat
    assert "worldmill report" in flat
    empty = run_pull(dest, "--query", "scenario=Z99", env=stack.env)
    assert empty.exit_code == 2 and "nothing to pull" in " ".join(empty.output.split())
    assert not any(p.is_file() for p in Path(dest).rglob("*"))
