"""Cosmos-Predict2.5 and Cosmos-Transfer2.5 through their diffusers pipelines.

``setup()`` resolves the checkpoint folder (``checkpoint_root / signature.checkpoint`` when it
exists, else the Hugging Face cache, never the network), hashes its files once, and loads it with
``DiffusionPipeline.from_pretrained``, which picks the pipeline class from ``model_index.json``.
``generate()`` runs one chunk:

* Predict: Text2World without ``condition``; otherwise Video2World on the conditioning frames,
  which must be 1 frame (one latent frame) or 5 frames (two latent frames: the only lengths the
  pipeline conditions on); as with Cosmos, they come back as the chunk's first frames.
* Transfer: the single control video (the diffusers pipeline has one controlnet) drives the whole
  chunk, generated as one pipeline chunk of ``request.frames`` frames. The diffusers Transfer
  pipeline cannot be conditioned on earlier frames, so a ``condition`` is refused.

The safety checker is the real Cosmos guardrail (``cosmos_guardrail``) unless the runner turns it
off, in which case a recorded pass-through object is used: diffusers itself refuses to run
without a checker object, as the model licence expects.

Importing this module imports torch and diffusers; the registry imports it only when a Cosmos
model is asked for.
"""

from __future__ import annotations

import gc
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import CosmosControlNetModel, DiffusionPipeline
from huggingface_hub import constants, snapshot_download
from PIL import Image

from worldmill.contracts.cards import ControlType, ModelCard
from worldmill.contracts.generation import ExecutionSignature
from worldmill.gpu_runner.backends.base import (
    VERSION_PREFIX,
    BackendConfig,
    CheckpointError,
    ChunkRequest,
    Frames,
    StepCallback,
)
from worldmill.gpu_runner.backends.torchvision_stand_in import apply_torchvision_stand_in
from worldmill.runtime.errors import InvalidInputError, PermanentError

__all__ = ["DiffusersBackend", "PassThroughSafetyChecker", "checkpoint_sha256"]

_DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
}
#: Branches of the Hugging Face repos that hold the diffusers-format weights.
_HUB_REVISIONS = {"predict": "diffusers/base/post-trained", "transfer": "diffusers/general"}
#: Transfer's controlnets live on their own branches; ``vis`` is the blur control.
_CONTROLNET_REVISIONS = {
    ControlType.EDGE: "diffusers/controlnet/general/edge",
    ControlType.DEPTH: "diffusers/controlnet/general/depth",
    ControlType.SEG: "diffusers/controlnet/general/seg",
    ControlType.VIS: "diffusers/controlnet/general/blur",
}
#: Video2World conditioning lengths in pixel frames -> latent frames (Wan VAE: 4(n-1)+1).
_PREDICT_CONDITION_FRAMES = {1: 1, 5: 2}
_LIBRARIES = ("torch", "diffusers", "transformers", "accelerate", "numpy")
# diffusers' loaders are untyped; typed as Any here so strict mypy accepts the calls.
_PIPELINE: Any = DiffusionPipeline
_CONTROLNET: Any = CosmosControlNetModel


class PassThroughSafetyChecker:
    """Stands in for the Cosmos guardrail when the runner turns it off: every prompt and frame passes."""

    def to(self, *_args: Any, **_kwargs: Any) -> PassThroughSafetyChecker:
        """Nothing to move."""
        return self

    def check_text_safety(self, _prompt: str) -> bool:
        """Every prompt passes."""
        return True

    def check_video_safety(self, frames: Frames) -> Frames:
        """Frames pass unchanged."""
        return frames


_hash_cache: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}
_hash_lock = threading.Lock()


def checkpoint_sha256(*folders: Path) -> str:
    """SHA-256 over every file of the folders (relative path and content, sorted; symlinks followed).

    Covers the weights and the configs that give them meaning. Cached per process by path, size and
    modification time, so a reload does not re-read gigabytes.
    """
    files: list[tuple[Path, str]] = []
    for n, folder in enumerate(folders):
        files.extend(
            (p, f"{n}/{p.relative_to(folder).as_posix()}")
            for p in folder.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
    files.sort(key=lambda item: item[1])
    stats = tuple((name, (st := path.stat()).st_size, st.st_mtime_ns) for path, name in files)
    key = ("|".join(str(f.resolve()) for f in folders), stats)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    digest = hashlib.sha256()
    for path, name in files:
        digest.update(name.encode() + b"\0")
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        digest.update(b"\0")
    value = digest.hexdigest()
    with _hash_lock:
        _hash_cache[key] = value
    return value


def _check_pipeline_folder(path: Path) -> None:
    """A diffusers pipeline folder: ``model_index.json`` and a sub-folder per listed component."""
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {path} does not exist")
    index = path / "model_index.json"
    if not index.is_file():
        raise CheckpointError(f"checkpoint folder {path} is incomplete: model_index.json is missing")
    try:
        entries = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint folder {path}: model_index.json is unreadable ({exc})") from exc
    missing = sorted(
        name
        for name, value in entries.items()
        if not name.startswith("_") and isinstance(value, list) and value[:1] != [None] and not (path / name).is_dir()
    )
    if missing:
        raise CheckpointError(f"checkpoint folder {path} is incomplete: missing component folder(s) {missing}")


def _to_uint8(frames: Any) -> Frames:
    array = np.asarray(frames, dtype=np.float32)
    out: Frames = np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out


def _pil_frames(frames: Frames) -> list[Any]:
    return [Image.fromarray(np.ascontiguousarray(frame)) for frame in frames]


def _versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for lib in _LIBRARIES:
        try:
            out[f"{VERSION_PREFIX}{lib}"] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


class DiffusersBackend:
    """A Cosmos 2.5 model (Predict or Transfer, by the card's family) run by its diffusers pipeline."""

    name = "diffusers"

    def __init__(self, signature: ExecutionSignature, card: ModelCard, config: BackendConfig) -> None:
        if card.family not in _HUB_REVISIONS:
            raise InvalidInputError("model", f"{card.id} (family {card.family!r}) has no diffusers pipeline")
        self.signature = signature
        self.card = card
        self.config = config
        self._pipe: Any = None
        self._path: Path | None = None
        self._controlnet_path: Path | None = None
        self._sha256: str | None = None
        self._checker_kind = "cosmos_guardrail" if config.safety_checker else "off (pass-through)"
        self._torchvision = "real"

    # -- lifecycle -------------------------------------------------------------------------------

    def setup(self) -> None:
        """Resolve, hash and load the checkpoint; raises :class:`CheckpointError` naming what is wrong."""
        if self._pipe is not None:
            return
        path, controlnet_path = self._resolve()
        checker = self._safety_checker()
        if apply_torchvision_stand_in():
            self._torchvision = "stand-in"
        dtype = _DTYPES[self.signature.dtype]
        extra: dict[str, Any] = {}
        try:
            if controlnet_path is not None:
                extra["controlnet"] = _CONTROLNET.from_pretrained(
                    str(controlnet_path), dtype=dtype, local_files_only=True
                )
            pipe = _PIPELINE.from_pretrained(
                str(path), dtype=dtype, safety_checker=checker, local_files_only=True, **extra
            )
        except Exception as exc:  # whatever from_pretrained trips on, the folder cannot be used as it is
            raise CheckpointError(
                f"cannot load the diffusers pipeline from {path}: {type(exc).__name__}: {exc}"
            ) from exc
        loaded = type(pipe).__name__
        if self.card.diffusers_pipeline and loaded != self.card.diffusers_pipeline:
            raise CheckpointError(
                f"checkpoint folder {path} holds a {loaded}, "
                f"but model {self.card.id} needs a {self.card.diffusers_pipeline}"
            )
        self._sha256 = checkpoint_sha256(path, *([controlnet_path] if controlnet_path else []))
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe.to(self.config.device)
        self._path, self._controlnet_path = path, controlnet_path

    def close(self) -> None:
        """Drop the pipeline and return the memory (CUDA cache included)."""
        if self._pipe is None:
            return
        self._pipe = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def memory_bytes(self) -> int:
        """Parameter and buffer bytes once loaded; before, the weight files' size or the card's estimate."""
        if self._pipe is not None:
            total = 0
            for component in self._pipe.components.values():
                if isinstance(component, torch.nn.Module):
                    tensors = [*component.parameters(), *component.buffers()]
                    total += sum(t.numel() * t.element_size() for t in tensors)
            return total
        local = self._local_folder()
        if local is not None and local.is_dir():
            return sum(p.stat().st_size for p in local.rglob("*.safetensors") if p.is_file())
        return int((self.card.approx_vram_gb or 0.0) * 1e9)

    def describe(self) -> dict[str, str]:
        """Provenance of the loaded pipeline (the checkpoint hash is known after ``setup()``)."""
        out = {
            "backend": self.name,
            "model": self.card.id,
            "pipeline": self.card.diffusers_pipeline or "",
            "checkpoint": str(self._path) if self._path else self.signature.checkpoint,
            "dtype": self.signature.dtype,
            "device": self.config.device,
            "safety_checker": self._checker_kind,
            "torchvision": self._torchvision,
        }
        if self._controlnet_path is not None:
            out["controlnet"] = str(self._controlnet_path)
        if self._sha256 is not None:
            out["checkpoint_sha256"] = self._sha256
        return out | _versions()

    # -- generation ------------------------------------------------------------------------------

    def generate(self, request: ChunkRequest, on_step: StepCallback) -> Frames:
        """Run one chunk; ``on_step(step, steps)`` after each denoising step, where ``Canceled`` stops it."""
        pipe = self._pipe
        if pipe is None:
            raise RuntimeError("DiffusersBackend.generate() called before setup()")

        def step_end(_pipe: Any, i: int, _t: Any, _tensors: dict[str, Any]) -> dict[str, Any]:
            on_step(i + 1, request.steps)  # may raise Canceled: it propagates out of the pipeline
            return {}

        kwargs: dict[str, Any] = {
            "prompt": request.prompt,
            "height": request.height,
            "width": request.width,
            "num_frames": request.frames,
            "num_inference_steps": request.steps,
            "guidance_scale": request.guidance,
            "generator": torch.Generator(device=self.config.device).manual_seed(request.seed),
            "output_type": "np",
            "callback_on_step_end": step_end,
            "max_sequence_length": self.card.max_prompt_tokens,
        }
        if request.negative_prompt is not None:
            kwargs["negative_prompt"] = request.negative_prompt
        if self.card.family == "transfer":
            kwargs |= self._transfer_arguments(request)
        else:
            kwargs |= self._predict_arguments(request)
        try:
            with torch.inference_mode():
                output = pipe(**kwargs)
        except ValueError as exc:  # input checks and the guardrail's refusals never succeed on retry
            raise PermanentError(f"{type(pipe).__name__} refused the request: {exc}") from exc
        frames = _to_uint8(output.frames[0])
        expected = (request.frames, request.height, request.width, 3)
        if frames.shape != expected:
            raise PermanentError(f"{type(pipe).__name__} returned frames shaped {frames.shape}, expected {expected}")
        return frames

    def _predict_arguments(self, request: ChunkRequest) -> dict[str, Any]:
        if request.controls:
            raise InvalidInputError("controls", f"{self.card.id} takes no control videos")
        if request.condition is None:
            return {}
        n = len(request.condition)
        if n not in _PREDICT_CONDITION_FRAMES:
            raise InvalidInputError(
                "condition",
                f"{self.card.diffusers_pipeline} conditions on 1 frame (one latent frame) or 5 frames (two latent "
                f"frames), got {n}",
            )
        return {
            "video": _pil_frames(request.condition),
            "num_latent_conditional_frames": _PREDICT_CONDITION_FRAMES[n],
        }

    def _transfer_arguments(self, request: ChunkRequest) -> dict[str, Any]:
        if request.condition is not None:
            raise PermanentError(
                "the diffusers Transfer pipeline cannot be conditioned on earlier frames (its first chunk always "
                "starts from nothing): generate a Transfer video as one call, or use the Cosmos Transfer2.5 runner"
            )
        if len(request.controls) != 1:
            raise PermanentError(
                "the diffusers Transfer pipeline takes one control video (it has a single controlnet), "
                f"got {len(request.controls)}: {sorted(request.controls)}"
            )
        ((kind, video),) = request.controls.items()
        if self.signature.controls and kind not in {c.value for c in self.signature.controls}:
            raise InvalidInputError("controls", f"control {kind!r} is not in the loaded set {self.signature.controls}")
        if len(video) < request.frames:  # as the pipeline pads its own chunks: repeat the last control frame
            video = np.concatenate([video, np.repeat(video[-1:], request.frames - len(video), axis=0)])
        return {
            "controls": _pil_frames(video[: request.frames]),
            "controls_conditioning_scale": float(request.control_weights.get(kind, 1.0)),
            "num_frames_per_chunk": request.frames,
        }

    # -- checkpoint resolution -------------------------------------------------------------------

    def _local_folder(self) -> Path | None:
        root = self.config.checkpoint_root
        return None if root is None else root / self.signature.checkpoint

    def _resolve(self) -> tuple[Path, Path | None]:
        local = self._local_folder()
        if local is not None and local.exists():
            _check_pipeline_folder(local)
            return local, None
        where = f"no folder {local}" if local is not None else "no checkpoint_root configured"
        if self.card.hub_id is None:
            raise CheckpointError(f"checkpoint {self.signature.checkpoint!r} of model {self.card.id}: {where}")
        path = self._from_hub_cache(_HUB_REVISIONS[self.card.family], where)
        _check_pipeline_folder(path)
        controlnet = None
        if self.card.family == "transfer" and len(self.signature.controls) == 1:
            controlnet = self._from_hub_cache(_CONTROLNET_REVISIONS[self.signature.controls[0]], where)
        return path, controlnet

    def _from_hub_cache(self, revision: str, where: str) -> Path:
        try:
            folder = snapshot_download(self.card.hub_id or "", revision=revision, local_files_only=True)
        except Exception as exc:  # LocalEntryNotFoundError, RevisionNotFoundError, …: all mean "not cached"
            raise CheckpointError(
                f"checkpoint {self.signature.checkpoint!r} of model {self.card.id}: {where}, and "
                f"{self.card.hub_id} (revision {revision}) is not in the Hugging Face cache "
                f"{os.environ.get('HF_HUB_CACHE', constants.HF_HUB_CACHE)}: download it first, or put the "
                f"pipeline folder at <checkpoint_root>/{self.signature.checkpoint}"
            ) from exc
        return Path(folder)

    def _safety_checker(self) -> Any:
        if not self.config.safety_checker:
            return PassThroughSafetyChecker()
        if importlib.util.find_spec("cosmos_guardrail") is None:
            raise CheckpointError(
                "the Cosmos safety checker is on but the cosmos_guardrail package is not installed: install it "
                "(pip install cosmos_guardrail; its models come from nvidia/Cosmos-Guardrail1), or turn the "
                "safety checker off in the runner's backend config (recorded in provenance)"
            )
        try:
            return importlib.import_module("cosmos_guardrail").CosmosSafetyChecker()
        except Exception as exc:  # its models are downloaded on construction
            raise CheckpointError(f"the Cosmos safety checker (cosmos_guardrail) could not be loaded: {exc}") from exc
