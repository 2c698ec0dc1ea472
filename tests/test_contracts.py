"""Contracts: immutable, strict, versioned; envelopes round-trip; model cards state the facts."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from worldmill.contracts.base import ObjectRef, Resolution
from worldmill.contracts.cards import ControlType, FpsPolicy, FrameRule, GenerationMode, builtin_cards
from worldmill.contracts.envelope import Envelope, follow_up, wrap
from worldmill.contracts.objects import ObjectCreated
from worldmill.contracts.prompts import PromptSpec, SamplingParams
from worldmill.contracts.registry import (
    MESSAGE_CLASSES,
    InvalidMessageDataError,
    UnknownMessageTypeError,
    decode_data,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _event() -> ObjectCreated:
    return ObjectCreated(bucket="wm-inputs", key="a/b.mp4", size=3, etag="abc", origin="poller", event_time=NOW)


def test_contracts_are_frozen_and_forbid_unknown_fields() -> None:
    """Assigning to a contract fails, and an unknown field is refused with its name."""
    ev = _event()
    with pytest.raises(ValidationError):
        ev.size = 4  # type: ignore[misc]
    with pytest.raises(ValidationError, match="colour"):
        ObjectCreated(**ev.model_dump(), colour="red")  # type: ignore[arg-type]


def test_envelope_round_trips_through_json_and_decodes_to_the_typed_message() -> None:
    """wrap → JSON → Envelope → decode_data gives back an equal message with CloudEvents names."""
    env = wrap(_event(), source="/worldmill/test", event_id="evt-1")
    raw = env.model_dump_json()
    back = Envelope.model_validate_json(raw)
    assert back.specversion == "1.0"
    assert back.type == "io.worldmill.object.created.v1"
    assert back.id == back.correlationid == "evt-1"
    assert back.subject == "wm-inputs/a/b.mp4"
    assert decode_data(back) == _event()
    assert back == Envelope.model_validate(back.model_dump())


def test_follow_up_keeps_the_correlation_and_records_the_cause() -> None:
    """A message caused by another shares its correlation id and names it as cause."""
    first = wrap(_event(), source="/a", correlation_id="flow-7")
    second = follow_up(first, _event(), source="/b")
    assert second.correlationid == "flow-7"
    assert second.causationid == first.id
    assert second.id != first.id


def test_decoding_rejects_unknown_types_and_names_the_bad_field() -> None:
    """An unregistered type and data that breaks the schema give errors that say what is wrong."""
    env = Envelope.model_validate_json(wrap(_event(), source="/t").model_dump_json())
    with pytest.raises(UnknownMessageTypeError, match=re.escape("io.worldmill.nope.v1")):
        decode_data(env.model_copy(update={"type": "io.worldmill.nope.v1"}))
    bad = env.model_copy(update={"data": {**env.data, "size": -1}})
    with pytest.raises(InvalidMessageDataError, match=r"data\.size"):
        decode_data(bad)


def test_every_message_type_has_a_unique_type_and_subject() -> None:
    """No two message classes share a CloudEvents type or a NATS subject."""
    types = [c.ce_type() for c in MESSAGE_CLASSES]
    subjects = [c.subject() for c in MESSAGE_CLASSES]
    assert len(set(types)) == len(types)
    assert len(set(subjects)) == len(subjects)
    assert all(s.startswith(("wm.evt.", "wm.job.")) for s in subjects)


def _spec(**kw: object) -> PromptSpec:
    base: dict[str, object] = dict(
        prompt_id="p1",
        version=1,
        scenario="C01",
        variant=0,
        duration_s=5,
        fps=24,
        target_frames=120,
        seed=12345,
        resolution=Resolution(width=320, height=192),
        model="synthetic",
        prompt="a robot",
        sampling=SamplingParams(guidance=7, steps=35),
        created_at=NOW,
    )
    base.update(kw)
    return PromptSpec(**base)  # type: ignore[arg-type]


def test_prompt_spec_requires_frames_equal_to_duration_times_fps() -> None:
    """A spec whose frame count is not duration × fps is refused with the numbers."""
    assert _spec().target_frames == 120
    with pytest.raises(ValidationError, match=r"5.0 × 24.0 = 120.0, got 93"):
        _spec(target_frames=93)


def test_predict_card_states_what_the_model_really_does() -> None:
    """Predict2.5: 93 frames per chunk (4k+1), always 16 fps, 1280×704, chains chunks for length."""
    card = builtin_cards()["cosmos-predict2.5-2b"]
    assert card.frames_per_chunk == 93 and card.frame_rule.is_valid(93)
    assert card.native_fps == 16 and card.fps_policy is FpsPolicy.FIXED
    assert card.native_resolution == Resolution(width=1280, height=704)
    assert card.autoregressive
    assert card.conditional_frames[GenerationMode.VIDEO2WORLD] == 5
    assert card.supports_resolution(Resolution(width=768, height=432))
    assert not card.supports_resolution(Resolution(width=1920, height=1080))


def test_transfer_card_keeps_input_fps_and_lists_controls_and_presets() -> None:
    """Transfer2.5: output fps = input fps, four controls, Canny medium = 100/200."""
    card = builtin_cards()["cosmos-transfer2.5-2b"]
    assert card.fps_policy is FpsPolicy.INPUT
    assert card.controls == frozenset(ControlType)
    assert card.edge_presets["medium"] == (100, 200)  # type: ignore[index]
    assert card.max_overlap_frames == 2


@given(st.integers(min_value=1, max_value=100_000))
def test_frame_rule_rounds_up_to_the_smallest_valid_count(frames: int) -> None:
    """4k+1: the rounded count is valid, ≥ the request, and less than one step above it."""
    rule = FrameRule(step=4, offset=1)
    up = rule.round_up(frames)
    assert rule.is_valid(up)
    assert frames <= up < frames + 4


def test_object_ref_refuses_a_bad_sha256() -> None:
    """An ObjectRef's sha256 must be 64 lower-case hex characters."""
    with pytest.raises(ValidationError, match="sha256"):
        ObjectRef(bucket="wm-inputs", key="k", size=1, sha256="XYZ")
