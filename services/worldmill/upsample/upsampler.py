"""One upsample, end to end: size the request, make the hint frames, ask the server, judge the answer.

The request is planned to fit the context before it is sent (:mod:`worldmill.upsample.budget`). If
the server still answers that the context is exceeded, the next attempt is smaller: when the server
says how many tokens the request had, the estimator is recalibrated from that number and the plan
is made again; otherwise the plan shrinks one step. This repeats at most ``context_retries`` times.
A request without hint frames that overflows gets fewer new tokens instead. After every success the
estimator learns from the server's ``usage.prompt_tokens``.

Errors: :class:`UpsampleFailedError` (permanent: the answer was unusable, nothing fits, the retries
ran out); the client's :class:`~worldmill.runtime.vlm.VlmUnavailable` passes through (transient).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worldmill.contracts.base import ObjectRef, Resolution
from worldmill.contracts.upsample import UpsampleInfo
from worldmill.runtime.errors import PermanentError
from worldmill.runtime.logs import get_logger
from worldmill.runtime.vlm import ContextTooLong, VlmClient, VlmError
from worldmill.upsample.answer import AnswerRejectedError, CleanAnswer, judge
from worldmill.upsample.budget import (
    BudgetError,
    HintPlan,
    PromptTooLongError,
    calibrate,
    plan_hints,
    plan_text,
    shrink,
)
from worldmill.upsample.hints import HintSource, data_url, encode_hint_video, extract_frames, hints_digest, inspect_hint
from worldmill.upsample.profiles import ModelProfile
from worldmill.upsample.request import Sampling, build_messages, cache_key, user_text
from worldmill.upsample.structured import (
    STRUCTURED_FORMAT,
    STRUCTURED_SYSTEM_PROMPT,
    CaptionTarget,
    parse_caption,
    structured_user_text,
)

log = get_logger(__name__)

#: Fewest new tokens worth asking for when a text-only request is cut down to fit.
MIN_NEW_TOKENS = 64


class UpsampleFailedError(PermanentError):
    """This prompt cannot be upsampled as asked; the message says why, with the numbers."""


@dataclass(frozen=True)
class Hint:
    """A local copy of the image or video hint frames come from, and where it was stored."""

    path: Path
    sha256: str
    ref: ObjectRef | None = None


@dataclass(frozen=True)
class Upsampled:
    """The rewrite and how it was made."""

    prompt: str
    info: UpsampleInfo


@dataclass
class _Attempt:
    plan: HintPlan
    sampling: Sampling
    context_retries: int = 0
    requests: int = 0


class Upsampler:
    """Rewrites prompts through one server, sized by one profile; safe to share between tasks."""

    def __init__(
        self,
        client: VlmClient,
        profile: ModelProfile,
        *,
        model: str,
        sampling: Sampling,
        hint_frames: int = 2,
        hint_as_video: bool = False,
        margin: int = 64,
        context_retries: int = 4,
        calibration: float = 1.0,
    ) -> None:
        if hint_as_video and not profile.takes_video:
            raise ValueError(f"profile {profile.name} takes no video: hint frames go as images")
        self.client = client
        self.profile = profile
        self.model = model
        self.sampling = sampling
        self.hint_frames = hint_frames
        self.hint_as_video = hint_as_video
        self.margin = margin
        self.context_retries = context_retries
        #: Observed ÷ estimated prompt tokens, learned from the server's usage (starts at 1).
        self.calibration = calibration

    def key(self, prompt: str, hint_sha256: str | None, structured: CaptionTarget | None = None) -> str:
        """The cache key of upsampling ``prompt`` with the hint of that sha256 under this upsampler's settings."""
        return cache_key(
            model=self.model,
            profile=self.profile,
            text=_text(prompt, structured),
            hint_sha256=hint_sha256,
            hint_frames=self.hint_frames,
            as_video=self.hint_as_video,
            sampling=self.sampling,
            system=STRUCTURED_SYSTEM_PROMPT if structured else None,
        )

    async def upsample(
        self,
        prompt: str,
        *,
        source_version: int,
        hint: Hint | None = None,
        structured: CaptionTarget | None = None,
    ) -> Upsampled:
        """The rewrite of ``prompt`` (a Cosmos 3 structured JSON caption with ``structured``); see the module
        docstring for the retry rules."""
        text = _text(prompt, structured)
        source = await asyncio.to_thread(inspect_hint, hint.path) if hint else None
        attempt = _Attempt(plan=self._plan(text, source), sampling=self.sampling)
        while True:
            media, digest = await self._media(attempt.plan, hint)
            messages = build_messages(
                self.profile,
                text,
                media,
                as_video=attempt.plan.as_video,
                system=STRUCTURED_SYSTEM_PROMPT if structured else None,
            )
            attempt.requests += 1
            try:
                answer = await self._ask(messages, attempt.sampling)
            except ContextTooLong as exc:
                self._after_context_error(attempt, exc, text, source)
                continue
            except VlmError as exc:
                raise UpsampleFailedError(str(exc)) from exc
            return self._accept(
                answer, prompt, attempt, hint=hint, digest=digest, source_version=source_version, structured=structured
            )

    async def _ask(self, messages: list[dict[str, Any]], sampling: Sampling) -> dict[str, Any]:
        return await self.client.chat(
            messages,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            extra={"model": self.model, **({"seed": sampling.seed} if sampling.seed is not None else {})},
        )

    # -- planning -------------------------------------------------------------------------------

    def _plan(self, text: str, source: HintSource | None) -> HintPlan:
        try:
            if source is None:
                return plan_text(
                    self.profile,
                    text,
                    max_new_tokens=self.sampling.max_tokens,
                    margin=self.margin,
                    calibration=self.calibration,
                )
            return plan_hints(
                self.profile,
                source_width=source.width,
                source_height=source.height,
                wanted_frames=min(self.hint_frames, source.frames),
                prompt=text,
                max_new_tokens=self.sampling.max_tokens,
                margin=self.margin,
                calibration=self.calibration,
                as_video=self.hint_as_video and not source.is_image,
            )
        except (BudgetError, PromptTooLongError) as exc:
            raise UpsampleFailedError(f"does not fit {self.profile.name}'s context: {exc}") from exc
        except ValueError as exc:  # a hint smaller than one token cell
            raise UpsampleFailedError(f"hint: {exc}") from exc

    def _after_context_error(
        self, attempt: _Attempt, exc: ContextTooLong, text: str, source: HintSource | None
    ) -> None:
        """Make the next attempt smaller, or give up with every number when nothing is left to try."""
        plan = attempt.plan
        if attempt.context_retries >= self.context_retries:
            raise UpsampleFailedError(
                f"the server still reports the context exceeded after {attempt.context_retries} smaller "
                f"attempt(s) (last: {plan.frames} frame(s) of {plan.width}×{plan.height}, "
                f"about {plan.total_estimated} prompt tokens): {exc.server_message}"
            ) from exc
        attempt.context_retries += 1
        observed = self._observed_prompt_tokens(exc, attempt.sampling)
        log.warning(
            "upsample_context_exceeded",
            frames=plan.frames,
            width=plan.width,
            height=plan.height,
            estimated=plan.total_estimated,
            observed=observed,
            server_max=exc.max_context_tokens,
        )
        if plan.frames == 0:
            attempt.sampling = self._fewer_new_tokens(attempt, exc, observed)
            return
        if observed is not None and observed > plan.total_estimated:
            self.calibration = calibrate(self.calibration, plan.total_estimated, observed, weight=1.0)
            replanned = self._plan(text, source)
            if replanned.total_estimated < plan.total_estimated:
                attempt.plan = replanned
                return
        try:
            attempt.plan = shrink(plan, self.profile)
        except BudgetError as budget_exc:
            raise UpsampleFailedError(f"{budget_exc}; server: {exc.server_message}") from exc

    @staticmethod
    def _observed_prompt_tokens(exc: ContextTooLong, sampling: Sampling) -> int | None:
        """Prompt tokens the server counted: stated apart, or its "requested" total minus the new tokens."""
        if exc.prompt_tokens is not None:
            return exc.prompt_tokens
        if exc.requested_tokens is None or "requested" not in exc.server_message.lower():
            return None
        prompt_tokens = exc.requested_tokens - sampling.max_tokens
        return prompt_tokens if prompt_tokens > 0 else None

    def _fewer_new_tokens(self, attempt: _Attempt, exc: ContextTooLong, observed: int | None) -> Sampling:
        context = exc.max_context_tokens or self.profile.context_tokens
        prompt_tokens = observed if observed is not None else attempt.plan.total_estimated
        room = context - prompt_tokens - self.margin
        if room < MIN_NEW_TOKENS or room >= attempt.sampling.max_tokens:
            raise UpsampleFailedError(
                f"the prompt alone takes about {prompt_tokens} of the {context}-token context; "
                f"no room for at least {MIN_NEW_TOKENS} new tokens: {exc.server_message}"
            ) from exc
        s = attempt.sampling
        return Sampling(temperature=s.temperature, top_p=s.top_p, max_tokens=room, seed=s.seed)

    # -- media ----------------------------------------------------------------------------------

    async def _media(self, plan: HintPlan, hint: Hint | None) -> tuple[list[str], str | None]:
        """Data URLs of the planned hint frames (or the hint video), and their digest."""
        if hint is None or plan.frames == 0:
            return [], None
        if plan.as_video:
            clip = await asyncio.to_thread(encode_hint_video, hint.path, plan.frames, plan.width, plan.height)
            return [data_url(clip, "video/mp4")], hints_digest([clip])
        frames = await asyncio.to_thread(extract_frames, hint.path, plan.frames, plan.width, plan.height)
        return [data_url(f, "image/jpeg") for f in frames], hints_digest(frames)

    # -- answer ---------------------------------------------------------------------------------

    def _accept(
        self,
        answer: dict[str, Any],
        prompt: str,
        attempt: _Attempt,
        *,
        hint: Hint | None,
        digest: str | None,
        source_version: int,
        structured: CaptionTarget | None = None,
    ) -> Upsampled:
        choices = answer.get("choices") or []
        first = choices[0] if choices and isinstance(choices[0], dict) else {}
        message = first.get("message") if isinstance(first.get("message"), dict) else {}
        content = message.get("content") if isinstance(message, dict) else None
        finish = first.get("finish_reason")
        try:
            if structured is not None:
                if finish == "length":
                    raise AnswerRejectedError("the structured caption hit max_tokens before it was complete")
                caption = parse_caption(content if isinstance(content, str) else None, prompt, structured)
                clean = CleanAnswer(text=caption, truncated=False)
            else:
                clean = judge(content if isinstance(content, str) else None, prompt, finish_reason=finish)
        except AnswerRejectedError as exc:
            raise UpsampleFailedError(f"answer rejected: {exc}") from exc
        usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
        used = _int(usage.get("prompt_tokens")) if isinstance(usage, dict) else None
        completion = _int(usage.get("completion_tokens")) if isinstance(usage, dict) else None
        plan = attempt.plan
        if used is not None and plan.total_estimated > 0:
            self.calibration = calibrate(self.calibration, plan.total_estimated, used)
        info = UpsampleInfo(
            upsampler_model=str(answer.get("model") or self.model),
            profile=self.profile.name,
            source_version=source_version,
            original_prompt=prompt,
            tokens_estimated=plan.total_estimated,
            tokens_used=used,
            completion_tokens=completion,
            context_tokens=self.profile.context_tokens,
            frames_sent=plan.frames,
            frame_resolution=Resolution(width=plan.width, height=plan.height) if plan.frames else None,
            hint=hint.ref if hint and plan.frames else None,
            hint_as_video=plan.as_video,
            hints_sha256=digest,
            temperature=attempt.sampling.temperature,
            top_p=attempt.sampling.top_p,
            max_tokens=attempt.sampling.max_tokens,
            seed=attempt.sampling.seed,
            attempts=attempt.requests,
            context_retries=attempt.context_retries,
            truncated=clean.truncated,
            calibration=round(plan.calibration, 4),
            cache_key=self.key(prompt, hint.sha256 if hint else None, structured),
            format=STRUCTURED_FORMAT if structured else "text",
            created_at=datetime.now(UTC),
        )
        return Upsampled(prompt=clean.text, info=info)


def _text(prompt: str, structured: CaptionTarget | None) -> str:
    return structured_user_text(prompt, structured) if structured else user_text(prompt)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
