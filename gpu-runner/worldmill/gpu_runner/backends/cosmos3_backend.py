"""Cosmos 3 through diffusers' ``Cosmos3OmniPipeline`` (diffusers 0.42.1).

Everything about loading is the Cosmos 2.5 backend's (:class:`DiffusersBackend`, which this class
extends): the checkpoint from ``checkpoint_root / signature.checkpoint`` or the card's hub repo and
revision in the local cache (a missing one is a :class:`CheckpointError` naming the repo, the
revision and the ``worldmill models pull`` command), the transformer and VAE shared through
:class:`~worldmill.gpu_runner.backends.shared.SharedComponents`, the guardrail loaded once per
runner and run once per video (:meth:`screen_prompt` / :meth:`screen_video`), the pass-through
checker the pipeline is loaded with, the attention backend, and ``describe()`` provenance.

What differs is the call:

* **fps natively.** The pipeline takes ``fps`` (mRoPE temporal modulation and the prompt's
  duration sentence), so each chunk is generated at the plan's native rate (24 fps for a 24 fps
  target: no conversion).
* **Conditioning.** One frame is the ``image`` (anchors latent frame 0); more frames are the
  ``video`` with ``condition_frame_indexes_vision`` = their whole latent frames (4k+1 pixel frames)
  and ``condition_video_keep="last"``. The runner chains chunks, as for Predict (no chunk loop in
  the pipeline): :meth:`generate_video` is refused.
* **Safety.** The pipeline's own check is switched off per call (``enable_safety_check=False``)
  besides the pass-through checker: the guardrail screens once per video, outside.
* **Text.** Cosmos 3's transformer embeds the prompt tokens itself (no text encoder to share or
  cache embeddings of): the prompt is passed as text to every call.
* **Compile.** ``regional`` compiles each ``Cosmos3VLTextMoTDecoderLayer`` (``transformer.layers``).

Importing this module imports torch and diffusers; the registry imports it only on use.
"""

from __future__ import annotations

from typing import Any

from worldmill.contracts.backends import builtin_backends
from worldmill.contracts.cards import ModelCard
from worldmill.contracts.generation import ExecutionSignature
from worldmill.gpu_runner.backends.base import (
    BackendConfig,
    ChunkRequest,
    Frames,
    StepCallback,
    VideoProgress,
    VideoRequest,
)
from worldmill.gpu_runner.backends.diffusers_backend import DiffusersBackend, _pil_frames
from worldmill.runtime.errors import InvalidInputError, PermanentError

__all__ = ["Cosmos3Backend"]

#: The Wan VAE's temporal compression: pixel frames 4k + 1 are k + 1 whole latent frames.
_TEMPORAL = 4


def condition_indexes(frames: int) -> list[int]:
    """Latent frames that ``frames`` conditioning pixel frames fill exactly (1 → [0], 5 → [0, 1], …)."""
    if frames < 1 or (frames - 1) % _TEMPORAL:
        raise InvalidInputError(
            "condition",
            f"Cosmos3OmniPipeline conditions on whole latent frames: 1, 5, 9, … (4k+1) pixel frames, got {frames}",
        )
    return list(range((frames - 1) // _TEMPORAL + 1))


class Cosmos3Backend(DiffusersBackend):
    """A Cosmos 3 model run by ``Cosmos3OmniPipeline``; the runner chains its chunks."""

    name = "cosmos3"
    capabilities = builtin_backends()["cosmos3"]

    def __init__(self, signature: ExecutionSignature, card: ModelCard, config: BackendConfig) -> None:
        if signature.controls:
            raise InvalidInputError("controls", f"{card.id} takes no control videos on the cosmos3 backend")
        # The parent's state and loading (one pipeline folder, no controlnets, like Predict); its family
        # check reads this class's capabilities (family cosmos3).
        super().__init__(signature, card, config)

    def _tune(self, pipe: Any) -> None:
        """Attention backend on the transformer; regional compile of its decoder layers."""
        transformer = pipe.transformer
        if self.config.attention_backend == "native":
            transformer.reset_attention_backend()
        else:
            transformer.set_attention_backend(self.config.attention_backend)
        if self.config.compile == "regional" and not getattr(transformer, "_worldmill_compiled", False):
            for layer in transformer.layers:
                layer.compile()
            transformer._worldmill_compiled = True

    def generate(self, request: ChunkRequest, on_step: StepCallback) -> Frames:
        """Run one chunk at ``request.fps``; ``on_step(step, steps)`` after each step, where ``Canceled`` stops it."""
        self._loaded()
        if request.controls:
            raise InvalidInputError("controls", f"{self.card.id} takes no control videos")
        kwargs: dict[str, Any] = {
            **self._chunk_arguments(request, on_step),
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "fps": float(request.fps),
            "enable_safety_check": False,  # the guardrail screens once per video (screen_prompt/screen_video)
            **self._conditioning(request.condition),
        }
        return self._frames(self._call(kwargs).video, (request.frames, request.height, request.width, 3))

    @staticmethod
    def _conditioning(condition: Frames | None) -> dict[str, Any]:
        if condition is None:
            return {}
        if len(condition) == 1:
            return {"image": _pil_frames(condition)[0]}
        return {
            "video": _pil_frames(condition),
            "condition_frame_indexes_vision": condition_indexes(len(condition)),
            "condition_video_keep": "last",
        }

    def generate_video(self, request: VideoRequest, on_progress: VideoProgress) -> Frames:  # noqa: ARG002
        """Refused: Cosmos3OmniPipeline makes one generation per call; the runner chains the chunks."""
        raise PermanentError(
            "Cosmos3OmniPipeline has no chunk loop of its own: the runner chains Cosmos 3 chunks "
            "(plans for the cosmos3 backend have chunking='runner')"
        )
