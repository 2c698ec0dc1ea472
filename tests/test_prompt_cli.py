"""`worldmill manifest check`: offline validation with a summary, exit 2 naming every problem."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.conftest import REPO
from worldmill.cli.main import app
from worldmill.prompt import cli as prompt_cli

ENV = {"COLUMNS": "200"}


def test_check_prints_the_expansion_summary_of_the_seed_example() -> None:
    """The security-camera example (docs/background.md#security-cameras) expands per series and duration with its frame total, exit 0."""
    result = CliRunner().invoke(app, ["manifest", "check", str(REPO / "examples" / "security-cameras.yaml")], env=ENV)
    assert result.exit_code == 0, result.output
    assert "manifest security-cameras" in result.output
    for series in ("C", "E", "F", "R", "P", "T"):
        assert f"│ {series} " in result.output
    assert "72 specs, 25,200 frames to generate" in result.output


def test_check_exits_2_and_prints_each_problem_with_line_and_rule(tmp_path: Path) -> None:
    """A broken manifest exits 2; each problem shows file:line:column, the path, the message and [rule]."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\n"
        "durations: [5, 2.3]\n"
        "defaults: {model: synthetic, fps: 24, resolution: 320x192, guidance: 9}\n"
        "series:\n"
        "  - id: R\n"
        "    scenarios:\n"
        "      - id: R14\n"
        "        template: nope\n"
    )
    result = CliRunner().invoke(app, ["manifest", "check", str(bad)], env=ENV)
    assert result.exit_code == 2
    out = result.output
    assert "3 problem(s)" in out
    assert (
        f"{bad}:2:16: durations[1]: 2.3 s × 24 fps = 55.2 frames: must be a whole number of frames [whole frames]"
        in out
    )
    assert "[guidance out of range]" in out
    assert f"{bad}:8:19: series[R].scenarios[R14].template" in out and "[unknown template]" in out


def test_check_of_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    """A file that cannot be read exits 2 and says which."""
    result = CliRunner().invoke(app, ["manifest", "check", str(tmp_path / "none.yaml")], env=ENV)
    assert result.exit_code == 2
    assert "cannot read" in result.output


class _FakeCatalog:
    """A catalog client answering ``GET /manifests/{name}/status`` from a fixed answer."""

    def __init__(self, status: int, body: object) -> None:
        self.status, self.body, self.paths = status, body, []

    def __enter__(self) -> _FakeCatalog:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def request(self, method: str, path: str, **_: object) -> httpx.Response:
        self.paths.append((method, path))
        return httpx.Response(self.status, json=self.body)


def _status_item(pid: str, state: str, assets: tuple[str, ...] = ()) -> dict[str, object]:
    return {
        "prompt_id": pid,
        "version": 1,
        "series": "C",
        "scenario": "lobby",
        "duration_s": 5.0,
        "variant": 0,
        "state": state,
        "assets": list(assets),
    }


def test_manifest_coverage_reads_the_catalogs_status(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``manifest coverage`` shows the catalog's status as a table and counts; ``--missing`` hides passed specs."""
    body = {
        "manifest": "demo",
        "generated_at": "2025-01-01T00:00:00Z",
        "total": 2,
        "counts": {"passed": 1, "missing": 1},
        "by_series": {"C": {"passed": 1, "missing": 1}},
        "items": [_status_item("demo-c01-5s-v0", "passed", ("a1", "a2")), _status_item("demo-c02-5s-v0", "missing")],
        "complete": False,
    }
    fake = _FakeCatalog(200, body)
    used: list[str] = []
    monkeypatch.setattr(prompt_cli, "service_client", lambda name, _dir: used.append(name) or fake)
    result = CliRunner().invoke(app, ["manifest", "coverage", "demo", "--data-dir", str(tmp_path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert used == ["catalog"] and fake.paths == [("GET", "/manifests/demo/status")]
    assert "demo-c01-5s-v0" in result.output and "demo-c02-5s-v0" in result.output
    assert "missing: 1, passed: 1 (of 2)" in result.output
    missing = CliRunner().invoke(
        app, ["manifest", "coverage", "demo", "--missing", "--data-dir", str(tmp_path)], terminal_width=200
    )
    assert missing.exit_code == 0 and "demo-c01-5s-v0" not in missing.output and "demo-c02-5s-v0" in missing.output


def test_manifest_coverage_of_an_unknown_manifest_exits_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The catalog's 404 is a usage error naming the manifest."""
    fake = _FakeCatalog(404, {"detail": "manifest 'nope' is not in the catalog"})
    monkeypatch.setattr(prompt_cli, "service_client", lambda _name, _dir: fake)
    result = CliRunner().invoke(app, ["manifest", "coverage", "nope", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "nope" in result.output
