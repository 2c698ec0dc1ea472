"""Hint-frame budgets: how many frames, at what size, fit a model's context before the call.

The budget for images is what the context leaves after the text (prompt and system prompt), the
reply (``max_new_tokens``) and a safety margin. Frames are resized by us, keeping the source's
aspect ratio, never upscaled, with sides on the model's token grid (``patch × merge`` pixels) and
never larger than what the server would use unchanged. The planner prefers the wanted number of
frames at a smaller size, but only down to a floor (224 px on the long side); below that it drops
frames first, and only a single frame may go smaller still. When not even one frame of the
smallest size fits, :class:`BudgetError` says so with every number.

Estimates are multiplied by a calibration factor, which the service learns from the server's
reported ``usage.prompt_tokens`` with :func:`calibrate`. After a context-length error anyway,
:func:`shrink` gives the next smaller attempt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from worldmill.upsample.profiles import ModelProfile

FLOOR_SIDE = 224  # long side, in pixels, below which dropping frames beats shrinking them
MIN_GRID_CELLS = 2  # the smallest frame is this many grid cells along its long side
TEMPLATE_OVERHEAD = 32  # chat-template tokens around the messages (roles, markers, BOS/EOS)
CALIBRATION_RANGE = (0.5, 3.0)


class BudgetError(ValueError):
    """Not even one frame of the smallest size fits the context; the message carries every number."""

    def __init__(
        self,
        *,
        width: int,
        height: int,
        needed: int,
        budget: int,
        context: int,
        text: int,
        new_tokens: int,
        margin: int,
        lead: str = "",
    ) -> None:
        self.width, self.height, self.needed, self.budget = width, height, needed, budget
        self.context, self.text, self.new_tokens, self.margin = context, text, new_tokens, margin
        super().__init__(
            f"{lead}even one {width}×{height} frame needs {needed} tokens; the budget is {budget} "
            f"(context {context} − text {text} − new tokens {new_tokens} − margin {margin})"
        )


@dataclass(frozen=True)
class HintPlan:
    """The hint frames to send: count and size (what we resize to), with the token accounting.

    ``tokens_per_frame``, ``text_tokens`` and ``total_estimated`` (prompt tokens: text plus all
    frames) already include ``calibration``; ``budget`` is the image budget the plan was made for.
    """

    frames: int
    width: int
    height: int
    tokens_per_frame: int
    text_tokens: int
    total_estimated: int
    budget: int
    source_width: int = 0
    source_height: int = 0
    calibration: float = 1.0
    max_new_tokens: int = 0
    margin: int = 0
    floor_side: int = FLOOR_SIDE
    as_video: bool = False


@dataclass(frozen=True)
class _Size:
    width: int
    height: int
    tokens: int  # calibrated tokens per frame

    @property
    def long_side(self) -> int:
        return max(self.width, self.height)

    @property
    def area(self) -> int:
        return self.width * self.height


def _estimate_piece(text: str, chars_per_token: float) -> int:
    """ASCII at ``chars_per_token``; every UTF-8 byte of anything else as a token of its own."""
    ascii_chars = sum(1 for ch in text if ord(ch) < 128)
    other_bytes = len(text.encode("utf-8")) - ascii_chars
    return math.ceil(ascii_chars / chars_per_token) + other_bytes


def text_tokens(profile: ModelProfile, text: str, system: str) -> int:
    """A conservative (high) token estimate of the user text and the system prompt in the chat template."""
    cpt = profile.chars_per_token
    return _estimate_piece(text, cpt) + _estimate_piece(system, cpt) + TEMPLATE_OVERHEAD


def _calibrated(tokens: int, calibration: float) -> int:
    return math.ceil(tokens * calibration - 1e-9)


def _sizes(profile: ModelProfile, source_width: int, source_height: int, calibration: float) -> list[_Size]:
    """Every frame size we may send, largest first: aspect kept, on the grid, never upscaled."""
    if source_width < 1 or source_height < 1:
        raise ValueError(f"source size must be positive, got {source_width}×{source_height}")
    g = profile.grid
    landscape = source_width >= source_height
    src_long, src_short = (source_width, source_height) if landscape else (source_height, source_width)
    max_short = (src_short // g) * g
    if max_short < g:
        raise ValueError(f"source {source_width}×{source_height} is smaller than one {g}×{g} grid cell")
    top = src_long // g
    if profile.max_image_side is not None:
        top = min(top, profile.max_image_side // g)
    sizes: list[_Size] = []
    for cells in range(top, min(MIN_GRID_CELLS, top) - 1, -1):
        long = cells * g
        short = min(max_short, max(g, round(long * src_short / src_long / g) * g))
        w, h = (long, short) if landscape else (short, long)
        if profile.max_pixels is not None and w * h > profile.max_pixels:
            continue  # the server would shrink it: send no more than it uses
        sizes.append(_Size(w, h, _calibrated(profile.image_tokens(w, h), calibration)))
    if not sizes:  # every size exceeds max_pixels, which smart resize would shrink below one cell anyway
        w, h = (g, g)
        sizes.append(_Size(w, h, _calibrated(profile.image_tokens(w, h), calibration)))
    return sizes


def _floor_long(sizes: list[_Size], floor_side: int) -> int:
    return min(floor_side, sizes[0].long_side)


def _cost(profile: ModelProfile, size: _Size, frames: int, as_video: bool, calibration: float) -> int:
    """Calibrated tokens of ``frames`` hint frames of ``size``: separate images, or one video."""
    if not as_video:
        return frames * size.tokens
    return _calibrated(profile.video_tokens(size.width, size.height, frames), calibration)


def plan_hints(
    profile: ModelProfile,
    *,
    source_width: int,
    source_height: int,
    wanted_frames: int,
    prompt: str,
    max_new_tokens: int | None = None,
    margin: int = 64,
    calibration: float = 1.0,
    floor_side: int = FLOOR_SIDE,
    as_video: bool = False,
) -> HintPlan:
    """As many frames as fit (up to ``wanted_frames`` and the model's limit), each as large as fits.

    With ``as_video`` the frames go as one short video (models that take video: frames are grouped
    in time, so two frames may cost what one does); otherwise as separate images.
    """
    if as_video and not profile.takes_video:
        raise ValueError(f"{profile.name} takes no video input; send hint frames as images")
    if wanted_frames < 1:
        raise ValueError(f"wanted frames must be at least 1, got {wanted_frames}")
    if calibration <= 0:
        raise ValueError(f"calibration must be positive, got {calibration}")
    new_tokens = profile.default_max_tokens if max_new_tokens is None else max_new_tokens
    if new_tokens < 0 or margin < 0:
        raise ValueError(f"max new tokens and margin must not be negative, got {new_tokens} and {margin}")
    text = _calibrated(text_tokens(profile, prompt, profile.system_prompt), calibration)
    budget = profile.context_tokens - text - new_tokens - margin
    sizes = _sizes(profile, source_width, source_height, calibration)
    floor_long = _floor_long(sizes, floor_side)

    def make(frames: int, size: _Size) -> HintPlan:
        return HintPlan(
            frames=frames,
            width=size.width,
            height=size.height,
            tokens_per_frame=size.tokens,
            text_tokens=text,
            total_estimated=text + _cost(profile, size, frames, as_video, calibration),
            budget=budget,
            source_width=source_width,
            source_height=source_height,
            calibration=calibration,
            max_new_tokens=new_tokens,
            margin=margin,
            floor_side=floor_side,
            as_video=as_video,
        )

    above_floor = [s for s in sizes if s.long_side >= floor_long]
    for frames in range(min(wanted_frames, profile.max_images), 0, -1):
        for size in above_floor:
            if _cost(profile, size, frames, as_video, calibration) <= budget:
                return make(frames, size)
    for size in sizes[len(above_floor) :]:
        if _cost(profile, size, 1, as_video, calibration) <= budget:
            return make(1, size)
    cheapest = min(sizes, key=lambda s: (s.tokens, s.area))  # Qwen's min_pixels can make tiny frames dearer
    raise BudgetError(
        width=cheapest.width,
        height=cheapest.height,
        needed=cheapest.tokens,
        budget=budget,
        context=profile.context_tokens,
        text=text,
        new_tokens=new_tokens,
        margin=margin,
    )


def shrink(plan: HintPlan, profile: ModelProfile, factor: float = 0.75) -> HintPlan:
    """The next smaller attempt after a context-length error: fewer pixels, then fewer frames.

    While several frames are planned, their size shrinks by about ``factor`` in area, but not below
    the floor; then frames are dropped one at a time; a single frame shrinks down to the smallest
    size. Every step strictly lowers ``total_estimated``; :class:`BudgetError` when nothing is smaller.
    """
    if not 0 < factor < 1:
        raise ValueError(f"factor must be between 0 and 1, got {factor}")
    src_w = plan.source_width or plan.width
    src_h = plan.source_height or plan.height
    sizes = _sizes(profile, src_w, src_h, plan.calibration)
    floor_long = _floor_long(sizes, plan.floor_side)
    pool = [s for s in sizes if s.tokens < plan.tokens_per_frame]
    if plan.frames > 1:
        pool = [s for s in pool if s.long_side >= floor_long]
    target = plan.width * plan.height * factor
    chosen = next((s for s in pool if s.area <= target), pool[-1] if pool else None)
    if chosen is not None:
        return replace(
            plan,
            width=chosen.width,
            height=chosen.height,
            tokens_per_frame=chosen.tokens,
            total_estimated=plan.text_tokens + _cost(profile, chosen, plan.frames, plan.as_video, plan.calibration),
        )
    if plan.frames > 1:
        frames = plan.frames - 1
        if plan.as_video:  # frames grouped in time: drop down to the next group, or the cost would not fall
            frames = max(1, (math.ceil(plan.frames / profile.temporal_patch) - 1) * profile.temporal_patch)
        current = _Size(plan.width, plan.height, plan.tokens_per_frame)
        cost = _cost(profile, current, frames, plan.as_video, plan.calibration)
        return replace(plan, frames=frames, total_estimated=plan.text_tokens + cost)
    raise BudgetError(
        width=plan.width,
        height=plan.height,
        needed=plan.tokens_per_frame,
        budget=plan.budget,
        context=profile.context_tokens,
        text=plan.text_tokens,
        new_tokens=plan.max_new_tokens,
        margin=plan.margin,
        lead="nothing smaller to try after a context-length error: ",
    )


def calibrate(previous: float, estimated: int, observed: int, weight: float = 0.5) -> float:
    """The next calibration factor: a moving ratio of observed to estimated prompt tokens, in [0.5, 3].

    ``estimated`` is the plan's ``total_estimated`` (made with ``previous`` applied) and ``observed``
    the server's ``usage.prompt_tokens`` for that request; ``weight`` is how far to move towards
    the ratio this one request implies. Unusable counts (zero or negative) keep ``previous``.
    """
    if not 0 <= weight <= 1:
        raise ValueError(f"weight must be between 0 and 1, got {weight}")
    low, high = CALIBRATION_RANGE
    if estimated > 0 and observed > 0 and previous > 0:
        target = previous * observed / estimated
        previous = (1 - weight) * previous + weight * target
    return min(high, max(low, previous))


class PromptTooLongError(ValueError):
    """The prompt text alone, with the reply and the margin, does not fit the context."""


def plan_text(
    profile: ModelProfile,
    prompt: str,
    *,
    max_new_tokens: int | None = None,
    margin: int = 64,
    calibration: float = 1.0,
) -> HintPlan:
    """The plan of a request without hint frames; :class:`PromptTooLongError` when even the text overflows."""
    if calibration <= 0:
        raise ValueError(f"calibration must be positive, got {calibration}")
    new_tokens = profile.default_max_tokens if max_new_tokens is None else max_new_tokens
    text = _calibrated(text_tokens(profile, prompt, profile.system_prompt), calibration)
    budget = profile.context_tokens - text - new_tokens - margin
    if budget < 0:
        raise PromptTooLongError(
            f"the prompt needs about {text} tokens; with {new_tokens} new tokens and a margin of {margin} "
            f"that exceeds the {profile.context_tokens}-token context by {-budget}"
        )
    return HintPlan(
        frames=0,
        width=0,
        height=0,
        tokens_per_frame=0,
        text_tokens=text,
        total_estimated=text,
        budget=budget,
        calibration=calibration,
        max_new_tokens=new_tokens,
        margin=margin,
    )
