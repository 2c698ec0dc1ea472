"""The upsampler against vLLM's exact answers (respx stands in for the server, which needs a GPU).

Every request is checked for what it really sends: the hint images are decoded from the captured
body and counted with the profile's own rule, so "fits the context" is measured, not assumed.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from PIL import Image

from tests.helpers.video import write_video
from worldmill.runtime.vlm import VlmClient, VlmConfig, VlmUnavailable
from worldmill.upsample.budget import text_tokens
from worldmill.upsample.hints import hints_digest
from worldmill.upsample.profiles import ModelProfile, builtin_profiles
from worldmill.upsample.request import Sampling, user_text
from worldmill.upsample.upsampler import Hint, UpsampleFailedError, Upsampler

BASE = "http://vllm.test:8000/v1"
PROMPT = "A delivery driver leaves a parcel at a front door at dusk while a cat watches from the porch."
REWRITE = (
    "A fixed security camera above a wooden front door looks down at a porch in the blue light of dusk. "
    "A delivery driver in a brown uniform walks up the concrete path, bends, and sets a cardboard parcel "
    "on the doormat, then turns and leaves. A grey cat sits still on the porch railing and follows the "
    "driver with its head. The porch lamp casts warm light on the door and soft shadows on the boards."
)
PIXTRAL = builtin_profiles()["pixtral-12b"]
REASON1 = builtin_profiles()["cosmos-reason1-7b"]


def completion(
    content: str | None, *, prompt_tokens: int = 1800, finish: str = "stop", model: str = "mistralai/Pixtral-12B-2409"
) -> dict[str, Any]:
    """A chat completion exactly as vLLM shapes it."""
    return {
        "id": "chatcmpl-9a8b7c",
        "object": "chat.completion",
        "created": 1763700000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "tool_calls": []},
                "logprobs": None,
                "finish_reason": finish,
                "stop_reason": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + 120,
            "completion_tokens": 120,
            "prompt_tokens_details": None,
        },
        "prompt_logprobs": None,
    }


def context_error(requested: int, messages: int, completion_tokens: int = 300) -> httpx.Response:
    """vLLM's 400 when prompt plus max_tokens exceed max_model_len (the OpenAI-style error body)."""
    message = (
        f"This model's maximum context length is 4096 tokens. However, you requested {requested} tokens "
        f"({messages} in the messages, {completion_tokens} in the completion). Please reduce the length of "
        "the messages or completion."
    )
    return httpx.Response(
        400, json={"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400}
    )


def upsampler(profile: ModelProfile = PIXTRAL, **kw: Any) -> Upsampler:
    """An upsampler with tiny backoffs, on a fresh client."""
    client = VlmClient(
        VlmConfig(
            base_url=BASE,
            model="mistralai/Pixtral-12B-2409",
            backoff_base_s=0.001,
            max_retries=kw.pop("max_retries", 2),
            timeout_s=kw.pop("timeout_s", 5),
        )
    )
    sampling = kw.pop("sampling", Sampling(temperature=0.6, top_p=0.95, max_tokens=profile.default_max_tokens))
    return Upsampler(client, profile, model="mistralai/Pixtral-12B-2409", sampling=sampling, **kw)


@pytest.fixture(scope="module")
def hd_video(tmp_path_factory: pytest.TempPathFactory) -> Hint:
    """A 1920×1080 input video (6 frames), as the upsampling team had (docs/background.md#upsampler-limits)."""
    path = write_video(tmp_path_factory.mktemp("hint") / "porch.mp4", width=1920, height=1080, fps=24, frames=6)
    return Hint(path=path, sha256="a" * 64)


def sent_images(request: httpx.Request) -> list[tuple[int, int]]:
    """The (width, height) of every image_url in a captured chat request, decoded from its data URL."""
    body = json.loads(request.content)
    sizes = []
    for part in body["messages"][1]["content"]:
        if part["type"] == "image_url":
            url = part["image_url"]["url"]
            assert url.startswith("data:image/jpeg;base64,")
            with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as img:
                sizes.append(img.size)
    return sizes


def prompt_tokens_of(request: httpx.Request, profile: ModelProfile) -> int:
    """Prompt tokens the server will count for a captured request (images by the profile's exact rule)."""
    body = json.loads(request.content)
    text = next(p["text"] for p in body["messages"][1]["content"] if p["type"] == "text")
    images = sum(profile.image_tokens(w, h) for w, h in sent_images(request))
    return text_tokens(profile, text, body["messages"][0]["content"]) + images


async def test_a_1080p_input_makes_a_request_within_a_4096_token_context(hd_video: Hint) -> None:
    """docs/background.md#upsampler-limits: 1920×1080 hints overflowed Pixtral's 4096 tokens; ours are resized to fit, aspect kept."""
    up = upsampler()
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(return_value=httpx.Response(200, json=completion(REWRITE)))
        result = await up.upsample(PROMPT, source_version=1, hint=hd_video)
    await up.client.aclose()
    request = route.calls.last.request
    sizes = sent_images(request)
    assert len(sizes) == 2
    for w, h in sizes:
        assert w % 16 == 0 and h % 16 == 0 and abs(w / h - 16 / 9) < 0.1
    total = prompt_tokens_of(request, PIXTRAL) + json.loads(request.content)["max_tokens"]
    assert total <= 4096, total
    assert result.prompt == REWRITE
    info = result.info
    assert info.frames_sent == 2 and info.frame_resolution is not None
    assert (info.frame_resolution.width, info.frame_resolution.height) == sizes[0]
    assert info.tokens_used == 1800 and info.tokens_estimated >= prompt_tokens_of(request, PIXTRAL) - 1
    assert info.attempts == 1 and info.context_retries == 0 and not info.cached
    assert info.upsampler_model == "mistralai/Pixtral-12B-2409" and info.profile == "pixtral-12b"
    assert info.original_prompt == PROMPT and info.source_version == 1
    assert info.cache_key == up.key(PROMPT, hd_video.sha256)


async def test_the_request_body_carries_model_sampling_system_prompt_and_text_after_the_images(hd_video: Hint) -> None:
    """What vLLM gets: the served model name, the sampling parameters, media before text."""
    up = upsampler(sampling=Sampling(temperature=0.2, top_p=0.9, max_tokens=256, seed=7))
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(return_value=httpx.Response(200, json=completion(REWRITE)))
        result = await up.upsample(PROMPT, source_version=3, hint=hd_video)
    await up.client.aclose()
    body = json.loads(route.calls.last.request.content)
    assert body["model"] == "mistralai/Pixtral-12B-2409"
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (0.2, 0.9, 256, 7)
    assert body["messages"][0] == {"role": "system", "content": PIXTRAL.system_prompt}
    kinds = [p["type"] for p in body["messages"][1]["content"]]
    assert kinds == ["image_url", "image_url", "text"]
    assert body["messages"][1]["content"][-1]["text"] == user_text(PROMPT)
    assert (result.info.temperature, result.info.top_p, result.info.max_tokens, result.info.seed) == (0.2, 0.9, 256, 7)


async def test_a_context_length_answer_shrinks_and_retries_then_succeeds(hd_video: Hint) -> None:
    """A 400 "maximum context length" is not a failure: the next request is smaller, and it succeeds."""
    up = upsampler()
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(
            side_effect=[context_error(4400, 4100), httpx.Response(200, json=completion(REWRITE, prompt_tokens=3000))]
        )
        result = await up.upsample(PROMPT, source_version=1, hint=hd_video)
    await up.client.aclose()
    first, second = (prompt_tokens_of(c.request, PIXTRAL) for c in route.calls)
    assert route.call_count == 2
    assert second < first
    assert result.info.attempts == 2 and result.info.context_retries == 1
    assert result.info.tokens_used == 3000
    assert up.calibration > 1.0  # the server counted more than we estimated: later requests are sized larger


async def test_context_errors_without_numbers_shrink_step_by_step_until_the_retries_run_out(hd_video: Hint) -> None:
    """Without numbers each retry is strictly smaller; after the bound the error says what was tried."""
    up = upsampler(context_retries=3)
    bare = httpx.Response(
        400,
        json={
            "object": "error",
            "message": "Prompt is too long for the maximum model length",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
    )
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(return_value=bare)
        with pytest.raises(UpsampleFailedError) as failed:
            await up.upsample(PROMPT, source_version=1, hint=hd_video)
    await up.client.aclose()
    assert route.call_count == 4
    sizes = [prompt_tokens_of(c.request, PIXTRAL) for c in route.calls]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4
    assert "after 3 smaller attempt(s)" in str(failed.value)


async def test_5xx_then_success_is_retried_by_the_client(hd_video: Hint) -> None:
    """A 503 while vLLM restarts is retried with backoff; the answer after it is used."""
    up = upsampler()
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(
            side_effect=[
                httpx.Response(503, json={"object": "error", "message": "Service Unavailable", "code": 503}),
                httpx.Response(200, json=completion(REWRITE)),
            ]
        )
        result = await up.upsample(PROMPT, source_version=1, hint=hd_video)
    await up.client.aclose()
    assert route.call_count == 2 and result.prompt == REWRITE and result.info.attempts == 1


async def test_timeouts_end_as_unavailable_after_the_retries(hd_video: Hint) -> None:
    """A server that never answers in time is transient trouble (VlmUnavailable), not a bad prompt."""
    up = upsampler(max_retries=2)
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(side_effect=httpx.ReadTimeout("timed out"))
        with pytest.raises(VlmUnavailable, match="ReadTimeout"):
            await up.upsample(PROMPT, source_version=1, hint=hd_video)
    await up.client.aclose()
    assert route.call_count == 3


@pytest.mark.parametrize(
    ("content", "finish", "reason"),
    [
        (None, "stop", "empty"),
        ("", "stop", "empty"),
        ("   \n\t  ", "stop", "empty"),
        (PROMPT, "stop", "repeats the input"),
        (PROMPT.upper() + "  ", "stop", "repeats the input"),
        ("<think>The user wants a porch scene.</think>", "stop", "no prompt text"),
        ("A porch.", "stop", "shorter than the input"),
        ("A fixed camera looks at a porch where a driver in a brown uniform walks up", "length", "max_tokens"),
    ],
    ids=["null", "empty", "whitespace", "repeat", "repeat-case", "only-thinking", "too-short", "cut-off"],
)
async def test_unusable_answers_are_rejected_with_a_reason(content: str | None, finish: str, reason: str) -> None:
    """Whitespace, repeats, bare reasoning and cut-off answers never become a prompt."""
    up = upsampler()
    with respx.mock(base_url=BASE) as mock:
        mock.post("/chat/completions").mock(return_value=httpx.Response(200, json=completion(content, finish=finish)))
        with pytest.raises(UpsampleFailedError, match="answer rejected") as failed:
            await up.upsample(PROMPT, source_version=1)
    await up.client.aclose()
    assert reason in str(failed.value)


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>upstream error</html>"),
        httpx.Response(200, json={"object": "chat.completion", "model": "m"}),
        httpx.Response(200, json=["not", "an", "object"]),
    ],
    ids=["not-json", "no-choices", "json-list"],
)
async def test_malformed_answers_fail_for_good(response: httpx.Response) -> None:
    """An answer that is not a chat completion is a permanent failure naming what was wrong."""
    up = upsampler()
    with respx.mock(base_url=BASE) as mock:
        mock.post("/chat/completions").mock(return_value=response)
        with pytest.raises(UpsampleFailedError, match=r"non-JSON|no choices"):
            await up.upsample(PROMPT, source_version=1)
    await up.client.aclose()


async def test_an_answer_cut_at_max_tokens_keeps_its_full_sentences() -> None:
    """finish_reason "length": the rewrite ends at its last full sentence and is marked truncated."""
    up = upsampler()
    cut = REWRITE + " The camera records the whole scene while a car passes on the"
    with respx.mock(base_url=BASE) as mock:
        mock.post("/chat/completions").mock(return_value=httpx.Response(200, json=completion(cut, finish="length")))
        result = await up.upsample(PROMPT, source_version=1)
    await up.client.aclose()
    assert result.prompt == REWRITE and result.info.truncated


async def test_a_text_only_request_that_overflows_asks_for_fewer_new_tokens() -> None:
    """No hint frames to shrink: the retry lowers max_tokens to what the server says is left."""
    up = upsampler()
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(
            side_effect=[
                context_error(4196, 3896),
                httpx.Response(200, json=completion(REWRITE, prompt_tokens=3896)),
            ]
        )
        result = await up.upsample(PROMPT, source_version=1)
    await up.client.aclose()
    bodies = [json.loads(c.request.content) for c in route.calls]
    assert bodies[0]["max_tokens"] == 300
    assert bodies[1]["max_tokens"] == 4096 - 3896 - up.margin
    assert result.info.max_tokens == bodies[1]["max_tokens"] and result.info.frames_sent == 0


async def test_when_not_even_one_tiny_frame_fits_the_error_says_so_with_the_numbers(hd_video: Hint) -> None:
    """A context too small for the text plus one frame fails before any request, with every number."""
    tiny = replace(PIXTRAL, context_tokens=700)
    up = upsampler(tiny)
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        route = mock.post("/chat/completions")
        with pytest.raises(UpsampleFailedError) as failed:
            await up.upsample(PROMPT, source_version=1, hint=hd_video)
    await up.client.aclose()
    assert route.call_count == 0
    message = str(failed.value)
    assert "context 700" in message and "tokens" in message and "budget" in message


async def test_reason1_can_take_the_hint_as_one_short_video(hd_video: Hint) -> None:
    """For a model that takes video, hint frames go as one H.264 clip sized to the budget."""
    up = upsampler(REASON1, hint_as_video=True, hint_frames=4)
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(return_value=httpx.Response(200, json=completion(REWRITE)))
        result = await up.upsample(PROMPT, source_version=1, hint=hd_video)
    await up.client.aclose()
    content = json.loads(route.calls.last.request.content)["messages"][1]["content"]
    assert [p["type"] for p in content] == ["video_url", "text"]
    clip = base64.b64decode(content[0]["video_url"]["url"].split(",", 1)[1])
    assert result.info.hint_as_video and result.info.frames_sent == 4
    assert result.info.hints_sha256 == hints_digest([clip])
    assert result.info.tokens_estimated <= REASON1.context_tokens - REASON1.default_max_tokens


def test_a_video_hint_is_refused_for_a_model_that_takes_no_video() -> None:
    """Pixtral takes images only: asking for a hint video is a configuration error."""
    with pytest.raises(ValueError, match="takes no video"):
        upsampler(PIXTRAL, hint_as_video=True)


async def test_calibration_follows_the_servers_usage(tmp_path: Path) -> None:
    """A server that counts twice our estimate moves the factor up, so the next request is planned smaller."""
    path = write_video(tmp_path / "v.mp4", width=1280, height=720, fps=24, frames=3)
    hint = Hint(path=path, sha256="b" * 64)
    up = upsampler()

    def doubled(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=completion(REWRITE, prompt_tokens=2 * prompt_tokens_of(request, PIXTRAL)))

    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(side_effect=doubled)
        first = await up.upsample(PROMPT, source_version=1, hint=hint)
        second = await up.upsample(PROMPT, source_version=1, hint=hint)
    await up.client.aclose()
    assert 1.3 < up.calibration <= 2.0
    assert first.info.calibration == 1.0 and second.info.calibration > 1.3
    first_tokens, second_tokens = (prompt_tokens_of(c.request, PIXTRAL) for c in route.calls)
    assert second_tokens < first_tokens
