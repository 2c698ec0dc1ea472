"""Cosmos 3 structured JSON captions: the checks on an answer, and the upsampler asking for one (respx as vLLM)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from tests.test_upsampler import BASE, PROMPT, completion, upsampler
from worldmill.upsample.answer import AnswerRejectedError
from worldmill.upsample.structured import STRUCTURED_SYSTEM_PROMPT, CaptionTarget, parse_caption
from worldmill.upsample.upsampler import UpsampleFailedError

TARGET = CaptionTarget(duration_s=10.0, fps=24.0, width=1280, height=704)
ACTIONS = [
    {"time": "0:00-0:04", "description": "A delivery driver in a brown uniform walks up a concrete path at dusk."},
    {"time": "0:04-0:10", "description": "He sets a cardboard parcel on the doormat while a grey cat watches."},
]
GOOD = {"cinematography": {"framing": "A fixed camera above the door looks down at the porch."}, "actions": ACTIONS}


def test_a_good_caption_gets_the_specs_numbers() -> None:
    """Framing and actions from the model; duration, fps, resolution and aspect ratio from the spec."""
    caption = json.loads(parse_caption(json.dumps(GOOD), PROMPT, TARGET))
    assert caption["actions"] == ACTIONS
    assert caption["cinematography"]["framing"].startswith("A fixed camera")
    assert (caption["duration"], caption["fps"], caption["resolution"], caption["aspect_ratio"]) == (
        "10s",
        24.0,
        {"H": 704, "W": 1280},
        "16,9",
    )


def test_a_fenced_answer_is_accepted_and_made_canonical() -> None:
    fenced = "```json\n" + json.dumps(GOOD, indent=4) + "\n```"
    assert parse_caption(fenced, PROMPT, TARGET) == parse_caption(json.dumps(GOOD), PROMPT, TARGET)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("A paragraph, not JSON.", "is not JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({**GOOD, "fps": 30}), "unknown key(s) ['fps']"),
        (json.dumps({"actions": []}), "non-empty list"),
        (json.dumps({"actions": [{"time": "0:00-0:10"}]}), "exactly the keys time and description"),
        (json.dumps({"actions": [{"time": "0-10", "description": "x" * 80}]}), "is not m:ss-m:ss"),
        (json.dumps({"actions": [{"time": "0:02-0:10", "description": "x" * 80}]}), "must start at 0:00"),
        (json.dumps({"actions": [{"time": "0:00-0:12", "description": "x" * 80}]}), "ends after the clip (0:10)"),
        (json.dumps({"actions": [{"time": "0:00-0:06", "description": "x" * 80}]}), "the clip lasts until 0:10"),
        (json.dumps({"actions": [{"time": "0:00-0:10", "description": "a door"}]}), "no detail added"),
        (json.dumps({"cinematography": "wide", "actions": ACTIONS}), "cinematography: must be"),
        ("", "empty"),
    ],
)
def test_bad_captions_are_rejected_with_the_reason(answer: str, reason: str) -> None:
    with pytest.raises(AnswerRejectedError) as err:
        parse_caption(answer, PROMPT, TARGET)
    assert reason in str(err.value)


@respx.mock
async def test_the_upsampler_asks_for_a_structured_caption_and_checks_it() -> None:
    """The system prompt and user text ask for the caption; the result is canonical JSON, the plain prompt kept."""
    route = respx.post(f"{BASE}/chat/completions").mock(
        return_value=httpx.Response(200, json=completion(json.dumps(GOOD)))
    )
    up = upsampler()
    result = await up.upsample(PROMPT, source_version=1, structured=TARGET)
    body: dict[str, Any] = json.loads(route.calls.last.request.content)
    assert body["messages"][0]["content"] == STRUCTURED_SYSTEM_PROMPT
    assert "0:00 to 0:10" in body["messages"][1]["content"][-1]["text"]
    assert json.loads(result.prompt)["actions"] == ACTIONS
    assert result.info.format == "cosmos3-json" and result.info.original_prompt == PROMPT
    assert result.info.cache_key != up.key(PROMPT, None)  # a plain rewrite is cached apart
    assert result.info.cache_key == up.key(PROMPT, None, TARGET)


@respx.mock
async def test_an_unusable_structured_answer_fails_the_upsample_with_the_reason() -> None:
    respx.post(f"{BASE}/chat/completions").mock(
        return_value=httpx.Response(200, json=completion("Sure! Here is a caption: a man at a door."))
    )
    with pytest.raises(UpsampleFailedError, match="answer rejected: the structured caption is not JSON"):
        await upsampler().upsample(PROMPT, source_version=1, structured=TARGET)


@respx.mock
async def test_a_structured_caption_cut_by_max_tokens_is_refused() -> None:
    respx.post(f"{BASE}/chat/completions").mock(
        return_value=httpx.Response(200, json=completion(json.dumps(GOOD), finish="length"))
    )
    with pytest.raises(UpsampleFailedError, match="hit max_tokens"):
        await upsampler().upsample(PROMPT, source_version=1, structured=TARGET)
