"""The chat request an upsample sends, and the key its answer is cached under (pure functions).

The user message puts the hint media first (images, or one short video) and the text last, which
is how both Pixtral and Qwen2.5-VL were prompted with media. The cache key covers everything that
changes the answer: the served model, the profile, the system prompt, the user text, the hint's
identity (the source file's sha256 and how many frames of it, as images or a video) and the
sampling parameters. It is computed before any frame is decoded, so a cache hit costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from worldmill.runtime.digest import canonical_json, sha256_hex
from worldmill.upsample.profiles import ModelProfile

INSTRUCTION = (
    "Rewrite the following video prompt as one detailed paragraph, following the system instructions. The prompt:\n\n"
)


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters of one upsample request (all of them go into the cache key)."""

    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None = None


def user_text(prompt: str) -> str:
    """The text of the user message for ``prompt``."""
    return INSTRUCTION + prompt.strip()


def build_messages(
    profile: ModelProfile, text: str, media_urls: Sequence[str], *, as_video: bool, system: str | None = None
) -> list[dict[str, Any]]:
    """System prompt (the profile's unless given), then one user message: hint images (or one hint video), the text."""
    if as_video and len(media_urls) > 1:
        raise ValueError("a hint video is one item; got several")
    media_type = "video_url" if as_video else "image_url"
    content: list[dict[str, Any]] = [{"type": media_type, media_type: {"url": url}} for url in media_urls]
    content.append({"type": "text", "text": text})
    return [{"role": "system", "content": system or profile.system_prompt}, {"role": "user", "content": content}]


def cache_key(
    *,
    model: str,
    profile: ModelProfile,
    text: str,
    hint_sha256: str | None,
    hint_frames: int,
    as_video: bool,
    sampling: Sampling,
    system: str | None = None,
) -> str:
    """sha256 over everything that makes a different answer (canonical JSON)."""
    material = {
        "model": model,
        "profile": profile.name,
        "context": profile.context_tokens,
        "system": system or profile.system_prompt,
        "text": text,
        "hint": hint_sha256,
        "frames": hint_frames if hint_sha256 else 0,
        "video": as_video if hint_sha256 else False,
        "sampling": asdict(sampling),
    }
    return sha256_hex(canonical_json(material, ensure_ascii=True, allow_nan=True))  # cached keys: these bytes
