"""What every backend is: a cheap constructor, ``setup()`` that loads weights, ``generate()`` per chunk, ``close()``.

The lifecycle follows cosmos-curate's stages: constructing a backend costs nothing (a runner may
build one just to ask ``memory_bytes()`` for its cache budget), ``setup()`` does the slow loading
once, ``generate()`` runs one model call (one :class:`~worldmill.contracts.generation.ChunkPlan`)
as many times as wanted, and ``close()`` frees the memory.

A backend whose pipeline chains chunks by itself (``capabilities.chunking_for(mode) ==
"pipeline"``, the diffusers Transfer pipeline) also has ``generate_video()``: one call for the
whole video, with the plan's chunk length and overlap, reporting progress per chunk and step.
The runner uses it for plans made with ``chunking="pipeline"``, and calls ``generate()`` per
chunk otherwise.

Guardrails: a backend that runs a safety checker raises :class:`GuardrailBlocked` (permanent:
another attempt would be blocked again) naming the guardrail and what it blocked, never returns
blank frames for a blocked video.

This module never imports torch: the runner's control code, and tests of it, stay light.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from worldmill.contracts.backends import BackendCapabilities
from worldmill.gpu_runner.backends.shared import SharedComponents
from worldmill.runtime.errors import InvalidInputError, PermanentError

__all__ = [
    "VERSION_PREFIX",
    "Backend",
    "BackendConfig",
    "Canceled",
    "CheckpointError",
    "ChunkRequest",
    "Frames",
    "GuardrailBlocked",
    "StepCallback",
    "VideoProgress",
    "VideoRequest",
    "library_versions",
]

#: ``(frames, height, width, 3)`` uint8 RGB.
Frames = npt.NDArray[np.uint8]
#: ``on_step(step_done, steps)``: called after each denoising step; may raise :class:`Canceled`.
StepCallback = Callable[[int, int], None]
#: ``on_progress(chunk_index, chunks, step_done, steps)`` for a whole-video call; may raise :class:`Canceled`.
VideoProgress = Callable[[int, int, int, int], None]
#: ``describe()`` keys starting with this prefix carry library versions: ``"version.torch": "2.13.0"``.
VERSION_PREFIX = "version."


class Canceled(Exception):  # noqa: N818 - it is an outcome, not an error
    """Raised by a step callback to stop a generation at once; propagates out of ``generate()``."""


class CheckpointError(PermanentError):
    """A checkpoint is missing, incomplete, or cannot be loaded; the message names the path and what is missing."""


class GuardrailBlocked(PermanentError):  # noqa: N818 - it is an outcome, not an error
    """The safety checker blocked a prompt or a generated video: permanent, the same input is blocked again."""

    def __init__(self, guardrail: str, what: str, detail: str = "") -> None:
        super().__init__(f"blocked by the {guardrail} guardrail: {what}" + (f" ({detail})" if detail else ""))
        self.guardrail = guardrail
        self.what = what


def _check_frames(name: str, frames: Frames) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise InvalidInputError(name, f"must be uint8 (frames, H, W, 3), got {frames.dtype} {frames.shape}")


@dataclass(frozen=True)
class ChunkRequest:
    """One model call: everything a backend needs to generate one chunk of a plan.

    ``condition`` holds the frames that condition this chunk (the input image/video for chunk 0,
    the previous chunk's last frames later), ``None`` for text2world. As with Cosmos, the chunk's
    first ``len(condition)`` output frames correspond to the conditioning frames and the rest
    continue them (the plan's ``keep_from`` skips the repeated ones). Conditioning and control
    frames may have another size than the chunk: backends resize them. ``controls`` maps a control
    type (``"edge"``, …) to its control video for Cosmos-Transfer, with ``control_weights`` as the
    per-control conditioning scale (default 1.0). ``input_video`` (Transfer only) holds the frames of
    the input video this chunk covers, one per generated frame, for a backend that derives from the
    input itself; the runner gives each chunk the same window of the input as of its controls.
    """

    prompt: str
    negative_prompt: str | None
    seed: int
    frames: int
    width: int
    height: int
    guidance: float
    steps: int
    fps: float
    condition: Frames | None = None
    controls: Mapping[str, Frames] = field(default_factory=dict)
    control_weights: Mapping[str, float] = field(default_factory=dict)
    input_video: Frames | None = None

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise InvalidInputError("frames", f"must be at least 1, got {self.frames}")
        if self.width < 1 or self.height < 1:
            raise InvalidInputError("resolution", f"must be positive, got {self.width}x{self.height}")
        if self.steps < 1:
            raise InvalidInputError("steps", f"must be at least 1, got {self.steps}")
        if self.fps <= 0:
            raise InvalidInputError("fps", f"must be positive, got {self.fps}")
        if not 0 <= self.seed < 2**32:
            raise InvalidInputError("seed", f"must be in [0, 2**32), got {self.seed}")
        if self.condition is not None:
            _check_frames("condition", self.condition)
        if self.input_video is not None:
            _check_frames("input_video", self.input_video)
        for kind, video in self.controls.items():
            _check_frames(f"controls.{kind}", video)
        unknown = set(self.control_weights) - set(self.controls)
        if unknown:
            raise InvalidInputError("control_weights", f"weights for controls that are not given: {sorted(unknown)}")


@dataclass(frozen=True)
class VideoRequest:
    """One call for a whole video whose pipeline chunks by itself (Transfer on diffusers).

    ``frames`` is the whole native length; the pipeline generates ``chunk_frames`` per chunk, each
    later chunk conditioned on the last ``overlap`` frames of the one before, exactly the plan's
    chunk boundaries. ``controls`` and ``input_video`` cover the whole native timeline. The one
    ``seed`` seeds the generator that every chunk draws from, in order.
    """

    prompt: str
    negative_prompt: str | None
    seed: int
    frames: int
    chunk_frames: int
    overlap: int
    chunks: int
    width: int
    height: int
    guidance: float
    steps: int
    fps: float
    controls: Mapping[str, Frames] = field(default_factory=dict)
    control_weights: Mapping[str, float] = field(default_factory=dict)
    input_video: Frames | None = None

    def __post_init__(self) -> None:
        ChunkRequest(  # the same per-field rules as one chunk
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            seed=self.seed,
            frames=self.frames,
            width=self.width,
            height=self.height,
            guidance=self.guidance,
            steps=self.steps,
            fps=self.fps,
            controls=self.controls,
            control_weights=self.control_weights,
            input_video=self.input_video,
        )
        if not 0 <= self.overlap < self.chunk_frames:
            raise InvalidInputError("overlap", f"must be in [0, {self.chunk_frames}), got {self.overlap}")
        if self.chunks < 1:
            raise InvalidInputError("chunks", f"must be at least 1, got {self.chunks}")
        for kind, video in self.controls.items():
            if len(video) != self.frames:
                raise InvalidInputError(
                    f"controls.{kind}", f"has {len(video)} frames; a whole-video call needs all {self.frames}"
                )


@runtime_checkable
class Backend(Protocol):
    """A model that turns :class:`ChunkRequest` s into frames."""

    name: str
    capabilities: BackendCapabilities

    def setup(self) -> None:
        """Load the weights (slow, once). Raises :class:`CheckpointError` when they cannot be loaded."""
        ...

    def generate(self, request: ChunkRequest, on_step: StepCallback) -> Frames:
        """Generate ``(request.frames, request.height, request.width, 3)`` uint8 frames.

        ``on_step(step, steps)`` is called after every denoising step; a :class:`Canceled` raised
        from it propagates at once.
        """
        ...

    def generate_video(self, request: VideoRequest, on_progress: VideoProgress) -> Frames:
        """A whole video in one call (``capabilities.chunking_for(mode) == "pipeline"`` only).

        Returns ``(request.frames, H, W, 3)`` uint8; ``on_progress(chunk, chunks, step, steps)``
        after every denoising step of every chunk. Backends that chain nothing raise
        :class:`~worldmill.runtime.errors.PermanentError`.
        """
        ...

    def screen_prompt(self, prompt: str) -> None:
        """The safety checker's prompt check, once per job before any model call; :class:`GuardrailBlocked`."""
        ...

    def screen_video(self, frames: Frames) -> Frames:
        """The safety checker's check of the finished native video, once per job (may alter frames, e.g.
        blur faces); :class:`GuardrailBlocked` when it blocks."""
        ...

    def close(self) -> None:
        """Free what ``setup()`` loaded. The backend can be set up again afterwards."""
        ...

    def memory_bytes(self) -> int:
        """Estimate of the memory ``setup()`` holds (exact parameter bytes once loaded)."""
        ...

    def memory_parts(self) -> dict[str, int]:
        """What ``memory_bytes()`` is made of, by component identity.

        Components shared between backends of one runner (a text encoder, a VAE, the guardrail)
        carry the same key in each, so the model cache counts them once.
        """
        ...

    def describe(self) -> dict[str, str]:
        """Provenance: ``backend``, ``model``, ``checkpoint``, ``checkpoint_sha256`` (when there are weights),
        ``dtype``, ``device``, ``safety_checker``, and ``version.<package>`` entries."""
        ...


@dataclass(frozen=True)
class BackendConfig:
    """How a runner's backends load and run."""

    checkpoint_root: Path | None = None
    """Folder with one sub-folder per checkpoint name (``ExecutionSignature.checkpoint``)."""
    device: str = "cpu"
    """``cpu``, ``cuda``, ``cuda:N``, or ``auto`` (CUDA when torch sees a GPU, else the CPU)."""
    safety_checker: bool = True
    """The Cosmos guardrail, on by default as the NVIDIA Open Model License expects."""
    guardrail_loader: Callable[[], Any] | None = None
    """Builds the safety checker instead of ``cosmos_guardrail`` (a test guardrail; an in-house one)."""
    attention_backend: str = "native"
    """diffusers' ``set_attention_backend`` for the transformer and controlnet (native, _native_cudnn, flash, …)."""
    compile: Literal["off", "regional"] = "off"
    """``regional``: ``torch.compile`` each transformer block (compiled once, reused by every block)."""
    shared: SharedComponents = field(default_factory=SharedComponents, compare=False)
    """Components every backend of this runner shares (one text encoder, VAE, guardrail per weights)."""
    load_seconds: float = 0.0
    """Synthetic backend only: simulated model load time in ``setup()``."""
    seconds_per_frame: float = 0.0
    """Synthetic backend only: simulated compute time per generated frame."""
    nim_base_url: str | None = None
    """Served ``nim`` backend: the NIM for Cosmos server (``http://nim:8000``)."""
    vllm_omni_base_url: str | None = None
    """Served ``vllm-omni`` backend: the vLLM-Omni server (``http://vllm-omni:8091``)."""
    served_timeout_s: float = 1800.0
    """Served backends: read timeout of one generation request (NIM) and bound of one polled job (vLLM-Omni)."""
    served_ready_timeout_s: float = 600.0
    """Served backends: how long ``setup()`` waits for the engine's health endpoint to say ready."""
    served_concurrency: int = 1
    """Served backends: jobs a runner sends to an engine at once (connection pool size)."""
    served_poll_s: float = 2.0
    """Served backends: seconds between health polls and between job-status polls."""
    served_backoff_s: float = 0.5
    """Served backends: base of the exponential backoff between retried requests."""
    native_transfer_url: str | None = None
    """native-transfer backend only: base URL of the NVIDIA Cosmos-Transfer2.5 worker (docs/native-transfer.md)."""


def library_versions(description: Mapping[str, str]) -> dict[str, str]:
    """The ``version.<package>`` entries of a ``describe()`` result, as ``{package: version}``."""
    return {k.removeprefix(VERSION_PREFIX): v for k, v in description.items() if k.startswith(VERSION_PREFIX)}
