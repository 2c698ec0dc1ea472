"""Planning a spec against a model card: exact frames, chunks, seeds and fps, or a named refusal.

Pure tests: ``plan_generation`` on hand-built specs and the built-in cards, no servers.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worldmill.contracts.augment import ControlSpec
from worldmill.contracts.base import ObjectRef, Resolution
from worldmill.contracts.cards import ControlType, GenerationMode, ModelCard, builtin_cards
from worldmill.contracts.generation import GenerationPlan
from worldmill.contracts.prompts import PromptSpec, SamplingParams
from worldmill.contracts.qa import CriticRequirement, QaRequirements
from worldmill.generate.planning import PlanningError, chunk_count, plan_generation

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
CARDS = builtin_cards()
PREDICT = CARDS["cosmos-predict2.5-2b"]
TRANSFER = CARDS["cosmos-transfer2.5-2b"]
SYNTHETIC = CARDS["synthetic"]
INPUT = ObjectRef(bucket="wm-inputs", key="clips/dock.mp4", size=1234, sha256="ab" * 32, content_type="video/mp4")
PROPS = settings(max_examples=200, deadline=None)


# --------------------------------------------------------------------------------------------- helpers


def make_spec(card: ModelCard = PREDICT, *, duration_s: float = 5.0, fps: float = 24.0, **over: Any) -> PromptSpec:
    """A valid spec for ``card`` with ``duration_s × fps`` frames; keyword arguments override fields."""
    fields: dict[str, Any] = {
        "prompt_id": "C01-5s-v0",
        "version": 1,
        "scenario": "loading dock at night",
        "variant": 0,
        "duration_s": duration_s,
        "fps": fps,
        "target_frames": round(duration_s * fps),
        "seed": 1234,
        "resolution": card.native_resolution,
        "model": card.id,
        "mode": GenerationMode.TEXT2WORLD,
        "prompt": "A forklift crosses an empty loading dock under sodium lights.",
        "sampling": SamplingParams(guidance=card.default_guidance, steps=card.default_steps),
        "created_at": NOW,
    }
    fields.update(over)
    return PromptSpec(**fields)


def transfer_spec(**over: Any) -> PromptSpec:
    """A Transfer spec for a 121-frame 30 fps input video with an edge control."""
    fields: dict[str, Any] = {
        "mode": GenerationMode.TRANSFER,
        "duration_s": 121 / 30,
        "fps": 30.0,
        "target_frames": 121,
        "input": INPUT,
        "controls": (ControlSpec(type=ControlType.EDGE),),
    }
    fields.update(over)
    duration_s = fields.pop("duration_s")
    fps = fields.pop("fps")
    return make_spec(TRANSFER, duration_s=duration_s, fps=fps, **fields)


def plan(spec: PromptSpec, card: ModelCard = PREDICT, **kw: Any) -> GenerationPlan:
    """Plan with a fixed plan id."""
    return plan_generation(spec, card, plan_id="plan-1", **kw)


def refusal(spec: PromptSpec, card: ModelCard = PREDICT, **kw: Any) -> PlanningError:
    """The PlanningError planning ``spec`` raises."""
    with pytest.raises(PlanningError) as info:
        plan(spec, card, **kw)
    return info.value


def kept(p: GenerationPlan) -> int:
    """Frames the plan's chunks append to the output."""
    return sum(c.keep_frames for c in p.chunks)


# --------------------------------------------------------------------------------------------- properties


@st.composite
def timelines(draw: st.DrawFn) -> tuple[ModelCard, float, int, float]:
    """(card, fps, tenths of a second, seed) with a duration that makes whole frames, up to 60 s."""
    card = draw(st.sampled_from([PREDICT, SYNTHETIC]))
    fps = draw(st.sampled_from(sorted(card.deliverable_fps)))
    step = 10 // math.gcd(10, fps)  # tenths of a second per whole number of frames
    tenths = step * draw(st.integers(min_value=1, max_value=600 // step))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    return card, float(fps), tenths, seed


@PROPS
@given(timelines())
def test_plans_deliver_exactly_the_asked_timeline(case: tuple[ModelCard, float, int, int]) -> None:
    """For any whole-frame duration and deliverable fps, the plan delivers duration × fps frames, covered by its chunks."""
    card, fps, tenths, seed = case
    duration = tenths / 10
    target = tenths * int(fps) // 10
    spec = make_spec(card, duration_s=duration, fps=fps, target_frames=target, seed=seed)
    p = plan(spec, card)

    assert p.expected.frames == target
    assert p.expected.duration_s == duration
    assert p.expected.fps == fps
    assert kept(p) == p.native_frames
    overlap = card.conditional_frames[GenerationMode.VIDEO2WORLD]
    assert len(p.chunks) == 1 + math.ceil(max(0, p.native_frames - 93) / (93 - overlap))
    for i, c in enumerate(p.chunks):
        assert c.index == i
        assert c.frames == card.frames_per_chunk
        assert c.keep_from + c.keep_frames <= c.frames
        assert c.seed == (seed + i) % 2**32
    assert len({c.seed for c in p.chunks}) == len(p.chunks)
    assert (p.native_frames - 1) / p.native_fps >= (target - 1) / fps - 1e-9
    assert p.fps_conversion.source_frames == p.native_frames
    assert p.fps_conversion.target_frames == target
    assert (p.fps_conversion.method == "none") == (p.native_fps == fps)


def test_chunk_count_follows_the_cosmos_formula() -> None:
    """chunk_count is 1 + ceil((N − chunk)/(chunk − overlap)) and 1 for anything up to one chunk."""
    assert chunk_count(1, 93, 5) == 1
    assert chunk_count(93, 93, 5) == 1
    assert chunk_count(94, 93, 5) == 2
    assert chunk_count(181, 93, 5) == 2
    assert chunk_count(182, 93, 5) == 3
    assert chunk_count(121, 93, 1) == 2


# --------------------------------------------------------------------------------------------- docs/background.md#security-cameras


def test_predict_5s_at_24fps_is_one_chunk_interpolated_from_16fps() -> None:
    """5 s at 24 fps → 120 frames, from 81 native frames at 16 fps (covering 0–5.0 s) in one chunk."""
    p = plan(make_spec(duration_s=5.0, fps=24.0))
    assert p.expected.frames == 120
    assert p.expected.fps == 24.0
    assert p.expected.duration_s == 5.0
    assert p.native_fps == 16.0
    # (120 − 1) × 16/24 = 79.33 → 80 frame intervals → 81 frames; 80 frames would end at 4.9375 s < 4.958 s.
    assert p.native_frames == 81
    assert len(p.chunks) == 1
    assert p.chunks[0].condition == "none"
    assert p.chunks[0].condition_frames == 0
    assert p.chunks[0].keep_from == 0
    assert p.chunks[0].keep_frames == 81
    assert p.fps_conversion.method == "interpolate"
    assert (p.fps_conversion.source_fps, p.fps_conversion.target_fps) == (16.0, 24.0)
    assert p.estimated_gpu_seconds == 229.0


def test_predict_10s_at_24fps_is_two_chunks() -> None:
    """10 s at 24 fps → 240 frames from 161 native frames in 2 chunks, the second conditioned on 5 frames."""
    p = plan(make_spec(duration_s=10.0, fps=24.0, seed=7))
    assert p.expected.frames == 240
    assert p.native_frames == 161
    assert [(c.condition, c.condition_frames, c.keep_from, c.keep_frames) for c in p.chunks] == [
        ("none", 0, 0, 93),
        ("previous_chunk", 5, 5, 68),
    ]
    assert [c.seed for c in p.chunks] == [7, 8]


def test_predict_30s_at_24fps_is_six_chunks_with_a_recorded_adaptation() -> None:
    """30 s at 24 fps → 720 frames from 481 native, 1 + ceil((481 − 93)/(93 − 5)) = 6 chunks, fps change recorded."""
    p = plan(make_spec(duration_s=30.0, fps=24.0))
    assert p.expected.frames == 720
    assert p.expected.duration_s == 30.0
    assert p.native_frames == 481
    assert len(p.chunks) == 1 + math.ceil((481 - 93) / (93 - 5)) == 6
    assert [c.keep_frames for c in p.chunks] == [93, 88, 88, 88, 88, 36]
    assert p.estimated_gpu_seconds == 6 * 229.0
    (adaptation,) = p.adaptations
    assert adaptation.field == "fps"
    assert adaptation.requested == "24"
    assert adaptation.delivered == "24 fps from 16 fps by interpolation"
    assert adaptation.reason == "cosmos-predict2.5-2b always generates 16 fps"


def test_predict_at_16fps_needs_no_conversion() -> None:
    """At the native 16 fps the native frames are the target frames and nothing is adapted."""
    p = plan(make_spec(duration_s=10.0, fps=16.0))
    assert p.native_frames == p.expected.frames == 160
    assert p.fps_conversion.method == "none"
    assert p.adaptations == ()


def test_synthetic_at_24fps_generates_directly() -> None:
    """The synthetic card makes 24 fps itself: no conversion, no adaptation, native frames = target frames."""
    p = plan(make_spec(SYNTHETIC, duration_s=30.0, fps=24.0), SYNTHETIC)
    assert p.native_fps == 24.0
    assert p.native_frames == p.expected.frames == 720
    assert p.fps_conversion.method == "none"
    assert p.adaptations == ()
    assert len(p.chunks) == 1 + math.ceil((720 - 93) / 88)


def test_video2world_first_chunk_is_conditioned_on_the_last_five_input_frames() -> None:
    """video2world's chunk 0 takes 5 input frames, image2world's 1."""
    video = plan(make_spec(mode=GenerationMode.VIDEO2WORLD, input=INPUT))
    image = plan(make_spec(mode=GenerationMode.IMAGE2WORLD, input=INPUT))
    assert (video.chunks[0].condition, video.chunks[0].condition_frames) == ("input", 5)
    assert (image.chunks[0].condition, image.chunks[0].condition_frames) == ("input", 1)


def test_estimate_scales_with_pixels_and_steps() -> None:
    """The GPU estimate is chunks × reference seconds × pixel ratio × step ratio, to 0.1 s."""
    spec = make_spec(resolution=Resolution(width=768, height=432), sampling=SamplingParams(guidance=7.0, steps=70))
    p = plan(spec)
    assert p.resolution == p.expected.resolution == Resolution(width=768, height=432)
    assert p.estimated_gpu_seconds == round(229.0 * (768 * 432) / (1280 * 704) * 2, 1) == 168.6


def test_plan_carries_the_spec_identity_and_sampling() -> None:
    """The plan names the spec, its version, the model and mode, and passes sampling through unchanged."""
    spec = make_spec(version=3, sampling=SamplingParams(guidance=5.5, steps=20, negative_prompt="blurry"))
    p = plan(spec)
    assert (p.plan_id, p.prompt_id, p.prompt_version) == ("plan-1", "C01-5s-v0", 3)
    assert (p.model, p.mode) == (PREDICT.id, GenerationMode.TEXT2WORLD)
    assert p.sampling == spec.sampling
    assert (p.expected.codec, p.expected.container) == ("h264", "mp4")


def test_seeds_wrap_at_32_bits() -> None:
    """Chunk seeds are (seed + index) mod 2**32, so the last seed wraps to 0."""
    p = plan(make_spec(duration_s=10.0, seed=2**32 - 1))
    assert [c.seed for c in p.chunks] == [2**32 - 1, 0]


def test_overlap_override_changes_conditioning_and_count() -> None:
    """An explicit overlap of 1 conditions later chunks on one frame and keeps 92 new frames each."""
    p = plan(make_spec(duration_s=30.0), overlap_frames=1)
    assert len(p.chunks) == 1 + math.ceil((481 - 93) / 92)
    assert all((c.condition_frames, c.keep_from) == (1, 1) for c in p.chunks[1:])
    assert kept(p) == 481


# --------------------------------------------------------------------------------------------- transfer


def test_transfer_keeps_the_inputs_frames_and_fps() -> None:
    """A 121-frame 30 fps input → 2 chunks (1 + ceil(28/92)), 121 frames at 30 fps out, no conversion."""
    p = plan(transfer_spec(), TRANSFER)
    assert p.native_fps == 30.0
    assert p.native_frames == p.expected.frames == 121
    assert p.expected.fps == 30.0
    assert len(p.chunks) == 1 + math.ceil(28 / 92) == 2
    assert [(c.condition, c.condition_frames, c.keep_from, c.keep_frames) for c in p.chunks] == [
        ("none", 0, 0, 93),
        ("previous_chunk", 1, 1, 28),
    ]
    assert p.fps_conversion.method == "none"
    assert p.adaptations == ()
    assert p.estimated_gpu_seconds == 2 * 264.0


def test_transfer_keeps_an_input_frame_rate_outside_the_standard_set() -> None:
    """Transfer's fps comes from the input, so 29.97 fps is planned as is, without conversion."""
    p = plan(transfer_spec(duration_s=300 / 29.97, fps=29.97, target_frames=300), TRANSFER)
    assert p.expected.fps == p.native_fps == 29.97
    assert p.native_frames == 300
    assert p.fps_conversion.method == "none"


# --------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("spec", "card", "kw", "field", "rule"),
    [
        pytest.param(
            make_spec(model="cosmos-predict9-1b"), PREDICT, {}, "model", "'cosmos-predict9-1b'", id="unknown-model"
        ),
        pytest.param(
            make_spec(SYNTHETIC), PREDICT, {}, "model", "planned against card 'cosmos-predict2.5-2b'", id="wrong-card"
        ),
        pytest.param(
            make_spec(mode=GenerationMode.TRANSFER, input=INPUT, controls=(ControlSpec(type=ControlType.EDGE),)),
            PREDICT,
            {},
            "mode",
            "does not support mode transfer",
            id="unsupported-mode",
        ),
        pytest.param(
            make_spec(mode=GenerationMode.VIDEO2WORLD),
            PREDICT,
            {},
            "input",
            "video2world needs an input",
            id="no-input",
        ),
        pytest.param(
            transfer_spec(input=None), TRANSFER, {}, "input", "transfer needs an input", id="transfer-no-input"
        ),
        pytest.param(transfer_spec(controls=()), TRANSFER, {}, "controls", "at least one control", id="no-controls"),
        pytest.param(
            make_spec(controls=(ControlSpec(type=ControlType.DEPTH),)),
            PREDICT,
            {},
            "controls",
            "only used by mode transfer",
            id="controls-outside-transfer",
        ),
        pytest.param(
            make_spec(resolution=Resolution(width=1920, height=1080)),
            PREDICT,
            {},
            "resolution",
            "cannot generate at 1920x1080",
            id="resolution",
        ),
        pytest.param(make_spec(duration_s=5.0, fps=23.0), PREDICT, {}, "fps", "23 fps is not deliverable", id="fps"),
        pytest.param(
            make_spec(SYNTHETIC, duration_s=100 / 29.97, fps=29.97, target_frames=100),
            SYNTHETIC,
            {},
            "fps",
            "29.97 fps is not deliverable",
            id="fps-fractional",
        ),
        pytest.param(
            make_spec(sampling=SamplingParams(guidance=9.0, steps=35)),
            PREDICT,
            {},
            "sampling.guidance",
            "guidance 9 is outside cosmos-predict2.5-2b's range 0–7",
            id="guidance",
        ),
        pytest.param(
            make_spec(duration_s=30.0),
            PREDICT,
            {"max_chunks": 2},
            "duration_s",
            "481 native frames at 16 fps = 6 chunks of 93 frames (overlap 5), more than max_chunks 2",
            id="too-many-chunks",
        ),
        pytest.param(
            make_spec(),
            PREDICT,
            {"overlap_frames": 6},
            "overlap_frames",
            "exceeds cosmos-predict2.5-2b's max_overlap_frames 5",
            id="overlap-too-large",
        ),
        pytest.param(
            transfer_spec(),
            TRANSFER,
            {"overlap_frames": 3},
            "overlap_frames",
            "max_overlap_frames 2",
            id="transfer-overlap",
        ),
        pytest.param(
            make_spec(), PREDICT, {"overlap_frames": -1}, "overlap_frames", "must be ≥ 0", id="negative-overlap"
        ),
    ],
)
def test_refusals_name_the_field_and_the_rule(
    spec: PromptSpec, card: ModelCard, kw: dict[str, Any], field: str, rule: str
) -> None:
    """Each impossible request is refused before any GPU time, naming the spec field and the broken rule."""
    err = refusal(spec, card, **kw)
    assert err.field == field
    assert rule in err.rule
    assert str(err).startswith(f"{field}: ")


def test_unknown_transfer_control_is_refused() -> None:
    """A Transfer card that lacks a requested control refuses it by name."""
    edge_only = TRANSFER.model_copy(update={"controls": frozenset({ControlType.EDGE})})
    err = refusal(transfer_spec(controls=(ControlSpec(type=ControlType.SEG),)), edge_only)
    assert (err.field, err.rule) == ("controls", "cosmos-transfer2.5-2b has no control seg")


def test_overlap_must_be_shorter_than_a_chunk() -> None:
    """An overlap as long as a chunk would make no new frames, so it is refused even if the card allows it."""
    loose = SYNTHETIC.model_copy(update={"max_overlap_frames": 200})
    err = refusal(make_spec(SYNTHETIC), loose, overlap_frames=93)
    assert err.field == "overlap_frames"
    assert "less than frames_per_chunk 93" in err.rule


def test_the_specs_qa_requirements_are_copied_onto_the_plan() -> None:
    """The qa service reads the plan of video.ready: the spec's critic gate is on it; a spec without one adds nothing."""
    wanted = QaRequirements(critic=CriticRequirement(gate="fail", kind="plausibility", threshold=3.5))
    plan = plan_generation(make_spec(qa=wanted), PREDICT, plan_id="plan-qa")
    assert plan.qa == wanted
    assert GenerationPlan.model_validate_json(plan.model_dump_json()).qa == wanted
    plain = plan_generation(make_spec(), PREDICT, plan_id="plan-plain")
    assert plain.qa is None and "qa" not in plain.model_dump(mode="json")
