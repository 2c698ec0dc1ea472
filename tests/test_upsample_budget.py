"""Upsampling budgets: image-token rules per model, hint-frame plans that fit the context, shrink, calibration.

Pure tests: ``worldmill.upsample.profiles`` and ``worldmill.upsample.budget`` on hand-picked sizes, no servers.
"""

from __future__ import annotations

import dataclasses

import pytest

from worldmill.upsample.budget import BudgetError, HintPlan, calibrate, plan_hints, shrink, text_tokens
from worldmill.upsample.profiles import ModelProfile, builtin_profiles

PROFILES = builtin_profiles()
PIXTRAL = PROFILES["pixtral-12b"]
REASON1 = PROFILES["cosmos-reason1-7b"]
PROMPT = "A forklift carries a pallet of red crates across a wet loading dock at night, under sodium lamps."

# The resolutions of the team's investigation (docs/background.md#upsampler-limits), plus portrait and square.
SOURCES = [
    (455, 256),  # 256p
    (640, 360),  # 360p
    (854, 480),  # 480p 16:9
    (640, 480),  # 480p 4:3
    (1280, 720),  # 720p 16:9
    (960, 720),  # 720p 4:3
    (1920, 1080),  # 1080p
    (720, 1280),  # portrait
    (1024, 1024),  # square
]


def request_tokens(plan: HintPlan) -> int:
    """Everything the request can occupy: prompt (text and frames), the reply and the margin."""
    return plan.total_estimated + plan.max_new_tokens + plan.margin


# --------------------------------------------------------------------------------------------- token rules


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        # 1920×1080 scales to 1024×576 (ratio 1.875): 64 × 36 patches, each row closed by a break/end → 36 × 65.
        (1920, 1080, 2340),
        # 455×256 is below 1024: ceil(455/16) = 29 columns, 16 rows → 16 × 30.
        (455, 256, 480),
    ],
)
def test_pixtral_image_tokens_match_hand_computation(width: int, height: int, expected: int) -> None:
    """Pixtral's count is rows × (columns + 1) over 16 px patches after capping the long side at 1024."""
    assert PIXTRAL.image_tokens(width, height) == expected


def test_pixtral_resize_caps_long_side_and_rounds_up_to_patches() -> None:
    """Pixtral's server scales down to a 1024 px long side and rounds each side up to 16 px."""
    assert PIXTRAL.resized(1920, 1080) == (1024, 576)
    assert PIXTRAL.resized(455, 256) == (464, 256)


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        # 1280×720 rounds to 1288×728 (46 × 26 cells of 28 px, within max_pixels) + vision start/end.
        (1280, 720, 46 * 26 + 2),
        # 1920×1080 rounds to 1932×1092 > 1280·28²: beta = sqrt(2073600/1003520), floor → 1316×728 = 47 × 26.
        (1920, 1080, 47 * 26 + 2),
        # 224×224 is below 256·28²: scaled up by 2 to 448×448 = 16 × 16 cells.
        (224, 224, 16 * 16 + 2),
    ],
)
def test_qwen_image_tokens_match_hand_computation(width: int, height: int, expected: int) -> None:
    """Reason1's count is (H/28)·(W/28) after smart resize within [min_pixels, max_pixels], plus two markers."""
    assert REASON1.image_tokens(width, height) == expected


def test_qwen_video_groups_frames_in_pairs() -> None:
    """Reason1 video frames share a token grid two at a time, so 8 frames cost 4 grids."""
    assert REASON1.video_tokens(448, 448, 8) == 4 * 256 + 2
    assert REASON1.video_tokens(448, 448, 7) == 4 * 256 + 2
    with pytest.raises(ValueError, match="no video"):
        PIXTRAL.video_tokens(448, 448, 2)


def test_profiles_are_configurable_by_replace() -> None:
    """A profile adjusted with ``dataclasses.replace`` keeps its rule and takes the new limits."""
    bigger = dataclasses.replace(PIXTRAL, context_tokens=16384, max_images=4)
    assert bigger.image_tokens(1920, 1080) == PIXTRAL.image_tokens(1920, 1080)
    plan = plan_hints(bigger, source_width=1920, source_height=1080, wanted_frames=4, prompt=PROMPT)
    assert plan.frames == 4
    with pytest.raises(ValueError, match="min pixels"):
        dataclasses.replace(REASON1, min_pixels=10**8)


# --------------------------------------------------------------------------------------------- plans


@pytest.mark.parametrize("profile", [PIXTRAL, REASON1], ids=lambda p: p.name)
@pytest.mark.parametrize(("source_width", "source_height"), SOURCES)
@pytest.mark.parametrize("wanted", range(1, 9))
def test_plan_fits_context_and_keeps_the_frame_honest(
    profile: ModelProfile, source_width: int, source_height: int, wanted: int
) -> None:
    """Every plan fits the context with the reply, sends at least one frame, keeps the aspect ratio and never upscales."""
    plan = plan_hints(
        profile, source_width=source_width, source_height=source_height, wanted_frames=wanted, prompt=PROMPT
    )
    grid = profile.patch * profile.merge
    assert plan.total_estimated <= profile.context_tokens
    assert request_tokens(plan) <= profile.context_tokens
    assert 1 <= plan.frames <= min(wanted, profile.max_images)
    assert plan.width <= source_width
    assert plan.height <= source_height
    assert plan.width % grid == 0
    assert plan.height % grid == 0
    long_sent, short_sent = max(plan.width, plan.height), min(plan.width, plan.height)
    aspect = min(source_width, source_height) / max(source_width, source_height)
    assert abs(short_sent - long_sent * aspect) <= profile.patch  # aspect ratio kept within one patch
    assert (plan.width >= plan.height) == (source_width >= source_height)
    assert plan.tokens_per_frame == profile.image_tokens(plan.width, plan.height)
    assert plan.total_estimated == plan.text_tokens + plan.frames * plan.tokens_per_frame
    served_w, served_h = profile.resized(plan.width, plan.height)
    assert served_w >= plan.width
    assert served_h >= plan.height  # the server never has to shrink what we send


def test_issue_1080p_with_pixtral_4096_fits() -> None:
    """The issue's own case: 1920×1080 with Pixtral at 4096 tokens yields a request within 4096."""
    assert 2 * PIXTRAL.image_tokens(1920, 1080) > 4096  # frames at source size did overflow
    plan = plan_hints(PIXTRAL, source_width=1920, source_height=1080, wanted_frames=2, prompt=PROMPT)
    assert plan.frames == 2
    assert request_tokens(plan) <= 4096
    assert abs(plan.height - plan.width * 9 / 16) <= 16


def test_more_frames_at_a_smaller_size_before_dropping_frames() -> None:
    """With room for two frames above the floor, two smaller frames beat one large one."""
    plan = plan_hints(PIXTRAL, source_width=1920, source_height=1080, wanted_frames=2, prompt=PROMPT)
    single = plan_hints(PIXTRAL, source_width=1920, source_height=1080, wanted_frames=1, prompt=PROMPT)
    assert plan.frames == 2
    assert max(plan.width, plan.height) >= 224
    assert single.width * single.height > plan.width * plan.height


def test_frames_are_dropped_rather_than_shrunk_below_the_floor() -> None:
    """When two floor-size frames do not fit, the plan sends one frame at the floor or above."""
    text = text_tokens(PIXTRAL, PROMPT, PIXTRAL.system_prompt)
    floor_frame = PIXTRAL.image_tokens(224, 126)
    context = text + 300 + 64 + floor_frame + floor_frame // 2
    tight = dataclasses.replace(PIXTRAL, context_tokens=context)
    plan = plan_hints(tight, source_width=1920, source_height=1080, wanted_frames=2, prompt=PROMPT)
    assert plan.frames == 1
    assert max(plan.width, plan.height) >= 224
    assert request_tokens(plan) <= context


@pytest.mark.parametrize("profile", [PIXTRAL, REASON1], ids=lambda p: p.name)
def test_budget_error_names_every_number(profile: ModelProfile) -> None:
    """A context too small for even the cheapest frame raises BudgetError whose message has every number."""
    text = text_tokens(profile, PROMPT, profile.system_prompt)
    new_tokens, margin = 200, 50
    context = text + new_tokens + margin + 2  # room for two image tokens: less than any frame
    tiny = dataclasses.replace(profile, context_tokens=context)

    def attempt(profile: ModelProfile) -> HintPlan:
        return plan_hints(
            profile,
            source_width=1920,
            source_height=1080,
            wanted_frames=2,
            prompt=PROMPT,
            max_new_tokens=new_tokens,
            margin=margin,
        )

    with pytest.raises(BudgetError) as caught:
        attempt(tiny)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.needed == profile.image_tokens(error.width, error.height) > 2
    if profile is PIXTRAL:
        assert (error.width, error.height, error.needed) == (32, 16, 3)  # two patches and the image end
    message = str(error)
    for piece in (
        f"{error.width}×{error.height}",
        f"needs {error.needed} tokens",
        "budget is 2 ",
        f"context {context}",
        f"text {text}",
        f"new tokens {new_tokens}",
        f"margin {margin}",
    ):
        assert piece in message
    # exactly enough room for the frame the error named: one frame of that cost
    enough = dataclasses.replace(profile, context_tokens=context - 2 + error.needed)
    plan = attempt(enough)
    assert plan.frames == 1
    assert request_tokens(plan) == enough.context_tokens


@pytest.mark.parametrize("profile", [PIXTRAL, REASON1], ids=lambda p: p.name)
@pytest.mark.parametrize(("source_width", "source_height"), [(1920, 1080), (720, 1280), (455, 256)])
def test_shrink_strictly_reduces_until_budget_error(
    profile: ModelProfile, source_width: int, source_height: int
) -> None:
    """Each shrink lowers total_estimated, pixels go before frames, and it ends in BudgetError."""
    plan = plan_hints(profile, source_width=source_width, source_height=source_height, wanted_frames=8, prompt=PROMPT)
    seen_frames = [plan.frames]
    for _ in range(500):
        try:
            smaller = shrink(plan, profile)
        except BudgetError as exc:
            assert f"{plan.width}×{plan.height}" in str(exc)
            break
        assert smaller.total_estimated < plan.total_estimated
        assert smaller.frames <= plan.frames
        if smaller.frames < plan.frames:
            assert (smaller.width, smaller.height) == (plan.width, plan.height)
        else:
            assert smaller.width * smaller.height < plan.width * plan.height
        assert smaller.width <= source_width
        assert smaller.height <= source_height
        seen_frames.append(smaller.frames)
        plan = smaller
    else:
        pytest.fail("shrink never ran out of smaller attempts")
    assert plan.frames == 1
    assert seen_frames == sorted(seen_frames, reverse=True)


def test_shrink_keeps_several_frames_at_the_floor_before_dropping_one() -> None:
    """A multi-frame plan shrinks its frames down to the 224 px floor before it drops a frame."""
    plan = plan_hints(PIXTRAL, source_width=1920, source_height=1080, wanted_frames=2, prompt=PROMPT)
    while plan.frames == 2:
        previous = plan
        plan = shrink(plan, PIXTRAL)
        if plan.frames == 2:
            assert max(plan.width, plan.height) >= 224
    assert max(previous.width, previous.height) == 224


# --------------------------------------------------------------------------------------------- calibration and text


@pytest.mark.parametrize("profile", [PIXTRAL, REASON1], ids=lambda p: p.name)
@pytest.mark.parametrize(("source_width", "source_height"), [(1920, 1080), (1280, 720), (720, 1280)])
def test_calibration_above_one_gives_fewer_or_smaller_frames(
    profile: ModelProfile, source_width: int, source_height: int
) -> None:
    """A calibration above 1 (the server counts more than we estimate) gives fewer or smaller frames."""
    tight = dataclasses.replace(profile, context_tokens=3000)
    plain, high = (
        plan_hints(
            tight,
            source_width=source_width,
            source_height=source_height,
            wanted_frames=8,
            prompt=PROMPT,
            calibration=calibration,
        )
        for calibration in (1.0, 1.6)
    )
    assert (high.frames, high.width * high.height) < (plain.frames, plain.width * plain.height)
    assert request_tokens(high) <= 3000
    assert high.tokens_per_frame >= profile.image_tokens(high.width, high.height) * 1.6


def test_calibrate_moves_towards_the_observed_ratio_and_clamps() -> None:
    """calibrate moves halfway to observed/estimated by default and stays within [0.5, 3]."""
    assert calibrate(1.0, 1000, 1200) == pytest.approx(1.1)
    assert calibrate(1.2, 1200, 1200) == pytest.approx(1.2)
    assert calibrate(1.0, 1000, 1200, weight=1.0) == pytest.approx(1.2)
    assert calibrate(1.0, 100, 10_000, weight=1.0) == 3.0
    assert calibrate(1.0, 10_000, 100, weight=1.0) == 0.5
    assert calibrate(1.3, 0, 500) == pytest.approx(1.3)


def test_text_tokens_grow_with_text_length() -> None:
    """The text estimate grows with the prompt, counts non-ASCII bytes, and errs high for English."""
    base = text_tokens(PIXTRAL, PROMPT, "")
    assert text_tokens(PIXTRAL, PROMPT * 2, "") > base
    assert text_tokens(PIXTRAL, PROMPT * 4, "") > text_tokens(PIXTRAL, PROMPT * 2, "")
    assert text_tokens(PIXTRAL, PROMPT, PIXTRAL.system_prompt) > base
    assert text_tokens(PIXTRAL, "日本語", "") > text_tokens(PIXTRAL, "abc", "")
    assert base >= len(PROMPT.split())  # at least a token per word
