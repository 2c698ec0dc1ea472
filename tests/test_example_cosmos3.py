"""The Cosmos 3 example manifest: it checks, plans without frame-rate conversion, and upsamples to structured captions."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.conftest import REPO
from worldmill.contracts.backends import builtin_backends
from worldmill.contracts.cards import builtin_cards
from worldmill.generate.planning import plan_on_backends
from worldmill.prompt.expand import check_text
from worldmill.upsample.service import caption_target

EXAMPLE = REPO / "examples" / "warehouse-robots-cosmos3.yaml"


def test_the_cosmos3_example_plans_natively_at_24_fps_on_the_cosmos3_backend() -> None:
    expansion = check_text(EXAMPLE.read_text(), now=datetime.now(UTC))
    assert expansion.ok, expansion.problems
    assert len(expansion.specs) == 12 and {s.model for s in expansion.specs} == {"cosmos3-nano"}
    card = builtin_cards()["cosmos3-nano"]
    configured = [builtin_backends()[n] for n in ("diffusers", "cosmos3", "synthetic")]
    chunks = {}
    for spec in expansion.specs:
        plan = plan_on_backends(spec, card, configured, plan_id="p")
        assert plan.backend == "cosmos3" and plan.fps_conversion.method == "none"
        assert plan.native_fps == 24 and plan.native_frames == spec.target_frames
        chunks[spec.duration_s] = len(plan.chunks)
        assert [c.seed for c in plan.chunks] == [(spec.seed + i) % 2**32 for i in range(len(plan.chunks))]
    assert chunks == {5.0: 1, 10.0: 2, 20.0: 3}  # 120, 240, 480 frames in 189-frame chunks, overlap 5


def test_cosmos3_specs_are_upsampled_to_structured_captions_and_others_are_not() -> None:
    expansion = check_text(EXAMPLE.read_text(), now=datetime.now(UTC))
    target = caption_target(expansion.specs[0])
    assert target is not None and (target.fps, target.width, target.height) == (24.0, 1280, 720)
    demo = check_text((REPO / "examples" / "security-cameras-demo.yaml").read_text(), now=datetime.now(UTC))
    assert caption_target(demo.specs[0]) is None  # the synthetic card takes plain prompts
