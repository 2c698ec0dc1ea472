"""vLLM-Omni's Videos API as a runner backend (``vllm-omni``): one polled video job per chunk.

As documented (vllm-project/vllm-omni ``docs/serving/videos_api.md`` and
``vllm_omni/entrypoints/openai/protocol/videos.py``):

* ``POST /v1/videos`` takes ``multipart/form-data``: ``prompt`` (required), ``model``,
  ``negative_prompt``, ``width``, ``height``, ``num_frames``, ``fps`` (an integer),
  ``num_inference_steps``, ``guidance_scale``, ``seed`` and ``input_reference`` (an uploaded image
  or video for image-to-video / video-to-video). It answers a job record ``{"id", "status":
  "queued", ...}``.
* ``GET /v1/videos/{id}``: ``status`` ``queued`` → ``in_progress`` → ``completed`` | ``failed``,
  ``progress`` 0–100 (best effort), ``error`` ``{code, message}``.
* ``GET /v1/videos/{id}/content``: the MP4 bytes. ``DELETE /v1/videos/{id}``: aborts a running job
  (bounded, best effort) and deletes its stored output.

Progress: the job's ``progress`` as denoising steps on every poll; cancel: between polls (the
runner's step callback raises ``Canceled``; the job is then deleted on the server). Identity:
``GET /v1/models`` (vLLM's OpenAI list, ``data[].id`` and ``root``). Health: ``GET /health``
(vLLM's; the server answers nothing while it loads).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from worldmill.contracts.backends import builtin_backends
from worldmill.contracts.cards import ModelCard
from worldmill.contracts.generation import ExecutionSignature
from worldmill.gpu_runner.backends.base import BackendConfig, Canceled, ChunkRequest, Frames, StepCallback
from worldmill.gpu_runner.backends.served import (
    ServedBackend,
    ServedClient,
    ServedUnavailable,
    decode_video,
    encode_mp4_bytes,
    encode_png,
)
from worldmill.runtime.errors import InvalidInputError, PermanentError

__all__ = ["VIDEOS_FIELDS", "VllmOmniBackend"]

#: Every form field this backend may send (all documented for ``POST /v1/videos``).
VIDEOS_FIELDS = frozenset(
    {
        "prompt",
        "model",
        "negative_prompt",
        "width",
        "height",
        "num_frames",
        "fps",
        "num_inference_steps",
        "guidance_scale",
        "seed",
        "input_reference",
    }
)
#: ``error.code`` values of a failed job that another attempt cannot fix.
_PERMANENT_CODES = frozenset({400, 422, "400", "422", "invalid_request_error", "invalid_request"})


class VllmOmniBackend(ServedBackend):
    """Cosmos behind vLLM-Omni: ``setup()`` waits for ``/health`` and checks ``/v1/models``."""

    name = "vllm-omni"
    capabilities = builtin_backends()["vllm-omni"]
    health_path = "/health"
    url_setting = "WM_GPU_RUNNER_VLLM_OMNI_BASE_URL"

    def __init__(self, signature: ExecutionSignature, card: ModelCard, config: BackendConfig) -> None:
        super().__init__(signature, card, config)
        self.served_model: str | None = None

    def _base_url(self) -> str | None:
        url: str | None = self.config.vllm_omni_base_url
        return url

    def _identities(self, client: ServedClient) -> list[str]:
        listing = client.get_json("/v1/models")
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list) or not data:
            raise ServedUnavailable(f"the vllm-omni server lists no model on /v1/models: {str(listing)[:200]}")
        names: list[str] = []
        for entry in data:
            if isinstance(entry, dict):
                names.extend(str(entry[k]) for k in ("id", "root") if entry.get(k))
        first = data[0]
        self.served_model = str(first.get("id")) if isinstance(first, dict) and first.get("id") else None
        return names

    def form(self, request: ChunkRequest) -> tuple[dict[str, str], dict[str, tuple[str, bytes, str]]]:
        """The multipart fields and files of one chunk's ``POST /v1/videos``."""
        if request.controls:
            raise InvalidInputError("controls", "the vllm-omni backend takes no controls")
        if abs(request.fps - round(request.fps)) > 1e-6:
            raise InvalidInputError("fps", f"vLLM-Omni takes an integer fps, the plan asks {request.fps:g}")
        data = {
            "prompt": request.prompt,
            "width": str(request.width),
            "height": str(request.height),
            "num_frames": str(request.frames),
            "fps": str(round(request.fps)),
            "num_inference_steps": str(request.steps),
            "guidance_scale": repr(float(request.guidance)),
            "seed": str(request.seed),
        }
        if self.served_model:
            data["model"] = self.served_model
        if request.negative_prompt:
            data["negative_prompt"] = request.negative_prompt
        files: dict[str, tuple[str, bytes, str]] = {}
        if request.condition is not None:
            if len(request.condition) == 1:
                files["input_reference"] = ("condition.png", encode_png(request.condition[0]), "image/png")
            else:
                clip = encode_mp4_bytes(request.condition, request.fps)
                files["input_reference"] = ("condition.mp4", clip, "video/mp4")
        return data, files

    def generate(self, request: ChunkRequest, on_step: StepCallback) -> Frames:
        """One chunk: create the job, poll it (progress, cancel), download and check the video."""
        client = self.client()
        data, files = self.form(request)
        on_step(0, request.steps)
        created = client.request("POST", "/v1/videos", data=data, files=files or None).json()
        job_id = created.get("id") if isinstance(created, dict) else None
        if not job_id:
            raise ServedUnavailable(f"the vllm-omni server created no job id: {str(created)[:200]}")
        try:
            self._wait(client, str(job_id), request.steps, on_step)
            content = client.request("GET", f"/v1/videos/{job_id}/content", retry_timeouts=False).content
        except Canceled:
            self._delete(client, str(job_id))
            raise
        self._delete(client, str(job_id))
        frames = decode_video(
            content,
            engine=self.name,
            frames=request.frames,
            fps=request.fps,
            width=request.width,
            height=request.height,
        )
        on_step(request.steps, request.steps)
        return frames

    def _wait(self, client: ServedClient, job_id: str, steps: int, on_step: StepCallback) -> None:
        deadline = time.monotonic() + self.config.served_timeout_s
        while True:
            record: Any = client.get_json(f"/v1/videos/{job_id}")
            status = record.get("status") if isinstance(record, dict) else None
            if status == "completed":
                return
            if status == "failed":
                error = record.get("error") or {}
                code = error.get("code") if isinstance(error, dict) else None
                message = error.get("message") if isinstance(error, dict) else str(error)
                text = f"the vllm-omni job {job_id} failed: {message or 'no reason given'} (code {code})"
                if code in _PERMANENT_CODES:
                    raise PermanentError(text)
                raise ServedUnavailable(text)
            if status not in ("queued", "in_progress"):
                raise ServedUnavailable(f"the vllm-omni job {job_id} has an unknown status {status!r}")
            progress = record.get("progress") or 0
            step = min(steps - 1, int(float(progress) * steps / 100)) if status == "in_progress" else 0
            on_step(max(0, step), steps)  # may raise Canceled: stop between polls
            if time.monotonic() > deadline:
                self._delete(client, job_id)
                raise ServedUnavailable(
                    f"the vllm-omni job {job_id} did not finish within {self.config.served_timeout_s:g} s "
                    f"(last status {status}, progress {progress})"
                )
            time.sleep(self.config.served_poll_s)

    def _delete(self, client: ServedClient, job_id: str) -> None:
        """Abort/clean up the job on the server; best effort (the outcome stands either way)."""
        with contextlib.suppress(Exception):
            client.request("DELETE", f"/v1/videos/{job_id}")

    def describe(self) -> dict[str, str]:
        """Provenance, with the model id the server serves under."""
        out = super().describe()
        if self.served_model:
            out["vllm_omni_model"] = self.served_model
        return out
