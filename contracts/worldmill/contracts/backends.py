"""What each GPU-runner backend can run, as data the generate service plans against.

A model card says what a *model* can do; a backend card says what one *way of running it* can do.
Cosmos-Transfer2.5 as a model mixes up to four controls, but its diffusers pipeline has a single
controlnet; Cosmos-Predict2.5 conditions on any number of latent frames in NVIDIA's code, but the
diffusers pipeline takes one or two. The generate service checks a spec against both before any
job is queued, so a combination no configured backend can run is refused with the reason (and
which backend could run it) instead of failing on the GPU after the weights are loaded.

Overlaps and conditioning lengths are pixel frames. The Wan VAE of Cosmos 2.5 maps pixel frames
to latent frames as ``4(n − 1) + 1``, so 1 and 5 pixel frames are exactly one and two latent
frames; other lengths would condition on a partly filled latent frame.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from worldmill.contracts.base import Contract
from worldmill.contracts.cards import GenerationMode

__all__ = ["BackendCapabilities", "Chunking", "builtin_backends"]

#: Who chains the chunks of a long video: the runner (one backend call per chunk, conditioned on
#: the previous chunk's last frames) or the pipeline (one call per video; the pipeline chunks and
#: conditions by itself, with the same chunk boundaries as the plan).
Chunking = Literal["runner", "pipeline"]


class BackendCapabilities(Contract):
    """One backend's limits. ``None`` in a limit means "whatever the model card allows"."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    description: str
    families: frozenset[str] = Field(description="Model-card families this backend runs.")
    modes: frozenset[GenerationMode]
    max_controls: int = Field(ge=0, description="Control videos one Transfer generation can mix.")
    overlaps: frozenset[int] | None = Field(
        default=None, description="Pixel frames a later chunk may be conditioned on; None: any the card allows."
    )
    condition_frames: frozenset[int] | None = Field(
        default=None, description="Pixel frames chunk 0 may be conditioned on (image/video2world)."
    )
    chunking: dict[GenerationMode, Chunking] = Field(
        default_factory=dict, description="Who chains chunks, per mode (default: the runner)."
    )
    in_process: bool = Field(default=True, description="Runs inside the runner (False: a served engine).")
    stand_in: bool = Field(
        default=False,
        description="Not a world model: chosen for a real model's family only where no other configured backend "
        "runs that family (the local stack's CPU runner).",
    )

    def chunking_for(self, mode: GenerationMode) -> Chunking:
        """Who chains the chunks of a ``mode`` video on this backend."""
        return self.chunking.get(mode, "runner")

    def runs_family(self, family: str) -> bool:
        """True when this backend runs models of ``family``."""
        return family in self.families


_ONE_OR_TWO_LATENT_FRAMES = frozenset({1, 5})


def builtin_backends() -> dict[str, BackendCapabilities]:
    """The backends worldmill's GPU runner has, by name."""
    diffusers = BackendCapabilities(
        name="diffusers",
        description=(
            "Cosmos 2.5 through Hugging Face diffusers (Cosmos2_5_PredictBasePipeline, Cosmos2_5_TransferPipeline) "
            "in the runner's process"
        ),
        families=frozenset({"predict", "transfer"}),
        modes=frozenset(
            {
                GenerationMode.TEXT2WORLD,
                GenerationMode.IMAGE2WORLD,
                GenerationMode.VIDEO2WORLD,
                GenerationMode.TRANSFER,
            }
        ),
        # The diffusers Transfer pipeline has exactly one controlnet component.
        max_controls=1,
        # Predict: the runner conditions chunk i+1 on the last 1 or 5 frames of chunk i
        # (num_latent_conditional_frames 1 or 2). Transfer: num_ar_conditional_frames, the same lengths.
        overlaps=_ONE_OR_TWO_LATENT_FRAMES,
        condition_frames=_ONE_OR_TWO_LATENT_FRAMES,
        # Cosmos2_5_TransferPipeline chunks a long control video itself, conditioning each chunk on
        # the previous one: one call per video. Predict has no such loop: the runner chains.
        chunking={GenerationMode.TRANSFER: "pipeline"},
    )
    synthetic = BackendCapabilities(
        name="synthetic",
        description="Procedural CPU stand-in (moving shapes from the seed; not a world model)",
        families=frozenset({"synthetic", "predict", "transfer"}),
        modes=frozenset(GenerationMode),
        max_controls=4,
        stand_in=True,
    )
    return {b.name: b for b in (diffusers, synthetic, *_more_backends())}


def _more_backends() -> tuple[BackendCapabilities, ...]:
    """Backends beyond Cosmos 2.5 on diffusers and the stand-in, one function each (see below)."""
    return (_nim(), _vllm_omni(), _cosmos3(), _native_transfer())


#: Model-card families a served Cosmos engine runs: Cosmos 3 generators and Predict 2.5.
_SERVED_FAMILIES = frozenset({"cosmos3", "predict"})


def _nim() -> BackendCapabilities:
    """NVIDIA NIM for Cosmos (``POST /v1/infer``, synchronous JSON, base64 MP4 out).

    One request makes one chunk-length video; the runner chains long videos. The documented
    request conditions on one image (``image``: base64, data URI or URL), so chunk 0 of
    image2world and every later chunk are conditioned on one frame. Video conditioning on
    several frames is not in the schema we could verify, so video2world is not offered here.
    """
    return BackendCapabilities(
        name="nim",
        description="NVIDIA NIM for Cosmos, a served engine: POST /v1/infer, one chunk per request",
        families=_SERVED_FAMILIES,
        modes=frozenset({GenerationMode.TEXT2WORLD, GenerationMode.IMAGE2WORLD}),
        max_controls=0,
        overlaps=frozenset({1}),
        condition_frames=frozenset({1}),
        in_process=False,
    )


def _vllm_omni() -> BackendCapabilities:
    """vLLM-Omni's OpenAI-style Videos API (``POST /v1/videos``, a job polled until done).

    One request makes one chunk-length video; the runner chains long videos on video conditioning
    (``input_reference``: an uploaded image or video), as for Predict.
    """
    return BackendCapabilities(
        name="vllm-omni",
        description="vLLM-Omni Videos API, a served engine: POST /v1/videos, polled, one chunk per request",
        families=_SERVED_FAMILIES,
        modes=frozenset({GenerationMode.TEXT2WORLD, GenerationMode.IMAGE2WORLD, GenerationMode.VIDEO2WORLD}),
        max_controls=0,
        overlaps=_ONE_OR_TWO_LATENT_FRAMES,
        condition_frames=_ONE_OR_TWO_LATENT_FRAMES,
        in_process=False,
    )


#: Pixel lengths that are whole Wan latent frames (4k + 1) within one 189-frame Cosmos 3 generation.
_WHOLE_LATENT_FRAMES_189 = frozenset(range(1, 189, 4))


def _cosmos3() -> BackendCapabilities:
    """Cosmos 3 through diffusers' ``Cosmos3OmniPipeline`` (0.42.1), in the runner's process.

    The pipeline takes ``image`` (anchors latent frame 0: one pixel frame) or ``video`` with
    ``condition_frame_indexes_vision`` (the latent frames kept clean; ``condition_video_keep="last"``
    takes them from the end of the clip): any whole number of latent frames, 1, 5, 9, … pixel
    frames (the card bounds the overlap). It has no chunk loop (one ``num_frames`` generation per
    call) and no controlnet: the runner chains chunks on the previous chunk's last frames, as for Predict.
    """
    return BackendCapabilities(
        name="cosmos3",
        description="Cosmos 3 through Hugging Face diffusers (Cosmos3OmniPipeline) in the runner's process",
        families=frozenset({"cosmos3"}),
        modes=frozenset({GenerationMode.TEXT2WORLD, GenerationMode.IMAGE2WORLD, GenerationMode.VIDEO2WORLD}),
        max_controls=0,
        overlaps=_WHOLE_LATENT_FRAMES_189,
        condition_frames=_WHOLE_LATENT_FRAMES_189,
    )


def _native_transfer() -> BackendCapabilities:
    """NVIDIA's own Cosmos-Transfer2.5 inference in a resident worker process (docs/native-transfer.md).

    What diffusers cannot do: several controls in one generation with per-control weights (any
    union of edge, vis, depth, seg loads NVIDIA's multibranch checkpoint), the distilled edge
    checkpoint, and context-parallel multi-GPU under torchrun. NVIDIA's ``generate_img2world``
    chunks the whole input itself with the planner's boundaries. ``num_conditional_frames`` is
    ``Literal[0, 1, 2]`` in pixel frames (frames ``[n:]`` of a later chunk are kept; it conditions
    on ``1 + (n - 1) // 4`` latent frames), so later chunks overlap by 1 or 2 frames.
    """
    return BackendCapabilities(
        name="native-transfer",
        description=(
            "Cosmos-Transfer2.5 through NVIDIA's cosmos-transfer2.5 inference in a resident worker "
            "(multi-control with per-control weights, distilled checkpoints, context-parallel multi-GPU)"
        ),
        families=frozenset({"transfer"}),
        modes=frozenset({GenerationMode.TRANSFER}),
        max_controls=4,
        overlaps=frozenset({1, 2}),
        chunking={GenerationMode.TRANSFER: "pipeline"},
        in_process=False,
    )
