"""Upsample settings from the environment: the profile a deployment sizes its requests with."""

from __future__ import annotations

import pytest

from worldmill.runtime.settings import RuntimeSettings
from worldmill.upsample.app import create_app, describe, make_upsampler
from worldmill.upsample.settings import UpsampleSettings


def test_environment_overrides_shape_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """WM_UPSAMPLE_* picks the profile, its context, image limit, sampling and the served model name."""
    for key, value in {
        "WM_UPSAMPLE_BASE_URL": "http://vllm:8000/v1",
        "WM_UPSAMPLE_PROFILE": "cosmos-reason1-7b",
        "WM_UPSAMPLE_MAX_MODEL_LEN": "16384",
        "WM_UPSAMPLE_MAX_IMAGES": "4",
        "WM_UPSAMPLE_MAX_TOKENS": "400",
        "WM_UPSAMPLE_TEMPERATURE": "0.2",
        "WM_UPSAMPLE_HINT_FRAMES": "6",
    }.items():
        monkeypatch.setenv(key, value)
    settings = UpsampleSettings.specialize(RuntimeSettings(service="upsample"))
    profile = settings.model_profile()
    assert (profile.name, profile.context_tokens, profile.max_images) == ("cosmos-reason1-7b", 16384, 4)
    assert (profile.default_max_tokens, profile.default_temperature) == (400, 0.2)
    assert settings.served_model() == "nvidia/Cosmos-Reason1-7B"
    upsampler = make_upsampler(settings)
    assert upsampler is not None
    assert upsampler.sampling.max_tokens == 400 and upsampler.hint_frames == 6
    assert upsampler.client.base_url == "http://vllm:8000/v1"
    info = describe(settings)
    assert info.available and info.context_tokens == 16384 and info.model == "nvidia/Cosmos-Reason1-7B"


def test_no_base_url_means_no_upsampler_and_says_how_to_get_one() -> None:
    """Unset or empty WM_UPSAMPLE_BASE_URL: nothing to call, reported unavailable with the variable named."""
    for base_url in (None, ""):
        settings = UpsampleSettings(service="upsample", base_url=base_url)
        assert make_upsampler(settings) is None
        info = describe(settings)
        assert not info.available and info.reason is not None and "WM_UPSAMPLE_BASE_URL" in info.reason


def test_an_unknown_profile_fails_at_start_naming_the_known_ones() -> None:
    """A typo in WM_UPSAMPLE_PROFILE stops the service before it starts, listing the profiles."""
    with pytest.raises(ValueError, match=r"WM_UPSAMPLE_PROFILE='qwen3'.*pixtral-12b, cosmos-reason1-7b"):
        create_app(UpsampleSettings(service="upsample", profile="qwen3"))
