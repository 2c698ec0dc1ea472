"""What the served-engine backends share: an HTTP client, error mapping, health, identity, video decoding.

A served engine (NVIDIA NIM for Cosmos, vLLM-Omni) runs the model in another process, often on
another machine; the runner sends one request per chunk and gets a video file back. This module
keeps the runner's rules for such engines in one place:

* **HTTP** (:class:`ServedClient`, httpx, synchronous: backends run in the runner's model thread):
  connect and read timeouts; connection errors and 502/503/504/408/429 answers are retried with
  exponential backoff and jitter, then raise :class:`ServedUnavailable` (transient: the job is
  retried). A read timeout of a long generation is not retried here (it would start the same
  generation again on a busy server): it is transient at once. 400/422 raise
  :class:`ServedRejected` (permanent) naming the field the server names (FastAPI's
  ``detail[].loc``, OpenAI's ``error.param``).
* **Start** (:meth:`ServedClient.wait_ready`): the health endpoint answers 503 (or nothing) while
  the engine loads; the wait is bounded and ends in a :class:`ServedUnavailable` saying how long
  it waited and what the server last said.
* **Identity** (:func:`check_identity`): the checkpoint the server says it serves must be the
  card's model, else :class:`CheckpointError` naming both.
* **Output** (:func:`decode_video`): the returned bytes (NIM: VP9 in MP4; vLLM-Omni: H.264 MP4)
  decode with PyAV into uint8 RGB frames at the plan's size (resized when the server's size has
  the same aspect within 3 %), and the frame count and frame rate must be the ones asked for:
  otherwise :class:`ServedOutputRefused` says what came back and what the plan needs. The runner
  then encodes its own exact H.264 deliverable, as for every backend.
"""

from __future__ import annotations

import base64
import io
import random
import re
import time
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any

import httpx
import numpy as np

from worldmill.gpu_runner.backends.base import CheckpointError, Frames
from worldmill.runtime.errors import InvalidInputError, PermanentError, TransientError
from worldmill.runtime.logs import get_logger
from worldmill.runtime.versions import package_version

__all__ = [
    "ServedClient",
    "ServedOutputRefused",
    "ServedRejected",
    "ServedUnavailable",
    "check_identity",
    "data_uri",
    "decode_video",
    "encode_mp4_bytes",
    "encode_png",
]

log = get_logger(__name__)

#: Statuses that mean "not now" rather than "never": retried, then transient.
RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
#: Upper bound of one backoff sleep.
BACKOFF_MAX_S = 30.0
#: How far the server's aspect ratio may be from the plan's before a resize is refused.
ASPECT_TOLERANCE = 0.03
#: How close the returned frame rate must be to the requested one.
FPS_TOLERANCE = 0.01


class ServedUnavailable(TransientError):  # noqa: N818 - reads as a state, like VlmUnavailable
    """The served engine could not be reached, was not ready, timed out or kept answering 5xx: retry later."""


class ServedRejected(InvalidInputError):  # noqa: N818
    """The served engine refused the request as invalid (400/422); ``field`` is the field it named."""


class ServedOutputRefused(PermanentError):  # noqa: N818
    """What the served engine returned cannot make the plan's exact frames/fps/size: the reason says why."""


def _problem(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _field_and_message(body: Any) -> tuple[str | None, str]:
    """The field and message of an error body: FastAPI/pydantic ``detail`` or OpenAI ``error``."""
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            first = detail[0]
            loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
            return (".".join(loc) or None), str(first.get("msg", detail))
        if isinstance(detail, str):
            return None, detail
        error = body.get("error")
        if isinstance(error, dict):
            param = error.get("param")
            return (str(param) if param else None), str(error.get("message", error))
        if isinstance(error, str):
            return None, error
        if "message" in body:
            return None, str(body["message"])
    return None, str(body)[:500]


def rejection(engine: str, response: httpx.Response) -> ServedRejected:
    """A 4xx answer as a permanent error naming the field the server names (else ``<engine>.request``)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:500]
    field, message = _field_and_message(body)
    field = field or _field_from_text(message) or "request"
    return ServedRejected(field, f"the {engine} server refused the request ({response.status_code}): {message}")


def _field_from_text(message: str) -> str | None:
    match = re.search(r"(?:field|parameter|param)\s+['\"`]?([A-Za-z_][\w.]*)", message)
    return match.group(1) if match else None


class ServedClient:
    """One served engine's HTTP client: timeouts, bounded retries with backoff, errors mapped to ours."""

    def __init__(
        self,
        engine: str,
        base_url: str,
        *,
        timeout_s: float,
        connect_timeout_s: float = 10.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.5,
        concurrency: int = 1,
        api_key: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url:
            raise InvalidInputError(f"{engine}_base_url", "must be set to the served engine's URL")
        self.engine = engine
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max(1, concurrency) + 2),
        )

    def _backoff(self, attempt: int) -> float:
        ceiling = min(BACKOFF_MAX_S, self.backoff_base_s * 2.0**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def request(
        self, method: str, path: str, *, retry_timeouts: bool = True, timeout: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send; a 2xx/3xx response, else the mapped error. ``retry_timeouts=False`` for long generations."""
        attempts = self.max_retries + 1
        problem = "no attempt"
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        for attempt in range(attempts):
            try:
                response = self._http.request(method, path, **kwargs, **extra)
            except httpx.TimeoutException as exc:
                problem = _problem(exc)
                if not retry_timeouts:
                    raise ServedUnavailable(
                        f"the {self.engine} server at {self.base_url} timed out on {method} {path} ({problem})"
                    ) from exc
            except httpx.TransportError as exc:  # refused, reset, DNS: nothing was processed
                problem = _problem(exc)
            else:
                if response.status_code < 400:
                    return response
                if response.status_code in (400, 422):
                    raise rejection(self.engine, response)
                if response.status_code < 500 and response.status_code not in RETRY_STATUSES:
                    _, message = _field_and_message(_json_or_text(response))
                    raise PermanentError(
                        f"the {self.engine} server answered {response.status_code} on {method} {path}: {message}"
                    )
                problem = f"HTTP {response.status_code}: {_field_and_message(_json_or_text(response))[1]}"
            if attempt + 1 < attempts:
                delay = self._backoff(attempt)
                log.warning("served.retry", engine=self.engine, path=path, attempt=attempt + 1, problem=problem)
                self._sleep(delay)
        raise ServedUnavailable(
            f"the {self.engine} server at {self.base_url} failed {attempts} time(s) on {method} {path}; last: {problem}"
        )

    def get_json(self, path: str) -> Any:
        """GET ``path`` and decode its JSON body."""
        response = self.request("GET", path)
        try:
            return response.json()
        except ValueError as exc:
            raise ServedUnavailable(f"the {self.engine} server answered {path} with non-JSON") from exc

    def wait_ready(self, path: str, *, ready_timeout_s: float, poll_s: float = 2.0) -> float:
        """Poll ``path`` until it answers 2xx (503 or no answer: still loading); the seconds waited.

        :class:`ServedUnavailable` when it is not ready within ``ready_timeout_s``; a 404 (a wrong
        URL, not a loading server) is permanent at once.
        """
        started = time.monotonic()
        last = "no answer"
        while True:
            try:
                response = self._http.get(path)
            except httpx.TransportError as exc:
                last = _problem(exc)
            else:
                if response.status_code < 300:
                    return time.monotonic() - started
                if response.status_code == 404:
                    raise PermanentError(
                        f"the {self.engine} server at {self.base_url} has no {path} (404): is the URL right?"
                    )
                last = f"HTTP {response.status_code}"
            waited = time.monotonic() - started
            if waited + poll_s > ready_timeout_s:
                raise ServedUnavailable(
                    f"the {self.engine} server at {self.base_url} was not ready after {waited:.1f} s "
                    f"(bound {ready_timeout_s:g} s; {path} last said: {last})"
                )
            self._sleep(poll_s)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:500]


def _normalize(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def check_identity(engine: str, base_url: str, served: Iterable[str], expected: Iterable[str], model: str) -> str:
    """The served identity that names the card's model; :class:`CheckpointError` naming both when none does.

    ``served``: what the server says it serves (checkpoint, model ids); ``expected``: the card's
    hub id, id and the signature's checkpoint. A match is one expected name (without its
    organisation) contained in a served name, ignoring case and punctuation.
    """
    names = [s for s in served if s]
    wanted = [e for e in expected if e]
    keys = {_normalize(w.rsplit("/", 1)[-1]) for w in wanted} - {""}
    for name in names:
        if any(key in _normalize(name) for key in keys):
            return name
    raise CheckpointError(
        f"the {engine} server at {base_url} serves {', '.join(repr(n) for n in names) or 'no named model'}, "
        f"not {model} ({', '.join(sorted(set(wanted)))}) that the job's signature names: point the runner's "
        f"{engine} URL at a server of that model"
    )


def encode_png(frame: Frames) -> bytes:
    """One RGB frame as PNG bytes."""
    from PIL import Image  # noqa: PLC0415 - Pillow comes with the video extra

    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(out, format="PNG")
    return out.getvalue()


def encode_mp4_bytes(frames: Frames, fps: float) -> bytes:
    """Frames as a small lossless-looking H.264 MP4 (BT.709; conditioning clips sent to a server)."""
    from worldmill.runtime.mp4 import write_mp4  # noqa: PLC0415 - PyAV, on use

    height, width = frames.shape[1:3]
    if width % 2 or height % 2:
        raise InvalidInputError("condition", f"{width}x{height} frames cannot be sent as yuv420p H.264 (odd size)")
    out = io.BytesIO()
    write_mp4(frames, out, rate=Fraction(fps).limit_denominator(1001), crf=12, preset="fast", faststart=False)
    return out.getvalue()


def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,…``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def decode_video(data: bytes, *, engine: str, frames: int, fps: float, width: int, height: int) -> Frames:
    """The returned video as ``(frames, height, width, 3)`` uint8 RGB, or the reason it cannot be used.

    Undecodable bytes are transient (a cut transfer); a wrong frame count, frame rate or aspect
    ratio is :class:`ServedOutputRefused` (the same request would come back the same).
    """
    import av  # noqa: PLC0415

    decoded: list[Frames] = []
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise ServedOutputRefused(f"the {engine} server returned a file without a video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            got_w, got_h = stream.codec_context.width, stream.codec_context.height
            resize = (got_w, got_h) != (width, height)
            if resize and got_w and got_h and abs((got_w / got_h) / (width / height) - 1) > ASPECT_TOLERANCE:
                raise ServedOutputRefused(
                    f"the {engine} server returned {got_w}x{got_h} frames; the plan needs {width}x{height} "
                    "and the aspect ratios differ: refusing to stretch"
                )
            for frame in container.decode(video=0):
                if resize:
                    array = frame.to_ndarray(format="rgb24", width=width, height=height)
                else:
                    array = frame.to_ndarray(format="rgb24")
                decoded.append(np.asarray(array, dtype=np.uint8))
    except av.error.FFmpegError as exc:
        raise ServedUnavailable(f"the {engine} server returned a video PyAV cannot decode ({exc})") from exc
    got_fps = float(rate) if rate else 0.0
    if len(decoded) != frames or abs(got_fps - fps) > FPS_TOLERANCE:
        raise ServedOutputRefused(
            f"the {engine} server returned {len(decoded)} frames at {got_fps:g} fps; the plan's chunk needs exactly "
            f"{frames} frames at {fps:g} fps: refusing (the runner cannot make the plan's exact frames/fps from it)"
        )
    return np.stack(decoded)


class ServedBackend:
    """The parts of a served-engine backend that do not depend on the engine's API.

    Subclasses set ``name``, ``capabilities``, ``health_path`` and implement :meth:`_identities`
    (what the server says it serves) and :meth:`generate`. One request per chunk: the runner
    chains chunks (``generate_video`` is refused). Memory is the engine's, not the runner's: 0.
    The engine runs its own guardrail (configured on the server), so the runner's screens pass.
    """

    name: str
    capabilities: Any
    health_path: str
    url_setting: str

    def __init__(self, signature: Any, card: Any, config: Any) -> None:
        self.signature = signature
        self.card = card
        self.config = config
        self._client: ServedClient | None = None
        self.served_identity: str | None = None
        self.ready_seconds: float | None = None

    def _base_url(self) -> str | None:
        raise NotImplementedError

    def _identities(self, client: ServedClient) -> list[str]:
        raise NotImplementedError

    def client(self) -> ServedClient:
        """The HTTP client (after ``setup()``)."""
        if self._client is None:
            raise PermanentError(f"the {self.name} backend is not set up")
        return self._client

    def setup(self) -> None:
        """Wait for the engine's health (bounded), read what it serves and check it is the card's model."""
        base_url = self._base_url()
        if not base_url:
            raise InvalidInputError(
                self.url_setting, f"the {self.name} backend needs the served engine's URL (set {self.url_setting})"
            )
        client = ServedClient(
            self.name,
            base_url,
            timeout_s=self.config.served_timeout_s,
            concurrency=self.config.served_concurrency,
            sleep=time.sleep,
            backoff_base_s=self.config.served_backoff_s,
        )
        try:
            self.ready_seconds = client.wait_ready(
                self.health_path, ready_timeout_s=self.config.served_ready_timeout_s, poll_s=self.config.served_poll_s
            )
            served = self._identities(client)
            expected = [self.card.hub_id or "", self.card.id, self.signature.checkpoint]
            self.served_identity = check_identity(self.name, client.base_url, served, expected, self.card.id)
        except BaseException:
            client.close()
            raise
        self._client = client
        log.info("served.ready", engine=self.name, url=client.base_url, serves=self.served_identity)

    def generate_video(self, request: Any, on_progress: Any) -> Frames:  # noqa: ARG002 - the protocol's signature
        """Not offered: a served engine makes one chunk per request and the runner chains them."""
        raise PermanentError(f"the {self.name} backend generates one chunk per request; the runner chains chunks")

    def screen_prompt(self, prompt: str) -> None:
        """The engine screens prompts itself (its guardrail is configured on the server)."""

    def screen_video(self, frames: Frames) -> Frames:
        """The engine screens its output itself."""
        return frames

    def close(self) -> None:
        """Close the connection pool; ``setup()`` may run again."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def memory_bytes(self) -> int:
        """Nothing of the runner's memory: the weights live in the engine."""
        return 0

    def memory_parts(self) -> dict[str, int]:
        """Nothing shared with in-process backends."""
        return {}

    def describe(self) -> dict[str, str]:
        """Provenance: the served checkpoint as the engine named it, and where it ran."""
        out = {
            "backend": self.name,
            "model": self.card.id,
            "checkpoint": self.served_identity or self.signature.checkpoint,
            "served_checkpoint": self.served_identity or "",
            "served_url": self._base_url() or "",
            "device": "cpu",
            "safety_checker": f"served by {self.name} (the engine's own guardrail)",
            "version.httpx": httpx.__version__,
        }
        if av_version := package_version("av", default=None):
            out["version.av"] = av_version
        return out
