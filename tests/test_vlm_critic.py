"""The VLM critic client against a mocked vLLM OpenAI-compatible server (respx / MockTransport)."""

from __future__ import annotations

import asyncio
import json
from itertools import chain, repeat
from typing import Any

import httpx
import pytest
import respx

from worldmill.runtime.vlm import ContextTooLong, MalformedCritique, VlmClient, VlmConfig, VlmError, VlmUnavailable

BASE = "http://vllm.test:8000/v1"
VIDEO = "http://store.test/clips/clip-1.mp4"
CONTEXT_MESSAGE = (
    "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens "
    "(904 in the messages, 4096 in the completion). Please reduce the length of the messages or completion."
)


def config(**overrides: Any) -> VlmConfig:
    """A config with tiny backoffs so retry tests run fast."""
    values: dict[str, Any] = {"base_url": BASE, "backoff_base_s": 0.001, "max_retries": 3}
    values.update(overrides)
    return VlmConfig(**values)


def completion(*contents: str, prompt_tokens: int = 1234, model: str = "nvidia/Cosmos-Reason1-7B") -> dict[str, Any]:
    """A chat completion exactly as vLLM shapes it, one choice per content."""
    return {
        "id": "chatcmpl-5f1c0d9e",
        "object": "chat.completion",
        "created": 1760000000,
        "model": model,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": c}, "finish_reason": "stop"}
            for i, c in enumerate(contents)
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 321, "total_tokens": prompt_tokens + 321},
    }


def verdict(answer: str) -> str:
    """One trial's text: reasoning, then the answer."""
    return f"<think>\nThe cup moves smoothly and keeps its shape.\n</think>\n\n<answer>{answer}</answer>"


def context_error() -> httpx.Response:
    """vLLM's 400 answer when prompt plus max_tokens exceed the context."""
    return httpx.Response(
        400,
        json={"object": "error", "message": CONTEXT_MESSAGE, "type": "BadRequestError", "param": None, "code": 400},
    )


async def test_anomaly_scores_share_of_no() -> None:
    """Four trials answering Yes, No, No, Yes give score 0.5 with all four valid and the usage's prompt tokens."""
    body = completion(verdict("Yes"), verdict("No"), verdict("No"), verdict("Yes"), prompt_tokens=2048)
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(return_value=httpx.Response(200, json=body))
        client = VlmClient(config())
        result = await client.critique_video(VIDEO)
        await client.aclose()
    assert route.call_count == 1
    assert result.kind == "anomaly"
    assert result.score == 0.5
    assert result.trials == 4
    assert result.valid_trials == 4
    assert result.answers == ("Yes", "No", "No", "Yes")
    assert result.prompt_tokens == 2048
    assert result.model == "nvidia/Cosmos-Reason1-7B"
    assert len(result.raw) == 4
    assert client.prompt_tokens_total == 2048


async def test_plausibility_averages_scores() -> None:
    """Plausibility answers 4, 5, 3, 4 average to 4.0."""
    body = completion(verdict("4"), verdict("5"), verdict(" 3 "), verdict("4"))
    with respx.mock(base_url=BASE) as mock:
        mock.post("/chat/completions").mock(return_value=httpx.Response(200, json=body))
        client = VlmClient(config())
        result = await client.critique_video(VIDEO, kind="plausibility")
        await client.aclose()
    assert result.kind == "plausibility"
    assert result.score == 4.0
    assert result.answers == ("4", "5", "3", "4")
    assert result.valid_trials == 4


async def test_no_valid_answer_is_malformed() -> None:
    """When no choice holds an <answer>, or the content is blank, the critic raises VlmError naming a malformed answer."""
    body = completion("The video looks fine to me.", "", "   \n", "<think>hmm</think> No")
    with respx.mock(base_url=BASE) as mock:
        mock.post("/chat/completions").mock(return_value=httpx.Response(200, json=body))
        client = VlmClient(config())
        with pytest.raises(VlmError, match="malformed answer"):
            await client.critique_video(VIDEO)
        await client.aclose()


async def test_one_malformed_trial_is_not_counted() -> None:
    """One malformed trial of four leaves three valid ones, and the score counts only those."""
    body = completion(verdict("No"), "no tags here", verdict("No"), verdict("Yes"))
    with respx.mock(base_url=BASE) as mock:
        mock.post("/chat/completions").mock(return_value=httpx.Response(200, json=body))
        client = VlmClient(config())
        result = await client.critique_video(VIDEO)
        await client.aclose()
    assert result.trials == 4
    assert result.valid_trials == 3
    assert result.score == pytest.approx(2 / 3)


async def test_out_of_range_plausibility_is_invalid() -> None:
    """A plausibility answer outside 1–5 or not a number is counted as invalid."""
    body = completion(verdict("7"), verdict("great"), verdict("2"), verdict("0"))
    with respx.mock(base_url=BASE) as mock:
        mock.post("/chat/completions").mock(return_value=httpx.Response(200, json=body))
        client = VlmClient(config())
        result = await client.critique_video(VIDEO, kind="plausibility")
        await client.aclose()
    assert result.valid_trials == 1
    assert result.score == 2.0


async def test_context_length_400_is_not_retried() -> None:
    """vLLM's 400 context-length answer raises ContextTooLong with both numbers, after a single call."""
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(return_value=context_error())
        client = VlmClient(config())
        with pytest.raises(ContextTooLong) as caught:
            await client.critique_video(VIDEO)
        await client.aclose()
    assert route.call_count == 1
    assert caught.value.max_context_tokens == 4096
    assert caught.value.requested_tokens == 5000
    assert caught.value.server_message == CONTEXT_MESSAGE
    assert isinstance(caught.value, VlmError)


async def test_other_4xx_is_permanent_and_named() -> None:
    """Another 4xx raises VlmError naming the status and the server's message, without retry."""
    error = {"object": "error", "message": "The model `nope` does not exist.", "type": "NotFoundError", "code": 404}
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(return_value=httpx.Response(404, json=error))
        client = VlmClient(config())
        with pytest.raises(VlmError, match=r"404.*does not exist") as caught:
            await client.critique_video(VIDEO)
        await client.aclose()
    assert route.call_count == 1
    assert not isinstance(caught.value, ContextTooLong)


async def test_5xx_then_success_retries() -> None:
    """A 503 followed by a good answer succeeds on the second call."""
    ok = httpx.Response(200, json=completion(verdict("No"), verdict("No"), verdict("No"), verdict("No")))
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(side_effect=[httpx.Response(503, text="warming up"), ok])
        client = VlmClient(config())
        result = await client.critique_video(VIDEO)
        await client.aclose()
    assert route.call_count == 2
    assert result.score == 1.0


async def test_repeated_5xx_gives_unavailable() -> None:
    """A server that keeps answering 500 raises VlmUnavailable after max_retries + 1 calls."""
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(
            side_effect=chain(repeat(httpx.Response(500, json={"object": "error", "message": "engine dead"})))
        )
        client = VlmClient(config(max_retries=2))
        with pytest.raises(VlmUnavailable, match="engine dead"):
            await client.critique_video(VIDEO)
        await client.aclose()
    assert route.call_count == 3


async def test_timeouts_are_retried_then_unavailable() -> None:
    """Read timeouts are retried and, once retries run out, raise VlmUnavailable."""
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(side_effect=httpx.ReadTimeout("read timed out"))
        client = VlmClient(config(max_retries=3))
        with pytest.raises(VlmUnavailable, match="ReadTimeout"):
            await client.critique_video(VIDEO)
        await client.aclose()
    assert route.call_count == 4


async def test_timeout_then_success() -> None:
    """A connect error followed by a timeout and then a good answer succeeds on the third call."""
    ok = httpx.Response(200, json=completion(verdict("Yes")))
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(
            side_effect=[httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), ok]
        )
        client = VlmClient(config(trials=1))
        result = await client.critique_video(VIDEO)
        await client.aclose()
    assert route.call_count == 3
    assert result.score == 0.0


async def test_request_body_shape() -> None:
    """The body puts the video before the text and carries model, n, sampling settings and mm_processor_kwargs."""
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(return_value=httpx.Response(200, json=completion(verdict("No"))))
        client = VlmClient(config(model="my-reason", trials=5, fps=2, temperature=0.5, top_p=0.9, max_tokens=2000))
        await client.critique_video(VIDEO)
        await client.aclose()
    sent = json.loads(route.calls.last.request.content)
    assert sent["model"] == "my-reason"
    assert sent["n"] == 5
    assert sent["temperature"] == 0.5
    assert sent["top_p"] == 0.9
    assert sent["max_tokens"] == 2000
    assert sent["mm_processor_kwargs"] == {"fps": 2, "do_sample_frames": True}
    system, user = sent["messages"]
    assert system["role"] == "system"
    assert "<think>" in system["content"]
    assert "<answer>" in system["content"]
    assert user["role"] == "user"
    video, text = user["content"]
    assert video == {"type": "video_url", "video_url": {"url": VIDEO}}
    assert text["type"] == "text"
    assert "anomal" in text["text"].lower()


async def test_authorization_header_when_api_key_set() -> None:
    """The bearer token is sent when api_key is set, and no Authorization header otherwise."""
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json=completion(verdict("No")))

    for key in ("s3cret", None):
        client = VlmClient(config(api_key=key, trials=1), transport=httpx.MockTransport(handler))
        await client.critique_video(VIDEO)
        await client.aclose()
    assert seen == ["Bearer s3cret", None]


async def test_concurrency_is_limited() -> None:
    """With concurrency=2, six concurrent calls to a slow server never have more than two in flight."""
    in_flight = 0
    peak = 0
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak, calls
        calls += 1
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return httpx.Response(200, json=completion(verdict("No")))

    client = VlmClient(config(concurrency=2, trials=1), transport=httpx.MockTransport(handler))
    results = await asyncio.gather(*(client.critique_video(VIDEO) for _ in range(6)))
    await client.aclose()
    assert calls == 6
    assert peak == 2
    assert all(r.score == 1.0 for r in results)


async def test_results_and_malformed_answers_keep_what_was_asked() -> None:
    """A result names the prompts and fps it was sent; a malformed answer keeps every trial's text for the verdict."""
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/chat/completions").mock(
            side_effect=[
                httpx.Response(200, json=completion(verdict("3"), model="reason-x")),
                httpx.Response(200, json=completion("no tags", "<answer>perhaps</answer>", model="reason-x")),
            ]
        )
        client = VlmClient(config(fps=2, trials=2))
        result = await client.critique_video(VIDEO, kind="plausibility")
        with pytest.raises(MalformedCritique) as caught:
            await client.critique_video(VIDEO, kind="plausibility")
        await client.aclose()
    first = json.loads(route.calls[0].request.content)
    assert result.system_prompt == first["messages"][0]["content"]
    assert result.question == first["messages"][1]["content"][1]["text"]
    assert result.fps == 2
    bad = caught.value
    assert bad.raw == ("no tags", "<answer>perhaps</answer>") and bad.model == "reason-x" and bad.kind == "plausibility"
    assert (bad.system_prompt, bad.question) == (result.system_prompt, result.question)
