"""`worldmill audit`: the security-camera team's hand audit (docs/background.md#security-cameras) (ffprobe, md5sum, screenshots, a table) as one command.

Every video here is a real H.264 MP4 written with PyAV (64x48, so the module runs in seconds). The
corpus mirrors the failure classes of docs/background.md#security-cameras: byte-identical duration variants, a 93-frame 16 fps clip
named 10 s and 30 s, a missing 30 s variant, a name that matches no pattern and a truncated file.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import respx
import typer
from httpx import Response
from typer.testing import CliRunner, Result

from tests.helpers.video import write_video
from worldmill.prompt.expand import check_text
from worldmill.qa.audit import Expectations
from worldmill.qa.cli import audit, qa_app, set_manifest_expander
from worldmill.qa.measure import analyze
from worldmill.runtime.servers import S3Endpoint
from worldmill.runtime.store import ObjectStore

ENV = {"COLUMNS": "200"}
W, H = 64, 48


def _app() -> typer.Typer:
    """The audit command and the qa sub-app, as `worldmill.cli.main` registers them."""
    set_manifest_expander(lambda raw: check_text(raw, now=datetime.now(UTC)))
    app = typer.Typer()
    app.command()(audit)
    app.add_typer(qa_app, name="qa")
    return app


def _run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(_app(), ["audit", *args], env={**ENV, **(env or {})})


def _good(folder: Path, name: str, seconds: int, seed: int) -> Path:
    return write_video(folder / name, width=W, height=H, fps=24, frames=24 * seconds, seed=seed)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/background.md#security-cameras in miniature (see the module docstring)."""
    folder = tmp_path_factory.mktemp("corpus")
    for name, seconds, seed in (
        ("C01_5s.mp4", 5, 1),
        ("C01_10s.mp4", 10, 2),
        ("C01_30s.mp4", 30, 3),
        ("R14_5s.mp4", 5, 4),
        ("R15_5s.mp4", 5, 6),
        ("R15_10s.mp4", 10, 7),
    ):
        _good(folder, name, seconds, seed)
    cosmos_default = write_video(folder / "R14_10s.mp4", width=W, height=H, fps=16, frames=93, seed=5)
    shutil.copyfile(cosmos_default, folder / "R14_30s.mp4")
    write_video(folder / "notes_final.mp4", width=W, height=H, fps=24, frames=48, seed=8)
    whole_path = tmp_path_factory.mktemp("whole") / "whole.mp4"
    whole = write_video(whole_path, width=W, height=H, fps=24, frames=120, seed=9).read_bytes()
    (folder / "C01_5s_v1.mp4").write_bytes(whole[: len(whole) // 2])
    (folder / "readme.txt").write_text("not a video, not audited")
    return folder


@pytest.fixture(scope="module")
def corpus_report(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, dict[str, Any]]:
    """The corpus audited once, with its JSON report."""
    out = tmp_path_factory.mktemp("report") / "audit.json"
    result = _run(str(corpus), "--json", str(out))
    return result, json.loads(out.read_text())


def _failed(entry: dict[str, Any], severity: str = "error") -> dict[str, dict[str, Any]]:
    return {f["check"]: f for f in entry["findings"] if not f["passed"] and f["severity"] == severity}


def test_corpus_audit_reports_every_seeds_000_failure_and_exits_1(corpus_report: tuple[Result, dict[str, Any]]) -> None:
    """The corpus fails with exit 1 and the JSON has exactly the findings of docs/background.md#security-cameras, file by file."""
    result, report = corpus_report
    assert result.exit_code == 1, result.output
    files = {f["name"]: f for f in report["files"]}
    assert sorted(files) == sorted(
        [
            "C01_5s.mp4",
            "C01_10s.mp4",
            "C01_30s.mp4",
            "C01_5s_v1.mp4",
            "R14_5s.mp4",
            "R14_10s.mp4",
            "R14_30s.mp4",
            "R15_5s.mp4",
            "R15_10s.mp4",
            "notes_final.mp4",
        ]
    )
    for good in ("C01_5s.mp4", "C01_10s.mp4", "C01_30s.mp4", "R14_5s.mp4", "R15_5s.mp4", "R15_10s.mp4"):
        entry = files[good]
        assert entry["passed"], entry["findings"]
        assert [f for f in entry["findings"] if not f["passed"]] == [], good
        checks = {f["check"] for f in entry["findings"]}
        assert {"decodes", "frames", "fps", "duration", "container", "identical", "near_duplicate"} <= checks
        assert entry["screenshots"] == ["start", "middle", "end"]
    assert files["C01_30s.mp4"]["measured"]["frames"] == 720

    for name, other, frames, seconds in (
        ("R14_10s.mp4", "R14_30s.mp4", 240, 10),
        ("R14_30s.mp4", "R14_10s.mp4", 720, 30),
    ):
        entry = files[name]
        failed = _failed(entry)
        assert set(failed) == {"frames", "fps", "duration", "identical"}, failed
        assert (failed["frames"]["measured"], failed["frames"]["expected"]) == (93, frames)
        assert (failed["fps"]["measured"], failed["fps"]["expected"]) == (16.0, 24.0)
        assert failed["duration"]["measured"] == pytest.approx(93 / 16, abs=0.01)
        assert failed["duration"]["expected"] == seconds
        assert failed["identical"]["measured"] == [other]
        assert entry["measured"]["fps"] == 16.0 and entry["sha256"] == files[other]["sha256"]

    notes = files["notes_final.mp4"]
    assert notes["expected"] is None and notes["passed"]
    assert [f["check"] for f in notes["findings"] if not f["passed"]] == ["expectation"]
    assert "does not look like <id>_<duration>s" in _failed(notes, "info")["expectation"]["message"]
    assert {"decodes", "static", "identical"} <= {f["check"] for f in notes["findings"]}

    broken = files["C01_5s_v1.mp4"]
    assert not broken["passed"] and broken["status"] == "damaged"
    assert set(_failed(broken)) == {"decodes"}
    assert broken["expected"]["frames"] == 120 and broken["expected"]["variant"] == 1

    assert report["identical"] == [
        {"files": ["R14_10s.mp4", "R14_30s.mp4"], "sha256": files["R14_10s.mp4"]["sha256"], "scenario": None}
    ]
    assert report["near_identical"] == []
    assert [(m["scenario"], m["duration_s"], m["variant"], m["expected_name"]) for m in report["missing"]] == [
        ("R15", 30.0, 0, "R15_30s.mp4")
    ]
    assert report["missing"][0]["reason"] == "2 of 3 ids have a 30s file"
    assert report["totals"] == {
        **report["totals"],
        "files": 10,
        "passed": 7,
        "failed": 3,
        "missing": 1,
        "identical_groups": 1,
        "near_identical_groups": 0,
        "no_expectation": 1,
    }
    assert report["failures_by_check"] == {"duration": 2, "fps": 2, "frames": 2, "identical": 2, "decodes": 1}
    assert report["ok"] is False and report["fps"] == 24.0 and report["manifest"] is None


def test_corpus_summary_names_the_failures_in_the_terminal(corpus_report: tuple[Result, dict[str, Any]]) -> None:
    """The printed summary lists failed files, the identical group and the missing variant."""
    result, _ = corpus_report
    out = result.output
    assert "3 failed file(s)" in out
    assert "identical: R14_10s.mp4, R14_30s.mp4" in out
    assert "missing: R15_30s.mp4 (2 of 3 ids have a 30s file)" in out
    assert "failed: 10 file(s), 7 passed, 3 failed, 1 missing" in out


def test_clean_folder_passes_with_exit_0(tmp_path: Path) -> None:
    """Distinct, correct 5/10/30 s variants of one id pass and exit 0."""
    for name, seconds, seed in (("C01_5s.mp4", 5, 1), ("C01_10s.mp4", 10, 2), ("C01_30s.mp4", 30, 3)):
        _good(tmp_path / "nested", name, seconds, seed)
    out = tmp_path / "r.json"
    result = _run(str(tmp_path), "--json", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["ok"] is True and report["totals"]["passed"] == 3 and report["missing"] == []
    assert [f["name"] for f in report["files"]] == ["nested/C01_10s.mp4", "nested/C01_30s.mp4", "nested/C01_5s.mp4"]


def test_fps_option_sets_the_expected_frame_count(tmp_path: Path) -> None:
    """With --fps 16 a 5 s file is expected to have 80 frames, so a 120-frame 24 fps file fails."""
    _good(tmp_path, "C01_5s.mp4", 5, 1)
    out = tmp_path / "r.json"
    result = _run(str(tmp_path), "--fps", "16", "--json", str(out))
    assert result.exit_code == 1
    failed = _failed(json.loads(out.read_text())["files"][0])
    assert (failed["frames"]["measured"], failed["frames"]["expected"]) == (120, 80)


MANIFEST = """\
name: audit-test
durations: [5, 10]
defaults: {model: synthetic, fps: 24, resolution: 64x48}
series:
  - id: C
    scenarios:
      - id: C01
        prompt: a person walks up to the front door
      - id: C02
        prompt: a car parks in the driveway at night
"""


def test_manifest_audit_matches_names_and_prompt_ids_and_reports_missing_specs(tmp_path: Path) -> None:
    """With a manifest, files match by scenario name or prompt id, resolution is checked, and unmatched specs are missing."""
    videos = tmp_path / "videos"
    _good(videos, "C01_5s.mp4", 5, 1)
    _good(videos, "C01_10s_v0.mp4", 10, 2)
    write_video(videos / "audit-test-C02-5s-v0.mp4", width=96, height=48, fps=24, frames=120, seed=3)
    _good(videos, "C03_5s.mp4", 5, 4)  # not in the manifest
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    out = tmp_path / "r.json"
    result = _run(str(videos), "--manifest", str(manifest), "--json", str(out))
    assert result.exit_code == 1, result.output
    report = json.loads(out.read_text())
    files = {f["name"]: f for f in report["files"]}
    assert files["C01_5s.mp4"]["passed"] and files["C01_5s.mp4"]["expected"]["prompt_id"] == "audit-test-C01-5s-v0"
    assert files["C01_10s_v0.mp4"]["passed"] and files["C01_10s_v0.mp4"]["expected"]["source"] == "manifest"
    c02 = files["audit-test-C02-5s-v0.mp4"]
    assert set(_failed(c02)) == {"resolution"}
    assert (_failed(c02)["resolution"]["measured"], _failed(c02)["resolution"]["expected"]) == ("96x48", "64x48")
    assert files["C03_5s.mp4"]["expected"] is None
    assert "no prompt id of the manifest" in _failed(files["C03_5s.mp4"], "info")["expectation"]["message"]
    assert report["missing"] == [
        {
            "scenario": "C02",
            "duration_s": 10.0,
            "variant": 0,
            "expected_name": "C02_10s.mp4",
            "prompt_id": "audit-test-C02-10s-v0",
            "reason": "planned by the manifest",
        }
    ]
    assert report["manifest"] == str(manifest)


def test_near_identical_siblings_with_different_bytes_are_grouped(tmp_path: Path) -> None:
    """The same frames muxed at another rate differ in bytes but are reported as near-identical siblings."""
    write_video(tmp_path / "C05_5s.mp4", width=W, height=H, fps=24, frames=120, seed=11)
    write_video(tmp_path / "C05_10s.mp4", width=W, height=H, fps=12, frames=120, seed=11)
    _good(tmp_path, "C05_30s.mp4", 30, 12)
    out = tmp_path / "r.json"
    result = _run(str(tmp_path), "--json", str(out))
    assert result.exit_code == 1
    report = json.loads(out.read_text())
    assert report["identical"] == []
    assert report["near_identical"] == [{"files": ["C05_10s.mp4", "C05_5s.mp4"], "sha256": None, "scenario": "C05"}]
    files = {f["name"]: f for f in report["files"]}
    assert _failed(files["C05_5s.mp4"])["near_duplicate"]["measured"] == ["C05_10s.mp4"]
    assert set(_failed(files["C05_10s.mp4"])) == {"near_duplicate", "frames", "fps"}
    assert files["C05_30s.mp4"]["passed"]


@pytest.mark.parametrize(
    ("make_path", "message"),
    [
        (lambda tmp: str(tmp / "nowhere"), "does not exist"),
        (lambda tmp: str(_good(tmp, "C01_5s.mp4", 1, 1)), "neither a folder nor an s3:// URL"),
        (lambda _tmp: "s3:///prefix", "names no bucket"),
    ],
    ids=["missing path", "a file", "s3 without bucket"],
)
def test_bad_path_is_a_usage_error(tmp_path: Path, make_path: Callable[[Path], str], message: str) -> None:
    """A path that is no folder nor s3://bucket URL exits 2 and says why."""
    result = _run(make_path(tmp_path))
    assert result.exit_code == 2
    assert message in result.output


def test_invalid_or_unreadable_manifest_is_a_usage_error(tmp_path: Path) -> None:
    """An invalid manifest exits 2 printing each problem with line and rule; an unreadable one exits 2 too."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(MANIFEST.replace("durations: [5, 10]", "durations: [5, 2.3]"))
    result = _run(str(tmp_path), "--manifest", str(bad))
    assert result.exit_code == 2
    assert "1 problem(s)" in result.output
    assert (
        f"{bad}:2:16: durations[1]: 2.3 s × 24 fps = 55.2 frames: must be a whole number of frames [whole frames]"
        in result.output
    )
    missing = _run(str(tmp_path), "--manifest", str(tmp_path / "none.yaml"))
    assert missing.exit_code == 2
    assert "cannot read" in missing.output


def test_empty_folder_fails(tmp_path: Path) -> None:
    """A folder without videos is not a passed audit (a mistyped path must not look clean)."""
    (tmp_path / "a.txt").write_text("x")
    result = _run(str(tmp_path))
    assert result.exit_code == 1
    assert "no video files" in result.output


def test_html_report_embeds_screenshots_and_escapes_names(tmp_path: Path) -> None:
    """The HTML page names every file, embeds three JPEG screenshots each, highlights failures and escapes names."""
    videos = tmp_path / "v"
    _good(videos, "C01_5s.mp4", 5, 1)
    write_video(videos / "<b>odd & name.mp4", width=W, height=H, fps=24, frames=24, seed=2)
    write_video(videos / "C01_10s.mp4", width=W, height=H, fps=16, frames=93, seed=3)
    page = tmp_path / "report.html"
    result = _run(str(videos), "--html", str(page))
    assert result.exit_code == 1, result.output
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert "C01_5s.mp4" in text and "C01_10s.mp4" in text
    assert "&lt;b&gt;odd &amp; name.mp4" in text
    assert "<b>" not in text
    assert text.count('src="data:image/jpeg;base64,/9j/') == 9
    assert 'class="file failed"' in text and 'class="fail-error"' in text
    assert "http://" not in text and "https://" not in text and "<script" not in text


def test_name_patterns_without_a_manifest() -> None:
    """File names give id, duration and variant; anything else gives no expectation."""
    names = Expectations(fps=24)
    c01 = names.match("C01_10s.mp4")
    assert c01 is not None and (c01.key, c01.expectation.frames, c01.expectation.container) == (
        ("C01", 10.0, 0),
        240,
        "mp4",
    )
    v = names.match("dir/scene_2_10s_v3.mov")
    assert v is not None and v.key == ("scene_2", 10.0, 3) and v.expectation.container == "mov"
    half = names.match("C01_2.5s.webm")
    assert half is not None and half.key == ("C01", 2.5, 0) and half.expectation.frames == 60
    assert names.match("notes_final.mp4") is None
    assert names.match("C01_0s.mp4") is None
    assert names.match("C01.mp4") is None


@pytest.fixture
def s3_env(s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> Iterator[ObjectStore]:
    """WM_S3_* pointing at the test S3 gateway, and a store on it with a fresh bucket."""
    monkeypatch.setenv("WM_S3_ENDPOINT", s3.url)
    monkeypatch.setenv("WM_S3_ACCESS_KEY", s3.access_key)
    monkeypatch.setenv("WM_S3_SECRET_KEY", s3.secret_key)
    store = ObjectStore(s3.url, s3.access_key, s3.secret_key)
    yield store


def test_s3_prefix_is_audited_one_downloaded_video_at_a_time(
    tmp_path: Path, s3_env: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Objects under an s3:// prefix are downloaded and analysed one by one, never two on disk at once."""
    bucket = "audit-test"
    asyncio.run(s3_env.ensure_buckets([bucket]))
    local = tmp_path / "local"
    _good(local, "C01_5s.mp4", 5, 1)
    _good(local, "C01_10s.mp4", 10, 2)
    bad = write_video(local / "C01_30s.mp4", width=W, height=H, fps=16, frames=93, seed=3)
    (tmp_path / "notes.txt").write_text("not a video")
    for path in (*sorted(local.iterdir()), tmp_path / "notes.txt"):
        asyncio.run(s3_env.put_file(bucket, f"batch1/{path.name}", path))
    asyncio.run(s3_env.put_file(bucket, "other/C09_5s.mp4", bad))
    on_disk: list[list[str]] = []

    def spy(path: Path, **kwargs: Any) -> Any:
        on_disk.append(sorted(p.name for p in path.parent.iterdir()))
        return analyze(path, **kwargs)

    monkeypatch.setattr("worldmill.qa.audit.analyze", spy)
    out = tmp_path / "r.json"
    result = _run(f"s3://{bucket}/batch1/", "--json", str(out), "--data-dir", str(tmp_path / "none"))
    assert result.exit_code == 1, result.output
    assert on_disk == [["C01_10s.mp4"], ["C01_30s.mp4"], ["C01_5s.mp4"]]
    report = json.loads(out.read_text())
    assert report["source"] == f"s3://{bucket}/batch1/"
    files = {f["name"]: f for f in report["files"]}
    assert sorted(files) == ["C01_10s.mp4", "C01_30s.mp4", "C01_5s.mp4"]
    assert files["C01_5s.mp4"]["passed"] and files["C01_10s.mp4"]["passed"]
    assert set(_failed(files["C01_30s.mp4"])) == {"frames", "fps", "duration"}


VERDICT = {
    "asset_id": "a-1",
    "prompt_id": "m-C01-5s-v0",
    "video": {"bucket": "wm-videos", "key": "a-1.mp4", "size": 10, "sha256": "0" * 64},
    "findings": [
        {
            "check": "decodes",
            "passed": True,
            "severity": "error",
            "measured": 93,
            "expected": 93,
            "message": "all 93 frames decode",
        },
        {
            "check": "frames",
            "passed": False,
            "severity": "error",
            "measured": 93,
            "expected": 120,
            "message": "93 frames, expected 120",
        },
    ],
    "screenshots": [{"bucket": "wm-artifacts", "key": "a-1/start.jpg", "size": 1, "sha256": "1" * 64}],
    "contact_sheet": None,
    "checked_at": "2026-01-28T10:00:00Z",
    "checker_version": "qa-1",
    "attempt": 1,
}


def test_qa_show_prints_the_verdict_and_404_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """`qa show` prints each finding with the verdict; an unknown asset exits 2 naming the id."""
    monkeypatch.setenv("WM_QA_URL", "http://qa.test")
    with respx.mock(base_url="http://qa.test") as mock:
        mock.get("/qa/a-1").mock(return_value=Response(200, json=VERDICT))
        mock.get("/qa/nope").mock(return_value=Response(404, json={"detail": "asset 'nope' has no verdict (yet)"}))
        shown = CliRunner().invoke(_app(), ["qa", "show", "a-1"], env=ENV)
        missing = CliRunner().invoke(_app(), ["qa", "show", "nope"], env=ENV)
    assert shown.exit_code == 0, shown.output
    assert "asset a-1: failed" in shown.output
    assert "93 frames, expected 120" in shown.output and "all 93 frames decode" in shown.output
    assert "s3://wm-artifacts/a-1/start.jpg" in shown.output
    assert missing.exit_code == 2
    assert "ASSET_ID: no verdict for 'nope'" in missing.output
