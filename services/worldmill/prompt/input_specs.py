"""Transfer specs for input videos (pure): category templates, nearest supported resolution.

A spec per video keeps the video's length and frame rate (Transfer2.5's output has the input's
frames and fps). With a tier it generates at the tier's size nearest the video's aspect ratio;
without one (augmentations' default) it keeps the input's own size, as Transfer2.5's
``keep_input_resolution`` does, rounded to the card's multiple (``input_resolution`` records the
input's size, the planner the rounding). The input's own size is kept in the metadata too.
"""

from __future__ import annotations

import hashlib
import math
import posixpath
from dataclasses import dataclass
from datetime import datetime

from worldmill.contracts.augment import AugmentParams, ControlSpec
from worldmill.contracts.base import ObjectRef, Resolution
from worldmill.contracts.cards import ControlType, GenerationMode, ModelCard, ResolutionTier
from worldmill.contracts.prompts import PromptSpec, SamplingParams
from worldmill.prompt.identity import slug

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"})

TRANSFER_NEGATIVE = (
    "The video looks like a video game or bad CG: cartoonish frames, fake lighting, raw textures, primitive "
    "geometry, pixelated images, subtitles, unrealistic motion."
)


@dataclass(frozen=True)
class CategoryTemplate:
    """A prompt for a kind of footage, written in our own words."""

    name: str
    prompt: str
    negative_prompt: str = TRANSFER_NEGATIVE


CATEGORIES: dict[str, CategoryTemplate] = {
    t.name: t
    for t in (
        CategoryTemplate(
            "generic",
            "A photorealistic video with natural lighting, realistic materials and "
            "textures, correct shadows and reflections, and smooth, physically plausible motion. "
            "The camera is steady.",
        ),
        CategoryTemplate(
            "hand-manipulation",
            "A photorealistic close-up of human hands handling objects on a "
            "table: lifelike skin tones and creases, fingers gripping with visible contact and "
            "pressure, objects moving only when touched, soft indoor light with gentle shadows, a "
            "steady camera.",
        ),
        CategoryTemplate(
            "driving",
            "A photorealistic drive through a city street in daylight: asphalt with "
            "wear and markings, cars and pedestrians moving at plausible speeds, buildings with "
            "glass reflecting the sky, consistent shadows, a camera mounted steadily on the car.",
        ),
        CategoryTemplate(
            "robot-arm",
            "A photorealistic industrial robot arm picking and placing parts on a "
            "workbench: metal and plastic surfaces with real reflections, cables that sag and "
            "move, parts that rest and fall under gravity, even workshop lighting.",
        ),
        CategoryTemplate(
            "warehouse",
            "A photorealistic warehouse aisle with shelving, pallets and boxes, "
            "forklifts and workers moving at realistic speeds, overhead lights, concrete floor with "
            "scuffs, a fixed ceiling camera.",
        ),
        CategoryTemplate(
            "security-camera",
            "A photorealistic fixed security-camera view of a house entrance: "
            "wide-angle lens, people and objects moving naturally, daylight or porch light with "
            "matching shadows, slight sensor noise, no camera motion.",
        ),
    )
}


def aspect_key_distance(aspect: float, key: str) -> float:
    """How far an aspect ratio is from a tier's ``"16,9"``-style key (in log space, so 2× wide = 2× tall)."""
    w, h = (int(x) for x in key.split(","))
    return abs(math.log(aspect) - math.log(w / h))


def nearest_resolution(width: int, height: int, tier: ResolutionTier) -> tuple[str, Resolution]:
    """The tier's size whose aspect ratio is nearest the video's."""
    aspect = width / height
    key = min(tier.sizes, key=lambda k: aspect_key_distance(aspect, k))
    return key, tier.sizes[key]


def input_sized(width: int, height: int, card: ModelCard) -> Resolution:
    """The input's own size rounded to the nearest multiple of the card's ``resolution_multiple`` (at least one).

    What Transfer2.5's ``keep_input_resolution`` delivers; width and height must be multiples of
    the card's number, so a size that is not is rounded (and the planner records it).
    """
    m = card.resolution_multiple

    def side(v: int) -> int:
        return max(m, math.floor(v / m + 0.5) * m)

    return Resolution(width=side(width), height=side(height))


def tier_named(card: ModelCard, name: str) -> ResolutionTier:
    """A card's tier by name; ``ValueError`` listing the tiers when it has none of that name."""
    for tier in card.resolution_tiers:
        if tier.name == name:
            return tier
    raise ValueError(
        f"{card.id} has no resolution tier {name!r} (tiers: {', '.join(t.name for t in card.resolution_tiers)})"
    )


def input_prompt_id(bucket: str, key: str) -> str:
    """``input-<file stem>-<hash of bucket/key>``: one id per input video, stable."""
    stem = posixpath.splitext(posixpath.basename(key))[0]
    digest = hashlib.sha256(f"{bucket}/{key}".encode()).hexdigest()[:10]
    return f"input-{slug(stem, 80)}-{digest}"


def input_seed(bucket: str, key: str) -> int:
    """A seed from a stable hash of the input's location (never 0)."""
    return int.from_bytes(hashlib.sha256(f"seed\x1f{bucket}/{key}".encode()).digest()[:4], "big") or 1


def default_controls(controls: tuple[ControlSpec, ...]) -> tuple[ControlSpec, ...]:
    """Edge at weight 1.0 unless controls are given (the default of docs/background.md#hand-videos)."""
    return controls or (ControlSpec(type=ControlType.EDGE, weight=1.0),)


@dataclass(frozen=True)
class InputVideo:
    """An input video as stored and as probed."""

    ref: ObjectRef
    width: int
    height: int
    fps: float
    frames: int


def input_spec(
    video: InputVideo,
    *,
    card: ModelCard,
    template: CategoryTemplate,
    tier: str | None,
    controls: tuple[ControlSpec, ...],
    now: datetime,
    upsample: bool = False,
) -> PromptSpec:
    """The Transfer spec for one input video (version 1; the service numbers versions).

    ``tier`` None keeps the input's resolution (rounded to the card's multiple, see :func:`input_sized`);
    a tier maps the input onto that tier's size nearest its aspect ratio.
    """
    keep: Resolution | None = None
    largest = max(card.resolution_tiers, key=lambda t: max(r.width * r.height for r in t.sizes.values()))
    if tier is None and video.width * video.height > max(r.width * r.height for r in largest.sizes.values()):
        # Larger than anything the model generates (a 4K input): its largest tier, as if asked for,
        # rather than a size no GPU holds; the spec's metadata says so (``resolution_tier``).
        tier = largest.name
    if tier is None:
        aspect_key, size = "input", input_sized(video.width, video.height, card)
        keep = Resolution(width=video.width, height=video.height)
    else:
        aspect_key, size = nearest_resolution(video.width, video.height, tier_named(card, tier))
    ref = video.ref
    return PromptSpec(
        prompt_id=input_prompt_id(ref.bucket, ref.key),
        version=1,
        scenario=posixpath.basename(ref.key),
        variant=0,
        duration_s=video.frames / video.fps,
        fps=video.fps,
        target_frames=video.frames,
        seed=input_seed(ref.bucket, ref.key),
        resolution=size,
        model=card.id,
        mode=GenerationMode.TRANSFER,
        prompt=template.prompt,
        sampling=SamplingParams(
            guidance=card.default_guidance, steps=card.default_steps, negative_prompt=template.negative_prompt
        ),
        input=ref,
        input_resolution=keep,
        upsample=upsample,
        controls=default_controls(controls),
        tags=("input", template.name),
        metadata={
            "template": template.name,
            "input_width": video.width,
            "input_height": video.height,
            "input_aspect": round(video.width / video.height, 4),
            "aspect_key": aspect_key,
            "resolution_tier": tier if tier is not None else "input",
        },
        created_at=now,
    )


def with_params(spec: PromptSpec, params: AugmentParams, card: ModelCard) -> PromptSpec:
    """``spec`` with every field an augmentation's parameters (its sidecar) set: each one is recorded in the spec.

    prompt → ``prompt``; negative_prompt → ``sampling.negative_prompt``; seed → ``seed``; guidance →
    ``sampling.guidance`` (``ValueError`` naming ``guidance`` outside the card's range); name →
    ``metadata.name``. Controls and weights arrive as the job's controls (already in the spec).
    """
    update: dict[str, object] = {}
    sampling = spec.sampling
    metadata = dict(spec.metadata)
    if params.prompt:
        update["prompt"] = params.prompt
        metadata["prompt_from"] = "params"
    if params.negative_prompt:
        sampling = sampling.model_copy(update={"negative_prompt": params.negative_prompt})
    if params.seed is not None:
        update["seed"] = params.seed
        metadata["seed_from"] = "params"
    if params.guidance is not None:
        if not card.guidance_min <= params.guidance <= card.guidance_max:
            raise ValueError(
                f"guidance: {params.guidance:g} is outside {card.id}'s range "
                f"{card.guidance_min:g}–{card.guidance_max:g}"
            )
        sampling = sampling.model_copy(update={"guidance": params.guidance})
        metadata["guidance_from"] = "params"
    if params.name:
        metadata["name"] = params.name
    return spec.model_copy(update={**update, "sampling": sampling, "metadata": metadata})
