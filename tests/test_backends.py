"""GPU-runner backends: the procedural stand-in, and Cosmos 2.5 through diffusers on tiny random pipelines (CPU)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worldmill.contracts.cards import ControlType
from worldmill.contracts.generation import ExecutionSignature
from worldmill.gpu_runner.backends import (
    BackendConfig,
    Canceled,
    CheckpointError,
    ChunkRequest,
    SyntheticBackend,
    create_backend,
    library_versions,
)
from worldmill.gpu_runner.backends.base import GuardrailBlocked, VideoRequest
from worldmill.gpu_runner.backends.shared import SharedComponents
from worldmill.gpu_runner.backends.synthetic import read_timecode
from worldmill.runtime.errors import InvalidInputError, PermanentError

PREDICT = "cosmos-predict2.5-2b"
TRANSFER = "cosmos-transfer2.5-2b"


def _request(**overrides: Any) -> ChunkRequest:
    base: dict[str, Any] = {
        "prompt": "a red car drives down a wet street",
        "negative_prompt": None,
        "seed": 1,
        "frames": 9,
        "width": 32,
        "height": 32,
        "guidance": 3.0,
        "steps": 2,
        "fps": 16.0,
    }
    return ChunkRequest(**(base | overrides))


def _ignore(step: int, steps: int) -> None:
    return None


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# -- synthetic ---------------------------------------------------------------------------------------


@pytest.fixture
def synthetic() -> SyntheticBackend:
    backend = SyntheticBackend()
    backend.setup()
    return backend


def test_synthetic_exact_shape(synthetic: SyntheticBackend) -> None:
    """The synthetic backend honours frames, width and height exactly, as uint8 RGB."""
    frames = synthetic.generate(_request(frames=7, width=38, height=22, fps=24.0), _ignore)
    assert frames.shape == (7, 22, 38, 3)
    assert frames.dtype == np.uint8


def test_synthetic_same_seed_same_frames(synthetic: SyntheticBackend) -> None:
    """The same seed gives identical frames, and the frames move over time."""
    a = synthetic.generate(_request(frames=12, width=64, height=48), _ignore)
    b = synthetic.generate(_request(frames=12, width=64, height=48), _ignore)
    assert np.array_equal(a, b)
    assert _mean_abs(a[0], a[-1]) > 1.0


def test_synthetic_seeds_differ(synthetic: SyntheticBackend) -> None:
    """Different seeds give visibly different videos."""
    a = synthetic.generate(_request(seed=1, width=64, height=48), _ignore)
    b = synthetic.generate(_request(seed=2, width=64, height=48), _ignore)
    assert _mean_abs(a, b) > 10.0


def test_synthetic_continuation_is_seamless(synthetic: SyntheticBackend) -> None:
    """A chunk conditioned on the previous chunk's last 5 frames repeats them and continues the same motion."""
    a = synthetic.generate(_request(seed=5, frames=20, width=64, height=48, fps=24.0), _ignore)
    b = synthetic.generate(_request(seed=6, frames=20, width=64, height=48, fps=24.0, condition=a[-5:]), _ignore)
    assert np.array_equal(b[:5], a[-5:])
    within = [_mean_abs(a[i], a[i + 1]) for i in range(len(a) - 1)]
    assert _mean_abs(a[-1], b[5]) <= max(within)
    longer = synthetic.generate(_request(seed=5, frames=21, width=64, height=48, fps=24.0), _ignore)
    assert np.array_equal(b[5], longer[20])
    assert read_timecode(b[-1]) == (5, 34)


def test_synthetic_fades_in_from_foreign_frames(synthetic: SyntheticBackend) -> None:
    """Conditioning frames without a timecode are kept, and the scene fades in from the last one."""
    grey = np.full((2, 48, 64, 3), 128, dtype=np.uint8)
    out = synthetic.generate(_request(frames=20, width=64, height=48, fps=16.0, condition=grey), _ignore)
    assert np.array_equal(out[:2], grey)
    steps = [_mean_abs(out[i], out[i + 1]) for i in range(1, 12)]
    assert _mean_abs(out[1], out[2]) < _mean_abs(out[1], out[-1])
    assert max(steps) < _mean_abs(out[1], out[-1]) / 2
    assert read_timecode(out[2]) is None
    assert read_timecode(out[-1]) == (1, 19)


def test_synthetic_calls_on_step_per_step(synthetic: SyntheticBackend) -> None:
    """on_step is called once per requested step, with (step done, steps)."""
    calls: list[tuple[int, int]] = []
    synthetic.generate(_request(steps=4, frames=3), lambda step, steps: calls.append((step, steps)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_synthetic_cancel_stops_at_once(synthetic: SyntheticBackend) -> None:
    """Raising Canceled from on_step stops the generation at that step."""
    calls: list[int] = []

    def on_step(step: int, steps: int) -> None:
        calls.append(step)
        if step == 2:
            raise Canceled

    with pytest.raises(Canceled):
        synthetic.generate(_request(steps=10, frames=10), on_step)
    assert calls == [1, 2]


def test_synthetic_simulated_load_and_compute() -> None:
    """load_seconds is slept in setup() and seconds_per_frame × frames in generate()."""
    backend = SyntheticBackend(BackendConfig(load_seconds=0.2, seconds_per_frame=0.02))
    start = time.perf_counter()
    backend.setup()
    assert time.perf_counter() - start >= 0.2
    start = time.perf_counter()
    backend.generate(_request(frames=10, steps=3), _ignore)
    assert time.perf_counter() - start >= 0.2


def test_synthetic_describe_and_refusals(synthetic: SyntheticBackend) -> None:
    """The stand-in says it is procedural, and refuses a condition that leaves nothing to generate."""
    info = synthetic.describe()
    assert info["backend"] == "synthetic" and "not a world model" in info["checkpoint"]
    assert "numpy" in library_versions(info)
    with pytest.raises(InvalidInputError, match="condition"):
        synthetic.generate(_request(frames=3, condition=np.zeros((3, 32, 32, 3), np.uint8)), _ignore)
    with pytest.raises(RuntimeError, match="setup"):
        SyntheticBackend().generate(_request(), _ignore)


def test_chunk_request_validates() -> None:
    """A chunk request with impossible numbers or malformed frames is refused with the field named."""
    with pytest.raises(InvalidInputError, match="frames"):
        _request(frames=0)
    with pytest.raises(InvalidInputError, match="condition"):
        _request(condition=np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(InvalidInputError, match="control_weights"):
        _request(control_weights={"edge": 0.5})


def test_create_backend_by_family() -> None:
    """The registry gives the stand-in for the synthetic card and names an unknown model."""
    backend = create_backend(ExecutionSignature(model="synthetic", checkpoint="synthetic"), BackendConfig())
    assert isinstance(backend, SyntheticBackend)
    with pytest.raises(InvalidInputError, match="no-such-model"):
        create_backend(ExecutionSignature(model="no-such-model", checkpoint="x"), BackendConfig())


def test_importing_backends_does_not_import_torch() -> None:
    """`import worldmill.gpu_runner.backends` loads neither torch nor diffusers."""
    code = (
        "import sys, worldmill.gpu_runner.backends as b; "
        "b.create_backend; print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- diffusers on tiny random pipelines ---------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint root with a tiny Predict and a tiny Transfer pipeline, built once per session."""
    from tests.helpers.tiny_cosmos import build_tiny_predict, build_tiny_transfer  # noqa: PLC0415 - imports diffusers

    root = tmp_path_factory.mktemp("checkpoints")
    build_tiny_predict(root / "tiny-predict")
    build_tiny_transfer(root / "tiny-transfer")
    return root


def _diffusers(
    root: Path, model: str, checkpoint: str, *, dtype: str = "float32", controls: tuple[str, ...] = (), **config: Any
) -> Any:
    settings: dict[str, Any] = {"checkpoint_root": root, "safety_checker": False} | config
    signature = ExecutionSignature(
        model=model,
        checkpoint=checkpoint,
        dtype=dtype,  # type: ignore[arg-type]
        controls=tuple(ControlType(c) for c in controls),
    )
    return create_backend(signature, BackendConfig(**settings))


@pytest.fixture(scope="module")
def predict(tiny_root: Path) -> Iterator[Any]:
    backend = _diffusers(tiny_root, PREDICT, "tiny-predict")
    backend.setup()
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def transfer(tiny_root: Path) -> Iterator[Any]:
    backend = _diffusers(tiny_root, TRANSFER, "tiny-transfer", controls=("edge",))
    backend.setup()
    yield backend
    backend.close()


def test_predict_loads_from_folder(predict: Any, tiny_root: Path) -> None:
    """The Predict folder loads through from_pretrained with the checker off, and provenance says so."""
    info = predict.describe()
    assert info["backend"] == "diffusers" and info["pipeline"] == "Cosmos2_5_PredictBasePipeline"
    assert info["checkpoint"] == str(tiny_root / "tiny-predict")
    assert re.fullmatch(r"[0-9a-f]{64}", info["checkpoint_sha256"])
    assert info["dtype"] == "float32" and info["device"] == "cpu"
    assert info["safety_checker"] == "off (pass-through)"
    assert library_versions(info)["diffusers"] == "0.42.1"
    assert 10_000 < predict.memory_bytes() < 10_000_000


def test_safety_checker_on_needs_cosmos_guardrail(tiny_root: Path) -> None:
    """With the safety checker on and cosmos_guardrail missing, setup() says to install it or turn it off."""
    if importlib.util.find_spec("cosmos_guardrail") is not None:
        pytest.skip("cosmos_guardrail is installed here")
    backend = _diffusers(tiny_root, PREDICT, "tiny-predict", safety_checker=True)
    with pytest.raises(CheckpointError, match=r"cosmos_guardrail package is not installed.*guardrail off"):
        backend.setup()


def test_text2world_shape(predict: Any) -> None:
    """Text2World makes 9 frames at 32x32 as uint8 RGB."""
    frames = predict.generate(_request(), _ignore)
    assert frames.shape == (9, 32, 32, 3)
    assert frames.dtype == np.uint8


def test_predict_seeds(predict: Any) -> None:
    """The same seed gives identical output, a different seed a different one."""
    a = predict.generate(_request(seed=3), _ignore)
    b = predict.generate(_request(seed=3), _ignore)
    c = predict.generate(_request(seed=4), _ignore)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_video2world_and_image2world(predict: Any) -> None:
    """Conditioning on 5 frames (Video2World) or 1 frame works; another count is refused by name."""
    first = predict.generate(_request(frames=13), _ignore)
    video = predict.generate(_request(seed=2, condition=first[-5:]), _ignore)
    image = predict.generate(_request(seed=2, condition=first[-1:]), _ignore)
    assert video.shape == image.shape == (9, 32, 32, 3)
    with pytest.raises(InvalidInputError, match=r"1 frame .* or 5 frames"):
        predict.generate(_request(condition=first[-3:]), _ignore)


def test_predict_on_step_once_per_step(predict: Any) -> None:
    """on_step is called after every denoising step with (step done, steps)."""
    calls: list[tuple[int, int]] = []
    predict.generate(_request(steps=3), lambda step, steps: calls.append((step, steps)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_predict_cancel_stops_immediately(predict: Any) -> None:
    """Canceled raised from on_step propagates out of the pipeline at that step."""
    calls: list[int] = []

    def on_step(step: int, steps: int) -> None:
        calls.append(step)
        raise Canceled

    with pytest.raises(Canceled):
        predict.generate(_request(steps=6), on_step)
    assert calls == [1]


def test_missing_checkpoint_folder(tmp_path: Path) -> None:
    """A checkpoint neither in the root nor in the HF cache is a CheckpointError naming the path."""
    backend = _diffusers(tmp_path, PREDICT, "nowhere")
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / "nowhere"))):
        backend.setup()


def test_folder_without_model_index(tmp_path: Path) -> None:
    """A folder without model_index.json is a CheckpointError naming the path and the missing file."""
    (tmp_path / "broken" / "transformer").mkdir(parents=True)
    backend = _diffusers(tmp_path, PREDICT, "broken")
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / "broken")) + ".*model_index.json"):
        backend.setup()


def test_wrong_pipeline_class_refused(tiny_root: Path) -> None:
    """A Transfer folder loaded as a Predict model is refused, naming both classes."""
    backend = _diffusers(tiny_root, PREDICT, "tiny-transfer")
    with pytest.raises(CheckpointError, match=r"Cosmos2_5_TransferPipeline.*Cosmos2_5_PredictBasePipeline"):
        backend.setup()


def test_transfer_with_edge_control(transfer: Any) -> None:
    """Transfer with one edge control video makes frames of the requested shape, one step callback per step."""
    control = np.zeros((9, 32, 32, 3), dtype=np.uint8)
    control[:, 8:24, 15:17] = 255
    calls: list[tuple[int, int]] = []
    frames = transfer.generate(
        _request(controls={"edge": control}, control_weights={"edge": 0.8}),
        lambda step, steps: calls.append((step, steps)),
    )
    assert frames.shape == (9, 32, 32, 3)
    assert frames.dtype == np.uint8
    assert calls == [(1, 2), (2, 2)]


def test_transfer_refuses_two_controls_and_conditioning(transfer: Any) -> None:
    """Two control videos, or conditioning frames, are refused with the diffusers pipeline's limits stated."""
    control = np.zeros((9, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(PermanentError, match="takes one control video"):
        transfer.generate(_request(controls={"edge": control, "depth": control}), _ignore)
    with pytest.raises(PermanentError, match="one call per video"):
        transfer.generate(_request(controls={"edge": control}, condition=control[:1]), _ignore)
    with pytest.raises(InvalidInputError, match="holds the edge controlnet"):
        transfer.generate(_request(controls={"depth": control}), _ignore)


def _video_request(frames: int, chunk: int, overlap: int, **extra: Any) -> VideoRequest:
    control = np.zeros((frames, 32, 32, 3), dtype=np.uint8)
    control[:, 8:24, 15:17] = 255
    chunks = 1 + max(0, -(-(frames - chunk) // (chunk - overlap)))
    fields: dict[str, Any] = dict(
        prompt="a red car on a wet street",
        negative_prompt=None,
        seed=4,
        frames=frames,
        chunk_frames=chunk,
        overlap=overlap,
        chunks=chunks,
        width=32,
        height=32,
        guidance=3.0,
        steps=2,
        fps=16.0,
        controls={"edge": control},
        control_weights={"edge": 0.7},
    )
    return VideoRequest(**(fields | extra))


def test_transfer_generate_video_chunks_in_the_pipeline(transfer: Any) -> None:
    """21 frames in chunks of 9 with overlap 1: one call, 3 chunks x 2 steps reported in order, 21 frames out."""
    seen: list[tuple[int, int, int, int]] = []
    request = _video_request(21, 9, 1)
    frames = transfer.generate_video(request, lambda *a: seen.append(a))
    assert request.chunks == 3
    assert frames.shape == (21, 32, 32, 3) and frames.dtype == np.uint8
    assert seen == [(c, 3, s, 2) for c in range(3) for s in (1, 2)]
    again = transfer.generate_video(request, lambda *_: None)
    assert np.array_equal(frames, again)  # one generator seeded once: deterministic
    other = transfer.generate_video(_video_request(21, 9, 1, seed=5), lambda *_: None)
    assert not np.array_equal(frames, other)


def test_transfer_generate_video_cancels_between_steps(transfer: Any) -> None:
    """Canceled from the progress callback in chunk 1 stops the call at once."""
    seen: list[int] = []

    def progress(chunk: int, _chunks: int, _step: int, _steps: int) -> None:
        seen.append(chunk)
        if chunk == 1:
            raise Canceled("stop")

    with pytest.raises(Canceled):
        transfer.generate_video(_video_request(21, 9, 1), progress)
    assert seen == [0, 0, 1]


def test_transfer_generate_video_refuses_a_plan_it_would_chunk_differently(transfer: Any) -> None:
    """Told 2 chunks where the pipeline makes 3 (21 frames, 9 per chunk, overlap 1): refused, not delivered."""
    with pytest.raises(PermanentError, match="chunking differs from the plan"):
        transfer.generate_video(_video_request(21, 9, 1, chunks=2), lambda *_: None)


def test_predict_has_no_whole_video_call(predict: Any) -> None:
    """Predict chunks are chained by the runner: generate_video is refused with the reason."""
    with pytest.raises(PermanentError, match="runner chains Predict chunks"):
        predict.generate_video(_video_request(21, 9, 1, controls={}, control_weights={}), lambda *_: None)


def test_controlnet_per_control_type_shares_the_pipeline(tiny_root: Path) -> None:
    """Edge and depth backends of one runner: different controlnets, one text encoder/transformer/VAE (counted once)."""
    shared = SharedComponents()
    edge = _diffusers(tiny_root, TRANSFER, "tiny-transfer", controls=("edge",), shared=shared)
    depth = _diffusers(tiny_root, TRANSFER, "tiny-transfer", controls=("depth",), shared=shared)
    edge.setup()
    depth.setup()
    try:
        assert edge._pipe.controlnet is not depth._pipe.controlnet
        for name in ("transformer", "text_encoder", "vae"):
            assert getattr(edge._pipe, name) is getattr(depth._pipe, name), name
        e_cn = sum(p.sum().item() for p in edge._pipe.controlnet.parameters())
        d_cn = sum(p.sum().item() for p in depth._pipe.controlnet.parameters())
        assert e_cn != d_cn  # the depth job got the depth weights, not whatever the folder held
        assert edge.describe()["controlnet"].endswith("controlnets/edge")
        assert depth.describe()["control"] == "depth"
        union = {**edge.memory_parts(), **depth.memory_parts()}
        assert sum(union.values()) < edge.memory_bytes() + depth.memory_bytes()
        cn_keys = [k for k in union if k.startswith("controlnet:")]
        assert len(cn_keys) == 2
        assert all(shared.references(k) == 2 for k in union if not k.startswith("controlnet:"))
    finally:
        edge.close()
    assert depth.generate(_request(controls={"depth": np.zeros((9, 32, 32, 3), dtype=np.uint8)}), _ignore).shape == (
        9,
        32,
        32,
        3,
    )
    depth.close()
    assert shared.loaded() == {}  # the last holder gone, nothing stays loaded


def test_missing_controlnet_type_names_the_folder(tiny_root: Path, tmp_path: Path) -> None:
    """A local Transfer checkpoint without controlnets/seg: CheckpointError naming the folder and the pull command."""
    import shutil  # noqa: PLC0415

    shutil.copytree(tiny_root / "tiny-transfer", tmp_path / "t")
    shutil.rmtree(tmp_path / "t" / "controlnets" / "seg")
    backend = _diffusers(tmp_path, TRANSFER, "t", controls=("seg",))
    with pytest.raises(CheckpointError, match=r"no seg controlnet at .*controlnets/seg.*worldmill models pull"):
        backend.setup()


class _BlockingChecker:
    """A test guardrail: blocks prompts with 'forbidden', and videos whose first pixel is pure white."""

    def __init__(self) -> None:
        self.text_calls = 0
        self.video_calls = 0

    def check_text_safety(self, prompt: str) -> bool:
        self.text_calls += 1
        return "forbidden" not in prompt

    def check_video_safety(self, frames: np.ndarray) -> np.ndarray | None:
        self.video_calls += 1
        return None if int(frames[0, 0, 0, 0]) == 255 else frames


def test_guardrail_blocks_are_permanent_and_named(tiny_root: Path) -> None:
    """A blocked prompt or video raises GuardrailBlocked (permanent) naming the guardrail and what it blocked."""
    checker = _BlockingChecker()
    backend = _diffusers(tiny_root, PREDICT, "tiny-predict", safety_checker=True, guardrail_loader=lambda: checker)
    backend.setup()
    try:
        assert backend.describe()["guardrail"] == "_BlockingChecker"
        with pytest.raises(
            GuardrailBlocked, match=r"_BlockingChecker guardrail: the prompt 'a forbidden scene'"
        ) as err:
            backend.screen_prompt("a forbidden scene")
        assert isinstance(err.value, PermanentError)
        backend.screen_prompt("a calm street")
        white = np.full((3, 8, 8, 3), 255, dtype=np.uint8)
        with pytest.raises(GuardrailBlocked, match="the generated video"):
            backend.screen_video(white)
        grey = np.full((3, 8, 8, 3), 128, dtype=np.uint8)
        assert np.array_equal(backend.screen_video(grey), grey)
        assert (checker.text_calls, checker.video_calls) == (2, 2)
    finally:
        backend.close()


def test_predict_prompt_is_encoded_once_for_its_chunks(predict: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three chunks of one prompt encode it once; another prompt encodes again."""
    calls: list[str] = []
    original = predict._pipe.encode_prompt

    def counting(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("prompt") is not None:  # the pipeline also calls it, with the embeddings given: no encoding
            calls.append(kwargs["prompt"])
        return original(*args, **kwargs)

    monkeypatch.setattr(predict._pipe, "encode_prompt", counting)
    predict._embeds = None
    first = predict.generate(_request(seed=1), _ignore)
    for seed in (2, 3):
        predict.generate(_request(seed=seed), _ignore)
    predict.generate(_request(seed=1, prompt="another prompt entirely"), _ignore)
    assert calls == ["a red car drives down a wet street", "another prompt entirely"]
    predict._embeds = None
    assert np.array_equal(predict.generate(_request(seed=1), _ignore), first)  # cached embeds = fresh ones


def test_close_then_setup_again(tiny_root: Path) -> None:
    """close() drops the pipeline (generate refuses), and setup() loads it again."""
    backend = _diffusers(tiny_root, PREDICT, "tiny-predict")
    backend.setup()
    loaded = backend.memory_bytes()
    backend.close()
    with pytest.raises(RuntimeError, match="setup"):
        backend.generate(_request(), _ignore)
    backend.setup()
    assert backend.memory_bytes() == loaded
    assert backend.generate(_request(), _ignore).shape == (9, 32, 32, 3)


@pytest.mark.gpu
def test_gpu_smoke_bf16(tiny_root: Path) -> None:
    """On CUDA in bfloat16, the tiny Predict pipeline makes 9 frames at 32x32."""
    import torch  # noqa: PLC0415 - keeps torch out of collection

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    backend = _diffusers(tiny_root, PREDICT, "tiny-predict", dtype="bfloat16", device="cuda")
    backend.setup()
    try:
        frames = backend.generate(_request(), _ignore)
    finally:
        backend.close()
    assert frames.shape == (9, 32, 32, 3)
    assert frames.dtype == np.uint8
