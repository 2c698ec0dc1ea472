"""The editable ``{name}.json`` per video of docs/background.md#hand-videos: written by ``prompts from-videos --write-sidecars``, honoured whole.

Writing needs no service. Honouring runs the whole pipeline on the real servers (see
tests/test_augment_outputs.py): the edited seed and guidance must reach the stored spec and the
plan, the name the output file; an unknown field or a bad value is refused naming it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.helpers.generation import AUTH
from tests.helpers.video import write_video
from tests.test_augment_outputs import augmentation, cli_pipeline, lineage, run_cli, sha256
from worldmill.augment.inputs import ControlsError, params_from_sidecar
from worldmill.contracts.cards import ControlType
from worldmill.prompt.cli import prompts_app
from worldmill.prompt.input_specs import CATEGORIES
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint

SEEDS_001_FIELDS = {"name", "prompt", "negative_prompt", "seed", "guidance", "edge"}


def _from_videos(*args: str) -> Any:
    app = typer.Typer()
    app.add_typer(prompts_app, name="prompts")
    return CliRunner().invoke(app, ["prompts", "from-videos", *args], env={"COLUMNS": "250"})


def test_write_sidecars_writes_seeds_001_json_next_to_each_video_and_never_overwrites(tmp_path: Path) -> None:
    """a.json (name, template prompt, negative prompt, seed, guidance, edge 1.0); b.json and control files untouched."""
    folder = tmp_path / "inputs"
    write_video(folder / "a.mp4", width=64, height=48, fps=24, frames=4, seed=1)
    write_video(folder / "b.mp4", width=64, height=48, fps=24, frames=4, seed=2)
    write_video(folder / "a_depth.mp4", width=64, height=48, fps=24, frames=4, seed=3)  # a's control video
    (folder / "b.json").write_text('{"name": "b", "prompt": "mine"}')
    result = _from_videos(str(folder), "--write-sidecars", "--template", "hand-manipulation")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.glob("*.json")) == ["a.json", "b.json"]
    doc = json.loads((folder / "a.json").read_text())
    assert set(doc) == SEEDS_001_FIELDS
    template = CATEGORIES["hand-manipulation"]
    assert (doc["name"], doc["prompt"], doc["negative_prompt"]) == ("a", template.prompt, template.negative_prompt)
    assert doc["guidance"] == 3 and doc["edge"] == {"control_weight": 1.0}
    assert isinstance(doc["seed"], int) and 0 <= doc["seed"] < 2**32
    assert (folder / "b.json").read_text() == '{"name": "b", "prompt": "mine"}'
    params = params_from_sidecar((folder / "a.json").read_text())  # what it writes, augment reads whole
    assert (params.name, params.seed, params.guidance, params.prompt) == ("a", doc["seed"], 3.0, template.prompt)

    (folder / "a.json").write_text('{"name": "a", "seed": 7}')  # edited by the user
    again = _from_videos(str(folder), "--write-sidecars", "--controls", "edge=0.6,vis=0.4")
    assert again.exit_code == 0, again.output
    assert "0 written, 2 kept" in again.output
    assert json.loads((folder / "a.json").read_text()) == {"name": "a", "seed": 7}
    (folder / "a.json").unlink()
    third = _from_videos(str(folder), "--write-sidecars", "--controls", "edge=0.6,vis=0.4")
    assert third.exit_code == 0, third.output
    doc = json.loads((folder / "a.json").read_text())
    assert (doc["edge"], doc["vis"]) == ({"control_weight": 0.6}, {"control_weight": 0.4})
    refused = _from_videos("s3://wm-inputs/x/", "--write-sidecars")
    assert refused.exit_code == 2 and "local folder" in refused.output


@pytest.mark.parametrize(
    ("doc", "field", "rule"),
    [
        ({"name": "a", "steps": 10}, "sidecar.steps", "is not a known field"),
        ({"edge": {"control_weight": 1.0, "control_path": "e.mp4"}}, "sidecar.edge.control_path", "<name>_edge.mp4"),
        ({"seed": -1}, "sidecar.seed", "greater than or equal to 0"),
        ({"seed": 1.5}, "sidecar.seed", "integer"),
        ({"guidance": 9}, "sidecar.guidance", "outside cosmos-transfer2.5-2b's range 0–7"),
        ({"name": "../up"}, "sidecar.name", "pattern"),
        ({"tier": "1080"}, "sidecar.tier", "no resolution tier '1080'"),
    ],
    ids=["unknown", "unknown-in-control", "negative-seed", "fractional-seed", "guidance-range", "name-path", "tier"],
)
def test_a_sidecar_field_that_cannot_be_honoured_is_refused_by_name(doc: dict[str, Any], field: str, rule: str) -> None:
    """Nothing is ignored: an unknown field or a bad value names the field and the rule."""
    with pytest.raises(ControlsError) as caught:
        params_from_sidecar(json.dumps(doc))
    assert caught.value.field == field
    assert rule in caught.value.rule


def test_every_seeds_001_field_is_read() -> None:
    """name, prompt, negative prompt, seed, guidance and each control's weight and preset."""
    params = params_from_sidecar(
        json.dumps(
            {
                "name": "gcsample",
                "prompt": "hands",
                "negative_prompt": "cartoon",
                "seed": 0,
                "guidance": 3,
                "edge": {"control_weight": 0.5, "preset_edge_threshold": "low"},
                "vis": {"control_weight": 0.5, "preset_blur_strength": "high"},
            }
        )
    )
    assert (params.name, params.prompt, params.negative_prompt, params.seed, params.guidance) == (
        "gcsample",
        "hands",
        "cartoon",
        0,
        3.0,
    )
    assert [(c.type, c.weight, c.preset) for c in params.controls] == [
        (ControlType.EDGE, 0.5, "low"),
        (ControlType.VIS, 0.5, "high"),
    ]


@pytest.fixture
def pipeline(nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path) -> Iterator[tuple[dict[str, str], TestClient]]:
    with cli_pipeline(nats, s3, tmp_path) as running:
        yield running


def test_an_edited_sidecar_reaches_the_spec_and_plan_and_an_unknown_field_is_refused(
    pipeline: tuple[dict[str, str], TestClient], tmp_path: Path
) -> None:
    """clip.json's seed, guidance, prompts, name and controls are in the stored spec and plan; odd.json is refused."""
    env, prompts = pipeline
    folder, out = tmp_path / "inputs", tmp_path / "outputs"
    write_video(folder / "clip.mp4", width=64, height=48, fps=24, frames=12, seed=4)
    write_video(folder / "odd.mp4", width=64, height=48, fps=24, frames=12, seed=5)
    written = _from_videos(str(folder), "--write-sidecars", "--template", "robot-arm")
    assert written.exit_code == 0, written.output
    doc = json.loads((folder / "clip.json").read_text())
    doc |= {"name": "arm-take-1", "seed": 4242, "guidance": 5, "negative_prompt": "no blur", "prompt": "a robot arm"}
    doc |= {"edge": {"control_weight": 0.7}, "vis": {"control_weight": 0.3, "preset_blur_strength": "low"}}
    (folder / "clip.json").write_text(json.dumps(doc))
    (folder / "odd.json").write_text(json.dumps({"name": "odd", "sampler": "euler"}))

    result = run_cli([str(folder), "--prefix", env["PREFIX"], "--output-dir", str(out)], env)
    assert result.exit_code == 1, result.output  # odd.mp4 was refused
    summary = json.loads((out / "worldmill-augment-summary.json").read_text())
    rows = {Path(r["input"]).name: r for r in summary["inputs"]}
    assert rows["odd.mp4"]["status"] == "failed"
    assert "sidecar.sampler" in rows["odd.mp4"]["reason"] and "is not a known field" in rows["odd.mp4"]["reason"]
    odd = augmentation(env, rows["odd.mp4"]["augmentation_id"])
    assert odd["state"] == "rejected" and "sidecar.sampler" in odd["reason"]

    assert rows["clip.mp4"]["status"] == "done", rows["clip.mp4"]
    record = augmentation(env, rows["clip.mp4"]["augmentation_id"])
    assert (record["params"]["seed"], record["params"]["guidance"], record["params"]["name"]) == (
        4242,
        5.0,
        "arm-take-1",
    )
    assert [(c["type"], c["weight"], c["preset"]) for c in record["controls"]] == [
        ("edge", 0.7, None),
        ("vis", 0.3, "low"),
    ]
    spec = prompts.get(f"/prompts/{record['prompt_id']}", headers=AUTH).json()["latest"]
    assert spec["seed"] == 4242 and spec["sampling"]["guidance"] == 5.0
    assert (spec["prompt"], spec["sampling"]["negative_prompt"]) == ("a robot arm", "no blur")
    assert spec["metadata"]["name"] == "arm-take-1"
    assert [(c["type"], c["weight"]) for c in spec["controls"]] == [("edge", 0.7), ("vis", 0.3)]
    plan = lineage(env, record)["plan"]
    assert plan["chunks"][0]["seed"] == 4242 and plan["sampling"]["guidance"] == 5.0
    assert sha256(out / "arm-take-1_aug.mp4") == record["output"]["sha256"]  # the sidecar's name names the file
    assert not (out / "clip_aug.mp4").exists()


def test_flags_and_a_local_sidecar_for_the_same_video_are_refused(tmp_path: Path) -> None:
    """--controls would describe another augmentation than clip.json: exit 2 before any upload."""
    write_video(tmp_path / "in" / "clip.mp4", width=64, height=48, fps=24, frames=4)
    (tmp_path / "in" / "clip.json").write_text('{"seed": 1}')
    env = {"WM_AUGMENT_URL": "http://127.0.0.1:9", "COLUMNS": "300", "WM_S3_ENDPOINT": "http://127.0.0.1:9"}
    env |= {"WM_S3_ACCESS_KEY": "k", "WM_S3_SECRET_KEY": "s"}
    result = run_cli([str(tmp_path / "in"), "--controls", "edge=0.5"], env)
    assert result.exit_code == 2, result.output
    assert "clip.json" in result.output and "gives the parameters" in result.output
