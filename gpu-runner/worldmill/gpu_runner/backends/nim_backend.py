"""NVIDIA NIM for Cosmos as a runner backend (``nim``): one synchronous ``POST /v1/infer`` per chunk.

Request and response, as documented for the Cosmos3 Generator NIM (``nvidia/cosmos`` README,
"Generator with NIM", and its ``run_with_nim.ipynb`` cookbook): a JSON body of ``prompt``,
``negative_prompt``, ``image`` (raw base64, a ``data:image/...;base64,`` URI or a URL), ``seed``,
``guidance_scale`` ([1, 7]), ``steps`` ([1, 100]), ``resolution`` (``256``/``480``/``720`` with an
optional ``_16_9``, ``_1_1``, ``_9_16``, ``_4_3``, ``_3_4`` suffix), ``num_output_frames`` (4k+1) and
``fps``; the answer is JSON with ``b64_video`` (an MP4, VP9 inside). Unknown request fields are
rejected (422), so the body carries exactly these fields and no others.

``model_mode`` (``text2video`` / ``image2video``): the NIM 4.0 generator requires it (as the task's
brief states, and as NVIDIA's hosted Cosmos 3 API names its modes); the 1.0.0 generator NIM
inferred the mode from ``image``. NOT verified against a NIM 4.0 schema here — if a server answers
422 naming ``model_mode``, that error says so.

Health: ``GET /v1/health/ready`` (503 while the engine loads). Identity: ``GET /v1/metadata``; the
Cosmos3 generator NIM adds a ``checkpoint`` field (NIM 3.0.0 API reference); the ``modelInfo``
list (``shortName``, ``modelUrl``) is the NIM-wide convention and is read as a fallback
(unverified for Cosmos).

The request is synchronous and quiet until done: progress is "started" (step 0) and "done" (all
steps); a cancel takes effect before the request is sent or after it returns.
"""

from __future__ import annotations

import base64
from typing import Any

from worldmill.contracts.backends import builtin_backends
from worldmill.contracts.cards import ModelCard
from worldmill.contracts.generation import ExecutionSignature
from worldmill.gpu_runner.backends.base import BackendConfig, ChunkRequest, Frames, StepCallback
from worldmill.gpu_runner.backends.served import (
    ServedBackend,
    ServedClient,
    ServedUnavailable,
    data_uri,
    decode_video,
    encode_png,
)
from worldmill.runtime.errors import InvalidInputError

__all__ = ["NIM_FIELDS", "NimBackend", "resolution_key"]

#: Every field this backend may send (the NIM's schema is strict: nothing else goes out).
NIM_FIELDS = frozenset(
    {
        "model_mode",
        "prompt",
        "negative_prompt",
        "image",
        "seed",
        "guidance_scale",
        "steps",
        "resolution",
        "num_output_frames",
        "fps",
    }
)


def resolution_key(card: ModelCard, width: int, height: int) -> str:
    """The NIM ``resolution`` key for a size of the card's tiers: ``<tier>_<w>_<h>`` (``720_16_9``)."""
    for tier in card.resolution_tiers:
        for aspect, size in tier.sizes.items():
            if (size.width, size.height) == (width, height):
                return f"{tier.name}_{aspect.replace(',', '_')}"
    raise InvalidInputError(
        "resolution",
        f"{width}x{height} is not a size of {card.id}'s resolution tiers; the NIM takes only tier keys "
        "(256/480/720 with an aspect suffix)",
    )


class NimBackend(ServedBackend):
    """Cosmos behind a NIM: ``setup()`` waits for readiness and checks the served checkpoint."""

    name = "nim"
    capabilities = builtin_backends()["nim"]
    health_path = "/v1/health/ready"
    url_setting = "WM_GPU_RUNNER_NIM_BASE_URL"

    def __init__(self, signature: ExecutionSignature, card: ModelCard, config: BackendConfig) -> None:
        super().__init__(signature, card, config)
        self.metadata: dict[str, Any] = {}

    def _base_url(self) -> str | None:
        url: str | None = self.config.nim_base_url
        return url

    def _identities(self, client: ServedClient) -> list[str]:
        metadata = client.get_json("/v1/metadata")
        if not isinstance(metadata, dict):
            raise ServedUnavailable(f"the nim server's /v1/metadata is not an object: {str(metadata)[:200]}")
        self.metadata = metadata
        names: list[str] = []
        checkpoint = metadata.get("checkpoint")
        if isinstance(checkpoint, str):
            names.append(checkpoint)
        elif isinstance(checkpoint, dict):
            names.extend(str(v) for v in checkpoint.values() if isinstance(v, str))
        for info in metadata.get("modelInfo") or ():
            if isinstance(info, dict):
                names.extend(str(info[k]) for k in ("shortName", "modelUrl", "name") if info.get(k))
        names.extend(str(metadata[k]) for k in ("model", "model_name", "name") if isinstance(metadata.get(k), str))
        return names

    def request_body(self, request: ChunkRequest) -> dict[str, Any]:
        """The ``/v1/infer`` body for one chunk (only :data:`NIM_FIELDS`)."""
        body: dict[str, Any] = {
            "model_mode": "image2video" if request.condition is not None else "text2video",
            "prompt": request.prompt,
            "seed": request.seed,
            "guidance_scale": request.guidance,
            "steps": request.steps,
            "resolution": resolution_key(self.card, request.width, request.height),
            "num_output_frames": request.frames,
            "fps": float(request.fps),
        }
        if request.negative_prompt:
            body["negative_prompt"] = request.negative_prompt
        if request.condition is not None:
            if len(request.condition) != 1:
                raise InvalidInputError(
                    "condition", f"the nim backend conditions on one image, got {len(request.condition)} frames"
                )
            body["image"] = data_uri(encode_png(request.condition[-1]), "image/png")
        if request.controls:
            raise InvalidInputError("controls", "the nim backend takes no controls")
        return body

    def generate(self, request: ChunkRequest, on_step: StepCallback) -> Frames:
        """One chunk: ``POST /v1/infer``, decode ``b64_video``, check frames/fps/size."""
        body = self.request_body(request)
        on_step(0, request.steps)  # started (a cancel here stops before anything is sent)
        response = self.client().request("POST", "/v1/infer", json=body, retry_timeouts=False)
        try:
            answer = response.json()
            video = base64.b64decode(answer["b64_video"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ServedUnavailable(f"the nim server's answer has no decodable b64_video ({exc!r})") from exc
        frames = decode_video(
            video, engine=self.name, frames=request.frames, fps=request.fps, width=request.width, height=request.height
        )
        on_step(request.steps, request.steps)
        return frames

    def describe(self) -> dict[str, str]:
        """Provenance, with what ``/v1/metadata`` says of the engine."""
        out = super().describe()
        for key in ("model_type", "inference_endpoint", "version"):
            if isinstance(self.metadata.get(key), str):
                out[f"nim_{key}"] = self.metadata[key]
        return out
