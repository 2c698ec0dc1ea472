"""Model cards: what each model can really do, as data the planners check requests against.

Facts from the Cosmos repositories and the diffusers pipelines (see the project's reference notes):
Predict2.5 makes 93-frame generations (pixel lengths follow 4k+1), always writes 16 fps, and only
reaches other lengths by chaining chunks; Transfer2.5 keeps the input's length and fps, runs
93-frame chunks with 0–2 conditional frames, and loads a multi-control checkpoint when a batch
mixes control types. Models are capabilities, not strings.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from worldmill.contracts.base import Contract, Resolution


class GenerationMode(StrEnum):
    """How a generation is conditioned."""

    TEXT2WORLD = "text2world"
    IMAGE2WORLD = "image2world"
    VIDEO2WORLD = "video2world"
    TRANSFER = "transfer"


class ControlType(StrEnum):
    """Cosmos-Transfer control modalities."""

    EDGE = "edge"
    DEPTH = "depth"
    SEG = "seg"
    VIS = "vis"


class Preset(StrEnum):
    """Transfer's named strengths for edge thresholds and blur."""

    VERY_LOW = "very_low"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    VERY_HIGH = "very_high"


class FpsPolicy(StrEnum):
    """Where a model's output frame rate comes from."""

    FIXED = "fixed"  # always native_fps (Predict2.5 writes 16 fps)
    INPUT = "input"  # the input video's fps (Transfer2.5)
    ANY = "any"  # whatever is asked (the synthetic stand-in)
    NATIVE_SET = "native_set"  # one of native_fps_choices, generated natively (Cosmos 3 takes ``fps``)


class FrameRule(Contract):
    """Valid pixel frame counts are ``step * k + offset`` (4k+1 for the Wan tokenizer)."""

    step: int = Field(ge=1)
    offset: int = Field(ge=0)

    def is_valid(self, frames: int) -> bool:
        """True when ``frames`` follows the rule."""
        return frames >= self.offset and (frames - self.offset) % self.step == 0

    def round_up(self, frames: int) -> int:
        """The smallest valid count ≥ ``frames``."""
        if frames <= self.offset:
            return self.offset if self.offset > 0 else self.step
        k = -(-(frames - self.offset) // self.step)
        return self.step * k + self.offset


class ResolutionTier(Contract):
    """One named tier ("720", "480", …) with its size per aspect ratio key ("16,9", …)."""

    name: str
    sizes: dict[str, Resolution]


class ModelCard(Contract):
    """Capabilities of one model. Planners reject what a card says the model cannot do."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]+$")
    display_name: str
    family: str = Field(description="predict | transfer | cosmos3 | synthetic")
    hub_id: str | None = Field(default=None, description="Hugging Face repo id of the weights.")
    diffusers_pipeline: str | None = Field(default=None, description="diffusers pipeline class name.")
    modes: frozenset[GenerationMode]
    native_fps: int = Field(gt=0)
    fps_policy: FpsPolicy
    native_fps_choices: frozenset[int] = Field(
        default_factory=frozenset,
        description="FpsPolicy native_set: the rates the model generates natively (native_fps is its default).",
    )
    frames_per_chunk: int = Field(gt=0, description="Pixel frames one generation produces.")
    frame_rule: FrameRule
    conditional_frames: dict[GenerationMode, int] = Field(
        description="Pixel frames that condition a generation, per mode."
    )
    max_overlap_frames: int = Field(ge=0, description="Upper bound of chunk overlap (conditioning) frames.")
    autoregressive: bool = Field(description="Longer videos are made by chaining chunks.")
    native_resolution: Resolution
    resolution_tiers: tuple[ResolutionTier, ...]
    resolution_multiple: int = Field(gt=0, description="Width and height must be multiples of this.")
    any_resolution: bool = Field(default=False, description="Any multiple of resolution_multiple is fine.")
    guidance_min: float = 0.0
    guidance_max: float = 7.0
    default_guidance: float
    default_steps: int = Field(gt=0)
    deliverable_fps: frozenset[int] = Field(
        description="Frame rates a delivered video can have (native, or reached by a recorded conversion)."
    )
    max_prompt_tokens: int = Field(gt=0, description="Text-encoder sequence length; longer prompts are cut.")
    controls: frozenset[ControlType] = frozenset()
    edge_presets: dict[Preset, tuple[int, int]] = Field(default_factory=dict)
    blur_presets: dict[Preset, tuple[int, int]] = Field(
        default_factory=dict, description="(pre-blur downsize factor, down-up resize factor)"
    )
    requires_safety_checker: bool = True
    reference_seconds_per_chunk: float = Field(
        gt=0, description="GPU seconds for one chunk at native resolution on the reference GPU."
    )
    reference_gpu: str
    approx_vram_gb: float | None = None

    @model_validator(mode="after")
    def _chunk_follows_rule(self) -> ModelCard:
        if not self.frame_rule.is_valid(self.frames_per_chunk):
            raise ValueError(f"frames_per_chunk {self.frames_per_chunk} breaks the card's frame rule")
        if self.fps_policy is FpsPolicy.NATIVE_SET and self.native_fps not in self.native_fps_choices:
            raise ValueError(f"fps_policy native_set needs native_fps {self.native_fps} among native_fps_choices")
        if self.fps_policy is not FpsPolicy.NATIVE_SET and self.native_fps_choices:
            raise ValueError("native_fps_choices only go with fps_policy native_set")
        return self

    def resolutions(self) -> list[Resolution]:
        """Every supported size, all tiers, native first."""
        seen = [self.native_resolution]
        for tier in self.resolution_tiers:
            seen.extend(r for r in tier.sizes.values() if r not in seen)
        return seen

    def supports_resolution(self, res: Resolution) -> bool:
        """True when the model can generate at ``res``."""
        if res.width % self.resolution_multiple or res.height % self.resolution_multiple:
            return False
        return self.any_resolution or res in self.resolutions()


def _tier(name: str, sizes: dict[str, tuple[int, int]]) -> ResolutionTier:
    return ResolutionTier(name=name, sizes={k: Resolution(width=w, height=h) for k, (w, h) in sizes.items()})


# Width × height per aspect key, from the Cosmos 2.5 VIDEO_RES_SIZE_INFO tables.
_TIERS_25 = (
    _tier(
        "720",
        {"16,9": (1280, 704), "9,16": (704, 1280), "4,3": (960, 704), "3,4": (704, 960), "1,1": (960, 960)},
    ),
    _tier(
        "480",
        {"16,9": (768, 432), "9,16": (432, 768), "4,3": (640, 480), "3,4": (480, 640), "1,1": (480, 480)},
    ),
    _tier(
        "256",
        {"16,9": (320, 192), "9,16": (192, 320), "4,3": (320, 256), "3,4": (256, 320), "1,1": (256, 256)},
    ),
)

_EDGE_PRESETS = {
    Preset.VERY_LOW: (20, 50),
    Preset.LOW: (50, 100),
    Preset.MEDIUM: (100, 200),
    Preset.HIGH: (200, 300),
    Preset.VERY_HIGH: (300, 400),
}
_BLUR_PRESETS = {
    Preset.VERY_LOW: (1, 4),
    Preset.LOW: (4, 4),
    Preset.MEDIUM: (2, 10),
    Preset.HIGH: (1, 16),
    Preset.VERY_HIGH: (4, 16),
}
_RULE_4K1 = FrameRule(step=4, offset=1)
#: Frame rates worldmill delivers: native output, or resampled/interpolated to these (recorded in
#: the plan). Transfer keeps the input's rate, which must be one of these too.
STANDARD_FPS = frozenset({8, 10, 12, 15, 16, 20, 24, 25, 30, 48, 50, 60})
_PREDICT_COND = {
    GenerationMode.TEXT2WORLD: 0,
    GenerationMode.IMAGE2WORLD: 1,
    GenerationMode.VIDEO2WORLD: 5,
}


def _predict(size: str, seconds: float, vram: float | None) -> ModelCard:
    return ModelCard(
        id=f"cosmos-predict2.5-{size.lower()}",
        display_name=f"Cosmos-Predict2.5-{size}",
        family="predict",
        hub_id=f"nvidia/Cosmos-Predict2.5-{size}",
        diffusers_pipeline="Cosmos2_5_PredictBasePipeline",
        modes=frozenset(_PREDICT_COND),
        native_fps=16,
        fps_policy=FpsPolicy.FIXED,
        frames_per_chunk=93,
        frame_rule=_RULE_4K1,
        conditional_frames=_PREDICT_COND,
        max_overlap_frames=5,
        autoregressive=True,
        native_resolution=Resolution(width=1280, height=704),
        resolution_tiers=_TIERS_25,
        resolution_multiple=16,
        default_guidance=7.0,
        default_steps=35,
        deliverable_fps=STANDARD_FPS,
        max_prompt_tokens=512,
        reference_seconds_per_chunk=seconds,
        reference_gpu="H100 SXM",
        approx_vram_gb=vram,
    )


# Cosmos 3 (``Cosmos3OmniPipeline``, diffusers 0.42.1, read in the installed source; NVIDIA's
# "Model Reference" page docs.nvidia.com/cosmos/latest/cosmos3/model_reference.html):
# * fps: the pipeline takes ``fps`` (default 24; it feeds the mRoPE temporal modulation and the
#   prompt's duration sentence); NVIDIA lists 10, 16, 24 and 30 FPS as supported.
# * frames: ``num_frames`` defaults to 189 (≈ 7.9 s at 24 fps); NVIDIA lists 5 to 300 frames. The VAE
#   compresses time 4× (``latent_t = (num_frames − 1) // 4 + 1``), so lengths follow 4k+1. The
#   brief's "≤ 200 frames at 720p" is not on the pages read (unverified); 189-frame chunks stay under it.
# * sizes: the pipeline's own resolution bins (``_ACTION_RESOLUTION_BINS``, height × width per
#   aspect; used by it for action runs) for the 720/480/256 tiers NVIDIA lists; height and width
#   must be multiples of the VAE's ``scale_factor_spatial`` (16 for the real Wan 2.2 VAE; unverified
#   in a checkpoint config, all bins are multiples of 16). Default size 1280×720.
# * sampling: ``guidance_scale`` 6.0 and 35 ``num_inference_steps`` (pipeline defaults). The
#   guidance range (0–7 as for the other cards) is worldmill's, unverified for Cosmos 3.
# * conditioning: ``image`` anchors latent frame 0 (1 pixel frame); ``video`` keeps the latent frames
#   ``condition_frame_indexes_vision`` (default (0, 1) = 5 pixel frames) clean, taken from the first
#   or last frames of the clip (``condition_video_keep``): chunks chain on the last 5 frames.
# * the tokenizer does not truncate prompts; 512 is worldmill's common prompt budget.
# * hub: ``nvidia/Cosmos3-Nano`` (diffusers' own docstring in hooks/sea_cache.py and the model's hub
#   page). Cosmos3-Super (``nvidia/Cosmos3-Super``) and Cosmos3-Edge have no card yet: no published
#   single-GPU time for Super was found (it does not fit one 80 GB H100), and Edge's diffusers
#   weights were not verified.
# * reference: NVIDIA's published time, Nano 720p / 189 frames / 35 steps: 214.3 s on one H200.
_TIERS_3 = (
    _tier(
        "720",
        {"16,9": (1280, 720), "9,16": (720, 1280), "4,3": (1104, 832), "3,4": (832, 1104), "1,1": (960, 960)},
    ),
    _tier(
        "480",
        {"16,9": (832, 480), "9,16": (480, 832), "4,3": (736, 544), "3,4": (544, 736), "1,1": (640, 640)},
    ),
    _TIERS_25[2],  # the 256 tier is the same sizes as Cosmos 2.5's
)
#: Frame rates Cosmos 3 generates natively (NVIDIA's supported frame rates).
COSMOS3_FPS = frozenset({10, 16, 24, 30})


def _cosmos3(size: str, seconds: float, gpu: str) -> ModelCard:
    return ModelCard(
        id=f"cosmos3-{size.lower()}",
        display_name=f"Cosmos3-{size}",
        family="cosmos3",
        hub_id=f"nvidia/Cosmos3-{size}",
        diffusers_pipeline="Cosmos3OmniPipeline",
        modes=frozenset(_PREDICT_COND),
        native_fps=24,
        fps_policy=FpsPolicy.NATIVE_SET,
        native_fps_choices=COSMOS3_FPS,
        frames_per_chunk=189,
        frame_rule=_RULE_4K1,
        conditional_frames=_PREDICT_COND,  # image: 1 frame; video: 2 latent frames = 5 pixel frames
        max_overlap_frames=5,
        autoregressive=True,
        native_resolution=Resolution(width=1280, height=720),
        resolution_tiers=_TIERS_3,
        resolution_multiple=16,
        default_guidance=6.0,
        default_steps=35,
        deliverable_fps=STANDARD_FPS,
        max_prompt_tokens=512,
        reference_seconds_per_chunk=seconds,
        reference_gpu=gpu,
    )


def builtin_cards() -> dict[str, ModelCard]:
    """The model cards worldmill knows, by id."""
    transfer = ModelCard(
        id="cosmos-transfer2.5-2b",
        display_name="Cosmos-Transfer2.5-2B",
        family="transfer",
        hub_id="nvidia/Cosmos-Transfer2.5-2B",
        diffusers_pipeline="Cosmos2_5_TransferPipeline",
        modes=frozenset({GenerationMode.TRANSFER}),
        native_fps=16,
        fps_policy=FpsPolicy.INPUT,
        frames_per_chunk=93,
        frame_rule=_RULE_4K1,
        conditional_frames={GenerationMode.TRANSFER: 1},
        max_overlap_frames=2,
        autoregressive=True,
        native_resolution=Resolution(width=1280, height=704),
        resolution_tiers=_TIERS_25[:2],
        resolution_multiple=16,
        default_guidance=3.0,
        default_steps=35,
        deliverable_fps=STANDARD_FPS,
        max_prompt_tokens=512,
        controls=frozenset(ControlType),
        edge_presets=_EDGE_PRESETS,
        blur_presets=_BLUR_PRESETS,
        reference_seconds_per_chunk=264.0,
        reference_gpu="H100 PCIe",
        approx_vram_gb=65.4,
    )
    synthetic = ModelCard(
        id="synthetic",
        display_name="Synthetic procedural video (CPU stand-in, not a world model)",
        family="synthetic",
        modes=frozenset({GenerationMode.TEXT2WORLD, GenerationMode.IMAGE2WORLD, GenerationMode.VIDEO2WORLD}),
        native_fps=24,
        fps_policy=FpsPolicy.ANY,
        frames_per_chunk=93,
        frame_rule=FrameRule(step=1, offset=0),
        conditional_frames={
            GenerationMode.TEXT2WORLD: 0,
            GenerationMode.IMAGE2WORLD: 1,
            GenerationMode.VIDEO2WORLD: 5,
        },
        max_overlap_frames=5,
        autoregressive=True,
        native_resolution=Resolution(width=320, height=192),
        resolution_tiers=_TIERS_25,
        resolution_multiple=2,
        any_resolution=True,
        default_guidance=7.0,
        default_steps=35,
        deliverable_fps=STANDARD_FPS,
        max_prompt_tokens=512,
        requires_safety_checker=False,
        reference_seconds_per_chunk=0.5,
        reference_gpu="CPU",
    )
    cards = [
        _predict("2B", 229.0, 32.5),
        _predict("14B", 857.0, 56.4),
        transfer,
        _cosmos3("Nano", 214.3, "H200"),
        synthetic,
    ]
    return {c.id: c for c in cards}
