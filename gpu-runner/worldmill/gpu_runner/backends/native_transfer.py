"""Cosmos-Transfer2.5 through NVIDIA's own inference, in a resident worker driven over HTTP.

NVIDIA's ``cosmos-transfer2.5`` (multi-control with per-control weights, the distilled edge
checkpoint, context-parallel multi-GPU) pins its own torch and transformers and is not on PyPI,
so it runs in its own image (``docker/cosmos-transfer-native.Dockerfile``,
``docker/native_transfer_worker.py``). This backend turns one whole-video
:class:`~worldmill.gpu_runner.backends.base.VideoRequest` into one of NVIDIA's per-sample
inference specs (:func:`nvidia_spec`, the fields of ``cosmos_transfer2.config.InferenceArguments``),
uploads the input and control videos, polls the job with progress and cancel, downloads the video
and decodes it to exactly the plan's frames. The protocol is in ``docs/native-transfer.md``.

Errors: a worker 4xx is a :class:`~worldmill.runtime.errors.InvalidInputError` naming the field it
refused (permanent); an unreachable worker or a 5xx is a
:class:`~worldmill.runtime.errors.TransientError` (the job is retried with backoff). A worker that
forgot a job (restarted) gets it again under the same id, a bounded number of times.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from worldmill.contracts.backends import builtin_backends
from worldmill.contracts.cards import ModelCard
from worldmill.contracts.generation import ExecutionSignature
from worldmill.gpu_runner.backends.base import (
    BackendConfig,
    ChunkRequest,
    Frames,
    GuardrailBlocked,
    StepCallback,
    VideoProgress,
    VideoRequest,
)
from worldmill.runtime.digest import sha256_file
from worldmill.runtime.errors import InvalidInputError, PermanentError, TransientError

__all__ = [
    "NVIDIA_CONTROL_KEYS",
    "NativeTransferBackend",
    "normalised_weights",
    "nvidia_chunks",
    "nvidia_spec",
    "resolution_tier",
]

#: ``cosmos_transfer2.config.CONTROL_KEYS``, in NVIDIA's order.
NVIDIA_CONTROL_KEYS = ("edge", "vis", "depth", "seg")
#: The preset field of each control block that has one (``EdgeConfig``, ``BlurConfig``).
PRESET_FIELDS = {"edge": "preset_edge_threshold", "vis": "preset_blur_strength"}
PRESETS = frozenset({"very_low", "low", "medium", "high", "very_high"})
#: ``InferenceArguments.num_conditional_frames: Literal[0, 1, 2]`` (pixel frames of the previous chunk).
NVIDIA_CONDITIONAL_FRAMES = frozenset({0, 1, 2})
#: ``Guidance = Annotated[int, Field(ge=0, le=7)]``.
NVIDIA_GUIDANCE = range(0, 8)
#: The distilled edge checkpoint: 4 steps, strictly one 93-frame chunk (NVIDIA's docs/inference.md).
DISTILLED_STEPS = 4
DISTILLED_FRAMES = 93
#: Names of the files uploaded with a job (the spec's paths are relative to the job's folder).
INPUT_FILE = "input.mp4"
SAMPLE_NAME = "output"


def control_file(kind: str) -> str:
    """The uploaded file name of a control video."""
    return f"control_{kind}.mp4"


def normalised_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Per-control weights scaled as NVIDIA scales them: divided by ``max(1, sum)``, never scaled up.

    ``vid2vid_model_control_vace.resize_control_weight`` caps the sum over the controls at 1.0
    (``scale = 1 / clamp_min(sum, 1)``); it does so only on its masked path, so the spec carries
    weights already capped: the same on every path, and a no-op for NVIDIA's own cap.
    """
    total = sum(weights.values())
    scale = 1.0 / max(1.0, total)
    return {kind: float(weight) * scale for kind, weight in weights.items()}


def nvidia_chunks(frames: int, chunk: int, overlap: int) -> int:
    """Chunks NVIDIA's ``ControlVideo2WorldInference._get_num_chunks`` makes of ``frames`` input frames."""
    if chunk == 1 or frames <= chunk:
        return 1
    step = chunk - overlap
    generated = frames - chunk
    return 1 + generated // step + (1 if generated % step else 0)


def resolution_tier(width: int, height: int) -> str:
    """NVIDIA's ``resolution`` (a key of ``VIDEO_RES_SIZE_INFO``) for an output of ``width`` × ``height``.

    NVIDIA generates at the tier (aspect ratio snapped to 16:9, 4:3, 1:1, 3:4 or 9:16) and, with
    ``keep_input_resolution``, resizes back to the input's size: ``"480"`` when the short side is
    at most 480, else ``"720"``.
    """
    return "480" if min(width, height) <= 480 else "720"


def _check_request(request: VideoRequest, *, distilled: bool) -> None:
    """Refuse what NVIDIA's ``InferenceArguments`` cannot say, naming the field."""
    if request.input_video is None:
        raise InvalidInputError("input_video", "NVIDIA's Transfer2.5 needs the input video (video_path)")
    if len(request.input_video) != request.frames:
        raise InvalidInputError(
            "input_video", f"has {len(request.input_video)} frames; the whole-video call needs all {request.frames}"
        )
    if not request.controls:
        raise InvalidInputError("controls", "Transfer2.5 needs at least one control (edge, vis, depth, seg)")
    unknown = sorted(set(request.controls) - set(NVIDIA_CONTROL_KEYS))
    if unknown:
        raise InvalidInputError("controls", f"NVIDIA's Transfer2.5 has no control {', '.join(unknown)}")
    if request.overlap not in NVIDIA_CONDITIONAL_FRAMES:
        raise InvalidInputError(
            "overlap",
            f"{request.overlap} frames: NVIDIA's num_conditional_frames is 0, 1 or 2 pixel frames "
            "of the previous chunk",
        )
    if request.guidance != int(request.guidance) or int(request.guidance) not in NVIDIA_GUIDANCE:
        raise InvalidInputError(
            "guidance", f"{request.guidance:g}: NVIDIA's Transfer2.5 guidance is an integer from 0 to 7"
        )
    made = nvidia_chunks(request.frames, request.chunk_frames, request.overlap)
    if made != request.chunks:
        raise InvalidInputError(
            "chunks",
            f"NVIDIA chunks {request.frames} frames into {made} chunk(s) of {request.chunk_frames} "
            f"(overlap {request.overlap}); the plan has {request.chunks}",
        )
    if distilled:
        if request.steps != DISTILLED_STEPS:
            raise InvalidInputError("steps", f"{request.steps}: the distilled checkpoint runs {DISTILLED_STEPS} steps")
        if set(request.controls) != {"edge"}:
            raise InvalidInputError("controls", "the distilled Transfer2.5 checkpoint is edge only")
        if request.frames > DISTILLED_FRAMES or request.chunk_frames != DISTILLED_FRAMES:
            raise InvalidInputError(
                "frames", f"the distilled checkpoint makes strictly one {DISTILLED_FRAMES}-frame chunk"
            )


def nvidia_spec(
    request: VideoRequest,
    *,
    name: str = SAMPLE_NAME,
    video_path: str = INPUT_FILE,
    control_paths: Mapping[str, str] | None = None,
    presets: Mapping[str, str] | None = None,
    distilled: bool = False,
) -> dict[str, Any]:
    """One NVIDIA per-sample inference spec (``InferenceArguments``, ``extra="forbid"``) for ``request``.

    The input video holds exactly ``request.frames`` frames (``max_frames``), so NVIDIA's output has
    the same length, the input's fps and (``keep_input_resolution``) its size. Each control goes
    with its video (``control_path``, default ``control_<type>.mp4``) and its weight, the weights
    scaled as NVIDIA does (:func:`normalised_weights`); ``presets`` (edge threshold, blur strength)
    are passed for the controls that have one. Our overlap is NVIDIA's ``num_conditional_frames``:
    both count pixel frames of the previous chunk. ``negative_prompt`` None leaves NVIDIA's
    default negative prompt. ``distilled`` (the edge/distilled checkpoint): 4 steps, edge only,
    one 93-frame chunk. Anything NVIDIA's spec cannot say is an :class:`InvalidInputError` naming it.
    """
    _check_request(request, distilled=distilled)
    paths = dict(control_paths or {})
    weights = normalised_weights({k: request.control_weights.get(k, 1.0) for k in request.controls})
    spec: dict[str, Any] = {
        "name": name,
        "prompt": request.prompt,
        "video_path": video_path,
        "max_frames": request.frames,
        "seed": request.seed,
        "guidance": int(request.guidance),
        "num_steps": request.steps,
        "resolution": resolution_tier(request.width, request.height),
        "num_video_frames_per_chunk": request.chunk_frames,
        "num_conditional_frames": request.overlap,
        "keep_input_resolution": True,
        "show_control_condition": False,
        "show_input": False,
    }
    if request.negative_prompt is not None:
        spec["negative_prompt"] = request.negative_prompt
    for kind in NVIDIA_CONTROL_KEYS:
        if kind not in request.controls:
            continue
        block: dict[str, Any] = {"control_path": paths.get(kind, control_file(kind)), "control_weight": weights[kind]}
        preset = (presets or {}).get(kind)
        if preset is not None and kind in PRESET_FIELDS:
            if preset not in PRESETS:
                raise InvalidInputError(f"controls.{kind}.preset", f"{preset!r} is not one of {sorted(PRESETS)}")
            block[PRESET_FIELDS[kind]] = preset
        spec[kind] = block
    return spec


def job_id_for(spec: Mapping[str, Any], files: Mapping[str, str]) -> str:
    """A job id from the spec and the uploaded files' sha256: the same request is the same job."""
    digest = hashlib.sha256(json.dumps({"spec": spec, "files": dict(files)}, sort_keys=True).encode()).hexdigest()
    return f"wm-{digest[:32]}"


def _refusal(response: httpx.Response, what: str) -> Exception:
    """The error for a worker answer that is not a success (4xx permanent naming the field, 5xx transient)."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    field = "native-transfer"
    message = response.text[:500]
    if isinstance(error, dict):
        field = str(error.get("field") or field)
        message = str(error.get("message") or message)
    if 400 <= response.status_code < 500:
        return InvalidInputError(
            field, f"the native Transfer worker refused {what} ({response.status_code}): {message}"
        )
    return TransientError(f"the native Transfer worker failed {what} ({response.status_code}): {message}")


@dataclass(frozen=True)
class _Submission:
    """One job as sent to the worker: its id, NVIDIA's spec, the files and their sha256."""

    job_id: str
    spec: dict[str, Any]
    files: Mapping[str, Path]
    hashes: Mapping[str, str]


class NativeTransferBackend:
    """Whole Transfer videos on NVIDIA's inference in a worker at ``config.native_transfer_url``."""

    name = "native-transfer"
    #: Seconds between status polls.
    poll_interval_s = 0.5
    #: How long the worker may be unreachable (or answer 5xx) during a job before it is a TransientError.
    unreachable_grace_s = 30.0
    #: How often a job the worker forgot (a restarted worker) is submitted again.
    resubmits = 2
    #: Video encoding quality of the uploads (H.264 CRF; low = nearly lossless).
    upload_crf = 12

    def __init__(self, signature: ExecutionSignature, card: ModelCard, config: BackendConfig) -> None:
        if not config.native_transfer_url:
            raise InvalidInputError(
                "native_transfer_url",
                "the native-transfer backend needs the worker's URL (WM_GPU_RUNNER_NATIVE_TRANSFER_URL)",
            )
        self.signature = signature
        self.card = card
        self.config = config
        self.url = config.native_transfer_url.rstrip("/")
        self.capabilities = builtin_backends()[self.name]
        self._client: httpx.Client | None = None
        self._info: dict[str, Any] = {}

    # -- lifecycle --------------------------------------------------------------------------------

    def setup(self) -> None:
        """Reach the worker: ``/v1/health`` must say ready; ``/v1/info`` is kept for provenance."""
        client = httpx.Client(base_url=self.url, timeout=httpx.Timeout(60.0, connect=5.0))
        try:
            health = self._get(client, "/v1/health", "the health check")
            if health.get("status") != "ok":
                raise TransientError(f"the native Transfer worker at {self.url} is not ready: {health}")
            self._info = self._get(client, "/v1/info", "the info request")
        except BaseException:
            client.close()
            raise
        self._client = client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None

    def memory_bytes(self) -> int:
        return 0  # the weights live in the worker's process, not the runner's

    def memory_parts(self) -> dict[str, int]:
        return {}

    def describe(self) -> dict[str, str]:
        info = self._info
        return {
            "backend": self.name,
            "model": self.card.id,
            "checkpoint": str(info.get("checkpoint", "")),
            "dtype": "bfloat16",
            "device": f"remote:{self.url}",
            "safety_checker": "cosmos guardrail in the worker" if info.get("guardrails") else "off in the worker",
            "worker_url": self.url,
            "nvidia_repo": str(info.get("nvidia_repo", "")),
            "nvidia_commit": str(info.get("nvidia_commit", "")),
            "worker_model": str(info.get("model", "")),
            "worker_gpus": str(info.get("gpus", "")),
        }

    def screen_prompt(self, prompt: str) -> None:
        """NVIDIA's worker runs its guardrail itself (prompt and video); a block comes back as ``blocked``."""

    def screen_video(self, frames: Frames) -> Frames:
        return frames

    def generate(self, request: ChunkRequest, on_step: StepCallback) -> Frames:  # noqa: ARG002 - the protocol
        raise PermanentError(
            "the native-transfer backend makes whole videos (NVIDIA chunks them itself): plans need chunking=pipeline"
        )

    # -- one video --------------------------------------------------------------------------------

    def generate_video(self, request: VideoRequest, on_progress: VideoProgress) -> Frames:
        """Upload the input and controls, submit NVIDIA's spec, poll (progress, cancel), download, decode."""
        client = self._loaded()
        with tempfile.TemporaryDirectory(prefix="wm-native-") as folder:
            tmp = Path(folder)
            files = self._encode_inputs(request, tmp)
            spec = nvidia_spec(request, distilled=bool(self._info.get("distilled")))
            hashes = {name: sha256_file(path)[0] for name, path in files.items()}
            job_id = job_id_for(spec, hashes)
            submission = _Submission(job_id, spec, files, hashes)
            self._submit(client, submission)
            try:
                self._wait(client, submission, request, on_progress)
            except BaseException:
                self._cancel(client, job_id)
                raise
            video = tmp / "video.mp4"
            self._download(client, job_id, video)
            frames = _decode(video, request)
        on_progress(request.chunks - 1, request.chunks, request.steps, request.steps)
        return frames

    def _loaded(self) -> httpx.Client:
        if self._client is None:
            raise PermanentError("the native-transfer backend is not set up")
        return self._client

    def _encode_inputs(self, request: VideoRequest, tmp: Path) -> dict[str, Path]:
        from worldmill.gpu_runner.video import encode_mp4  # noqa: PLC0415 - PyAV, on use

        if request.input_video is None:
            raise InvalidInputError("input_video", "NVIDIA's Transfer2.5 needs the input video (video_path)")
        files = {
            INPUT_FILE: encode_mp4(request.input_video, tmp / INPUT_FILE, fps=request.fps, crf=self.upload_crf).path
        }
        for kind, video in request.controls.items():
            name = control_file(kind)
            files[name] = encode_mp4(video, tmp / name, fps=request.fps, crf=self.upload_crf).path
        return files

    def _submit(self, client: httpx.Client, job: _Submission) -> None:
        """Upload the files, then POST the job (both idempotent: the same id and bytes again are no new work)."""
        job_id, spec, hashes = job.job_id, job.spec, job.hashes
        for name, path in job.files.items():
            self._send(
                client,
                "PUT",
                f"/v1/jobs/{job_id}/files/{name}",
                f"the upload of {name}",
                content=path.read_bytes(),
                headers={"Content-Type": "video/mp4", "X-Content-SHA256": hashes[name]},
            )
        self._send(client, "POST", "/v1/jobs", "the job", json={"job_id": job_id, "spec": spec, "files": dict(hashes)})

    def _resubmit(self, client: httpx.Client, job: _Submission, failing_since: float | None) -> float | None:
        """Send a lost job again; None when sent. A worker still restarting refuses connections: retried on
        the next poll within the same grace as polling (the time it has been failing is returned)."""
        try:
            self._submit(client, job)
        except TransientError:
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > self.unreachable_grace_s:
                raise
            time.sleep(self.poll_interval_s)
            return failing_since
        return None

    def _wait(self, client: httpx.Client, job: _Submission, request: VideoRequest, on_progress: VideoProgress) -> None:
        """Poll until the job succeeded; progress (and so cancel) on every poll; a forgotten job is sent again."""
        job_id = job.job_id
        resubmitted = 0
        failing_since: float | None = None
        resubmit_failing: float | None = None
        while True:
            try:
                response = client.get(f"/v1/jobs/{job_id}")
            except httpx.TransportError as exc:
                response = None
                problem = f"unreachable ({type(exc).__name__}: {exc})"
            if response is not None and response.status_code >= 500:
                problem = f"answered {response.status_code}"
                response = None
            if response is None:
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > self.unreachable_grace_s:
                    raise TransientError(
                        f"the native Transfer worker at {self.url} {problem} for over {self.unreachable_grace_s:g} s"
                    )
                on_progress(0, request.chunks, 0, request.steps)  # lets a cancel through while we wait
                time.sleep(self.poll_interval_s)
                continue
            failing_since = None
            lost = response.status_code == 404  # a restarted worker forgot it
            if response.status_code == 200 and response.json().get("state") == "canceled":
                lost = True  # canceled by the worker itself (shutting down): we did not ask
            if lost:
                if resubmitted >= self.resubmits:
                    raise TransientError(f"the native Transfer worker lost job {job_id} {resubmitted + 1} times")
                resubmit_failing = self._resubmit(client, job, resubmit_failing)
                if resubmit_failing is None:
                    resubmitted += 1
                continue
            if response.status_code >= 400:
                raise _refusal(response, f"the status of job {job_id}")
            status = response.json()
            state = status.get("state")
            chunks = int(status.get("chunks") or request.chunks)
            steps = int(status.get("steps") or request.steps)
            chunk = min(int(status.get("chunk") or 0), chunks - 1)
            on_progress(chunk, chunks, min(int(status.get("step") or 0), steps), steps)
            if state == "succeeded":
                return
            if state in ("failed", "blocked"):
                raise self._failure(job_id, status)
            time.sleep(self.poll_interval_s)

    def _failure(self, job_id: str, status: Mapping[str, Any]) -> Exception:
        error = status.get("error") or {}
        message = str(error.get("message") or "no reason given")
        if status.get("state") == "blocked":
            return GuardrailBlocked("cosmos (native worker)", str(error.get("what") or "the prompt or video"), message)
        if error.get("kind") == "invalid":
            return InvalidInputError(str(error.get("field") or "spec"), f"NVIDIA's inference refused it: {message}")
        return TransientError(f"NVIDIA's inference failed job {job_id}: {message}")

    def _cancel(self, client: httpx.Client, job_id: str) -> None:
        with contextlib.suppress(httpx.HTTPError):  # best effort: the worker may be gone already
            client.delete(f"/v1/jobs/{job_id}", timeout=5.0)

    def _download(self, client: httpx.Client, job_id: str, path: Path) -> None:
        try:
            with client.stream("GET", f"/v1/jobs/{job_id}/video") as response:
                if response.status_code != 200:
                    response.read()
                    raise _refusal(response, f"the video of job {job_id}")
                with path.open("wb") as f:
                    for block in response.iter_bytes():
                        f.write(block)
        except httpx.TransportError as exc:
            raise TransientError(f"the native Transfer worker at {self.url} is unreachable: {exc}") from exc

    def _get(self, client: httpx.Client, path: str, what: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._send(client, "GET", path, what).json()
        return answer

    def _send(self, client: httpx.Client, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            response = client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise TransientError(f"the native Transfer worker at {self.url} is unreachable ({what}): {exc}") from exc
        if response.status_code >= 400:
            raise _refusal(response, what)
        return response


def _decode(path: Path, request: VideoRequest) -> Frames:
    """Every frame of the worker's video: exactly the request's frames, size and fps, else a refusal saying why."""
    import av  # noqa: PLC0415 - the video extra, loaded on use

    frames: list[Frames] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise PermanentError("the native Transfer worker's video has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            for frame in container.decode(stream):
                frames.append(np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8))
    except av.error.FFmpegError as exc:
        raise PermanentError(f"the native Transfer worker's video is not readable: {exc}") from exc
    if len(frames) != request.frames:
        raise PermanentError(
            f"the native Transfer worker returned {len(frames)} frames; the plan needs {request.frames}"
        )
    height, width = frames[0].shape[:2]
    if (width, height) != (request.width, request.height):
        raise PermanentError(
            f"the native Transfer worker returned {width}x{height}; the plan needs {request.width}x{request.height}"
        )
    if rate is None or abs(float(Fraction(rate)) - request.fps) > 0.01:
        raise PermanentError(f"the native Transfer worker returned {rate} fps; the plan needs {request.fps:g}")
    return np.stack(frames)
