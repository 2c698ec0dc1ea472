"""Validate a manifest and expand it into prompt specs: pure, no I/O, every problem at once.

One spec per (scenario, duration, variant), each exact: ``target_frames = duration × fps``, a
seed from a stable hash, every sampling value explicit. A problem names the path
(``series[R].scenarios[R14].durations[2]``), the line and column when the source has them, and
the rule it breaks. A manifest with any problem yields no specs at all.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from worldmill.contracts.cards import GenerationMode, ModelCard, builtin_cards
from worldmill.contracts.prompts import ManifestProblem, PromptSpec, SamplingParams
from worldmill.prompt.identity import derive_seed, distinct_seeds, duration_token, prompt_id
from worldmill.prompt.manifest import Manifest, Scalar, Scenario, Series, Settings
from worldmill.prompt.qa_options import effective_qa
from worldmill.prompt.source import Path, Source, SourceError, load
from worldmill.prompt.templates import render

DEFAULT_MODEL = "cosmos-predict2.5-2b"
DEFAULT_FPS = 24
MAX_SPECS = 100_000
MAX_METADATA_BYTES = 4096
MAX_METADATA_KEYS = 64


def estimate_tokens(text: str) -> int:
    """A deliberately high estimate of text-encoder tokens (≈1.35 per word, ≥ 1 per 4 bytes)."""
    return max(math.ceil(len(text.split()) * 1.35), math.ceil(len(text.encode()) / 4))


@dataclass
class Summary:
    """What an expansion would create."""

    specs: int = 0
    frames: int = 0
    by_series: dict[str, dict[str, int]] = field(default_factory=dict)
    frames_by_series: dict[str, int] = field(default_factory=dict)


@dataclass
class Expansion:
    """The outcome of checking a manifest: its specs, or the problems (never both)."""

    sha256: str
    manifest: Manifest | None = None
    specs: list[PromptSpec] = field(default_factory=list)
    problems: list[ManifestProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when there is no problem."""
        return not self.problems

    def summary(self) -> Summary:
        """Counts per series and duration, and the frames to generate."""
        out = Summary()
        for spec in self.specs:
            series = spec.series or "-"
            per = out.by_series.setdefault(series, {})
            key = duration_token(spec.duration_s)
            per[key] = per.get(key, 0) + 1
            out.frames_by_series[series] = out.frames_by_series.get(series, 0) + spec.target_frames
            out.specs += 1
            out.frames += spec.target_frames
        return out


def format_path(loc: Path, data: Any) -> str:
    """``("series", 3, "scenarios", 0, "durations")`` → ``series[R].scenarios[R14].durations``.

    List items are named by their ``id`` when they have one, else by index.
    """
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            item = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            ident = item.get("id") if isinstance(item, dict) else None
            out += f"[{ident}]" if isinstance(ident, str) and ident else f"[{part}]"
            node = item
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(document)"


class _Problems:
    """Collects problems with their positions, once each."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.items: list[ManifestProblem] = []
        self._seen: set[tuple[str, str, str]] = set()

    def add(self, loc: Path, rule: str, message: str) -> None:
        path = format_path(loc, self.source.data)
        if (path, rule, message) in self._seen:
            return
        self._seen.add((path, rule, message))
        mark = self.source.mark_for(loc)
        self.items.append(
            ManifestProblem(
                path=path,
                rule=rule,
                message=message,
                line=mark.line if mark else None,
                column=mark.column if mark else None,
            )
        )


def _pydantic_rule(err: Any) -> str:
    kind = str(err.get("type", "invalid"))
    return {"missing": "required field", "extra_forbidden": "unknown field"}.get(kind, kind.replace("_", " "))


def _clean_loc(loc: tuple[Any, ...]) -> Path:
    """Drop pydantic's validator and union-member tags (``function-after[...]``, ``int``, ``constrained-int``)."""
    tags = ("function-", "union[", "constrained-", "dict[", "list[", "tagged-union[")
    plain = {"int", "float", "str", "bool", "none", "is-instance[Resolution]"}
    return tuple(p for p in loc if not (isinstance(p, str) and (p.startswith(tags) or p in plain)))


def _friendly(err: Any) -> str:
    """pydantic's message, without its prefixes, and in words instead of a regex for ids."""
    if err.get("type") == "string_pattern_mismatch":
        if _clean_loc(err["loc"]) == ("name",):
            return "must be lower-case letters, digits and dashes, at most 48 (it becomes part of every prompt id)"
        return "must be letters, digits, '_' or '-', starting with a letter or digit, at most 64"
    return str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")


@dataclass(frozen=True)
class _Effective:
    value: Any
    loc: Path


def _settings_chain(si: int, ci: int, manifest: Manifest) -> list[tuple[Settings | None, Path]]:
    series = manifest.series[si]
    scenario = series.scenarios[ci]
    return [
        (scenario.overrides, ("series", si, "scenarios", ci, "overrides")),
        (series.overrides, ("series", si, "overrides")),
        (manifest.defaults, ("defaults",)),
    ]


def _effective(name: str, chain: list[tuple[Settings | None, Path]], default: Any) -> _Effective:
    for settings, loc in chain:
        value = getattr(settings, name) if settings is not None else None
        if value is not None:
            return _Effective(value, (*loc, name))
    return _Effective(default, ("defaults",))


def _durations(si: int, ci: int, manifest: Manifest) -> tuple[list[float], Path]:
    series = manifest.series[si]
    scenario = series.scenarios[ci]
    if scenario.durations is not None:
        return scenario.durations, ("series", si, "scenarios", ci, "durations")
    if series.durations is not None:
        return series.durations, ("series", si, "durations")
    return manifest.durations, ("durations",)


def _variants(si: int, ci: int, manifest: Manifest) -> tuple[int | dict[float, int], Path]:
    series = manifest.series[si]
    scenario = series.scenarios[ci]
    if scenario.variants is not None:
        return scenario.variants, ("series", si, "scenarios", ci, "variants")
    if series.variants is not None:
        return series.variants, ("series", si, "variants")
    return manifest.variants, ("variants",)


def _items(node: Any, key: str) -> list[tuple[int, dict[str, Any]]]:
    """The mappings of the list ``node[key]`` with their indexes (anything else is the schema's business)."""
    value = node.get(key) if isinstance(node, dict) else None
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)] if isinstance(value, list) else []


def _check_references(data: Any, problems: _Problems) -> None:
    """Duplicate ids and unknown templates, read from the document itself.

    It runs on the raw data, not the validated model, so a manifest with a bad value *and* a
    duplicate id gets both problems in one check (the model does not exist when a value is bad).
    """
    templates = data.get("templates") if isinstance(data, dict) else None
    known = set(templates) if isinstance(templates, dict) else set()
    first_series: dict[str, int] = {}
    seen_scenarios: dict[str, str] = {}
    for si, series in _items(data, "series"):
        series_id = series.get("id")
        if isinstance(series_id, str):
            if series_id in first_series:
                problems.add(
                    ("series", si, "id"),
                    "duplicate id",
                    f"series id {series_id!r} is already used by series number {first_series[series_id] + 1}",
                )
            else:
                first_series[series_id] = si
        for ci, scenario in _items(series, "scenarios"):
            scenario_id = scenario.get("id")
            if isinstance(scenario_id, str):
                where = seen_scenarios.get(scenario_id)
                if where is not None:
                    problems.add(
                        ("series", si, "scenarios", ci, "id"),
                        "duplicate id",
                        f"scenario id {scenario_id!r} is already used in series {where!r}",
                    )
                else:
                    seen_scenarios[scenario_id] = str(series_id)
            template = scenario.get("template")
            if isinstance(template, str) and template not in known:
                problems.add(
                    ("series", si, "scenarios", ci, "template"),
                    "unknown template",
                    _unknown_template(template),
                )


def _unknown_template(name: str) -> str:
    return f"template {name!r} is not defined under 'templates'"


def _check_durations(
    durations: list[float], loc: Path, variants: int | dict[float, int], vloc: Path, problems: _Problems
) -> None:
    first_index: dict[float, int] = {}
    for i, d in enumerate(durations):
        if d in first_index:
            problems.add(
                (*loc, i), "duplicate duration", f"duration {d:g} s is already listed at position {first_index[d]}"
            )
        else:
            first_index[d] = i
    if isinstance(variants, dict):
        for d in durations:
            if d not in variants:
                problems.add(vloc, "variants per duration", f"no variant count for duration {d:g} s")
        for d in variants:
            if d not in durations:
                listed = ", ".join(f"{x:g}" for x in durations)
                problems.add((*vloc, f"{d:g}"), "variants per duration", f"duration {d:g} s is not one of {listed}")


def _metadata(manifest: Manifest, series: Series, scenario: Scenario) -> dict[str, Scalar]:
    meta: dict[str, Scalar] = {**manifest.metadata, **series.metadata, **scenario.metadata}
    if series.name:
        meta.setdefault("series_name", series.name)
    if scenario.template:
        meta["template"] = scenario.template
        meta.update({f"var.{k}": v for k, v in scenario.vars.items()})
    return meta


def _check_model(card: ModelCard, eff: dict[str, _Effective], cards: dict[str, ModelCard], problems: _Problems) -> None:
    fps = eff["fps"]
    every_fps = set().union(*(c.deliverable_fps for c in cards.values()))
    if fps.value not in every_fps:
        problems.add(
            fps.loc,
            "fps not supported",
            f"{fps.value} fps is not supported by any known model (supported: "
            f"{', '.join(map(str, sorted(every_fps)))})",
        )
    elif fps.value not in card.deliverable_fps:
        problems.add(fps.loc, "fps not supported", f"{card.id} cannot deliver {fps.value} fps")
    res = eff["resolution"]
    if not card.supports_resolution(res.value):
        if card.any_resolution:
            allowed = f"width and height must be multiples of {card.resolution_multiple}"
        else:
            allowed = "supported: " + ", ".join(str(r) for r in card.resolutions())
        problems.add(res.loc, "resolution not supported", f"{card.id} cannot generate {res.value} ({allowed})")
    guidance = eff["guidance"]
    if not card.guidance_min <= guidance.value <= card.guidance_max:
        problems.add(
            guidance.loc,
            "guidance out of range",
            f"guidance {guidance.value:g} is outside {card.id}'s range {card.guidance_min:g}–{card.guidance_max:g}",
        )
    mode = eff["mode"]
    if mode.value is not GenerationMode.TEXT2WORLD:
        problems.add(
            mode.loc,
            "mode needs an input",
            f"mode {mode.value.value} needs an input image or video; manifests describe text2world "
            "scenarios (make input-video specs with `worldmill prompts from-videos`)",
        )
    elif mode.value not in card.modes:
        problems.add(mode.loc, "mode not supported", f"{card.id} does not do {mode.value.value}")


def _prompt_text(manifest: Manifest, scenario: Scenario, base: Path, problems: _Problems) -> tuple[str | None, Path]:
    """The scenario's prompt, or its rendered template (None when the template has problems)."""
    if scenario.template is None:
        return scenario.prompt or "", (*base, "prompt")
    template = manifest.templates.get(scenario.template)
    if template is None:
        problems.add((*base, "template"), "unknown template", _unknown_template(scenario.template))
        return None, (*base, "template")
    text, template_problems = render(template, scenario.vars)
    for tp in template_problems:
        if not tp.field:
            loc: Path = ("templates", scenario.template)
        elif tp.rule == "unused template variable":
            loc = (*base, "vars", tp.field)
        else:
            loc = (*base, "vars")
        problems.add(loc, tp.rule, tp.message)
    return text, (*base, "template")


def _checked_metadata(manifest: Manifest, si: int, ci: int, problems: _Problems) -> dict[str, Scalar]:
    """The spec's merged metadata; a problem where a level (or the merge) is over the limits."""
    series = manifest.series[si]
    scenario = series.scenarios[ci]
    base: Path = ("series", si, "scenarios", ci)
    meta = _metadata(manifest, series, scenario)
    meta_bytes = len(json.dumps(meta, sort_keys=True).encode())
    if meta_bytes > MAX_METADATA_BYTES or len(meta) > MAX_METADATA_KEYS:
        # Point at the level that alone is too big, if one is; else at the scenario's merge.
        culprit: Path = (*base, "metadata")
        for level, loc in ((manifest.metadata, ("metadata",)), (series.metadata, ("series", si, "metadata"))):
            if len(json.dumps(level).encode()) > MAX_METADATA_BYTES or len(level) > MAX_METADATA_KEYS:
                culprit = loc
                break
        problems.add(
            culprit,
            "metadata too large",
            f"metadata has {len(meta)} key{'' if len(meta) == 1 else 's'} and {meta_bytes} bytes as JSON; the limit is "
            f"{MAX_METADATA_KEYS} keys and {MAX_METADATA_BYTES} bytes",
        )
    return meta


def _scenario_specs(
    manifest: Manifest,
    si: int,
    ci: int,
    *,
    cards: dict[str, ModelCard],
    problems: _Problems,
    sha256: str,
    now: datetime,
) -> Iterator[PromptSpec]:
    series = manifest.series[si]
    scenario = series.scenarios[ci]
    base: Path = ("series", si, "scenarios", ci)
    chain = _settings_chain(si, ci, manifest)
    model = _effective("model", chain, DEFAULT_MODEL)
    card = cards.get(model.value)
    if card is None:
        problems.add(
            model.loc, "unknown model", f"model {model.value!r} is not known (known: {', '.join(sorted(cards))})"
        )
    eff = {
        "model": model,
        "fps": _effective("fps", chain, DEFAULT_FPS),
        "resolution": _effective("resolution", chain, card.native_resolution if card else None),
        "guidance": _effective("guidance", chain, card.default_guidance if card else 0.0),
        "steps": _effective("steps", chain, card.default_steps if card else 1),
        "negative_prompt": _effective("negative_prompt", chain, None),
        "upsample": _effective("upsample", chain, False),
        "auto_generate": _effective("auto_generate", chain, False),
        "mode": _effective("mode", chain, GenerationMode.TEXT2WORLD),
    }
    if card is not None:
        _check_model(card, eff, cards, problems)
    text, text_loc = _prompt_text(manifest, scenario, base, problems)
    if card is not None:
        for value, loc, what in (
            (text, text_loc, "prompt"),
            (eff["negative_prompt"].value, eff["negative_prompt"].loc, "negative prompt"),
        ):
            tokens = estimate_tokens(value) if value else 0
            if tokens > card.max_prompt_tokens:
                problems.add(
                    loc,
                    "prompt too long",
                    f"the {what} is about {tokens} tokens, over {card.id}'s limit of {card.max_prompt_tokens}",
                )
    meta = _checked_metadata(manifest, si, ci, problems)
    qa, qa_problems = effective_qa(manifest, si, ci)
    for qp in qa_problems:
        problems.add(qp.loc, qp.rule, qp.message)
    durations, dloc = _durations(si, ci, manifest)
    variants, vloc = _variants(si, ci, manifest)
    _check_durations(durations, dloc, variants, vloc, problems)
    fps = int(eff["fps"].value)
    tags = list(dict.fromkeys([*series.tags, *scenario.tags]))
    seen_durations: set[float] = set()
    for di, duration in enumerate(durations):
        if duration in seen_durations:
            continue
        seen_durations.add(duration)
        exact = duration * fps
        if abs(exact - round(exact)) > 1e-6:
            problems.add(
                (*dloc, di),
                "whole frames",
                f"{duration:g} s × {fps} fps = {exact:g} frames: must be a whole number of frames",
            )
            continue
        if card is None or text is None:
            continue
        count = variants.get(duration, 0) if isinstance(variants, dict) else variants
        seeds = distinct_seeds(
            [derive_seed(manifest.name, scenario.id, duration, v, manifest.seed_salt) for v in range(count)]
        )
        for variant, seed in enumerate(seeds):
            yield PromptSpec(
                prompt_id=prompt_id(manifest.name, scenario.id, duration, variant),
                version=1,
                manifest=manifest.name,
                manifest_sha256=sha256,
                series=series.id,
                scenario=scenario.id,
                variant=variant,
                duration_s=duration,
                fps=fps,
                target_frames=round(exact),
                seed=seed,
                resolution=eff["resolution"].value,
                model=card.id,
                mode=eff["mode"].value,
                prompt=text,
                sampling=SamplingParams(
                    guidance=eff["guidance"].value,
                    steps=eff["steps"].value,
                    negative_prompt=eff["negative_prompt"].value,
                ),
                upsample=eff["upsample"].value,
                auto_generate=eff["auto_generate"].value,
                tags=tuple(tags),
                risk_level=scenario.risk_level or series.risk_level,
                metadata=meta,
                qa=qa,
                created_at=now,
            )


def expand(source: Source, *, sha256: str, now: datetime, cards: dict[str, ModelCard] | None = None) -> Expansion:
    """Validate a loaded manifest and expand it (see the module docstring)."""
    cards = cards if cards is not None else builtin_cards()
    problems = _Problems(source)
    try:
        manifest = Manifest.model_validate(source.data)
    except ValidationError as exc:
        grouped: dict[Path, list[Any]] = {}
        for err in exc.errors():
            grouped.setdefault(_clean_loc(err["loc"]), []).append(err)
        for loc, all_errs in grouped.items():
            # In a union, "wrong type" from the other forms is noise next to a real complaint.
            errs = [e for e in all_errs if not str(e.get("type", "")).endswith("_type")] or all_errs
            messages = list(dict.fromkeys(_friendly(e) for e in errs))
            if len(messages) == 1:
                problems.add(loc, _pydantic_rule(errs[0]), messages[0])
            else:  # a union: say what each allowed form wanted, once
                problems.add(loc, "no allowed form", "matches no allowed form: " + "; or ".join(messages[:5]))
        _check_references(source.data, problems)
        return Expansion(sha256=sha256, problems=_in_document_order(problems.items))
    _check_references(source.data, problems)
    specs: list[PromptSpec] = []
    for si, series in enumerate(manifest.series):
        for ci in range(len(series.scenarios)):
            try:
                specs.extend(_scenario_specs(manifest, si, ci, cards=cards, problems=problems, sha256=sha256, now=now))
            except ValidationError as exc:  # a spec the contract refuses: report, do not crash
                problems.add(("series", si, "scenarios", ci), "invalid spec", str(exc.errors()[0]["msg"]))
            if len(specs) > MAX_SPECS:
                problems.add((), "too many specs", f"the manifest expands to more than {MAX_SPECS} specs")
                return Expansion(sha256=sha256, manifest=manifest, problems=problems.items)
    if problems.items:
        return Expansion(sha256=sha256, manifest=manifest, problems=_in_document_order(problems.items))
    return Expansion(sha256=sha256, manifest=manifest, specs=specs)


def _in_document_order(problems: list[ManifestProblem]) -> list[ManifestProblem]:
    """Problems by line (those without a position last), the order a reader fixes them in."""
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0, p.column or 0))


def check_text(text: str | bytes, *, now: datetime, cards: dict[str, ModelCard] | None = None) -> Expansion:
    """Load and expand a manifest document (YAML or JSON)."""
    raw = text.encode() if isinstance(text, str) else text
    sha256 = hashlib.sha256(raw).hexdigest()
    try:
        source = load(raw)
    except SourceError as exc:
        return Expansion(
            sha256=sha256,
            problems=[
                ManifestProblem(
                    path=format_path(p.path, None),
                    rule=p.rule,
                    message=p.message,
                    line=p.mark.line if p.mark else None,
                    column=p.mark.column if p.mark else None,
                )
                for p in exc.problems
            ],
        )
    return expand(source, sha256=sha256, now=now, cards=cards)


def by_series_and_duration(specs: list[PromptSpec]) -> dict[tuple[str, float], list[PromptSpec]]:
    """Specs grouped by (series, duration)."""
    out: dict[tuple[str, float], list[PromptSpec]] = defaultdict(list)
    for spec in specs:
        out[(spec.series or "-", spec.duration_s)].append(spec)
    return dict(out)
