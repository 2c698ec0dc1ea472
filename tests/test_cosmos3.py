"""Cosmos 3: the card's native frame rates at planning, the Cosmos3OmniPipeline backend, and a 2-chunk video.

Backend tests load a tiny random ``Cosmos3OmniPipeline`` through the real ``from_pretrained`` path
(``tests/helpers/tiny_cosmos.py``); its pictures are meaningless, so tests assert shapes, dtypes,
determinism and plumbing. The end-to-end test runs a job through the runner on the real servers
and checks the delivered video with QA's own format checks, as ``test_runner_cosmos.py`` does.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.test_runner_cosmos import _delivered, _job, _spec
from worldmill.contracts.backends import builtin_backends
from worldmill.contracts.base import Resolution
from worldmill.contracts.cards import FpsPolicy, GenerationMode, ModelCard, builtin_cards
from worldmill.contracts.checkpoints import hub_downloads, pipeline_revision
from worldmill.contracts.generation import ExecutionSignature
from worldmill.contracts.prompts import PromptSpec, SamplingParams
from worldmill.generate.planning import PlanningError, native_frames, plan_on_backends
from worldmill.gpu_runner.backends import BackendConfig, create_backend
from worldmill.gpu_runner.backends.base import Canceled, CheckpointError, ChunkRequest, GuardrailBlocked, VideoRequest
from worldmill.runtime.bus import Bus
from worldmill.runtime.errors import InvalidInputError, PermanentError
from worldmill.runtime.store import ObjectStore

NANO = "cosmos3-nano"
COSMOS3 = builtin_backends()["cosmos3"]
HD = Resolution(width=1280, height=720)
SIZE = 32


def _card() -> ModelCard:
    """The real card, allowing the tiny pipeline's 32x32 (nothing else changed)."""
    return builtin_cards()[NANO].model_copy(update={"any_resolution": True})


def _hd(frames: int, fps: int, **extra: Any) -> PromptSpec:
    return _spec(NANO, frames=frames, fps=fps, mode=GenerationMode.TEXT2WORLD, resolution=HD, **extra)


# -- (a) planning ------------------------------------------------------------------------------


def test_the_nano_card_says_what_the_pipeline_and_nvidia_say() -> None:
    card = builtin_cards()[NANO]
    assert (card.family, card.hub_id, card.diffusers_pipeline) == (
        "cosmos3",
        "nvidia/Cosmos3-Nano",
        "Cosmos3OmniPipeline",
    )
    assert card.fps_policy is FpsPolicy.NATIVE_SET and card.native_fps_choices == {10, 16, 24, 30}
    assert (card.native_fps, card.frames_per_chunk, card.default_guidance, card.default_steps) == (24, 189, 6.0, 35)
    assert card.frame_rule.is_valid(189) and not card.frame_rule.is_valid(190)
    assert (card.reference_seconds_per_chunk, card.reference_gpu) == (214.3, "H200")
    assert card.supports_resolution(HD) and card.supports_resolution(Resolution(width=832, height=480))
    assert pipeline_revision(card) == "main"
    pipeline = hub_downloads(card)[0]
    assert (pipeline.role, pipeline.repo, pipeline.revision) == ("pipeline", "nvidia/Cosmos3-Nano", "main")


@pytest.mark.parametrize("fps", [24, 16, 10, 30])
def test_a_native_rate_is_generated_as_asked_without_conversion(fps: int) -> None:
    spec = _hd(5 * fps, fps)
    plan = plan_on_backends(spec, builtin_cards()[NANO], [COSMOS3], plan_id="p")
    assert plan.backend == "cosmos3" and plan.chunking == "runner"
    assert (plan.native_fps, plan.native_frames) == (fps, 5 * fps)
    assert plan.fps_conversion.method == "none" and plan.adaptations == ()
    assert plan.expected.fps == fps and plan.expected.frames == 5 * fps


def test_another_rate_is_converted_from_the_nearest_native_one_and_recorded() -> None:
    spec = _hd(125, 25)  # 5 s at 25 fps: nearest native rate 24
    plan = plan_on_backends(spec, builtin_cards()[NANO], [COSMOS3], plan_id="p")
    assert plan.native_fps == 24 and plan.native_frames == 121  # ceil(124 * 24 / 25) + 1
    assert plan.fps_conversion.method == "interpolate" and plan.fps_conversion.source_fps == 24
    [adaptation] = plan.adaptations
    assert adaptation.field == "fps" and "nearest is 24 fps" in adaptation.reason
    assert native_frames(_hd(100, 20), builtin_cards()[NANO])[0] == 24  # a tie goes to the higher rate
    assert native_frames(_hd(60, 12), builtin_cards()[NANO])[0] == 10


def test_undeliverable_rates_and_limits_are_refused_with_field_and_rule() -> None:
    card = builtin_cards()[NANO]
    cases: list[tuple[PromptSpec, dict[str, Any], str, str]] = [
        (_hd(35, 7), {}, "fps", "7 fps is not deliverable by cosmos3-nano"),
        (
            _spec(
                NANO, frames=120, fps=24, mode=GenerationMode.TEXT2WORLD, resolution=Resolution(width=1920, height=1088)
            ),
            {},
            "resolution",
            "cannot generate at",
        ),
        (_hd(120, 24, sampling=SamplingParams(guidance=9.0, steps=35)), {}, "sampling.guidance", "outside"),
        (_hd(24 * 60, 24), {"max_chunks": 4}, "duration_s", "more than max_chunks 4"),
        (_hd(400, 24), {"overlap_frames": 3}, "overlap_frames", "conditions a later chunk on"),
        (_hd(400, 24), {"overlap_frames": 9}, "overlap_frames", "exceeds cosmos3-nano's max_overlap_frames 5"),
    ]
    for spec, options, field, rule in cases:
        with pytest.raises(PlanningError) as err:
            plan_on_backends(spec, card, [COSMOS3], plan_id="p", **options)
        assert err.value.field == field, (field, err.value.rule)
        assert rule in err.value.rule, err.value.rule


def test_a_long_video_chains_189_frame_chunks_with_a_seed_each() -> None:
    plan = plan_on_backends(_hd(400, 24, seed=7), builtin_cards()[NANO], [COSMOS3], plan_id="p")
    assert [c.frames for c in plan.chunks] == [189, 189, 189]
    assert [c.seed for c in plan.chunks] == [7, 8, 9]
    assert [c.condition_frames for c in plan.chunks[1:]] == [5, 5]
    assert sum(c.keep_frames for c in plan.chunks) == 400 == plan.native_frames


# -- (b) the backend on a tiny pipeline ----------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers.tiny_cosmos import build_tiny_cosmos3  # noqa: PLC0415 - imports diffusers

    root = tmp_path_factory.mktemp("cosmos3")
    build_tiny_cosmos3(root / NANO)
    return root


def _signature(**extra: Any) -> ExecutionSignature:
    return ExecutionSignature(model=NANO, checkpoint=NANO, dtype="float32", **extra)


@pytest.fixture(scope="module")
def backend(checkpoints: Path) -> Any:
    made = create_backend(
        _signature(backend="cosmos3"), BackendConfig(checkpoint_root=checkpoints, safety_checker=False)
    )
    made.setup()
    yield made
    made.close()


def _request(**extra: Any) -> ChunkRequest:
    fields: dict[str, Any] = dict(
        prompt="a forklift turns in a warehouse",
        negative_prompt="blurry",
        seed=3,
        frames=9,
        width=SIZE,
        height=SIZE,
        guidance=3.0,
        steps=2,
        fps=24.0,
    )
    return ChunkRequest(**(fields | extra))


def _quiet(_step: int, _steps: int) -> None:
    return None


def test_the_registry_gives_cosmos3_models_the_cosmos3_backend(checkpoints: Path) -> None:
    config = BackendConfig(checkpoint_root=checkpoints, safety_checker=False)
    made = create_backend(_signature(), config)  # no backend named: by the family
    assert type(made).__name__ == "Cosmos3Backend" and made.capabilities == COSMOS3
    with pytest.raises(InvalidInputError):
        create_backend(_signature(backend="diffusers"), config)


def test_text2video_frames_and_provenance(backend: Any) -> None:
    frames = backend.generate(_request(), _quiet)
    assert frames.shape == (9, SIZE, SIZE, 3) and frames.dtype == np.uint8
    described = backend.describe()
    assert described["backend"] == "cosmos3" and described["pipeline"] == "Cosmos3OmniPipeline"
    assert described["checkpoint"].endswith(NANO) and len(described["checkpoint_sha256"]) == 64
    assert described["guardrail"] == "off (pass-through)" and described["attention_backend"] == "native"
    assert backend.memory_bytes() > 0 and any(k.startswith("transformer:") for k in backend.memory_parts())


def test_seeds_are_deterministic_and_fps_reaches_the_pipeline(backend: Any) -> None:
    first = backend.generate(_request(seed=5), _quiet)
    assert np.array_equal(first, backend.generate(_request(seed=5), _quiet))
    assert not np.array_equal(first, backend.generate(_request(seed=6), _quiet))
    assert not np.array_equal(first, backend.generate(_request(seed=5, fps=10.0), _quiet))


def test_a_continuation_is_conditioned_on_the_previous_frames(backend: Any) -> None:
    previous = backend.generate(_request(seed=1), _quiet)
    free = backend.generate(_request(seed=2), _quiet)
    for n in (5, 1):
        continued = backend.generate(_request(seed=2, condition=previous[-n:]), _quiet)
        assert continued.shape == (9, SIZE, SIZE, 3)
        assert not np.array_equal(continued, free), n
    with pytest.raises(InvalidInputError) as err:
        backend.generate(_request(condition=previous[-3:]), _quiet)
    assert err.value.field == "condition" and "4k+1" in err.value.rule


def test_on_step_per_step_and_cancel_stops_at_once(backend: Any) -> None:
    steps: list[tuple[int, int]] = []
    backend.generate(_request(steps=3), lambda s, n: steps.append((s, n)))
    assert steps == [(1, 3), (2, 3), (3, 3)]
    seen: list[int] = []

    def cancel(step: int, _steps: int) -> None:
        seen.append(step)
        raise Canceled

    with pytest.raises(Canceled):
        backend.generate(_request(steps=4), cancel)
    assert seen == [1]


def test_generate_video_is_refused_the_runner_chains(backend: Any) -> None:
    request = VideoRequest(
        prompt="p", negative_prompt=None, seed=0, frames=9, chunk_frames=9, overlap=0, chunks=1,
        width=SIZE, height=SIZE, guidance=3.0, steps=2, fps=24.0,
    )  # fmt: skip
    with pytest.raises(PermanentError, match="runner chains"):
        backend.generate_video(request, lambda *_: None)


class _Guardrail:
    """A test guardrail: blocks prompts that mention a weapon, and every video with a white first pixel."""

    def check_text_safety(self, prompt: str) -> bool:
        return "weapon" not in prompt

    def check_video_safety(self, frames: np.ndarray) -> np.ndarray | None:
        return None if frames[0, 0, 0, 0] == 255 else frames


def test_the_guardrail_blocks_for_good(checkpoints: Path) -> None:
    config = BackendConfig(checkpoint_root=checkpoints, safety_checker=True, guardrail_loader=_Guardrail)
    guarded = create_backend(_signature(), config)
    guarded.setup()
    try:
        assert guarded.describe()["guardrail"] == "_Guardrail"
        guarded.screen_prompt("a quiet street")
        with pytest.raises(GuardrailBlocked) as err:
            guarded.screen_prompt("a man waves a weapon")
        assert isinstance(err.value, PermanentError) and err.value.guardrail == "_Guardrail"
        video = np.zeros((9, SIZE, SIZE, 3), np.uint8)
        assert np.array_equal(guarded.screen_video(video), video)
        video[0, 0, 0, 0] = 255
        with pytest.raises(GuardrailBlocked, match="the generated video"):
            guarded.screen_video(video)
    finally:
        guarded.close()


def test_a_missing_checkpoint_names_repo_revision_and_pull_command(tmp_path: Path) -> None:
    missing = create_backend(_signature(), BackendConfig(checkpoint_root=tmp_path, safety_checker=False))
    with pytest.raises(CheckpointError) as err:
        missing.setup()
    assert "nvidia/Cosmos3-Nano (revision main)" in str(err.value)
    assert "worldmill models pull cosmos3-nano" in str(err.value)


# -- (c) done when: a 2-chunk 24 fps video through the runner ------------------------------------


async def test_a_two_chunk_24fps_video_is_made_natively_and_passes_qa(
    bus: Bus, store: ObjectStore, checkpoints: Path, tmp_path: Path
) -> None:
    """200 frames at 24 fps: two runner-chained 189-frame chunks at 24 fps, no conversion, QA format passes."""
    spec = _spec(NANO, frames=200, fps=24, mode=GenerationMode.TEXT2WORLD)
    plan = plan_on_backends(spec, _card(), [COSMOS3], plan_id=f"plan-{uuid.uuid4().hex[:8]}")
    assert (plan.backend, plan.chunking, len(plan.chunks), plan.native_frames) == ("cosmos3", "runner", 2, 200)
    assert plan.fps_conversion.method == "none" and plan.native_fps == 24
    prov = await _delivered(bus, store, checkpoints, _job(spec, plan), tmp_path)
    assert prov["backend"] == "cosmos3" and prov["extra"]["model_calls"] == 2
    assert prov["seeds"] == [11, 12] and prov["extra"]["chunking"] == "runner"
    assert prov["plan"]["fps_conversion"]["method"] == "none"
    assert prov["extra"]["pipeline"] == "Cosmos3OmniPipeline"
