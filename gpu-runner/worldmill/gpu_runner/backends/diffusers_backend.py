"""Cosmos-Predict2.5 and Cosmos-Transfer2.5 through their diffusers pipelines.

Checkpoints (never the network): ``checkpoint_root / signature.checkpoint`` when it exists, else
the card's Hugging Face repo and revision in the local cache (``worldmill models pull`` fills it).
A missing one names the repo, the revision and the pull command.

* **Transfer controlnets per control type.** The diffusers Transfer pipeline has one controlnet;
  each control type has its own weights (hub branches ``diffusers/controlnet/general/<type>``).
  The control of the job's signature picks them: from the hub cache, or locally from
  ``<checkpoint_root>/<checkpoint>/controlnets/<type>/`` (a ``CosmosControlNetModel`` folder beside
  the pipeline's own components). A folder's own ``controlnet/`` is never used for a control type
  it may not be, and a missing type is a :class:`CheckpointError` naming the folder it expected.
* **Shared components.** Text encoder, transformer, VAE, controlnets and the guardrail come from
  the runner's :class:`~worldmill.gpu_runner.backends.shared.SharedComponents`, keyed by content:
  an edge → depth switch loads a controlnet, not a pipeline, and the cache counts shared parts once.
* **Transfer is one call per video** (:meth:`DiffusersBackend.generate_video`): the pipeline
  chunks the full-length control video itself, conditioning each chunk on the last frames of the
  previous one, with the plan's chunk length and overlap; progress is per chunk and step (from
  the step callback), cancel between steps. ``generate()`` on Transfer runs one chunk only.
* **Predict** chunks are chained by the runner: Text2World without a condition, else Video2World
  on 1 or 5 frames (one or two latent frames). The prompt is encoded once per prompt, not per chunk.
* **Guardrail** (:mod:`~worldmill.gpu_runner.backends.guardrail`): the pipelines get a pass-through
  checker; the runner screens the prompt before the first chunk and the assembled video after the
  last, through :meth:`screen_prompt` / :meth:`screen_video`. A block is a permanent failure.
* **Performance settings** (``BackendConfig``): diffusers' attention backend for the transformer and
  controlnet, and optional regional ``torch.compile`` of the transformer blocks, all in provenance.

Importing this module imports torch and diffusers; the registry imports it only when a Cosmos
model is asked for.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import CosmosControlNetModel, DiffusionPipeline
from huggingface_hub import constants, snapshot_download
from PIL import Image

from worldmill.contracts.backends import builtin_backends
from worldmill.contracts.cards import ControlType, ModelCard
from worldmill.contracts.checkpoints import controlnet_revision, pipeline_revision, pull_command
from worldmill.contracts.generation import ExecutionSignature
from worldmill.gpu_runner.backends.base import (
    VERSION_PREFIX,
    BackendConfig,
    CheckpointError,
    ChunkRequest,
    Frames,
    StepCallback,
    VideoProgress,
    VideoRequest,
)
from worldmill.gpu_runner.backends.guardrail import GUARDRAIL_KEY, Guardrail, load_guardrail
from worldmill.gpu_runner.backends.shared import checkpoint_sha256, content_identity
from worldmill.gpu_runner.backends.torchvision_stand_in import apply_torchvision_stand_in
from worldmill.gpu_runner.devices import resolve_device
from worldmill.runtime.errors import InvalidInputError, PermanentError
from worldmill.runtime.versions import package_version

__all__ = ["CONTROLNETS_FOLDER", "DiffusersBackend", "PassThroughSafetyChecker", "checkpoint_sha256"]

_DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
}
#: Where a local Transfer checkpoint keeps one controlnet folder per control type.
CONTROLNETS_FOLDER = "controlnets"
#: Video2World conditioning lengths in pixel frames -> latent frames (Wan VAE: 4(n-1)+1).
_PREDICT_CONDITION_FRAMES = {1: 1, 5: 2}
#: Pipeline components that hold weights and may be shared between backends.
_SHARED = ("text_encoder", "transformer", "vae")
_LIBRARIES = ("torch", "diffusers", "transformers", "accelerate", "numpy", "huggingface_hub")
# diffusers' loaders are untyped; typed as Any here so strict mypy accepts the calls.
_PIPELINE: Any = DiffusionPipeline
_CONTROLNET: Any = CosmosControlNetModel


class PassThroughSafetyChecker:
    """What the pipelines get: every prompt and frame passes. The real guardrail runs once per video, outside."""

    def to(self, *_args: Any, **_kwargs: Any) -> PassThroughSafetyChecker:
        """Nothing to move."""
        return self

    def check_text_safety(self, _prompt: str) -> bool:
        """Every prompt passes."""
        return True

    def check_video_safety(self, frames: Frames) -> Frames:
        """Frames pass unchanged."""
        return frames


def _check_pipeline_folder(path: Path) -> dict[str, Any]:
    """A diffusers pipeline folder's ``model_index.json``; every listed (non-null) component has its folder."""
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {path} does not exist")
    index = path / "model_index.json"
    if not index.is_file():
        raise CheckpointError(f"checkpoint folder {path} is incomplete: model_index.json is missing")
    try:
        entries: dict[str, Any] = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint folder {path}: model_index.json is unreadable ({exc})") from exc
    missing = sorted(
        name
        for name, value in entries.items()
        if not name.startswith("_")
        and name != "controlnet"  # given per control type, never taken from the folder
        and isinstance(value, list)
        and value[:1] != [None]
        and not (path / name).is_dir()
    )
    if missing:
        raise CheckpointError(f"checkpoint folder {path} is incomplete: missing component folder(s) {missing}")
    return entries


def _to_uint8(frames: Any) -> Frames:
    array = np.asarray(frames, dtype=np.float32)
    out: Frames = np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out


def _pil_frames(frames: Frames) -> list[Any]:
    return [Image.fromarray(np.ascontiguousarray(frame)) for frame in frames]


def _module_bytes(module: Any) -> int:
    if not isinstance(module, torch.nn.Module):
        return 0
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def _versions() -> dict[str, str]:
    return {f"{VERSION_PREFIX}{lib}": ver for lib in _LIBRARIES if (ver := package_version(lib, default=None))}


class DiffusersBackend:
    """A Cosmos 2.5 model (Predict or Transfer, by the card's family) run by its diffusers pipeline."""

    name = "diffusers"
    capabilities = builtin_backends()["diffusers"]

    def __init__(self, signature: ExecutionSignature, card: ModelCard, config: BackendConfig) -> None:
        if not self.capabilities.runs_family(card.family):
            raise InvalidInputError(
                "model", f"{card.id} (family {card.family!r}) is not run by the {self.name} backend"
            )
        if card.family == "transfer" and len(signature.controls) != 1:
            raise InvalidInputError(
                "controls",
                f"the diffusers Transfer pipeline has one controlnet: a signature needs exactly one control, got "
                f"{[c.value for c in signature.controls]}",
            )
        self.signature = signature
        self.card = card
        self.config = config
        self.device = config.device
        self._pipe: Any = None
        self._path: Path | None = None
        self._controlnet_path: Path | None = None
        self._sha256: str | None = None
        self._keys: list[str] = []
        self._guardrail: Guardrail | None = None
        self._torchvision = "real"
        self._embeds: tuple[tuple[Any, ...], tuple[Any, Any]] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def setup(self) -> None:
        """Resolve, hash and load the checkpoint; raises :class:`CheckpointError` naming what is wrong."""
        if self._pipe is not None:
            return
        path, entries = self._resolve()
        declared = entries.get("_class_name")
        if self.card.diffusers_pipeline and declared and declared != self.card.diffusers_pipeline:
            raise CheckpointError(
                f"checkpoint folder {path} holds a {declared}, but model {self.card.id} needs a "
                f"{self.card.diffusers_pipeline}"
            )
        controlnet_path = self._controlnet_folder(path) if self.card.family == "transfer" else None
        self.device = resolve_device(self.config.device)
        if apply_torchvision_stand_in():
            self._torchvision = "stand-in"
        dtype = _DTYPES[self.signature.dtype]
        keys: list[str] = []
        try:
            if self.config.safety_checker:
                self._guardrail = load_guardrail(self.config, self.device)
                keys.append(GUARDRAIL_KEY)
            overrides: dict[str, Any] = {}
            shared = self.config.shared
            component_keys = {
                name: self._component_key(name, path / name, entries)
                for name in _SHARED
                if isinstance(entries.get(name), list) and entries[name][:1] != [None] and (path / name).is_dir()
            }
            for name, key in component_keys.items():
                if (module := shared.peek(key)) is not None:
                    overrides[name] = module
            if controlnet_path is not None:
                cn_key = f"controlnet:{content_identity(controlnet_path)}:{self.signature.dtype}:{self.device}"
                overrides["controlnet"] = shared.acquire(
                    cn_key,
                    lambda: _CONTROLNET.from_pretrained(str(controlnet_path), dtype=dtype, local_files_only=True).to(
                        self.device
                    ),
                    _module_bytes,
                )
                keys.append(cn_key)
            pipe = _PIPELINE.from_pretrained(
                str(path),
                dtype=dtype,
                safety_checker=PassThroughSafetyChecker(),
                local_files_only=True,
                **overrides,
            )
            loaded = type(pipe).__name__
            if self.card.diffusers_pipeline and loaded != self.card.diffusers_pipeline:
                raise CheckpointError(
                    f"checkpoint folder {path} holds a {loaded}, "
                    f"but model {self.card.id} needs a {self.card.diffusers_pipeline}"
                )
            pipe.set_progress_bar_config(disable=True)
            pipe = pipe.to(self.device)
            for name, key in component_keys.items():
                module = getattr(pipe, name, None)
                if module is not None:
                    setattr(pipe, name, shared.adopt(key, module, _module_bytes(module)))
                    keys.append(key)
            self._tune(pipe)
        except CheckpointError:
            self._release(keys)
            raise
        except Exception as exc:  # whatever from_pretrained trips on, the folder cannot be used as it is
            self._release(keys)
            raise CheckpointError(
                f"cannot load the diffusers pipeline from {path}: {type(exc).__name__}: {exc}"
            ) from exc
        self._sha256 = checkpoint_sha256(path, *([controlnet_path] if controlnet_path else []))
        self._pipe, self._keys = pipe, keys
        self._path, self._controlnet_path = path, controlnet_path

    def _component_key(self, name: str, folder: Path, entries: dict[str, Any]) -> str:
        cls = entries[name][1] if isinstance(entries.get(name), list) and len(entries[name]) > 1 else name
        return f"{name}:{cls}:{content_identity(folder)}:{self.signature.dtype}:{self.device}"

    def _tune(self, pipe: Any) -> None:
        """Attention backend and regional compile, on the (possibly shared) transformer and controlnet."""
        modules = [m for m in (getattr(pipe, "transformer", None), getattr(pipe, "controlnet", None)) if m is not None]
        for module in modules:  # shared modules: set it every time (another backend may have set another)
            if self.config.attention_backend == "native":
                module.reset_attention_backend()
            else:
                module.set_attention_backend(self.config.attention_backend)
        if self.config.compile == "regional":
            transformer = pipe.transformer
            if not getattr(transformer, "_worldmill_compiled", False):
                for block in transformer.transformer_blocks:
                    block.compile()
                transformer._worldmill_compiled = True

    def _release(self, keys: list[str]) -> None:
        for key in keys:
            self.config.shared.release(key)

    def close(self) -> None:
        """Drop the pipeline and this backend's references to shared parts; free CUDA memory no one holds."""
        if self._pipe is None:
            return
        self._pipe = None
        self._embeds = None
        self._guardrail = None
        self._release(self._keys)
        self._keys = []
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def memory_parts(self) -> dict[str, int]:
        """Bytes of each part this backend holds, by shared key (0 parts before ``setup()``)."""
        return {key: self.config.shared.size(key) for key in self._keys}

    def memory_bytes(self) -> int:
        """Parameter and buffer bytes once loaded; before, the weight files' size or the card's estimate."""
        if self._pipe is not None:
            return sum(self.memory_parts().values())
        local = self._local_folder()
        if local is not None and local.is_dir():
            return sum(p.stat().st_size for p in local.rglob("*.safetensors") if p.is_file())
        return int((self.card.approx_vram_gb or 0.0) * 1e9)

    def describe(self) -> dict[str, str]:
        """Provenance of the loaded pipeline (the checkpoint hash is known after ``setup()``)."""
        guardrail = self._guardrail.name if self._guardrail is not None else "off (pass-through)"
        out = {
            "backend": self.name,
            "model": self.card.id,
            "pipeline": self.card.diffusers_pipeline or "",
            "checkpoint": str(self._path) if self._path else self.signature.checkpoint,
            "dtype": self.signature.dtype,
            "device": self.device,
            "safety_checker": guardrail,
            "guardrail": guardrail,
            "torchvision": self._torchvision,
            "attention_backend": self.config.attention_backend,
            "compile": self.config.compile,
        }
        if self._controlnet_path is not None:
            out["controlnet"] = str(self._controlnet_path)
            out["control"] = self.signature.controls[0].value
        if self._sha256 is not None:
            out["checkpoint_sha256"] = self._sha256
        return out | _versions()

    # -- guardrail -------------------------------------------------------------------------------

    def screen_prompt(self, prompt: str) -> None:
        """The guardrail's prompt check, once per job before the first chunk."""
        if self._guardrail is not None:
            self._guardrail.check_prompt(prompt)

    def screen_video(self, frames: Frames) -> Frames:
        """The guardrail's video check on the assembled video, once per job (faces may come back blurred)."""
        return frames if self._guardrail is None else self._guardrail.check_video(frames)

    # -- generation ------------------------------------------------------------------------------

    def _loaded(self) -> Any:
        if self._pipe is None:
            raise RuntimeError("DiffusersBackend used before setup()")
        return self._pipe

    def _generator(self, seed: int) -> Any:
        return torch.Generator(device=self.device).manual_seed(seed)

    def _call(self, kwargs: dict[str, Any]) -> Any:
        pipe = self._loaded()
        try:
            with torch.inference_mode():
                return pipe(**kwargs)
        except ValueError as exc:  # the pipeline's input checks never succeed on retry
            raise PermanentError(f"{type(pipe).__name__} refused the request: {exc}") from exc

    def generate(self, request: ChunkRequest, on_step: StepCallback) -> Frames:
        """Run one chunk; ``on_step(step, steps)`` after each denoising step, where ``Canceled`` stops it."""
        self._loaded()
        kwargs = self._chunk_arguments(request, on_step)
        if self.card.family == "transfer":
            kwargs |= self._text(request.prompt, request.negative_prompt, embed=False)
            kwargs |= self._transfer_chunk(request)
        else:
            kwargs |= self._text(request.prompt, request.negative_prompt, embed=True, guidance=request.guidance)
            kwargs |= self._predict_arguments(request)
        return self._frames(self._call(kwargs).frames[0], (request.frames, request.height, request.width, 3))

    def _chunk_arguments(self, request: ChunkRequest, on_step: StepCallback) -> dict[str, Any]:
        """What every one-chunk pipeline call takes: size, length, sampling, seeded generator, step callback."""

        def step_end(_pipe: Any, i: int, _t: Any, _tensors: dict[str, Any]) -> dict[str, Any]:
            on_step(i + 1, request.steps)  # may raise Canceled: it propagates out of the pipeline
            return {}

        return {
            "height": request.height,
            "width": request.width,
            "num_frames": request.frames,
            "num_inference_steps": request.steps,
            "guidance_scale": request.guidance,
            "generator": self._generator(request.seed),
            "output_type": "np",
            "callback_on_step_end": step_end,
        }

    def generate_video(self, request: VideoRequest, on_progress: VideoProgress) -> Frames:
        """A whole Transfer video in one pipeline call: the pipeline chunks and conditions by itself."""
        if self.card.family != "transfer":
            raise PermanentError(
                f"{self.card.diffusers_pipeline} has no chunk loop of its own: the runner chains Predict chunks"
            )
        self._loaded()
        calls = 0

        def step_end(_pipe: Any, _i: int, _t: Any, _tensors: dict[str, Any]) -> dict[str, Any]:
            nonlocal calls
            calls += 1
            chunk, step = divmod(calls - 1, request.steps)
            on_progress(min(chunk, request.chunks - 1), request.chunks, step + 1, request.steps)
            return {}

        kind, video = self._one_control(request.controls)
        kwargs: dict[str, Any] = {
            "controls": _pil_frames(video),
            "controls_conditioning_scale": float(request.control_weights.get(kind, 1.0)),
            "height": request.height,
            "width": request.width,
            "num_frames": request.frames,
            "num_frames_per_chunk": request.chunk_frames,
            "num_ar_conditional_frames": request.overlap,
            "num_inference_steps": request.steps,
            "guidance_scale": request.guidance,
            "generator": self._generator(request.seed),
            "output_type": "np",
            "callback_on_step_end": step_end,
            **self._text(request.prompt, request.negative_prompt, embed=False),
        }
        frames = self._frames(self._call(kwargs).frames[0], (request.frames, request.height, request.width, 3))
        if calls != request.steps * request.chunks:
            raise PermanentError(
                f"the Transfer pipeline ran {calls} denoising steps; the plan's {request.chunks} chunk(s) of "
                f"{request.steps} steps need {request.steps * request.chunks}: its chunking differs from the plan"
            )
        return frames

    def _frames(self, video: Any, expected: tuple[int, int, int, int]) -> Frames:
        """The pipeline's ``np`` video in [0, 1] as uint8, refused unless shaped exactly as planned."""
        frames = _to_uint8(video)
        if frames.shape != expected:
            raise PermanentError(
                f"{type(self._pipe).__name__} returned frames shaped {frames.shape}, expected {expected}"
            )
        return frames

    def _text(self, prompt: str, negative: str | None, *, embed: bool, guidance: float = 0.0) -> dict[str, Any]:
        """Prompt arguments; with ``embed``, encoded once and reused for every chunk of the same prompt."""
        plain: dict[str, Any] = {"prompt": prompt, "max_sequence_length": self.card.max_prompt_tokens}
        if negative is not None:
            plain["negative_prompt"] = negative
        if not embed:
            return plain
        pipe = self._loaded()
        cfg = guidance > 1.0
        key = (prompt, negative, cfg, self.card.max_prompt_tokens)
        if self._embeds is None or self._embeds[0] != key:
            with torch.inference_mode():
                embeds, negative_embeds = pipe.encode_prompt(
                    prompt=prompt,
                    negative_prompt=negative,
                    do_classifier_free_guidance=cfg,
                    num_videos_per_prompt=1,
                    max_sequence_length=self.card.max_prompt_tokens,
                    device=pipe._execution_device,
                )
            self._embeds = (key, (embeds, negative_embeds))
        embeds, negative_embeds = self._embeds[1]
        out: dict[str, Any] = {"prompt_embeds": embeds, "max_sequence_length": self.card.max_prompt_tokens}
        if cfg:
            out["negative_prompt_embeds"] = negative_embeds
        return out

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

    def _one_control(self, controls: Any) -> tuple[str, Frames]:
        if len(controls) != 1:
            raise PermanentError(
                "the diffusers Transfer pipeline takes one control video (it has a single controlnet), "
                f"got {len(controls)}: {sorted(controls)}"
            )
        ((kind, video),) = controls.items()
        loaded = self.signature.controls[0].value
        if kind != loaded:
            raise InvalidInputError(
                "controls", f"control {kind!r} given, but this backend holds the {loaded} controlnet"
            )
        return kind, video

    def _transfer_chunk(self, request: ChunkRequest) -> dict[str, Any]:
        if request.condition is not None:
            raise PermanentError(
                "a Transfer chunk conditioned on earlier frames: on diffusers, Transfer runs as one call per video "
                "(generate_video; plans with chunking='pipeline'), where the pipeline conditions its chunks itself"
            )
        kind, video = self._one_control(request.controls)
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

    def _controls(self) -> tuple[ControlType, ...]:
        return self.signature.controls if self.card.family == "transfer" else ()

    def _resolve(self) -> tuple[Path, dict[str, Any]]:
        local = self._local_folder()
        if local is not None and local.exists():
            return local, _check_pipeline_folder(local)
        where = f"no folder {local}" if local is not None else "no checkpoint_root configured"
        path = self._from_hub_cache(pipeline_revision(self.card), where)
        return path, _check_pipeline_folder(path)

    def _controlnet_folder(self, pipeline: Path) -> Path:
        control = self.signature.controls[0]
        local = self._local_folder()
        if local is not None and pipeline == local:
            folder = local / CONTROLNETS_FOLDER / control.value
            if not (folder / "config.json").is_file():
                raise CheckpointError(
                    f"checkpoint {self.signature.checkpoint!r} of model {self.card.id}: no {control.value} controlnet "
                    f"at {folder} (a CosmosControlNetModel folder with config.json, e.g. the hub branch "
                    f"{controlnet_revision(self.card, control)} of {self.card.hub_id}); run "
                    f"`{pull_command(self.card.id, self._controls())}` or put it there"
                )
            return folder
        return self._from_hub_cache(controlnet_revision(self.card, control), f"no folder {local}")

    def _from_hub_cache(self, revision: str, where: str) -> Path:
        if self.card.hub_id is None:
            raise CheckpointError(f"checkpoint {self.signature.checkpoint!r} of model {self.card.id}: {where}")
        try:
            folder = snapshot_download(self.card.hub_id, revision=revision, local_files_only=True)
        except Exception as exc:  # LocalEntryNotFoundError, RevisionNotFoundError, …: all mean "not cached"
            raise CheckpointError(
                f"checkpoint {self.signature.checkpoint!r} of model {self.card.id}: {where}, and "
                f"{self.card.hub_id} (revision {revision}) is not in the Hugging Face cache "
                f"{constants.HF_HUB_CACHE}: run `{pull_command(self.card.id, self._controls())}`, or put the "
                f"pipeline folder at <checkpoint_root>/{self.signature.checkpoint}"
            ) from exc
        return Path(folder)
