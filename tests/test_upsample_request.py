"""Upsample requests: the chat messages sent to the vision-language server and the key their answer is cached under.

Pure tests: ``worldmill.upsample.request`` with the built-in profiles, no servers.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from worldmill.upsample.profiles import builtin_profiles
from worldmill.upsample.request import INSTRUCTION, Sampling, build_messages, cache_key, user_text

PROFILES = builtin_profiles()
PIXTRAL = PROFILES["pixtral-12b"]
REASON1 = PROFILES["cosmos-reason1-7b"]
PROMPT = "A forklift carries a pallet of red crates across a wet loading dock at night, under sodium lamps."
IMAGE_URLS = ["data:image/jpeg;base64,AAAA", "data:image/jpeg;base64,BBBB"]
VIDEO_URL = "data:video/mp4;base64,CCCC"
HINT_SHA = "a" * 64

# The cache key's inputs for one ordinary request with a hint.
BASE: dict[str, Any] = {
    "model": "mistralai/Pixtral-12B-2409",
    "profile": PIXTRAL,
    "text": user_text(PROMPT),
    "hint_sha256": HINT_SHA,
    "hint_frames": 2,
    "as_video": False,
    "sampling": Sampling(temperature=0.6, top_p=0.9, max_tokens=300, seed=0),
}


def key(**changes: Any) -> str:
    """The cache key of ``BASE`` with ``changes`` applied."""
    return cache_key(**{**BASE, **changes})


def resample(**changes: Any) -> Sampling:
    """``BASE``'s sampling with ``changes`` applied."""
    return dataclasses.replace(BASE["sampling"], **changes)


# --------------------------------------------------------------------------------------------- user text


def test_user_text_is_the_instruction_then_the_stripped_prompt() -> None:
    """The user text is the fixed instruction followed by the prompt without surrounding whitespace."""
    text = user_text(f"  \n{PROMPT}\t \n")
    assert text == INSTRUCTION + PROMPT
    assert text.endswith(PROMPT)
    assert PROMPT in text


# --------------------------------------------------------------------------------------------- messages


def test_messages_put_the_system_prompt_first_then_one_user_message() -> None:
    """The request is the profile's system prompt, then exactly one user message."""
    messages = build_messages(PIXTRAL, user_text(PROMPT), IMAGE_URLS, as_video=False)
    assert len(messages) == 2
    assert messages[0] == {"role": "system", "content": PIXTRAL.system_prompt}
    assert messages[1]["role"] == "user"


def test_image_hints_come_before_the_text_as_image_urls() -> None:
    """Each hint image is one ``image_url`` item, in order, and the text is the last item."""
    text = user_text(PROMPT)
    content = build_messages(PIXTRAL, text, IMAGE_URLS, as_video=False)[1]["content"]
    assert content == [
        {"type": "image_url", "image_url": {"url": IMAGE_URLS[0]}},
        {"type": "image_url", "image_url": {"url": IMAGE_URLS[1]}},
        {"type": "text", "text": text},
    ]


def test_a_video_hint_is_exactly_one_video_url_before_the_text() -> None:
    """A hint video is a single ``video_url`` item, followed by the text."""
    text = user_text(PROMPT)
    messages = build_messages(REASON1, text, [VIDEO_URL], as_video=True)
    assert messages[0] == {"role": "system", "content": REASON1.system_prompt}
    content = messages[1]["content"]
    assert content == [
        {"type": "video_url", "video_url": {"url": VIDEO_URL}},
        {"type": "text", "text": text},
    ]
    assert [item["type"] for item in content].count("video_url") == 1
    assert not any(item["type"] == "image_url" for item in content)


@pytest.mark.parametrize("as_video", [False, True])
def test_without_hints_the_user_message_is_only_the_text(as_video: bool) -> None:
    """With no media the user message holds just the text item."""
    text = user_text(PROMPT)
    content = build_messages(REASON1, text, [], as_video=as_video)[1]["content"]
    assert content == [{"type": "text", "text": text}]


def test_several_urls_as_a_video_are_refused() -> None:
    """A hint video is one item: several URLs with ``as_video=True`` raise ``ValueError``."""
    with pytest.raises(ValueError, match="one item"):
        build_messages(REASON1, user_text(PROMPT), [VIDEO_URL, VIDEO_URL], as_video=True)


# --------------------------------------------------------------------------------------------- cache key


def test_cache_key_is_deterministic_hex_sha256() -> None:
    """The same inputs (even rebuilt as new objects) give the same 64-character lowercase hex key."""
    first = key()
    again = cache_key(
        model="mistralai/Pixtral-12B-2409",
        profile=builtin_profiles()["pixtral-12b"],
        text=user_text(PROMPT),
        hint_sha256="a" * 64,
        hint_frames=2,
        as_video=False,
        sampling=Sampling(temperature=0.6, top_p=0.9, max_tokens=300, seed=0),
    )
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert first == again == key()


@pytest.mark.parametrize(
    "changes",
    [
        {"model": "nvidia/Cosmos-Reason1-7B"},
        {"profile": REASON1},
        {"profile": dataclasses.replace(PIXTRAL, system_prompt=PIXTRAL.system_prompt + " Be brief.")},
        {"profile": dataclasses.replace(PIXTRAL, context_tokens=8192)},
        {"text": user_text(PROMPT + " The forklift is yellow.")},
        {"hint_sha256": "b" * 64},
        {"hint_sha256": None},
        {"hint_frames": 1},
        {"as_video": True},
        {"sampling": resample(temperature=0.7)},
        {"sampling": resample(top_p=0.95)},
        {"sampling": resample(max_tokens=512)},
        {"sampling": resample(seed=1)},
        {"sampling": resample(seed=None)},
    ],
    ids=[
        "model",
        "profile",
        "system-prompt",
        "context",
        "text",
        "hint-sha256",
        "no-hint",
        "hint-frames",
        "as-video",
        "temperature",
        "top-p",
        "max-tokens",
        "seed",
        "no-seed",
    ],
)
def test_cache_key_changes_with_every_input(changes: dict[str, Any]) -> None:
    """Changing any one input that can change the answer gives a different key."""
    assert key(**changes) != key()


@pytest.mark.parametrize(("hint_frames", "as_video"), [(0, False), (2, False), (8, False), (2, True), (8, True)])
def test_without_a_hint_frames_and_video_do_not_change_the_key(hint_frames: int, as_video: bool) -> None:
    """With no hint (``hint_sha256=None``) the frame count and ``as_video`` do not matter."""
    assert key(hint_sha256=None, hint_frames=hint_frames, as_video=as_video) == key(
        hint_sha256=None, hint_frames=0, as_video=False
    )
