"""`worldmill manifest import`: per-video Cosmos prompt JSON files (docs/background.md#security-cameras, #hand-videos) → one manifest.

The importer is pure (parsed JSON in, a manifest dict out); the command reads the files, writes
the YAML and checks it exactly as `manifest check` does.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO
from worldmill.cli.main import app
from worldmill.contracts.prompts import PromptSpec
from worldmill.prompt.cli import parse_controls
from worldmill.prompt.expand import Expansion, check_text
from worldmill.prompt.identity import derive_seed
from worldmill.prompt.importer import ImportResult, import_prompts, parse_name, to_yaml

FIXTURES = REPO / "tests" / "fixtures" / "prompt_json"
PREDICT = FIXTURES / "predict"
TRANSFER = FIXTURES / "transfer"
ENV = {"COLUMNS": "400"}
NOW = datetime(2026, 2, 1, tzinfo=UTC)


def load(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def imported(files: dict[str, dict[str, Any]], name: str = "imp") -> tuple[ImportResult, Expansion]:
    result = import_prompts(files, name=name)
    return result, check_text(to_yaml(result.manifest), now=NOW)


def base_file(stem: str, **fields: Any) -> dict[str, Any]:
    """A prompt file as in docs/background.md#security-cameras for ``stem`` (e.g. ``C01_5s``), at 24 fps with exact frames."""
    _, _, duration, _ = parse_name(stem)
    data: dict[str, Any] = {
        "name": stem,
        "prompt": "A fixed porch camera: a courier leaves a parcel on the doormat and walks away.",
        "negative_prompt": "camera motion, text, watermarks",
        "seed": 0,
        "guidance": 7,
        "num_steps": 35,
        "fps": 24,
        "resolution": "1280x704",
        "model": "cosmos-predict2.5-2b",
        "num_output_frames": round((duration or 5) * 24),
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["manifest", "import", *args], env=ENV)


# --- the importer ---------------------------------------------------------------------------------


def test_names_give_scenario_series_duration_and_variant() -> None:
    """C01_30s → (C01, C, 30, 0); _v1 is a variant; 2_5s is 2.5 s; a name without prefix goes to `other`."""
    assert parse_name("C01_30s.json") == ("C01", "C", 30.0, 0)
    assert parse_name("R14_5s_v1.json") == ("R14", "R", 5.0, 1)
    assert parse_name("T07_2_5s.json") == ("T07", "T", 2.5, 0)
    assert parse_name("gcsample.json") == ("gcsample", "other", None, 0)
    assert parse_name("P12.json") == ("P12", "P", None, 0)


def test_seed_000_folder_expands_to_exactly_the_files() -> None:
    """Every file becomes one spec with its frames, fps, prompt and sampling values; nothing unknown."""
    files = load(PREDICT)
    result, expansion = imported(files)
    assert result.unknown == [] and result.problems == []
    assert expansion.ok, expansion.problems
    by_file = {}
    for spec in expansion.specs:
        stem = f"{spec.scenario}_{spec.duration_s:g}s" + (f"_v{spec.variant}" if spec.variant else "")
        by_file[f"{stem}.json"] = spec
    assert sorted(by_file) == sorted(files), "one spec per file, no more, no fewer"
    assert {s.prompt_id for s in expansion.specs} == {
        "imp-C01-5s-v0", "imp-C01-10s-v0", "imp-C01-30s-v0",
        "imp-C02-5s-v0", "imp-C02-10s-v0", "imp-C02-30s-v0",
        "imp-R14-5s-v0", "imp-R14-10s-v0",
        "imp-R15-5s-v0", "imp-R15-5s-v1", "imp-R15-10s-v0",
    }  # fmt: skip
    for file, spec in by_file.items():
        data = files[file]
        assert spec.series == file[0]
        assert spec.target_frames == data["num_output_frames"], file
        assert spec.fps == data["fps"]
        assert spec.prompt == data["prompt"]
        assert spec.sampling.negative_prompt == data["negative_prompt"]
        assert spec.sampling.guidance == data["guidance"]
        assert spec.sampling.steps == data["num_steps"]
        assert str(spec.resolution) == data["resolution"]
        assert spec.model == data["model"]
        assert spec.mode.value == data["inference_type"]


def test_seeds_are_derived_not_copied_and_the_note_says_so() -> None:
    """The `seed: 0` everywhere of docs/background.md#security-cameras is the bug: each spec gets its own derived seed, and each file's seed is noted."""
    files = load(PREDICT)
    result, expansion = imported(files)
    seeds = [s.seed for s in expansion.specs]
    assert all(data["seed"] == 0 for data in files.values())
    assert 0 not in seeds and len(set(seeds)) == len(seeds)
    for spec in expansion.specs:
        assert spec.seed == derive_seed("imp", spec.scenario, spec.duration_s, spec.variant)
    noted = {n.file for n in result.notes if n.field == "seed"}
    assert noted == set(files)


def test_shared_settings_move_up_and_missing_durations_stay_missing() -> None:
    """Shared values go to defaults, per-series ones to the series; R14's missing 30 s is not invented."""
    result, expansion = imported(load(PREDICT))
    m = result.manifest
    assert m["durations"] == [5, 10, 30]
    assert m["defaults"]["negative_prompt"].startswith("camera motion")
    assert m["defaults"]["fps"] == 24 and "guidance" not in m["defaults"]
    series = {s["id"]: s for s in m["series"]}
    assert series["C"]["overrides"] == {"guidance": 7}
    assert series["R"]["overrides"] == {"guidance": 6}
    assert series["R"]["durations"] == [5, 10]
    r15 = next(s for s in series["R"]["scenarios"] if s["id"] == "R15")
    assert r15["variants"] == {5: 2, 10: 1}
    assert not any(s.scenario == "R14" and s.duration_s == 30 for s in expansion.specs)
    assert [c["id"] for c in series["C"]["scenarios"]] == ["C01", "C02"]
    assert "overrides" not in series["C"]["scenarios"][0], "nothing repeated per scenario"


def test_transfer_sidecars_carry_controls_and_weights_into_metadata() -> None:
    """The edge/depth blocks of docs/background.md#hand-videos become `controls: edge=0.6,depth=0.4` (the --controls syntax) and paths."""
    result = import_prompts(load(TRANSFER), name="tr")
    scenarios = {c["id"]: c for s in result.manifest["series"] for c in s["scenarios"]}
    kitchen = scenarios["kitchen01"]["metadata"]
    assert kitchen["controls"] == "edge=0.6,depth=0.4"
    assert parse_controls(kitchen["controls"]) == [
        {"type": "edge", "weight": 0.6, "preset": None, "video": None},
        {"type": "depth", "weight": 0.4, "preset": None, "video": None},
    ]
    assert kitchen["control.depth.path"] == "inputs/kitchen01_depth.mp4"
    assert kitchen["video_path"] == "inputs/kitchen01.mp4"
    assert scenarios["gcsample"]["metadata"] == {"controls": "edge=1"}
    assert result.manifest["defaults"]["guidance"] == 3
    notes = {(n.file, n.field) for n in result.notes if "text2world" in n.message}
    assert notes == {("gcsample.json", "edge"), ("kitchen01.json", "edge, depth"), ("kitchen01.json", "video_path")}
    assert any("--controls edge=0.6,depth=0.4" in n.message for n in result.notes)
    # Their names carry no duration and there are no frames: said, per file, not guessed.
    assert {(p.file, p.rule) for p in result.problems} == {
        ("gcsample.json", "no duration"),
        ("kitchen01.json", "no duration"),
    }
    assert not check_text(to_yaml(result.manifest), now=NOW).ok


def test_transfer_controls_reach_the_specs_metadata_when_a_duration_is_known() -> None:
    """With a duration in the name the sidecar's manifest checks and every spec keeps the controls."""
    data = load(TRANSFER)["kitchen01.json"]
    _, expansion = imported({"kitchen01_5s.json": data})
    assert expansion.ok, expansion.problems
    (spec,) = expansion.specs
    assert spec.metadata["controls"] == "edge=0.6,depth=0.4"
    assert spec.target_frames == 120 and spec.sampling.guidance == 3
    assert spec.prompt == data["prompt"]


def test_unknown_fields_are_listed_with_their_file_never_dropped() -> None:
    """A top-level and a nested (control block) field the importer does not know are both listed."""
    files = {
        "C01_5s.json": base_file("C01_5s", category="core"),
        "C01_10s.json": base_file("C01_10s", edge={"control_weight": 0.5, "preset_edge_threshold": "medium"}),
    }
    result = import_prompts(files, name="imp")
    assert {(u.file, u.field) for u in result.unknown} == {
        ("C01_5s.json", "category"),
        ("C01_10s.json", "edge.preset_edge_threshold"),
    }
    assert "core" not in to_yaml(result.manifest)


def test_name_and_frames_disagreement_is_a_problem_naming_file_and_field() -> None:
    """The 30 s file of docs/background.md#security-cameras with 93 frames at 16 fps is reported; the manifest keeps the name's 30 s."""
    files = {"C01_30s.json": base_file("C01_30s", num_output_frames=93, fps=16)}
    result, expansion = imported(files)
    (problem,) = result.problems
    assert (problem.file, problem.field, problem.rule) == ("C01_30s.json", "num_output_frames", "duration mismatch")
    assert "93 frames at 16 fps last 5.812 s, but the name says 30 s (480 frames)" in problem.message
    assert expansion.ok and [(s.duration_s, s.target_frames) for s in expansion.specs] == [(30, 480)]


def test_frames_are_checked_at_the_default_fps_when_the_file_has_none() -> None:
    """Without fps the manifest makes 24 fps, so 93 frames named 5 s disagree (5 s is 120 frames there)."""
    result = import_prompts({"C01_5s.json": base_file("C01_5s", num_output_frames=93, fps=None)}, name="imp")
    (problem,) = result.problems
    assert problem.rule == "duration mismatch" and "default" in problem.message and "120 frames" in problem.message


def test_duration_comes_from_frames_when_the_name_has_none() -> None:
    """C03.json with 240 frames at 24 fps is a 10 s scenario."""
    result, expansion = imported({"C03.json": base_file("C03", num_output_frames=240)})
    assert result.problems == []
    assert [(s.scenario, s.duration_s, s.target_frames) for s in expansion.specs] == [("C03", 10, 240)]


def test_durations_of_one_scenario_that_disagree_are_reported() -> None:
    """A scenario has one prompt and one guidance: a file that differs is named with the field."""
    files = {
        "C01_5s.json": base_file("C01_5s"),
        "C01_10s.json": base_file("C01_10s", prompt="Something else entirely.", guidance=None),
    }
    result, expansion = imported(files)
    assert {(p.file, p.field, p.rule) for p in result.problems} == {
        ("C01_10s.json", "prompt", "conflicting values"),
        ("C01_10s.json", "guidance", "conflicting values"),
    }
    assert {s.prompt for s in expansion.specs} == {files["C01_5s.json"]["prompt"]}


def test_variant_gaps_and_duplicates_are_reported() -> None:
    """v0 and v2 (no v1) are counted as 2 variants with a problem; C01_5s and C01_5s_v0 are the same clip."""
    gap = import_prompts({"C01_5s.json": base_file("C01_5s"), "C01_5s_v2.json": base_file("C01_5s_v2")}, name="x")
    assert [(p.file, p.rule) for p in gap.problems] == [("C01_5s_v2.json", "variant numbering")]
    assert gap.manifest["variants"] == 2  # the only scenario's count, hoisted to the top
    assert len(check_text(to_yaml(gap.manifest), now=NOW).specs) == 2
    dup = import_prompts({"C01_5s.json": base_file("C01_5s"), "C01_5s_v0.json": base_file("C01_5s_v0")}, name="x")
    assert [(p.file, p.rule) for p in dup.problems] == [("C01_5s_v0.json", "duplicate file")]


# --- the command ----------------------------------------------------------------------------------


def test_import_writes_folder_named_yaml_that_manifest_check_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Default output is ./<folder>.yaml; it passes `manifest check` with the same 11 specs."""
    monkeypatch.chdir(tmp_path)
    result = invoke(str(PREDICT))
    assert result.exit_code == 0, result.output
    assert "ok: 11 specs, 3,000 frames to generate" in result.output
    written = tmp_path / "predict.yaml"
    assert written.is_file()
    check = CliRunner().invoke(app, ["manifest", "check", str(written)], env=ENV)
    assert check.exit_code == 0, check.output
    assert "11 specs" in check.output
    assert "seed (11 file(s)" in result.output


def test_name_and_output_options(tmp_path: Path) -> None:
    """--name names the manifest (and so every prompt id); --output picks the file; FILES work as well as a DIR."""
    out = tmp_path / "porch.yaml"
    files = [str(PREDICT / "R14_5s.json"), str(PREDICT / "R14_10s.json")]
    result = invoke(*files, "--name", "porch-demo", "--output", str(out))
    assert result.exit_code == 0, result.output
    expansion = check_text(out.read_bytes(), now=NOW)
    assert sorted(s.prompt_id for s in expansion.specs) == ["porch-demo-R14-10s-v0", "porch-demo-R14-5s-v0"]


def test_unknown_fields_exit_2_and_write_nothing_unless_allowed(tmp_path: Path) -> None:
    """Every unrecognised field is printed with its file; without --allow-unknown nothing is written."""
    src = tmp_path / "json"
    src.mkdir()
    (src / "C01_5s.json").write_text(json.dumps(base_file("C01_5s", category="core", risk="low")))
    out = tmp_path / "out.yaml"
    result = invoke(str(src), "-o", str(out))
    assert result.exit_code == 2, result.output
    assert "C01_5s.json: category: not recognised [unknown field]" in result.output
    assert "C01_5s.json: risk: not recognised [unknown field]" in result.output
    assert not out.exists()
    allowed = invoke(str(src), "-o", str(out), "--allow-unknown")
    assert allowed.exit_code == 0, allowed.output
    assert "C01_5s.json: category: not recognised" in allowed.output
    assert check_text(out.read_bytes(), now=NOW).ok


def test_disagreement_exits_1_naming_file_and_field(tmp_path: Path) -> None:
    """A name/frames disagreement is a failed import (exit 1), printed with file and field."""
    src = tmp_path / "json"
    src.mkdir()
    (src / "C01_10s.json").write_text(json.dumps(base_file("C01_10s", num_output_frames=93, fps=16)))
    result = invoke(str(src), "-o", str(tmp_path / "out.yaml"))
    assert result.exit_code == 1, result.output
    assert "C01_10s.json: num_output_frames: 93 frames at 16 fps" in result.output
    assert "[duration mismatch]" in result.output
    assert "failed: 1 problem(s)" in result.output


def test_check_problems_are_printed_as_manifest_check_prints_them(tmp_path: Path) -> None:
    """Values the manifest's rules refuse (guidance 9) come from check_text with file:line:column, exit 1."""
    src = tmp_path / "json"
    src.mkdir()
    (src / "C01_5s.json").write_text(json.dumps(base_file("C01_5s", guidance=9)))
    out = tmp_path / "out.yaml"
    result = invoke(str(src), "-o", str(out))
    assert result.exit_code == 1, result.output
    lines = out.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.strip() == "guidance: 9")
    assert f"{out}:{line}:13: defaults.guidance: guidance 9 is outside" in result.output
    assert "[guidance out of range]" in result.output


def test_a_file_that_is_not_a_json_object_exits_2_naming_it(tmp_path: Path) -> None:
    """Broken JSON and a JSON list are both named (with line:column for the parse error); nothing is written."""
    src = tmp_path / "json"
    shutil.copytree(PREDICT, src)
    (src / "C09_5s.json").write_text('{"prompt": "unfinished"\n')
    (src / "C10_5s.json").write_text("[1, 2]")
    out = tmp_path / "out.yaml"
    result = invoke(str(src), "-o", str(out))
    assert result.exit_code == 2, result.output
    assert f"{src / 'C09_5s.json'}:2:1: is not JSON" in result.output
    assert f"{src / 'C10_5s.json'}: is a JSON list, not an object" in result.output
    assert not out.exists()


def test_an_empty_folder_exits_2(tmp_path: Path) -> None:
    """A folder without *.json is bad input."""
    (tmp_path / "notes.txt").write_text("no prompts here")
    result = invoke(str(tmp_path), "-o", str(tmp_path / "out.yaml"))
    assert result.exit_code == 2
    assert "no *.json files in" in result.output


def test_dry_run_prints_the_yaml_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--dry-run shows the manifest and its check summary; no file appears."""
    monkeypatch.chdir(tmp_path)
    result = invoke(str(PREDICT), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "name: predict\n" in result.output and "durations: [5, 10, 30]\n" in result.output
    assert "ok: 11 specs" in result.output and "dry run: predict.yaml not written" in result.output
    assert list(tmp_path.iterdir()) == []


def test_an_existing_output_is_not_overwritten_without_force(tmp_path: Path) -> None:
    """Exit 2 and the file untouched; --force replaces it."""
    out = tmp_path / "predict.yaml"
    out.write_text("keep me\n")
    result = invoke(str(PREDICT), "-o", str(out))
    assert result.exit_code == 2
    assert "exists; pass --force" in result.output
    assert out.read_text() == "keep me\n"
    forced = invoke(str(PREDICT), "-o", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    assert check_text(out.read_bytes(), now=NOW).ok


def _spec_keys(specs: list[PromptSpec]) -> list[tuple[str, float, int]]:
    return sorted((s.scenario, s.duration_s, s.variant) for s in specs)


def test_dry_run_yaml_is_the_yaml_a_real_run_writes(tmp_path: Path) -> None:
    """What --dry-run prints is what is written (same specs when checked)."""
    out = tmp_path / "predict.yaml"
    dry = CliRunner().invoke(app, ["manifest", "import", str(PREDICT), "-o", str(out), "--dry-run"], env=ENV)
    assert dry.exit_code == 0
    assert invoke(str(PREDICT), "-o", str(out)).exit_code == 0
    text = out.read_text()
    assert dry.stdout.startswith(text)
    assert _spec_keys(check_text(text, now=NOW).specs) == _spec_keys(imported(load(PREDICT), "predict")[1].specs)
