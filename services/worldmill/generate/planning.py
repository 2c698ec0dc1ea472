"""Plan a prompt spec against a model card: every number the GPU runner and QA need, or a refusal.

Pure: no I/O, no async. :func:`plan_generation` either returns a
:class:`~worldmill.contracts.generation.GenerationPlan` or raises :class:`PlanningError` naming the
spec field and the rule it breaks, so nothing the model cannot do ever reaches a GPU.

The numbers, from the model cards (``worldmill.contracts.cards``):

* **Native timeline.** ``FIXED`` cards (Cosmos-Predict2.5) always generate at ``card.native_fps``
  (16 fps); the native frame count ``N`` must cover the whole target timeline, i.e. the last target
  frame, at ``(T − 1) / F`` seconds, lies within the native one: ``N = ceil((T − 1) × native / F) + 1``.
  ``NATIVE_SET`` cards (Cosmos 3, which takes ``fps``) generate at the target rate when it is one of
  their native rates (24 fps → 24 fps, no conversion), else at the nearest native rate, converted as
  for ``FIXED``. ``ANY`` cards (the synthetic stand-in) generate directly at the target rate (``N = T``); ``INPUT``
  cards (Cosmos-Transfer2.5) keep the input's rate and length (``N = T``).
* **Chunks.** Every model call generates ``card.frames_per_chunk`` frames (93, the trained length).
  Chunk 0 is conditioned on the input (image2world: 1 frame, video2world: the last 5 pixel frames)
  or on nothing (text2world; transfer, whose first chunk always has 0 conditional frames because
  the input drives it through the control videos). Every later chunk is conditioned on the last
  ``overlap`` frames of the previous chunk and keeps only its new frames (``keep_from = overlap``),
  the last one only what is still needed, so the kept frames add up to ``N`` exactly. The count
  is ``1 + ceil(max(0, N − chunk) / (chunk − overlap))`` (Predict2.5's and Transfer2.5's own rule).
* **Seeds.** Chunk ``i`` uses ``(seed + i) mod 2**32``, as Predict2.5 does.
* **Regenerations.** A plan for a :class:`~worldmill.contracts.generation.Regeneration` (QA asks
  for one when a video fails for a reason a new video can fix) uses
  :func:`regeneration_seed` instead of the spec's seed, so a deterministic model does not make the
  very video that failed again; a ``seed`` :class:`Adaptation` says which seed, which
  regeneration of which asset and after which checks, and the plan carries the regeneration.
* **Frame rate.** A native rate other than the target one becomes an interpolation to the target
  rate, recorded both as the plan's ``fps_conversion`` and as an :class:`Adaptation`: a difference
  between the request and the delivery is never silent.
* **Backend.** Given the backend the plan is for (``worldmill.contracts.backends``), what that
  backend cannot run is refused here too: more controls than it mixes, overlaps and conditioning
  lengths it does not take. A backend whose pipeline chunks by itself (diffusers Transfer) gets a
  ``chunking="pipeline"`` plan: the same chunk boundaries, one call per video, and one seed for the
  whole video (the pipeline draws every chunk's noise from one generator seeded once).
* **QA requirements.** The spec's ``qa`` (the VLM critic's gate) is copied onto the plan as it is:
  ``video.ready`` carries the plan, so the qa service learns what the manifest asked without asking
  another service.
* **Joins.** A video of several chunks whose later chunks take no frames from the previous one
  (overlap 0) would be a hard cut at every join: refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Literal

from worldmill.contracts.backends import BackendCapabilities
from worldmill.contracts.cards import FpsPolicy, GenerationMode, ModelCard
from worldmill.contracts.generation import (
    Adaptation,
    ChunkPlan,
    ExpectedOutput,
    FpsConversion,
    GenerationPlan,
    Regeneration,
)
from worldmill.contracts.prompts import PromptSpec
from worldmill.runtime.errors import InvalidInputError

__all__ = [
    "SEED_MODULUS",
    "SEED_WINDOW",
    "PlanningError",
    "backend_problem",
    "chunk_count",
    "default_overlap",
    "native_frames",
    "native_rate",
    "plan_generation",
    "plan_on_backends",
    "regeneration_seed",
]

#: Seeds are 32-bit: chunk ``i`` gets ``(seed + i) % SEED_MODULUS``.
SEED_MODULUS = 2**32
#: The chunk seeds of a plan are ``seed … seed + chunks − 1``: a plan has at most this many chunks, and
#: regeneration seeds (:func:`regeneration_seed`) keep whole windows of this many seeds apart.
SEED_WINDOW = 2**10
#: Window offsets a regeneration seed can have from the spec's seed: 1 … _WINDOWS windows, never 0 or 2**32.
_WINDOWS = SEED_MODULUS // SEED_WINDOW - 1  # 4_194_303 = 3 · 23 · 89 · 683
#: The step between consecutive regenerations, in windows: ≈ _WINDOWS / φ (Fibonacci hashing: the most
#: evenly spread sequence), and coprime to _WINDOWS, so the first _WINDOWS regenerations all differ.
_STEP = 2_592_223
_MASK32 = 0xFFFFFFFF

Condition = Literal["none", "input", "previous_chunk"]

_NEEDS_INPUT = frozenset({GenerationMode.IMAGE2WORLD, GenerationMode.VIDEO2WORLD, GenerationMode.TRANSFER})


class PlanningError(InvalidInputError):
    """A spec the model card says the model cannot make; ``field`` names the spec field, ``rule`` the rule."""


def _fps_text(fps: float) -> str:
    """``24.0`` → ``"24"``, ``29.97`` → ``"29.97"``."""
    return f"{fps:g}"


def _mix32(x: int) -> int:
    """MurmurHash3's 32-bit finalizer (a bijection of 32-bit integers that spreads every input bit)."""
    x &= _MASK32
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & _MASK32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & _MASK32
    return x ^ (x >> 16)


def regeneration_seed(seed: int, regeneration: int) -> int:
    """The seed regeneration number ``regeneration`` of a spec whose seed is ``seed`` uses (0: ``seed`` itself).

    ``(seed + SEED_WINDOW × (1 + k)) mod 2**32`` with ``k = ((regeneration − 1) × _STEP + mix32(seed)) mod
    _WINDOWS``: pure and deterministic (a redelivered request plans the same seed), 32-bit, and spread
    over the whole seed space (the per-spec ``mix32(seed)`` start, then steps of ≈ 1/φ of it). Because
    the offset from ``seed`` is a whole number of windows between ``SEED_WINDOW`` and
    ``2**32 − SEED_WINDOW``, and distinct for the first ``_WINDOWS`` regenerations, the chunk seeds
    (``seed + i``, ``i < SEED_WINDOW``) of the original and of every regeneration never collide —
    unlike ``seed + 1``, which is the original's chunk 1.
    """
    if regeneration < 0:
        raise ValueError(f"regeneration must be ≥ 0, got {regeneration}")
    base = seed % SEED_MODULUS
    if regeneration == 0:
        return base
    windows = 1 + ((regeneration - 1) * _STEP + _mix32(base)) % _WINDOWS
    return (base + SEED_WINDOW * windows) % SEED_MODULUS


def _reseeded(spec: PromptSpec, regeneration: Regeneration, seed: int) -> Adaptation:
    """The ``seed`` adaptation of a regeneration: which seed instead of the spec's, and why."""
    of = f" of {regeneration.replaces}" if regeneration.replaces else ""
    after = f" after {', '.join(regeneration.failed_checks)}" if regeneration.failed_checks else ""
    return Adaptation(
        field="seed",
        requested=str(spec.seed),
        delivered=f"{seed} (regeneration_seed({spec.seed}, {regeneration.number}))",
        reason=f"reseeded for regeneration {regeneration.number}{of}{after}: "
        "the spec's own seed would make the same video again",
    )


def chunk_count(frames: int, chunk: int, overlap: int) -> int:
    """Model calls needed for ``frames`` when each makes ``chunk`` frames, ``overlap`` of them conditioning."""
    if not 0 <= overlap < chunk:
        raise ValueError(f"overlap {overlap} must be in [0, {chunk})")
    return 1 + math.ceil(max(0, frames - chunk) / (chunk - overlap))


def default_overlap(card: ModelCard, mode: GenerationMode) -> int:
    """Frames a later chunk takes from the previous one unless told otherwise.

    Transfer: its ``num_conditional_frames`` (1); Predict and synthetic: the video2world
    conditioning length (5 pixel frames).
    """
    if mode is GenerationMode.TRANSFER:
        return card.conditional_frames.get(GenerationMode.TRANSFER, 0)
    return card.conditional_frames.get(GenerationMode.VIDEO2WORLD, card.max_overlap_frames)


def native_rate(spec: PromptSpec, card: ModelCard) -> int | None:
    """The rate a ``FIXED`` or ``NATIVE_SET`` card generates ``spec`` at (None: the asked or the input's rate).

    ``NATIVE_SET`` (Cosmos 3): the asked rate when it is one of ``card.native_fps_choices``, else the
    nearest of them (a tie goes to the higher rate, which covers the timeline with more frames).
    """
    if card.fps_policy is FpsPolicy.FIXED:
        return card.native_fps
    if card.fps_policy is FpsPolicy.NATIVE_SET:
        if spec.fps.is_integer() and int(spec.fps) in card.native_fps_choices:
            return int(spec.fps)
        return min(card.native_fps_choices, key=lambda rate: (abs(rate - spec.fps), -rate))
    return None


def native_frames(spec: PromptSpec, card: ModelCard) -> tuple[float, int]:
    """``(native fps, native frame count)`` that cover the spec's whole target timeline."""
    native = native_rate(spec, card)
    if native is not None:
        if spec.fps == native:
            return float(native), spec.target_frames
        span = Fraction(spec.target_frames - 1) * native / Fraction(spec.fps)
        return float(native), math.ceil(span) + 1
    # ANY generates at the asked rate, INPUT at the input's rate: frame for frame.
    return spec.fps, spec.target_frames


def _check_request(spec: PromptSpec, card: ModelCard) -> None:
    """Refuse what the card says the model cannot do, first problem first."""
    if spec.model != card.id:
        raise PlanningError("model", f"spec asks for model {spec.model!r} but is planned against card {card.id!r}")
    if spec.mode not in card.modes:
        modes = ", ".join(sorted(m.value for m in card.modes))
        raise PlanningError("mode", f"{card.id} does not support mode {spec.mode.value} (supports: {modes})")
    if spec.mode in _NEEDS_INPUT and spec.input is None:
        raise PlanningError("input", f"mode {spec.mode.value} needs an input image or video")
    if spec.mode is GenerationMode.TRANSFER:
        if not spec.controls:
            raise PlanningError("controls", "mode transfer needs at least one control (edge, depth, seg, vis)")
        unknown = sorted({c.type.value for c in spec.controls} - {c.value for c in card.controls})
        if unknown:
            raise PlanningError("controls", f"{card.id} has no control {', '.join(unknown)}")
    elif spec.controls:
        raise PlanningError("controls", f"controls are only used by mode transfer, not {spec.mode.value}")
    if not card.supports_resolution(spec.resolution) and not _keeps_input_resolution(spec, card):
        raise PlanningError(
            "resolution",
            f"{card.id} cannot generate at {spec.resolution} "
            f"(multiples of {card.resolution_multiple}; see the card's resolution tiers)",
        )
    guidance = spec.sampling.guidance
    if not card.guidance_min <= guidance <= card.guidance_max:
        raise PlanningError(
            "sampling.guidance",
            f"guidance {guidance:g} is outside {card.id}'s range {card.guidance_min:g}–{card.guidance_max:g}",
        )
    if card.fps_policy in (FpsPolicy.FIXED, FpsPolicy.ANY, FpsPolicy.NATIVE_SET) and not (
        spec.fps.is_integer() and int(spec.fps) in card.deliverable_fps
    ):
        rates = ", ".join(str(f) for f in sorted(card.deliverable_fps))
        raise PlanningError("fps", f"{_fps_text(spec.fps)} fps is not deliverable by {card.id} (deliverable: {rates})")


def _keeps_input_resolution(spec: PromptSpec, card: ModelCard) -> bool:
    """A Transfer spec delivered at its input's own size (Transfer2.5's keep_input_resolution).

    Transfer keeps the input's size, so any size is deliverable as long as it is the input's own
    size rounded to the card's multiple (:func:`_resolution_adaptation` records the rounding).
    """
    if spec.mode is not GenerationMode.TRANSFER or spec.input_resolution is None:
        return False
    m = card.resolution_multiple

    def nearest(v: int) -> int:  # the prompt service's rounding (nearest multiple, at least one)
        return max(m, math.floor(v / m + 0.5) * m)

    res, wanted = spec.resolution, spec.input_resolution
    return card.fps_policy is FpsPolicy.INPUT and (res.width, res.height) == (
        nearest(wanted.width),
        nearest(wanted.height),
    )


def _resolution_adaptation(spec: PromptSpec, card: ModelCard) -> Adaptation | None:
    """The rounding of a keep-input-resolution spec's size to the card's multiple, when there was one."""
    wanted = spec.input_resolution
    if wanted is None or (wanted.width, wanted.height) == (spec.resolution.width, spec.resolution.height):
        return None
    return Adaptation(
        field="resolution",
        requested=f"{wanted} (the input's size)",
        delivered=str(spec.resolution),
        reason=f"{card.id} needs width and height in multiples of {card.resolution_multiple}: rounded to the nearest",
    )


def _fps_reason(card: ModelCard, native_fps: float) -> str:
    if card.fps_policy is FpsPolicy.NATIVE_SET:
        rates = ", ".join(str(f) for f in sorted(card.native_fps_choices))
        return f"{card.id} generates {rates} fps natively; the nearest is {_fps_text(native_fps)} fps"
    return f"{card.id} always generates {_fps_text(native_fps)} fps"


def _check_overlap(card: ModelCard, overlap: int) -> None:
    if overlap < 0:
        raise PlanningError("overlap_frames", f"overlap {overlap} must be ≥ 0")
    if overlap > card.max_overlap_frames:
        raise PlanningError(
            "overlap_frames", f"overlap {overlap} exceeds {card.id}'s max_overlap_frames {card.max_overlap_frames}"
        )
    if overlap >= card.frames_per_chunk:
        raise PlanningError(
            "overlap_frames", f"overlap {overlap} must be less than frames_per_chunk {card.frames_per_chunk}"
        )


def _frames_text(values: frozenset[int]) -> str:
    return " or ".join(str(v) for v in sorted(values))


def backend_problem(
    spec: PromptSpec, card: ModelCard, backend: BackendCapabilities, overlap: int
) -> PlanningError | None:
    """Why ``backend`` cannot run ``spec`` on ``card`` with this chunk overlap, or None when it can."""
    if not backend.runs_family(card.family):
        return PlanningError("model", f"the {backend.name} backend does not run {card.family} models ({card.id})")
    if spec.mode not in backend.modes:
        return PlanningError("mode", f"the {backend.name} backend does not run mode {spec.mode.value}")
    if len(spec.controls) > backend.max_controls:
        kinds = "+".join(sorted(c.type.value for c in spec.controls))
        return PlanningError(
            "controls",
            f"{len(spec.controls)} controls ({kinds}) in one generation, but the {backend.name} backend mixes at most "
            f"{backend.max_controls} ({backend.description})",
        )
    first, first_frames = _first_condition(spec, card)
    if first == "input" and backend.condition_frames is not None and first_frames not in backend.condition_frames:
        return PlanningError(
            "mode",
            f"{spec.mode.value} on {card.id} conditions on {first_frames} frames, but the {backend.name} backend "
            f"takes {_frames_text(backend.condition_frames)}",
        )
    total = native_frames(spec, card)[1]
    chunks = chunk_count(total, card.frames_per_chunk, overlap) if overlap < card.frames_per_chunk else 1
    if chunks > 1 and backend.overlaps is not None and overlap not in backend.overlaps:
        return PlanningError(
            "overlap_frames",
            f"overlap {overlap}: the {backend.name} backend conditions a later chunk on "
            f"{_frames_text(backend.overlaps)} frames of the previous one (one or two latent frames)",
        )
    return None


def _first_condition(spec: PromptSpec, card: ModelCard) -> tuple[Condition, int]:
    """Chunk 0's conditioning: the input image/video, or nothing (text2world, transfer)."""
    if spec.mode in (GenerationMode.IMAGE2WORLD, GenerationMode.VIDEO2WORLD):
        frames = card.conditional_frames.get(spec.mode, 0)
        return ("input", frames) if frames else ("none", 0)
    # text2world has nothing to condition on; transfer's first chunk has 0 conditional frames
    # (Transfer2.5: "first chunk always 0") — the input reaches it through the control videos.
    return "none", 0


def _chunks(
    spec: PromptSpec, card: ModelCard, total: int, overlap: int, *, seed: int, one_seed: bool = False
) -> tuple[ChunkPlan, ...]:
    chunk = card.frames_per_chunk
    condition, condition_frames = _first_condition(spec, card)
    chunks = [
        ChunkPlan(
            index=0,
            seed=seed % SEED_MODULUS,
            frames=chunk,
            condition=condition,
            condition_frames=condition_frames,
            keep_from=0,
            keep_frames=min(chunk, total),
        )
    ]
    remaining = total - chunks[0].keep_frames
    while remaining > 0:
        keep = min(chunk - overlap, remaining)
        chunks.append(
            ChunkPlan(
                index=len(chunks),
                seed=(seed + (0 if one_seed else len(chunks))) % SEED_MODULUS,
                frames=chunk,
                condition="previous_chunk" if overlap else "none",
                condition_frames=overlap,
                keep_from=overlap,
                keep_frames=keep,
            )
        )
        remaining -= keep
    return tuple(chunks)


def plan_generation(
    spec: PromptSpec,
    card: ModelCard,
    *,
    plan_id: str,
    overlap_frames: int | None = None,
    max_chunks: int = 64,
    backend: BackendCapabilities | None = None,
    regeneration: Regeneration | None = None,
) -> GenerationPlan:
    """Plan ``spec`` on the model described by ``card``, or raise :class:`PlanningError`.

    ``overlap_frames`` overrides the frames a later chunk takes from the previous one (default:
    :func:`default_overlap`); more than ``max_chunks`` model calls are refused. ``backend``: the
    runner backend the plan is for; what it cannot run is refused (see :func:`backend_problem`).
    ``regeneration``: the plan makes a failed video again, from :func:`regeneration_seed` (recorded).
    """
    if not 1 <= max_chunks <= SEED_WINDOW:
        raise ValueError(f"max_chunks must be between 1 and {SEED_WINDOW}, got {max_chunks}")
    _check_request(spec, card)
    overlap = default_overlap(card, spec.mode) if overlap_frames is None else overlap_frames
    if overlap_frames is None and backend is not None and backend.overlaps and overlap not in backend.overlaps:
        # the card's default is not one this backend conditions on: its longest that the card allows
        fits = [o for o in backend.overlaps if 0 < o <= card.max_overlap_frames]
        overlap = max(fits, default=overlap)
    _check_overlap(card, overlap)

    native_fps, total = native_frames(spec, card)
    chunk = card.frames_per_chunk
    needed = chunk_count(total, chunk, overlap)
    if needed > 1 and overlap == 0:
        raise PlanningError(
            "overlap_frames",
            f"overlap 0 over {needed} chunks: chunks after the first would not be conditioned on the previous one, "
            "so every join would be a hard cut; use an overlap of at least 1",
        )
    if backend is not None and (problem := backend_problem(spec, card, backend, overlap)) is not None:
        raise problem
    if needed > 1 and not card.autoregressive:
        raise PlanningError(
            "duration_s",
            f"{total} frames at {_fps_text(native_fps)} fps need {needed} chunks but {card.id} "
            f"makes one {chunk}-frame generation only",
        )
    if needed > max_chunks:
        raise PlanningError(
            "duration_s",
            f"{spec.duration_s:g} s needs {total} native frames at {_fps_text(native_fps)} fps = {needed} chunks "
            f"of {chunk} frames (overlap {overlap}), more than max_chunks {max_chunks}",
        )
    chunking = backend.chunking_for(spec.mode) if backend is not None else "runner"
    seed = spec.seed if regeneration is None else regeneration_seed(spec.seed, regeneration.number)
    chunks = _chunks(spec, card, total, overlap, seed=seed, one_seed=chunking == "pipeline")

    adaptations: list[Adaptation] = []
    if regeneration is not None:
        adaptations.append(_reseeded(spec, regeneration, seed))
    if (rounded := _resolution_adaptation(spec, card)) is not None:
        adaptations.append(rounded)
    if native_fps == spec.fps:
        conversion = FpsConversion(
            source_fps=native_fps,
            target_fps=spec.fps,
            method="none",
            source_frames=total,
            target_frames=spec.target_frames,
        )
    else:
        conversion = FpsConversion(
            source_fps=native_fps,
            target_fps=spec.fps,
            method="interpolate",
            source_frames=total,
            target_frames=spec.target_frames,
        )
        adaptations.append(
            Adaptation(
                field="fps",
                requested=_fps_text(spec.fps),
                delivered=f"{_fps_text(spec.fps)} fps from {_fps_text(native_fps)} fps by interpolation",
                reason=_fps_reason(card, native_fps),
            )
        )

    native_pixels = card.native_resolution.width * card.native_resolution.height
    pixels = spec.resolution.width * spec.resolution.height
    estimate = (
        len(chunks)
        * card.reference_seconds_per_chunk
        * (pixels / native_pixels)
        * (spec.sampling.steps / card.default_steps)
    )
    return GenerationPlan(
        plan_id=plan_id,
        prompt_id=spec.prompt_id,
        prompt_version=spec.version,
        model=card.id,
        mode=spec.mode,
        resolution=spec.resolution,
        native_fps=native_fps,
        native_frames=total,
        chunks=chunks,
        fps_conversion=conversion,
        expected=ExpectedOutput(
            frames=spec.target_frames,
            fps=spec.fps,
            duration_s=spec.target_frames / spec.fps,
            resolution=spec.resolution,
            codec="h264",
            container="mp4",
        ),
        sampling=spec.sampling,
        adaptations=tuple(adaptations),
        estimated_gpu_seconds=round(estimate, 1),
        backend=backend.name if backend is not None else None,
        chunking=chunking,
        qa=spec.qa,
        regeneration=regeneration,
    )


def _candidates(card: ModelCard, backends: Sequence[BackendCapabilities]) -> list[BackendCapabilities]:
    """Backends that may run ``card``: the real ones for its family, else a stand-in for it."""
    running = [b for b in backends if b.runs_family(card.family)]
    real = [b for b in running if not b.stand_in]
    return real if real and card.family != "synthetic" else running


def plan_on_backends(
    spec: PromptSpec,
    card: ModelCard,
    backends: Sequence[BackendCapabilities],
    *,
    plan_id: str,
    known: Sequence[BackendCapabilities] = (),
    overlap_frames: int | None = None,
    max_chunks: int = 64,
    regeneration: Regeneration | None = None,
) -> GenerationPlan:
    """Plan ``spec`` for the first configured backend that can run it, or raise the reason none can.

    ``backends`` are the configured ones, in order of preference. A stand-in backend (the synthetic
    CPU runner) is only chosen for a real model where no real backend for its family is configured.
    When none can run it, the refusal names each configured backend's reason and, from ``known``
    (every backend worldmill has), which unconfigured backend could.
    """
    candidates = _candidates(card, backends)
    if not candidates:
        names = ", ".join(b.name for b in backends) or "none"
        raise PlanningError(
            "model", f"no configured backend runs {card.family} models ({card.id}); configured backends: {names}"
        )
    refusals: list[PlanningError] = []
    for backend in candidates:
        try:
            return plan_generation(
                spec,
                card,
                plan_id=plan_id,
                overlap_frames=overlap_frames,
                max_chunks=max_chunks,
                backend=backend,
                regeneration=regeneration,
            )
        except PlanningError as exc:
            refusals.append(exc)
    first = refusals[0]
    if len({(e.field, e.rule) for e in refusals}) > 1:
        rule = "; ".join(f"{b.name}: {e.field}: {e.rule}" for b, e in zip(candidates, refusals, strict=True))
        first = PlanningError(first.field, rule)
    configured = {b.name for b in backends}
    could: list[str] = []
    for other in known:
        if other.name in configured or other.stand_in or not other.runs_family(card.family):
            continue
        try:
            plan_generation(spec, card, plan_id=plan_id, overlap_frames=overlap_frames, backend=other)
        except PlanningError:
            continue
        could.append(other.name)
    hint = (
        f" (the {', '.join(could)} backend can run it: configure it in WM_GENERATE_BACKENDS and run a runner with it)"
        if could
        else " (no worldmill backend can run this combination)"
    )
    raise PlanningError(first.field, first.rule + hint)
