"""Cosmos 3's structured JSON captions: what the upsampler asks for, and how an answer is checked (pure).

Cosmos 3 was trained on structured JSON captions as well as plain text. The shape used here is
the one diffusers' ``Cosmos3OmniPipeline`` builds for its action mode (``_build_action_json_prompt``
in diffusers 0.42.1, the only shape we could verify): ``cinematography.framing`` (optional), a list
of timed ``actions`` (``"m:ss-m:ss"`` and a description), then ``duration`` (``"<s>s"``), ``fps``,
``resolution`` (``{"H", "W"}``) and ``aspect_ratio`` (the nearest of 1,1 / 4,3 / 3,4 / 16,9 / 9,16).
The vision-language model writes only what it can know — the framing and the timed actions; the
numbers come from the spec, so a caption can never disagree with the video it asks for.

An answer is accepted only when it parses (a code fence around it is fine), has exactly the known
keys, at least one action, times that follow each other inside the clip and descriptions that add
detail; anything else is rejected with the reason (the spec then keeps its plain prompt). The plain
prompt stays in the spec's history (the version upsampled from) and in ``UpsampleInfo.original_prompt``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from worldmill.upsample.answer import AnswerRejectedError

__all__ = [
    "STRUCTURED_FORMAT",
    "STRUCTURED_SYSTEM_PROMPT",
    "CaptionTarget",
    "parse_caption",
    "structured_user_text",
]

#: The name of the format, recorded in ``UpsampleInfo.format``.
STRUCTURED_FORMAT = "cosmos3-json"

STRUCTURED_SYSTEM_PROMPT = (
    "You turn a short video prompt into a structured caption for a physically grounded world model. Reply with "
    'one JSON object and nothing else, with exactly these keys: "cinematography": {"framing": a sentence on the '
    'camera\'s position, height, lens and movement}, and "actions": a list of objects, each '
    '{"time": "m:ss-m:ss", "description": what is visible and happening in that span, in concrete physical '
    "terms: objects, their number, colour and material, the setting, the light, how things move}. The actions "
    "follow each other in time, start at 0:00 and end at the clip's end. Keep the user's intent and every fact "
    "they state; when reference frames are attached, stay consistent with them. No text overlays, logos or "
    "watermarks, no keys other than these."
)
_TIME = re.compile(r"^(\d+):([0-5]\d)-(\d+):([0-5]\d)$")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_RATIOS = ("1,1", "4,3", "3,4", "16,9", "9,16")
#: Actions shorter than this many characters in total add no detail to a prompt.
_MIN_DETAIL = 40


@dataclass(frozen=True)
class CaptionTarget:
    """What the caption describes: the spec's duration, frame rate and size."""

    duration_s: float
    fps: float
    width: int
    height: int

    @property
    def end(self) -> int:
        """The clip's end in whole seconds (the last action's end)."""
        return max(1, round(self.duration_s))

    def aspect_ratio(self) -> str:
        """The nearest aspect-ratio label, as the pipeline chooses it."""
        ratio = self.width / self.height
        return min(_RATIOS, key=lambda r: abs(int(r.split(",")[0]) / int(r.split(",")[1]) - ratio))


def _clock(seconds: int) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{minutes}:{rest:02d}"


def structured_user_text(prompt: str, target: CaptionTarget) -> str:
    """The user message for a structured caption of ``prompt``."""
    return (
        f"Write the structured caption of a {target.duration_s:g} s clip ({target.width}x{target.height}, "
        f"{target.fps:g} fps): actions from 0:00 to {_clock(target.end)}. The prompt:\n\n{prompt.strip()}"
    )


def _seconds(minutes: str, seconds: str) -> int:
    return int(minutes) * 60 + int(seconds)


def _object(content: str) -> dict[str, Any]:
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnswerRejectedError(f"the structured caption is not JSON ({exc.msg} at character {exc.pos})") from exc
    if not isinstance(value, dict):
        raise AnswerRejectedError(f"the structured caption must be a JSON object, got {type(value).__name__}")
    return value


def _actions(raw: Any, target: CaptionTarget) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise AnswerRejectedError("actions: must be a non-empty list of {time, description}")
    out: list[dict[str, str]] = []
    at = 0
    for i, action in enumerate(raw):
        if not isinstance(action, dict) or set(action) != {"time", "description"}:
            raise AnswerRejectedError(f"actions[{i}]: must have exactly the keys time and description")
        time, description = action["time"], action["description"]
        match = _TIME.match(time) if isinstance(time, str) else None
        if match is None:
            raise AnswerRejectedError(f"actions[{i}].time: {time!r} is not m:ss-m:ss")
        start, end = _seconds(match.group(1), match.group(2)), _seconds(match.group(3), match.group(4))
        if start != at or end <= start:
            raise AnswerRejectedError(
                f"actions[{i}].time: {time} must start at {_clock(at)} (where the previous action ended) and end later"
            )
        if end > target.end:
            raise AnswerRejectedError(f"actions[{i}].time: {time} ends after the clip ({_clock(target.end)})")
        if not isinstance(description, str) or not description.strip():
            raise AnswerRejectedError(f"actions[{i}].description: must be a non-empty string")
        out.append({"time": time, "description": description.strip()})
        at = end
    if at != target.end:
        raise AnswerRejectedError(f"actions: end at {_clock(at)}, but the clip lasts until {_clock(target.end)}")
    return out


def parse_caption(content: str | None, original: str, target: CaptionTarget) -> str:
    """The accepted caption as canonical JSON (the spec's numbers filled in), or :class:`AnswerRejectedError`."""
    if content is None or not content.strip():
        raise AnswerRejectedError("the answer is empty")
    value = _object(content)
    unknown = sorted(set(value) - {"cinematography", "actions"})
    if unknown:
        raise AnswerRejectedError(f"unknown key(s) {unknown}: a structured caption has cinematography and actions")
    caption: dict[str, Any] = {}
    framing = value.get("cinematography")
    if framing is not None:
        if not isinstance(framing, dict) or set(framing) != {"framing"} or not isinstance(framing["framing"], str):
            raise AnswerRejectedError('cinematography: must be {"framing": "<sentence>"}')
        if framing["framing"].strip():
            caption["cinematography"] = {"framing": framing["framing"].strip()}
    caption["actions"] = _actions(value.get("actions"), target)
    detail = sum(len(a["description"]) for a in caption["actions"])
    if detail < max(_MIN_DETAIL, len(original.strip()) // 2):
        raise AnswerRejectedError(
            f"the actions describe {detail} characters for a {len(original.strip())}-character prompt: no detail added"
        )
    whole = math.floor(target.duration_s) if target.duration_s >= 0 else 0
    caption["duration"] = f"{whole}s"
    caption["fps"] = float(target.fps)
    caption["resolution"] = {"H": target.height, "W": target.width}
    caption["aspect_ratio"] = target.aspect_ratio()
    return json.dumps(caption)
