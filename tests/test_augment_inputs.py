"""Pure rules of the augment service: what a key is, which controls are used, sidecars, ids."""

from __future__ import annotations

import json

import pytest

from worldmill.augment.inputs import (
    ControlsError,
    augmentation_id,
    choose_controls,
    classify,
    control_files,
    normalize,
    params_from_sidecar,
    sidecar_key,
)
from worldmill.contracts.augment import AugmentParams, ControlSpec
from worldmill.contracts.cards import ControlType, Preset


@pytest.mark.parametrize(
    ("key", "siblings", "kind"),
    [
        ("shoot/a.mp4", [], "video"),
        ("shoot/A.MOV", [], "video"),
        ("shoot/depth.mp4", [], "control"),
        ("shoot/segmentation.mp4", [], "control"),
        ("shoot/a_depth.mp4", ["shoot/a.mp4"], "control"),
        ("shoot/a_depth.mp4", [], "video"),  # no a.mp4 next to it: just a video named like that
        ("shoot/a_depth.mp4", ["other/a.mp4"], "video"),
        ("shoot/a.json", [], "sidecar"),
        ("shoot/notes.txt", [], "other"),
        ("augmented/shoot/a_aug.mp4", [], "other"),
        ("clip", [], "other"),
    ],
)
def test_classify(key: str, siblings: list[str], kind: str) -> None:
    """Videos, control files (folder-wide names or <name>_<control>), sidecars and everything else."""
    assert classify(key, siblings) == kind


def test_control_files_prefer_the_named_pair_over_folder_wide_files() -> None:
    """clip_depth.mp4 wins over depth.mp4 for clip.mp4; files of other folders and other clips are ignored."""
    keys = ["s/clip.mp4", "s/depth.mp4", "s/clip_depth.mp4", "s/seg.mp4", "s/other_edge.mp4", "t/vis.mp4"]
    found = control_files("s/clip.mp4", keys)
    assert found == {ControlType.DEPTH: "s/clip_depth.mp4", ControlType.SEG: "s/seg.mp4"}


def test_default_controls_are_the_provided_files_else_edge() -> None:
    """No controls asked: every provided file at weight 1 (normalised), or edge computed."""
    assert [(c.type, c.provided_key) for c in choose_controls(AugmentParams(), {})] == [(ControlType.EDGE, None)]
    chosen = choose_controls(AugmentParams(), {ControlType.DEPTH: "s/depth.mp4", ControlType.SEG: "s/seg.mp4"})
    assert {c.type for c in chosen} == {ControlType.DEPTH, ControlType.SEG}
    assert all(c.normalized_weight == 0.5 and c.provided_key for c in chosen)


def test_explicit_controls_compute_edge_and_vis_use_files_and_normalise_weights() -> None:
    """edge=0.6 computed with its preset, depth=0.4 from the file; weights sum to 1 (0.6/0.4 stay)."""
    params = AugmentParams(
        controls=(
            ControlSpec(type=ControlType.EDGE, weight=0.6, preset=Preset.LOW),
            ControlSpec(type=ControlType.DEPTH, weight=0.4),
        )
    )
    chosen = {c.type: c for c in choose_controls(params, {ControlType.DEPTH: "s/depth.mp4"})}
    assert chosen[ControlType.EDGE].provided_key is None and chosen[ControlType.EDGE].preset is Preset.LOW
    assert chosen[ControlType.DEPTH].provided_key == "s/depth.mp4"
    assert chosen[ControlType.EDGE].normalized_weight == pytest.approx(0.6)
    assert chosen[ControlType.DEPTH].normalized_weight == pytest.approx(0.4)
    assert normalize({ControlType.EDGE: 0.5, ControlType.VIS: 1.5}) == {ControlType.EDGE: 0.25, ControlType.VIS: 0.75}
    assert normalize({ControlType.EDGE: 0.3}) == {ControlType.EDGE: 0.3}  # one control keeps its weight


def test_a_model_control_without_its_file_is_refused_naming_what_is_missing() -> None:
    """depth asked, no depth video next to the input: the error names the control and the file names."""
    params = AugmentParams(controls=(ControlSpec(type=ControlType.DEPTH, weight=1.0),))
    with pytest.raises(ControlsError) as refused:
        choose_controls(params, {})
    assert refused.value.field == "controls.depth"
    assert "depth.mp4" in refused.value.rule and "<name>_depth.mp4" in refused.value.rule
    assert "needs a model" in refused.value.rule


@pytest.mark.parametrize(
    ("controls", "message"),
    [
        ([{"type": "edge", "weight": 1.5}], "less than or equal to 1"),
        ([{"type": "edge", "weight": -0.1}], "greater than or equal to 0"),
        ([{"type": "edge", "weight": 0}, {"type": "vis", "weight": 0}], "weight above 0"),
        ([{"type": "normals", "weight": 1}], "'edge', 'depth', 'seg' or 'vis'"),
        ([{"type": "edge"}, {"type": "edge"}], "given once"),
        ([{"type": "edge", "preset": "extreme"}], "very_low"),
    ],
    ids=["above-1", "negative", "all-zero", "unknown-type", "duplicate", "unknown-preset"],
)
def test_bad_controls_are_refused_by_the_params_contract(controls: list[dict[str, object]], message: str) -> None:
    """Weights outside 0–1, all zero, unknown types or presets, duplicates: a validation error that says which."""
    with pytest.raises(ValueError, match="controls") as refused:
        AugmentParams.model_validate({"controls": controls})
    assert message in str(refused.value)


def test_a_seeds_001_sidecar_gives_the_prompt_and_controls() -> None:
    """The per-video JSON of docs/background.md#hand-videos (Transfer's spec shape) becomes our parameters; unknown keys are ignored."""
    text = json.dumps(
        {
            "name": "gcsample",
            "prompt": "A photorealistic video of hands folding a towel.",
            "negative_prompt": "cartoonish",
            "seed": 0,
            "guidance": 3,
            "edge": {"control_weight": 0.7, "preset_edge_threshold": "low"},
            "vis": {"control_weight": 0.3, "preset_blur_strength": "high"},
        }
    )
    params = params_from_sidecar(text)
    assert (
        params.prompt == "A photorealistic video of hands folding a towel." and params.negative_prompt == "cartoonish"
    )
    assert [(c.type, c.weight, c.preset) for c in params.controls] == [
        (ControlType.EDGE, 0.7, Preset.LOW),
        (ControlType.VIS, 0.3, Preset.HIGH),
    ]
    ours = params_from_sidecar(json.dumps({"template": "driving", "controls": [{"type": "seg", "weight": 1}]}))
    assert ours.template == "driving" and ours.controls[0].type is ControlType.SEG
    assert sidecar_key("shoot/day 1/clip.mp4") == "shoot/day 1/clip.json"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("{not json", "sidecar"),
        ("[1, 2]", "sidecar"),
        ('{"edge": 3}', "sidecar.edge"),
        ('{"edge": {"control_weight": 2}}', "sidecar.controls.0.weight"),
    ],
)
def test_bad_sidecars_name_the_field(text: str, field: str) -> None:
    """A sidecar that cannot be used says where it is wrong."""
    with pytest.raises(ControlsError) as refused:
        params_from_sidecar(text)
    assert refused.value.field == field


def test_augmentation_ids_follow_the_input_bytes_and_the_parameters() -> None:
    """Same upload (etag) and params → same id (a duplicate notification is one augmentation); else another."""
    params = AugmentParams()
    first = augmentation_id("wm-inputs", "a/b.mp4", '"abc"', params)
    assert first == augmentation_id("wm-inputs", "a/b.mp4", "abc", params)
    assert first.startswith("aug-") and len(first) == 36
    assert first != augmentation_id("wm-inputs", "a/b.mp4", "abd", params)
    assert first != augmentation_id("wm-inputs", "a/b.mp4", "abc", AugmentParams(template="driving"))
