"""A small async client for a vision-language model behind vLLM's OpenAI-compatible API.

It talks plain HTTP (``POST {base_url}/chat/completions``) with httpx, so tests mock it with respx
or ``httpx.MockTransport``. Its main use is Cosmos-Reason1 as a **video critic**:

* ``kind="anomaly"``: the model is asked whether the video holds anomalies or artifacts and answers
  ``<answer>Yes</answer>`` or ``<answer>No</answer>``; the score is the share of trials answering
  "No" (1.0 = every trial found the video clean).
* ``kind="plausibility"``: the model rates physical plausibility from 1 to 5 as ``<answer>N</answer>``;
  the score is the mean over the trials.

Several trials come from one request with ``n``. The video goes before the text in the user
message; frame sampling is set through ``mm_processor_kwargs`` (``fps``, ``do_sample_frames``).

Errors: 5xx answers, connection errors and timeouts are retried with exponential backoff and
jitter, then raise :class:`VlmUnavailable` (transient). A 400 about the context length raises
:class:`ContextTooLong` at once; any other 4xx raises :class:`VlmError` (permanent). Answers none
of whose trials hold a valid ``<answer>`` raise :class:`MalformedCritique`, which keeps the texts,
so a verdict can store what the model said.
"""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass
from typing import Any

import httpx

from worldmill.contracts.qa import CriticKind
from worldmill.runtime.errors import InvalidInputError, PermanentError, TransientError
from worldmill.runtime.logs import get_logger

log = get_logger(__name__)

#: Upper bound of one backoff sleep, whatever the attempt number.
BACKOFF_MAX_S = 30.0
#: 4xx statuses that mean "try again later" rather than "this request is wrong".
_RETRY_4XX = frozenset({408, 429})

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_SCORE_RE = re.compile(r"([1-5])(?:\.0+)?")
_CONTEXT_HINTS = ("maximum context length", "context length", "maximum model length", "too long")
_MAX_TOKENS_RE = re.compile(r"(?:maximum context length is|maximum model length(?: of| is)?)\s*(\d+)", re.IGNORECASE)
_REQUESTED_RE = re.compile(r"(?:you requested|your request has|request has|prompt \(length)\s*(\d+)", re.IGNORECASE)
#: Prompt tokens alone, in each wording vLLM has used ("(4700 in the messages", "decoder prompt (length
#: 5123)", "your request has 3900 input tokens").
_PROMPT_TOKENS_RE = re.compile(
    r"(?:(\d+) in the messages|prompt \(length (\d+)\)|request has (\d+) input tokens)", re.IGNORECASE
)

ANOMALY_SYSTEM_PROMPT = (
    "You review short generated videos for quality control. Watch the whole clip and look for "
    "anything a real camera could not have recorded: objects that appear, vanish or change shape "
    "without cause, motion that breaks physics, bodies or hands that deform, flicker, smearing, "
    "texture crawling or other rendering artifacts. First reason step by step inside "
    "<think></think>, then give only Yes or No inside <answer></answer>."
)
ANOMALY_QUESTION = (
    "Does the video contain any anomalies or artifacts? Answer <answer>Yes</answer> if it does, "
    "<answer>No</answer> if it does not."
)
PLAUSIBILITY_SYSTEM_PROMPT = (
    "You judge how physically believable generated videos are. Consider whether objects keep "
    "their shape, size and identity; whether movement follows gravity, momentum and friction; "
    "whether contacts and collisions between things look real; and whether the scene stays "
    "consistent from frame to frame. First reason step by step inside <think></think>, then give "
    "a single whole number from 1 to 5 inside <answer></answer>."
)
PLAUSIBILITY_QUESTION = (
    "Rate the physical plausibility of this video from 1 (clearly impossible) to 5 (fully "
    "believable). Put only the number in <answer></answer>."
)


@dataclass(frozen=True)
class VlmConfig:
    """Where the VLM server is and how to call it. Backoff is exponential with jitter."""

    base_url: str
    model: str = "nvidia/Cosmos-Reason1-7B"
    api_key: str | None = None
    timeout_s: float = 120
    connect_timeout_s: float = 5
    max_retries: int = 3
    backoff_base_s: float = 0.5
    concurrency: int = 4
    fps: float = 4
    trials: int = 4
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 4096

    def __post_init__(self) -> None:
        if not self.base_url:
            raise InvalidInputError("base_url", "must not be empty")
        if self.max_retries < 0:
            raise InvalidInputError("max_retries", "must be 0 or more")
        if self.concurrency < 1:
            raise InvalidInputError("concurrency", "must be at least 1")
        if self.trials < 1:
            raise InvalidInputError("trials", "must be at least 1")
        if self.fps <= 0:
            raise InvalidInputError("fps", "must be positive")
        if self.backoff_base_s < 0:
            raise InvalidInputError("backoff_base_s", "must be 0 or more")


class VlmError(PermanentError):
    """The VLM server refused the request, or its answer cannot be used: do not retry."""


class VlmUnavailable(TransientError):  # noqa: N818 - the name reads as a state, like the others
    """The VLM server could not be reached or kept failing (5xx, timeouts): retry later."""


class ContextTooLong(VlmError):  # noqa: N818
    """The prompt plus ``max_tokens`` exceed the model's context; carries the server's numbers."""

    def __init__(
        self,
        message: str,
        *,
        max_context_tokens: int | None,
        requested_tokens: int | None,
        prompt_tokens: int | None = None,
    ) -> None:
        super().__init__(f"context too long: {message}")
        self.server_message = message
        self.max_context_tokens = max_context_tokens
        self.requested_tokens = requested_tokens
        #: The prompt's own tokens when the message states them apart from the completion.
        self.prompt_tokens = prompt_tokens

    @classmethod
    def from_message(cls, message: str) -> ContextTooLong:
        """Parse vLLM's message, e.g. "maximum context length is 4096 tokens. However, you requested 5000"."""
        max_match = _MAX_TOKENS_RE.search(message)
        req_match = _REQUESTED_RE.search(message)
        prompt_match = _PROMPT_TOKENS_RE.search(message)
        prompt_tokens = next((int(g) for g in prompt_match.groups() if g), None) if prompt_match else None
        return cls(
            message,
            max_context_tokens=int(max_match.group(1)) if max_match else None,
            requested_tokens=int(req_match.group(1)) if req_match else None,
            prompt_tokens=prompt_tokens,
        )


class MalformedCritique(VlmError):  # noqa: N818
    """No trial of the critic's answer held a valid ``<answer>``; carries what was asked and answered."""

    def __init__(
        self, message: str, *, kind: CriticKind, model: str, raw: tuple[str, ...], system_prompt: str, question: str
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.model = model
        self.raw = raw
        self.system_prompt = system_prompt
        self.question = question


def critic_prompts(kind: CriticKind) -> tuple[str, str]:
    """The system prompt and the question the critic is sent for ``kind``."""
    if kind == "anomaly":
        return ANOMALY_SYSTEM_PROMPT, ANOMALY_QUESTION
    if kind == "plausibility":
        return PLAUSIBILITY_SYSTEM_PROMPT, PLAUSIBILITY_QUESTION
    raise InvalidInputError("kind", "must be 'anomaly' or 'plausibility'")


@dataclass(frozen=True)
class CriticResult:
    """A critic's verdict over ``trials`` samples, with what it was asked.

    ``answers`` holds the valid parsed answers in order ("Yes"/"No", or "1".."5"), so
    ``len(answers) == valid_trials``; ``raw`` holds every choice's full text (thinking included).
    ``system_prompt`` and ``question`` are the texts sent; ``fps`` the frame sampling asked of the server.
    """

    kind: CriticKind
    score: float
    answers: tuple[str, ...]
    trials: int
    valid_trials: int
    prompt_tokens: int | None
    model: str
    raw: tuple[str, ...]
    system_prompt: str = ""
    question: str = ""
    fps: float | None = None


class VlmClient:
    """Async client of one vLLM server; at most ``config.concurrency`` requests in flight."""

    def __init__(self, config: VlmConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.base_url = config.base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            transport=transport,
        )
        self._slots = asyncio.Semaphore(config.concurrency)
        #: ``usage`` of the last successful answer, and the prompt tokens summed over all of them.
        self.last_usage: dict[str, Any] | None = None
        self.prompt_tokens_total = 0

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        n: int = 1,
        extra: dict[str, Any] | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
    ) -> dict[str, Any]:
        """POST a chat completion and return the decoded answer; ``extra`` is merged into the body."""
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "n": n,
            "temperature": self.config.temperature if temperature is None else temperature,
            "top_p": self.config.top_p if top_p is None else top_p,
            "max_tokens": self.config.max_tokens if max_tokens is None else max_tokens,
        }
        if extra:
            body.update(extra)
        url = f"{self.base_url}/chat/completions"
        attempts = self.config.max_retries + 1
        for attempt in range(attempts):
            try:
                async with self._slots:
                    response = await self._http.post(url, json=body)
            except httpx.TransportError as exc:  # connect errors, timeouts, dropped connections
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code < 400:
                    return self._decode(response)
                message = _error_message(response)
                if response.status_code < 500 and response.status_code not in _RETRY_4XX:
                    if response.status_code == 400 and _is_context_error(message):
                        raise ContextTooLong.from_message(message)
                    raise VlmError(f"VLM server answered {response.status_code}: {message}")
                problem = f"HTTP {response.status_code}: {message}"
            if attempt + 1 < attempts:
                delay = self._backoff(attempt)
                log.warning("vlm_retry", url=url, attempt=attempt + 1, problem=problem, delay_s=round(delay, 3))
                await asyncio.sleep(delay)
        raise VlmUnavailable(f"VLM server at {self.base_url} failed {attempts} time(s); last: {problem}")

    async def critique_video(self, video_url: str, *, kind: CriticKind = "anomaly") -> CriticResult:
        """Ask the model ``config.trials`` times about the video and score its answers."""
        if not video_url or not video_url.strip():
            raise InvalidInputError("video_url", "must not be empty")
        system, question = critic_prompts(kind)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": system},
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": video_url}},
                    {"type": "text", "text": question},
                ],
            },
        ]
        extra = {"mm_processor_kwargs": {"fps": self.config.fps, "do_sample_frames": True}}
        answer = await self.chat(messages, n=self.config.trials, extra=extra)
        raw = tuple(_choice_text(choice) for choice in answer["choices"])
        parsed = [_parse_answer(text, kind) for text in raw]
        valid = tuple(p for p in parsed if p is not None)
        model = str(answer.get("model") or self.config.model)
        if not valid:
            first = raw[0].strip()[:200] if raw else ""
            raise MalformedCritique(
                f"malformed answer: none of {len(raw)} trial(s) held a valid {kind} <answer> (first: {first!r})",
                kind=kind,
                model=model,
                raw=raw,
                system_prompt=system,
                question=question,
            )
        if kind == "anomaly":
            score = sum(1 for a in valid if a == "No") / len(valid)
        else:
            score = sum(int(a) for a in valid) / len(valid)
        usage = answer.get("usage")
        prompt_tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return CriticResult(
            kind=kind,
            score=score,
            answers=valid,
            trials=len(raw),
            valid_trials=len(valid),
            prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else None,
            model=model,
            raw=raw,
            system_prompt=system,
            question=question,
            fps=self.config.fps,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> VlmClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: half fixed, half random (never zero unless the base is)."""
        ceiling = min(BACKOFF_MAX_S, self.config.backoff_base_s * 2.0**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _decode(self, response: httpx.Response) -> dict[str, Any]:
        try:
            answer = response.json()
        except ValueError as exc:
            raise VlmError(
                f"VLM server answered {response.status_code} with non-JSON: {response.text[:200]!r}"
            ) from exc
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
            raise VlmError(f"VLM server answer has no choices: {str(answer)[:200]!r}")
        usage = answer.get("usage")
        if isinstance(usage, dict):
            self.last_usage = usage
            prompt_tokens = usage.get("prompt_tokens")
            if isinstance(prompt_tokens, int):
                self.prompt_tokens_total += prompt_tokens
        return answer


def _error_message(response: httpx.Response) -> str:
    """The message of a vLLM/OpenAI error body (``message``, ``error.message`` or ``detail``)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "detail"):
            if body.get(key):
                return str(body[key])
    return str(body)[:500]


def _is_context_error(message: str) -> bool:
    lowered = message.lower()
    return any(hint in lowered for hint in _CONTEXT_HINTS)


def _choice_text(choice: Any) -> str:
    """A choice's message content as text ("" when missing)."""
    if not isinstance(choice, dict):
        return ""
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


def _parse_answer(text: str, kind: CriticKind) -> str | None:
    """The normalised answer of one trial, or None when it is missing or out of range."""
    matches = _ANSWER_RE.findall(text)
    if not matches:
        return None
    value = str(matches[-1]).strip().strip(".!").strip()
    if kind == "anomaly":
        lowered = value.lower()
        return {"yes": "Yes", "no": "No"}.get(lowered)
    match = _SCORE_RE.fullmatch(value)
    return match.group(1) if match else None
