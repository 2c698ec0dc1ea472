"""Manifests: a dataset described once, expanded into exact specs, or refused with every problem at once.

Pure tests: ``check_text`` on YAML/JSON text, no servers.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from worldmill.contracts.base import Resolution
from worldmill.contracts.cards import GenerationMode, builtin_cards
from worldmill.contracts.prompts import ManifestProblem
from worldmill.prompt.expand import (
    MAX_METADATA_BYTES,
    MAX_METADATA_KEYS,
    Expansion,
    check_text,
    estimate_tokens,
    format_path,
)
from worldmill.prompt.source import MAX_BYTES, MAX_NODES
from worldmill.prompt.versioning import content_hash

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
FPS = (8, 10, 12, 15, 16, 20, 24, 25, 30, 48, 50, 60)
PROPS = settings(max_examples=50, deadline=None)


# --------------------------------------------------------------------------------------------- helpers


def doc(text: str) -> str:
    """A YAML document written indented in the test, without the indentation."""
    return textwrap.dedent(text).lstrip("\n")


def where(text: str, needle: str, nth: int = 1) -> tuple[int, int]:
    """1-based (line, column) of the nth occurrence of ``needle`` in ``text``."""
    pos = -1
    for _ in range(nth):
        pos = text.index(needle, pos + 1)
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, column


def check(text: str | bytes) -> Expansion:
    """Check a manifest at a fixed time."""
    return check_text(text, now=NOW)


def only_problem(exp: Expansion, rule: str) -> ManifestProblem:
    """The single problem of a rejected manifest, which must break ``rule``."""
    assert exp.specs == []
    assert not exp.ok
    assert [p.rule for p in exp.problems] == [rule], exp.problems
    return exp.problems[0]


def problem(exp: Expansion, rule: str, path: str) -> ManifestProblem:
    """The problem with this rule and path (exactly one must exist)."""
    found = [p for p in exp.problems if p.rule == rule and p.path == path]
    assert len(found) == 1, exp.problems
    return found[0]


SIMPLE = doc(
    """
    name: m
    durations: [5]
    series:
      - id: R
        scenarios:
          - id: R1
            prompt: A wet street at night.
    """
)


# --------------------------------------------------------------------------------------------- A. expansion

VALID = doc(
    """
    format: 1
    name: demo
    description: two series of driving scenes
    defaults:
      model: cosmos-predict2.5-2b
      fps: 24
      steps: 30
    durations: [5, 10, 30]
    variants: 2
    templates:
      street: "A {camera} view of {subject} crossing a street at {time}."
    metadata:
      project: worldmill
      level: manifest
    series:
      - id: R
        name: Rain
        risk_level: high
        tags: [weather, rain]
        overrides:
          guidance: 5
          steps: 40
        metadata:
          level: series
          weather: rain
        scenarios:
          - id: R1
            template: street
            vars: {camera: dashcam, subject: a cyclist, time: dusk}
            tags: [cyclist, rain]
            metadata: {level: scenario}
            overrides:
              guidance: 4
              steps: 50
          - id: R2
            prompt: Heavy rain on an empty highway at night.
      - id: P
        risk_level: low
        tags: [pedestrian]
        variants: {5: 1, 10: 3, 30: 2}
        overrides:
          resolution: 960x960
        scenarios:
          - id: P1
            prompt: A pedestrian waits at a crossing.
            risk_level: medium
            tags: [night]
            overrides: {guidance: 3.5, negative_prompt: blurry}
          - id: P2
            prompt: A child runs after a ball into the road.
    """
)


@pytest.fixture(scope="module")
def valid() -> Expansion:
    """The small valid manifest, expanded."""
    exp = check(VALID)
    assert exp.ok, exp.problems
    return exp


def _by_id(exp: Expansion) -> dict[str, Any]:
    return {s.prompt_id: s for s in exp.specs}


def test_valid_manifest_expands_to_the_exact_spec_count(valid: Expansion) -> None:
    """Two series × two scenarios × durations [5, 10, 30] × their variants give exactly 24 specs."""
    assert valid.problems == []
    assert len(valid.specs) == 2 * 3 * 2 + 2 * (1 + 3 + 2)
    assert valid.sha256 == hashlib.sha256(VALID.encode()).hexdigest()
    assert all(s.manifest_sha256 == valid.sha256 and s.manifest == "demo" for s in valid.specs)
    assert all(s.created_at == NOW and s.version == 1 for s in valid.specs)


def test_target_frames_are_duration_times_fps(valid: Expansion) -> None:
    """At 24 fps, 5 s is 120 frames, 10 s is 240 and 30 s is 720."""
    frames = {(s.duration_s, s.fps, s.target_frames) for s in valid.specs}
    assert frames == {(5.0, 24, 120), (10.0, 24, 240), (30.0, 24, 720)}


def test_prompt_ids_name_manifest_scenario_duration_and_variant(valid: Expansion) -> None:
    """Prompt ids are ``<manifest>-<scenario>-<dur>s-v<n>`` and list every combination once."""
    ids = [s.prompt_id for s in valid.specs]
    assert len(set(ids)) == len(ids)
    r1 = {s.prompt_id for s in valid.specs if s.scenario == "R1"}
    assert r1 == {f"demo-R1-{d}s-v{v}" for d in (5, 10, 30) for v in (0, 1)}
    p2 = {s.prompt_id for s in valid.specs if s.scenario == "P2"}
    assert p2 == {
        "demo-P2-5s-v0",
        "demo-P2-10s-v0",
        "demo-P2-10s-v1",
        "demo-P2-10s-v2",
        "demo-P2-30s-v0",
        "demo-P2-30s-v1",
    }
    spec = _by_id(valid)["demo-P2-10s-v2"]
    assert (spec.scenario, spec.series, spec.duration_s, spec.variant) == ("P2", "P", 10.0, 2)


def test_template_is_rendered_with_the_scenario_vars(valid: Expansion) -> None:
    """A template scenario's prompt is the template filled with its vars; a plain prompt is kept as is."""
    specs = _by_id(valid)
    assert specs["demo-R1-5s-v0"].prompt == "A dashcam view of a cyclist crossing a street at dusk."
    assert specs["demo-R2-5s-v0"].prompt == "Heavy rain on an empty highway at night."


def test_tags_merge_series_then_scenario_without_repeats(valid: Expansion) -> None:
    """Tags are the series' tags followed by the scenario's, each once, in order."""
    specs = _by_id(valid)
    assert specs["demo-R1-5s-v0"].tags == ("weather", "rain", "cyclist")
    assert specs["demo-R2-5s-v0"].tags == ("weather", "rain")
    assert specs["demo-P1-5s-v0"].tags == ("pedestrian", "night")


def test_risk_level_is_inherited_unless_the_scenario_sets_one(valid: Expansion) -> None:
    """A scenario without a risk level takes its series'; one with its own keeps it."""
    specs = _by_id(valid)
    assert specs["demo-R1-5s-v0"].risk_level == "high"
    assert specs["demo-P1-5s-v0"].risk_level == "medium"
    assert specs["demo-P2-5s-v0"].risk_level == "low"


def test_metadata_merges_manifest_series_scenario_with_derived_keys(valid: Expansion) -> None:
    """Metadata merges manifest → series → scenario (later wins) and adds series_name, template and var.*."""
    specs = _by_id(valid)
    assert specs["demo-R1-5s-v0"].metadata == {
        "project": "worldmill",
        "level": "scenario",
        "weather": "rain",
        "series_name": "Rain",
        "template": "street",
        "var.camera": "dashcam",
        "var.subject": "a cyclist",
        "var.time": "dusk",
    }
    assert specs["demo-R2-5s-v0"].metadata == {
        "project": "worldmill",
        "level": "series",
        "weather": "rain",
        "series_name": "Rain",
    }
    assert specs["demo-P1-5s-v0"].metadata == {"project": "worldmill", "level": "manifest"}


def test_overrides_inherit_scenario_over_series_over_defaults_over_card(valid: Expansion) -> None:
    """Each setting comes from the scenario, else the series, else the defaults, else the model card."""
    card = builtin_cards()["cosmos-predict2.5-2b"]
    specs = _by_id(valid)
    r1, r2, p1, p2 = (specs[f"demo-{s}-5s-v0"] for s in ("R1", "R2", "P1", "P2"))
    assert (r1.sampling.guidance, r1.sampling.steps) == (4.0, 50)  # scenario
    assert (r2.sampling.guidance, r2.sampling.steps) == (5.0, 40)  # series
    assert (p1.sampling.guidance, p1.sampling.steps) == (3.5, 30)  # scenario guidance, defaults steps
    assert (p2.sampling.guidance, p2.sampling.steps) == (card.default_guidance, 30)  # card guidance
    assert p1.sampling.negative_prompt == "blurry"
    assert p2.sampling.negative_prompt is None
    assert r1.resolution == card.native_resolution
    assert p1.resolution == Resolution(width=960, height=960)
    assert {s.model for s in valid.specs} == {"cosmos-predict2.5-2b"}
    assert {s.mode for s in valid.specs} == {GenerationMode.TEXT2WORLD}


def test_unset_settings_come_from_the_default_model_card() -> None:
    """With no settings at all, model, fps, resolution, guidance and steps are the documented defaults."""
    exp = check(SIMPLE)
    assert exp.ok, exp.problems
    (spec,) = exp.specs
    card = builtin_cards()["cosmos-predict2.5-2b"]
    assert spec.model == card.id
    assert spec.fps == 24
    assert spec.target_frames == 120
    assert spec.resolution == card.native_resolution
    assert spec.sampling.guidance == card.default_guidance
    assert spec.sampling.steps == card.default_steps
    assert (spec.upsample, spec.auto_generate) == (False, False)


def test_summary_counts_per_series_and_duration_and_frames(valid: Expansion) -> None:
    """summary() counts specs per series and duration, and the frames per series and in total."""
    summary = valid.summary()
    assert summary.specs == 24
    assert summary.by_series == {
        "R": {"5s": 4, "10s": 4, "30s": 4},
        "P": {"5s": 2, "10s": 6, "30s": 4},
    }
    assert summary.frames_by_series == {"R": 2 * 2 * (120 + 240 + 720), "P": 2 * (120 + 3 * 240 + 2 * 720)}
    assert summary.frames == 4320 + 4560


def test_json_manifest_expands_like_the_yaml_one(valid: Expansion) -> None:
    """The same manifest written as JSON gives the same specs (only the document hash differs)."""
    exp = check(json.dumps(yaml.safe_load(VALID)))
    assert exp.ok, exp.problems

    def strip(e: Expansion) -> list[dict[str, Any]]:
        return [s.model_dump(exclude={"manifest_sha256"}) for s in e.specs]

    assert strip(exp) == strip(valid)


# --------------------------------------------------------------------------------------------- B. properties


@st.composite
def generated(draw: st.DrawFn) -> tuple[dict[str, Any], dict[tuple[str, float], tuple[int, int, int]]]:
    """A valid manifest dict and, per (scenario, duration), the expected (fps, frames, variants)."""
    manifest_durations = draw(st.lists(st.integers(1, 30), min_size=1, max_size=3, unique=True))
    manifest_variants = draw(st.integers(1, 4))
    expected: dict[tuple[str, float], tuple[int, int, int]] = {}
    series = []
    for si in range(draw(st.integers(1, 3))):
        fps = draw(st.sampled_from(FPS))
        entry: dict[str, Any] = {"id": f"S{si}", "overrides": {"fps": fps}, "scenarios": []}
        durations: list[float] = [float(d) for d in manifest_durations]
        if draw(st.booleans()):  # durations of this series: whole numbers of frames at its fps
            frames = draw(st.lists(st.integers(1, 900), min_size=1, max_size=4, unique=True))
            entry["durations"] = [f / fps for f in frames]
            durations = entry["durations"]
        for ci in range(draw(st.integers(1, 3))):
            scenario: dict[str, Any] = {"id": f"S{si}c{ci}", "prompt": f"Scene {ci} of series {si}."}
            variants: dict[float, int] = dict.fromkeys(durations, manifest_variants)
            kind = draw(st.sampled_from(["inherit", "count", "map"]))
            if kind == "count":
                scenario["variants"] = draw(st.integers(1, 4))
                variants = dict.fromkeys(durations, scenario["variants"])
            elif kind == "map":
                variants = {d: draw(st.integers(1, 4)) for d in durations}
                scenario["variants"] = dict(variants)
            for d in durations:
                expected[(scenario["id"], d)] = (fps, round(d * fps), variants[d])
            entry["scenarios"].append(scenario)
        series.append(entry)
    manifest = {
        "name": draw(st.sampled_from(["gen", "gen-set", "prop-test"])),
        "defaults": {"model": "synthetic"},
        "durations": manifest_durations,
        "variants": manifest_variants,
        "series": series,
    }
    return manifest, expected


def dump(manifest: dict[str, Any], as_json: bool) -> str:
    """The manifest as JSON or YAML text."""
    if as_json:
        # JSON object keys are strings: "0.5" for a duration key.
        return json.dumps(manifest)
    return yaml.safe_dump(manifest, sort_keys=False)


@PROPS
@given(generated(), st.booleans())
def test_seeds_are_distinct_nonzero_and_stable(case: tuple[dict[str, Any], Any], as_json: bool) -> None:
    """Variants of one (scenario, duration) get distinct non-zero seeds, and re-expanding gives identical specs."""
    manifest, _ = case
    text = dump(manifest, as_json)
    first = check_text(text, now=NOW)
    assert first.ok, first.problems
    groups: dict[tuple[str, float], list[int]] = {}
    for spec in first.specs:
        assert 0 < spec.seed < 2**32
        groups.setdefault((spec.scenario, spec.duration_s), []).append(spec.seed)
    for seeds in groups.values():
        assert len(set(seeds)) == len(seeds)
    again = check_text(text, now=datetime(2030, 1, 1, tzinfo=UTC))
    assert [s.model_dump(exclude={"created_at"}) for s in again.specs] == [
        s.model_dump(exclude={"created_at"}) for s in first.specs
    ]


@PROPS
@given(generated(), st.booleans())
def test_target_frames_equal_duration_times_fps_exactly(case: tuple[dict[str, Any], Any], as_json: bool) -> None:
    """Every spec's target_frames is its duration × fps, a whole number, at the fps its series asked for."""
    manifest, expected = case
    exp = check(dump(manifest, as_json))
    assert exp.ok, exp.problems
    for spec in exp.specs:
        fps, frames, _ = expected[(spec.scenario, spec.duration_s)]
        assert spec.fps == fps
        assert spec.target_frames == frames
        assert abs(spec.duration_s * spec.fps - spec.target_frames) < 1e-6


@PROPS
@given(generated(), st.booleans())
def test_expansion_never_loses_or_duplicates_a_combination(case: tuple[dict[str, Any], Any], as_json: bool) -> None:
    """The specs are exactly the product of scenarios × durations × variants, each once, with unique ids."""
    manifest, expected = case
    exp = check(dump(manifest, as_json))
    assert exp.ok, exp.problems
    want = {(sc, d, v) for (sc, d), (_, _, n) in expected.items() for v in range(n)}
    got = [(s.scenario, s.duration_s, s.variant) for s in exp.specs]
    assert set(got) == want
    assert len(got) == sum(n for _, _, n in expected.values())
    ids = [s.prompt_id for s in exp.specs]
    assert len(set(ids)) == len(ids)


# --------------------------------------------------------------------------------------------- C. errors


def test_duplicate_series_id_is_refused() -> None:
    """Two series with the same id are refused with the 'duplicate id' rule at the series id."""
    text = doc(
        """
        name: m
        durations: [5]
        series:
          - id: R
            scenarios:
              - id: R1
                prompt: x
          - id: R
            scenarios:
              - id: R2
                prompt: y
        """
    )
    p = only_problem(check(text), "duplicate id")
    assert p.path == "series[R].id"
    assert "series id 'R'" in p.message
    assert "already used by series number 1" in p.message
    line, _ = where(text, "R\n")
    assert p.line > line  # the repeat is reported, not the first use


def test_duplicate_series_id_points_at_the_repeat() -> None:
    """The line of the repeated series id (not only the first one) is reported."""
    text = doc(
        """
        name: m
        durations: [5]
        series:
          - id: R
            scenarios:
              - id: R1
                prompt: x
          - id: R
            scenarios:
              - id: R2
                prompt: y
        """
    )
    exp = check(text)
    assert where(text, "R\n", 2)[0] in {p.line for p in exp.problems}


def test_duplicate_scenario_id_across_series_is_refused() -> None:
    """A scenario id used in two series is refused at the second one, naming the first series."""
    text = doc(
        """
        name: m
        durations: [5]
        series:
          - id: R
            scenarios:
              - id: X1
                prompt: x
          - id: P
            scenarios:
              - id: X1
                prompt: y
        """
    )
    p = only_problem(check(text), "duplicate id")
    assert p.path == "series[P].scenarios[X1].id"
    assert "scenario id 'X1'" in p.message
    assert "already used in series 'R'" in p.message
    assert (p.line, p.column) == where(text, "X1", 2)


def test_a_bad_value_and_cross_reference_problems_are_reported_in_one_check() -> None:
    """A value the schema refuses does not hide a duplicate id or an unknown template (all at once)."""
    text = doc(
        """
        name: m
        durations: [5]
        templates:
          t: "a {thing}"
        series:
          - id: R
            fps: -3
            scenarios:
              - id: R1
                prompt: x
              - id: R1
                template: nope
                vars: {thing: y}
          - id: R
            scenarios:
              - id: R2
                template: t
                vars: {thing: z}
        """
    )
    exp = check(text)
    assert not exp.ok and exp.specs == []
    rules = sorted(p.rule for p in exp.problems)
    assert rules.count("duplicate id") == 2, exp.problems
    assert "unknown template" in rules
    assert any(p.path.endswith(".fps") for p in exp.problems), exp.problems
    unknown = problem(exp, "unknown template", "series[R].scenarios[R1].template")
    assert (unknown.line, unknown.column) == where(text, "nope")
    # Every problem has its position, and they come in the order of the document.
    lines = [p.line for p in exp.problems]
    assert None not in lines and lines == sorted(lines)


def test_unknown_model_is_refused_listing_known_models() -> None:
    """An unknown model is refused at its key and the message lists every known model."""
    text = SIMPLE.replace("durations: [5]\n", "durations: [5]\ndefaults:\n  model: cosmos-9000\n")
    p = only_problem(check(text), "unknown model")
    assert p.path == "defaults.model"
    assert "'cosmos-9000' is not known" in p.message
    for model in builtin_cards():
        assert model in p.message
    assert (p.line, p.column) == where(text, "cosmos-9000")


TEMPLATED = doc(
    """
    name: m
    durations: [5]
    templates:
      t: "A {camera} view of {subject}."
    series:
      - id: R
        scenarios:
          - id: R1
            template: TEMPLATE
            vars: VARS
    """
)


def test_unknown_template_is_refused() -> None:
    """A scenario naming a template that is not defined is refused at its 'template' key."""
    text = TEMPLATED.replace("TEMPLATE", "nope").replace("VARS", "{camera: a, subject: b}")
    p = only_problem(check(text), "unknown template")
    assert p.path == "series[R].scenarios[R1].template"
    assert "template 'nope' is not defined" in p.message
    assert (p.line, p.column) == where(text, "nope")


def test_missing_template_variable_is_refused() -> None:
    """A variable the template uses but the scenario does not give is refused, naming the variable."""
    text = TEMPLATED.replace("TEMPLATE", "t").replace("VARS", "{camera: dashcam}")
    p = only_problem(check(text), "missing template variable")
    assert p.path == "series[R].scenarios[R1].vars"
    assert "{subject}" in p.message
    assert "no value" in p.message
    assert (p.line, p.column) == where(text, "{camera: dashcam}")


def test_unused_template_variable_is_refused() -> None:
    """A variable the scenario gives but the template does not use is refused at that variable."""
    text = TEMPLATED.replace("TEMPLATE", "t").replace("VARS", "{camera: a, subject: b, weather: fog}")
    p = only_problem(check(text), "unused template variable")
    assert p.path == "series[R].scenarios[R1].vars.weather"
    assert "'weather'" in p.message
    assert "does not use it" in p.message
    assert (p.line, p.column) == where(text, "fog")


@pytest.mark.parametrize("field", ["{a.b}", "{a!r}", "{a:>3}", "{a[0]}", "{0}", "{}"])
def test_non_plain_template_field_is_refused(field: str) -> None:
    """A template field that is not a plain name (attribute, conversion, spec, index, positional) is refused."""
    text = doc(
        f"""
        name: m
        durations: [5]
        templates:
          t: "A view of {field}."
        series:
          - id: R
            scenarios:
              - id: R1
                template: t
                vars: {{a: x}}
        """
    )
    p = only_problem(check(text), "template syntax")
    assert p.path == "templates.t"
    assert f"'{field}' is not a plain variable" in p.message
    assert (p.line, p.column) == where(text, '"A view')


def test_unbalanced_template_brace_is_refused() -> None:
    """A template with an unclosed brace is refused with the template syntax rule."""
    text = TEMPLATED.replace("{subject}.", "{subject").replace("TEMPLATE", "t").replace("VARS", "{camera: a}")
    p = only_problem(check(text), "template syntax")
    assert p.path == "templates.t"
    assert "not valid" in p.message


@pytest.mark.parametrize("bad", ["0", "-5"])
def test_duration_must_be_positive(bad: str) -> None:
    """A duration of zero or less is refused at that list item by the schema."""
    text = SIMPLE.replace("durations: [5]", f"durations: [5, {bad}]")
    p = only_problem(check(text), "greater than")
    assert p.path == "durations[1]"
    assert "greater than 0" in p.message
    assert (p.line, p.column) == where(text, bad)


def test_duration_times_fps_must_be_whole_frames() -> None:
    """2.3 s at 24 fps (55.2 frames) is refused with the whole-frames rule at that duration."""
    text = SIMPLE.replace("durations: [5]", "durations: [5, 2.3]")
    p = only_problem(check(text), "whole frames")
    assert p.path == "durations[1]"
    assert "2.3 s × 24 fps = 55.2 frames" in p.message
    assert "whole number of frames" in p.message
    assert (p.line, p.column) == where(text, "2.3")


def test_whole_frames_depend_on_the_effective_fps() -> None:
    """2.5 s is fine at 24 fps but refused at 15 fps set by a series (37.5 frames)."""
    text = doc(
        """
        name: m
        durations: [2.5]
        series:
          - id: R
            scenarios:
              - id: R1
                prompt: x
          - id: P
            overrides: {fps: 15}
            scenarios:
              - id: P1
                prompt: y
        """
    )
    p = only_problem(check(text), "whole frames")
    assert p.path == "durations[0]"
    assert "37.5 frames" in p.message


def test_fps_not_supported_by_any_model_is_refused() -> None:
    """7 fps is refused, listing the frame rates that are supported."""
    text = SIMPLE.replace("durations: [5]", "durations: [5]\ndefaults: {fps: 7}")
    p = only_problem(check(text), "fps not supported")
    assert p.path == "defaults.fps"
    assert "7 fps is not supported by any known model" in p.message
    assert "8, 10, 12, 15, 16, 20, 24, 25, 30, 48, 50, 60" in p.message
    assert (p.line, p.column) == where(text, "7}")


def test_resolution_unsupported_by_the_model_is_refused() -> None:
    """1920x1080 is refused for cosmos-predict2.5-2b, naming sizes it can do."""
    text = SIMPLE.replace("durations: [5]", "durations: [5]\ndefaults:\n  resolution: 1920x1080")
    p = only_problem(check(text), "resolution not supported")
    assert p.path == "defaults.resolution"
    assert "cosmos-predict2.5-2b cannot generate 1920x1080" in p.message
    assert "1280x704" in p.message
    assert (p.line, p.column) == where(text, "1920x1080")


def test_malformed_resolution_is_refused() -> None:
    """A resolution that is not ``WxH`` is refused by the schema with the expected form."""
    text = SIMPLE.replace("durations: [5]", "durations: [5]\ndefaults:\n  resolution: big")
    p = only_problem(check(text), "value error")
    assert p.path == "defaults.resolution"
    assert "must look like '1280x704'" in p.message


def test_guidance_outside_the_model_range_is_refused() -> None:
    """Guidance 9 is refused for cosmos-predict2.5-2b, whose range is 0–7."""
    text = SIMPLE + "        overrides: {guidance: 9}\n"
    p = only_problem(check(text), "guidance out of range")
    assert p.path == "series[R].scenarios[R1].overrides.guidance"
    assert "guidance 9 is outside cosmos-predict2.5-2b's range 0–7" in p.message
    assert (p.line, p.column) == where(text, "9}")


def test_prompt_over_the_model_length_is_refused() -> None:
    """A prompt estimated over the card's 512 tokens is refused at the prompt, with its estimate."""
    long = "word " * 400
    text = SIMPLE.replace("A wet street at night.", long.strip())
    p = only_problem(check(text), "prompt too long")
    assert p.path == "series[R].scenarios[R1].prompt"
    assert f"about {estimate_tokens(long.strip())} tokens" in p.message
    assert "limit of 512" in p.message
    assert (p.line, p.column) == where(text, "word")


def test_prompt_just_under_the_length_is_accepted() -> None:
    """A prompt estimated at no more than 512 tokens is accepted."""
    text = SIMPLE.replace("A wet street at night.", " ".join(["word"] * 379))
    assert estimate_tokens(" ".join(["word"] * 379)) <= 512
    assert check(text).ok


def test_metadata_over_its_byte_limit_is_refused() -> None:
    """Metadata over the JSON byte limit is refused at the scenario's metadata."""
    text = SIMPLE + f"        metadata: {{note: {'v' * MAX_METADATA_BYTES}}}\n"
    p = only_problem(check(text), "metadata too large")
    assert p.path == "series[R].scenarios[R1].metadata"
    assert f"{MAX_METADATA_BYTES} bytes" in p.message
    assert (p.line, p.column) == where(text, "{note")


def test_metadata_over_its_key_limit_is_refused() -> None:
    """Metadata with more keys than allowed is refused, saying how many it has."""
    keys = ", ".join(f"k{i}: {i}" for i in range(MAX_METADATA_KEYS + 1))
    text = SIMPLE + f"        metadata: {{{keys}}}\n"
    p = only_problem(check(text), "metadata too large")
    assert p.path == "series[R].scenarios[R1].metadata"
    assert f"has {MAX_METADATA_KEYS + 1} keys" in p.message
    assert f"{MAX_METADATA_KEYS} keys" in p.message


def test_manifest_level_metadata_over_its_limit_points_at_that_metadata() -> None:
    """Oversized metadata set at the manifest level is reported at the line of that metadata map."""
    keys = ", ".join(f"k{i}: {i}" for i in range(MAX_METADATA_KEYS + 1))
    text = SIMPLE.replace("durations: [5]", f"durations: [5]\nmetadata: {{{keys}}}")
    p = only_problem(check(text), "metadata too large")
    assert p.line == where(text, "metadata")[0]


def test_unknown_top_level_key_is_refused() -> None:
    """An unknown top-level key is refused at that key, with line and column."""
    text = SIMPLE.replace("durations: [5]", "durations: [5]\ncolour: red")
    p = only_problem(check(text), "unknown field")
    assert p.path == "colour"
    assert "Extra inputs are not permitted" in p.message
    assert (p.line, p.column) == where(text, "red")


@pytest.mark.parametrize("key", ["durations", "series", "name"])
def test_missing_required_key_is_refused(key: str) -> None:
    """A manifest without durations, series or name is refused with the required-field rule."""
    data = yaml.safe_load(SIMPLE)
    del data[key]
    p = only_problem(check(yaml.safe_dump(data)), "required field")
    assert p.path == key
    assert p.message == "Field required"
    assert (p.line, p.column) == (1, 1)


def test_prompt_and_template_together_are_refused() -> None:
    """A scenario with both a prompt and a template is refused, saying to give exactly one."""
    text = SIMPLE.replace("durations: [5]", "durations: [5]\ntemplates: {t: x}") + "        template: t\n"
    p = only_problem(check(text), "value error")
    assert p.path == "series[R].scenarios[R1]"
    assert "exactly one of 'prompt' or 'template'" in p.message
    assert (p.line, p.column) == where(text, "id: R1")


def test_duplicate_yaml_key_is_refused_with_the_first_line() -> None:
    """A key given twice in one mapping is refused at the repeat, naming the first line."""
    text = SIMPLE + "        prompt: Another prompt.\n"
    p = only_problem(check(text), "duplicate key")
    assert p.path == "series[0].scenarios[0].prompt"
    first, _ = where(text, "prompt:")
    assert f"key 'prompt' appears twice (first at line {first})" in p.message
    assert (p.line, p.column) == where(text, "prompt:", 2)


def test_duplicate_json_key_is_refused() -> None:
    """JSON with a repeated key is refused too (json.loads would keep the last)."""
    text = '{"name": "m",\n "name": "n", "durations": [5], "series": []}'
    p = only_problem(check(text), "duplicate key")
    assert p.path == "name"
    assert "first at line 1" in p.message
    assert p.line == 2


def test_yaml_syntax_error_is_refused_with_its_line() -> None:
    """A YAML syntax error is refused with the syntax rule and the line it is on."""
    text = doc(
        """
        name: m
        durations: [5
        series: []
        """
    )
    p = only_problem(check(text), "syntax")
    assert p.path == "(document)"
    assert "not valid YAML/JSON" in p.message
    assert p.line == 3


def test_json_syntax_error_is_refused_with_its_line() -> None:
    """Broken JSON is refused with the syntax rule and a line."""
    text = '{"name": "m",\n "durations": [5],\n "series": [}\n'
    p = only_problem(check(text), "syntax")
    assert p.line == 3


def test_yaml_bomb_is_refused_before_expansion() -> None:
    """Nested aliases that would expand to a billion values are refused by the alias-expansion rule."""
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    prev = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
        prev = name
    text = "\n".join(lines) + "\n"
    assert len(text) < 2000
    p = only_problem(check(text), "size with aliases expanded")
    assert p.path == "(document)"
    assert f"more than {MAX_NODES} values through YAML aliases" in p.message


def test_a_few_aliases_are_fine() -> None:
    """Aliases that expand modestly are accepted (the rule is about size, not aliases)."""
    text = doc(
        """
        name: m
        durations: &d [5, 10]
        series:
          - id: R
            durations: *d
            scenarios:
              - id: R1
                prompt: x
        """
    )
    assert len(check(text).specs) == 2


def test_file_over_one_mebibyte_is_refused() -> None:
    """A document over 1 MiB is refused with the file-size rule; one of exactly 1 MiB is read."""
    pad = MAX_BYTES - len(SIMPLE.encode()) - 2
    at_limit = SIMPLE + "#" + "x" * pad + "\n"
    assert len(at_limit.encode()) == MAX_BYTES
    assert check(at_limit).ok
    p = only_problem(check(at_limit + "\n"), "file size")
    assert p.path == "(document)"
    assert f"{MAX_BYTES + 1} bytes, over the {MAX_BYTES}-byte limit" in p.message


def test_non_utf8_bytes_are_refused() -> None:
    """Bytes that are not UTF-8 are refused with the encoding rule."""
    p = only_problem(check(SIMPLE.replace("wet", "w\xe9t").encode("latin-1")), "encoding")
    assert p.path == "(document)"
    assert "not UTF-8" in p.message


@pytest.mark.parametrize("text", ["", "   \n", "# just a comment\n"])
def test_empty_document_is_refused(text: str) -> None:
    """An empty document (or only whitespace/comments) is refused with the empty rule."""
    p = only_problem(check(text), "empty")
    assert p.path == "(document)"
    assert "empty" in p.message


def test_explicit_empty_document_is_refused_as_empty() -> None:
    """A document that is only the '---' marker is refused with the empty rule too."""
    only_problem(check("---\n"), "empty")
    only_problem(check("null\n"), "empty")


@pytest.mark.parametrize("text", ["[1, 2]\n", "just words\n"])
def test_document_that_is_not_a_mapping_is_refused(text: str) -> None:
    """A document that is a scalar or a list is refused as the whole document."""
    p = only_problem(check(text), "model type")
    assert p.path == "(document)"


def test_variants_map_missing_a_duration_is_refused() -> None:
    """A variants map without a count for one of the durations is refused, naming that duration."""
    text = SIMPLE.replace("durations: [5]", "durations: [5, 10]\nvariants: {5: 2}")
    p = only_problem(check(text), "variants per duration")
    assert p.path == "variants"
    assert "no variant count for duration 10 s" in p.message
    assert (p.line, p.column) == where(text, "{5: 2}")


def test_variants_map_naming_an_unused_duration_is_refused() -> None:
    """A variants map naming a duration that is not generated is refused at that key."""
    text = SIMPLE.replace("durations: [5]", "durations: [5]\nvariants: {5: 2, 7: 1}")
    p = only_problem(check(text), "variants per duration")
    assert p.path == "variants.7"
    assert "duration 7 s is not one of" in p.message
    line, column = where(text, "7: 1")
    assert (p.line, p.column) == (line, column + len("7: "))  # the value of the key


@pytest.mark.parametrize("mode", ["image2world", "video2world", "transfer"])
def test_mode_other_than_text2world_is_refused_with_advice(mode: str) -> None:
    """A mode needing an input is refused, pointing to text2world and `worldmill prompts from-videos`."""
    text = SIMPLE.replace("durations: [5]", f"durations: [5]\ndefaults:\n  mode: {mode}")
    p = only_problem(check(text), "mode needs an input")
    assert p.path == "defaults.mode"
    assert f"mode {mode} needs an input image or video" in p.message
    assert "text2world" in p.message
    assert "worldmill prompts from-videos" in p.message
    assert (p.line, p.column) == where(text, mode)


def test_model_that_cannot_do_text2world_is_refused() -> None:
    """A transfer-only model is refused for text2world scenarios."""
    text = SIMPLE.replace("durations: [5]", "durations: [5]\ndefaults:\n  model: cosmos-transfer2.5-2b")
    p = only_problem(check(text), "mode not supported")
    assert "cosmos-transfer2.5-2b does not do text2world" in p.message


def test_duplicate_duration_is_refused() -> None:
    """A duration listed twice is refused with the duplicate-duration rule."""
    text = SIMPLE.replace("durations: [5]", "durations: [5, 10, 5]")
    p = only_problem(check(text), "duplicate duration")
    assert p.path.startswith("durations[")
    assert "duration 5 s is already listed at position 0" in p.message


def test_duplicate_duration_path_points_at_that_duration() -> None:
    """Each duplicate-duration problem's path indexes an occurrence of the duration it names."""
    text = SIMPLE.replace("durations: [5]", "durations: [5, 5, 10, 10]")
    exp = check(text)
    paths = {p.message.split()[1]: p.path for p in exp.problems if p.rule == "duplicate duration"}
    assert paths["5"] in {"durations[0]", "durations[1]"}
    assert paths["10"] in {"durations[2]", "durations[3]"}


def test_whole_frames_path_is_right_after_a_repeated_duration() -> None:
    """The whole-frames problem for 2.3 s in [5, 5, 2.3] is at durations[2]."""
    text = SIMPLE.replace("durations: [5]", "durations: [5, 5, 2.3]")
    p = problem(check(text), "whole frames", "durations[2]")
    assert (p.line, p.column) == where(text, "2.3")


def test_equivalent_duration_keys_in_a_variants_map_are_refused() -> None:
    """A variants map giving the same duration twice (5 and 5.0) is refused rather than silently keeping one."""
    text = SIMPLE.replace("durations: [5]", "durations: [5]\nvariants: {5: 1, 5.0: 3}")
    assert not check(text).ok


def test_bad_variant_count_is_one_problem_at_variants() -> None:
    """``variants: 0`` is one problem at path 'variants'."""
    text = SIMPLE.replace("durations: [5]", "durations: [5]\nvariants: 0")
    p = only_problem(check(text), "greater than equal")
    assert p.path == "variants"


# --------------------------------------------------------------------------------------------- D. all at once

MANY = doc(
    """
    name: many
    durations: [5, 10]
    variants: {5: 1, 10: 1, 20: 2}
    templates:
      t: "A {thing}."
    series:
      - id: R
        scenarios:
          - id: R1
            prompt: Fine on its own.
          - id: R2
            template: missing
          - id: R3
            prompt: Too much guidance.
            overrides: {guidance: 9}
      - id: P
        overrides: {fps: 7}
        scenarios:
          - id: P1
            prompt: Odd frame rate.
      - id: Q
        durations: [2.3]
        variants: 1
        scenarios:
          - id: R1
            prompt: Reused id and a fractional frame count.
          - id: Q2
            template: t
            vars: {thing: car, colour: red}
    """
)


def test_all_problems_of_a_manifest_are_reported_at_once() -> None:
    """A manifest with seven independent problems reports all seven in one check, and no specs."""
    exp = check(MANY)
    assert exp.specs == []
    assert not exp.ok
    expected = {
        ("variants.20", "variants per duration"),
        ("series[R].scenarios[R2].template", "unknown template"),
        ("series[R].scenarios[R3].overrides.guidance", "guidance out of range"),
        ("series[P].overrides.fps", "fps not supported"),
        ("series[Q].scenarios[R1].id", "duplicate id"),
        ("series[Q].durations[0]", "whole frames"),
        ("series[Q].scenarios[Q2].vars.colour", "unused template variable"),
    }
    assert {(p.path, p.rule) for p in exp.problems} == expected
    assert all(p.line is not None and p.column is not None for p in exp.problems)


def test_a_rejected_manifest_yields_no_specs_even_for_valid_scenarios() -> None:
    """One bad scenario among good ones means no specs at all, and summary() is empty."""
    text = VALID.replace("prompt: A child runs after a ball into the road.", "template: nope")
    exp = check(text)
    assert [p.rule for p in exp.problems] == ["unknown template"]
    assert exp.specs == []
    assert exp.summary().specs == 0
    assert exp.summary().frames == 0


def test_template_and_duration_problems_of_one_scenario_are_both_reported() -> None:
    """A scenario with a missing template variable and a 2.3 s duration reports both problems."""
    text = TEMPLATED.replace("durations: [5]", "durations: [5, 2.3]").replace("TEMPLATE", "t")
    text = text.replace("VARS", "{camera: a}")
    rules = {p.rule for p in check(text).problems}
    assert rules == {"missing template variable", "whole frames"}


# --------------------------------------------------------------------------------------------- E. format_path


def test_format_path_names_list_items_by_id() -> None:
    """List items are shown by their id: ("series", 3, "scenarios", 0, "durations") → series[R].scenarios[R14].durations."""
    data = {
        "series": [
            {"id": "C", "scenarios": []},
            {"id": "E", "scenarios": []},
            {"id": "F", "scenarios": []},
            {"id": "R", "scenarios": [{"id": "R14", "durations": [5, 10, 30]}]},
        ]
    }
    assert format_path(("series", 3, "scenarios", 0, "durations"), data) == "series[R].scenarios[R14].durations"
    assert format_path(("series", 3, "scenarios", 0, "durations", 2), data) == "series[R].scenarios[R14].durations[2]"


def test_format_path_falls_back_to_indexes_without_ids() -> None:
    """Items without a (string) id, missing items and missing data are shown by index."""
    data = {"series": [{"name": "no id"}, {"id": 7}, {"id": ""}]}
    assert format_path(("series", 0, "name"), data) == "series[0].name"
    assert format_path(("series", 1, "id"), data) == "series[1].id"
    assert format_path(("series", 2), data) == "series[2]"
    assert format_path(("series", 9, "scenarios", 0), data) == "series[9].scenarios[0]"
    assert format_path(("series", 3, "scenarios", 0, "durations"), None) == "series[3].scenarios[0].durations"
    assert format_path((), data) == "(document)"
    assert format_path(("variants", "7"), {"variants": {7: 1}}) == "variants.7"


# --------------------------------------------------------------------------------------------- F. tokens


@PROPS
@given(st.text(max_size=300), st.text(max_size=300))
def test_estimate_tokens_is_monotonic_in_length(head: str, tail: str) -> None:
    """Appending text never lowers the token estimate."""
    assert estimate_tokens(head) <= estimate_tokens(head + tail)


@PROPS
@given(st.text(max_size=500))
def test_estimate_tokens_is_at_least_the_word_count(text: str) -> None:
    """The estimate is at least one token per word and per four bytes."""
    tokens = estimate_tokens(text)
    assert tokens >= len(text.split())
    assert tokens * 4 >= len(text.encode())


def test_estimate_tokens_examples() -> None:
    """Empty text is 0 tokens, a word is 2, 100 short words are 135, and long text counts 1 per 4 bytes."""
    assert estimate_tokens("") == 0
    assert estimate_tokens("a") == 2
    assert estimate_tokens(" ".join(["go"] * 100)) == 135
    assert estimate_tokens("x" * 400) == 100


# --------------------------------------------------------------------------------------------- G. qa: the critic's gate

QA = doc(
    """
    name: gated
    durations: [5]
    qa:
      critic: {gate: fail, kind: anomaly, threshold: 0.75}
    series:
      - id: R
        qa:
          critic: {kind: plausibility}
        scenarios:
          - id: R1
            prompt: A wet street at night.
          - id: R2
            prompt: A dry street at noon.
            qa:
              critic: {gate: off, threshold: 4.5}
      - id: P
        scenarios:
          - id: P1
            prompt: A pedestrian waits at a crossing.
    """
)


def test_qa_critic_keys_inherit_scenario_over_series_over_manifest() -> None:
    """Each key from the innermost level; a series changing the kind drops the manifest's threshold; bare off is off."""
    exp = check(QA)
    assert exp.ok, exp.problems
    critic = {s.scenario: s.qa.critic for s in exp.specs if s.qa is not None}
    assert critic["P1"] is not None and critic["P1"].model_dump() == {
        "gate": "fail",
        "kind": "anomaly",
        "threshold": 0.75,
    }
    assert critic["R1"] is not None and critic["R1"].model_dump() == {
        "gate": "fail",
        "kind": "plausibility",
        "threshold": None,
    }
    assert critic["R2"] is not None and critic["R2"].model_dump() == {
        "gate": "off",
        "kind": "plausibility",
        "threshold": 4.5,
    }


def test_a_manifest_without_qa_keeps_its_ids_seeds_and_content_hashes() -> None:
    """Specs that ask nothing of QA carry no 'qa' key (their content hash is what it was); adding qa keeps ids and seeds."""
    plain = check(SIMPLE)
    gated = check(SIMPLE.replace("durations: [5]", "durations: [5]\nqa: {critic: {gate: warn}}"))
    assert plain.ok and gated.ok
    [before], [after] = plain.specs, gated.specs
    assert before.qa is None and "qa" not in before.model_dump(mode="json")
    assert content_hash(before) == content_hash(before.model_copy(update={"qa": None}))
    assert (after.prompt_id, after.seed) == (before.prompt_id, before.seed)
    assert after.model_dump(mode="json")["qa"] == {"critic": {"gate": "warn", "kind": None, "threshold": None}}
    assert content_hash(after) != content_hash(before)  # a new version, so its plans carry the gate


@pytest.mark.parametrize(
    ("qa", "path", "rule", "says"),
    [
        ("{critic: {gate: block}}", "qa.critic.gate", "literal error", "'off', 'warn' or 'fail'"),
        ("{critic: {kind: vibes}}", "qa.critic.kind", "literal error", "'anomaly' or 'plausibility'"),
        ("{critic: {kind: anomaly, threshold: 1.5}}", "qa.critic.threshold", "threshold out of range", "0–1"),
        ("{critic: {kind: plausibility, threshold: 0.75}}", "qa.critic.threshold", "threshold out of range", "1–5"),
        ("{critic: {gate: fail, threshold: 0.75}}", "qa.critic.threshold", "threshold needs a kind", "anomaly"),
        ("{critic: {kind: anomaly, threshold: .nan}}", "qa.critic.threshold", "finite number", "finite"),
        ("{critic: {gate: fail, treshold: 0.75}}", "qa.critic.treshold", "unknown field", "not permitted"),
        ("{critics: {gate: fail}}", "qa.critics", "unknown field", "not permitted"),
    ],
)
def test_bad_qa_critic_values_are_refused_with_path_and_rule(qa: str, path: str, rule: str, says: str) -> None:
    """An unknown gate or kind, a threshold outside its kind's range or without a kind, a typo: refused where it is."""
    text = SIMPLE.replace("durations: [5]", f"durations: [5]\nqa: {qa}")
    p = only_problem(check(text), rule)
    assert p.path == path and says in p.message, p
    assert p.line == where(text, "qa:")[0]


def test_a_scenario_threshold_is_checked_against_the_kind_it_inherits() -> None:
    """A scenario's 0.9 under the manifest's plausibility kind is out of 1–5: reported at the scenario's threshold."""
    text = SIMPLE.replace("durations: [5]", "durations: [5]\nqa: {critic: {kind: plausibility}}")
    text += "        qa: {critic: {gate: fail, threshold: 0.9}}\n"
    p = only_problem(check(text), "threshold out of range")
    assert p.path == "series[R].scenarios[R1].qa.critic.threshold"
    assert "0.9 is outside 1–5 for kind plausibility" in p.message
    assert (p.line, p.column) == where(text, "0.9")
