"""Object keys: derived by pure functions; unsafe keys refused with the rule they break."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worldmill.contracts.keys import (
    InvalidKeyError,
    augment_output_key,
    check_key,
    control_video_key,
    video_key,
)


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("", "must not be empty"),
        ("/etc/passwd", "must be relative"),
        ("a/../b", "'..' path segment"),
        ("../b", "'..' path segment"),
        ("a/./b", "'.' path segment"),
        ("a//b", "empty path segment"),
        ("a\\b", "backslash"),
        ("a\nb", "control character U+000A"),
        ("a\x00b", "control character U+0000"),
        ("x" * 1025, "at most 1024 bytes"),
    ],
)
def test_unsafe_keys_are_refused_naming_the_rule(key: str, rule: str) -> None:
    """Each unsafe key raises InvalidKeyError whose message names the broken rule."""
    with pytest.raises(InvalidKeyError, match=re.escape(rule)):
        check_key(key)


def test_ordinary_keys_pass_unchanged() -> None:
    """Keys with folders, spaces and unicode are fine."""
    for key in ("runs/r1/attempt-1/video.mp4", "inputs/my clip (1).mp4", "données/vidéo.mp4", "folder/"):
        assert check_key(key) == key


def test_keys_are_deterministic_and_mirror_the_input_path() -> None:
    """A retry writes the same key; augment outputs mirror the input folder."""
    assert video_key("r1", 2) == video_key("r1", 2) == "runs/r1/attempt-2/video.mp4"
    assert augment_output_key("robots/arm/clip.mp4") == "augmented/robots/arm/clip_aug.mp4"
    assert control_video_key("clip.mp4", "edge") == "augmented/clip_control_edge.mp4"


@given(st.text(min_size=1, max_size=60))
def test_check_key_never_lets_a_parent_segment_through(key: str) -> None:
    """Whatever the text, an accepted key has no '..' segment and does not start with '/'."""
    try:
        check_key(key)
    except InvalidKeyError:
        return
    assert ".." not in key.split("/")
    assert not key.startswith("/")
