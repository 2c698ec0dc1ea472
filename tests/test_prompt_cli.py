"""`worldmill manifest check`: offline validation with a summary, exit 2 naming every problem."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tests.conftest import REPO
from worldmill.cli.main import app

ENV = {"COLUMNS": "200"}


def test_check_prints_the_expansion_summary_of_the_seed_example() -> None:
    """The seeds/000 example expands per series and duration with its frame total, exit 0."""
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
