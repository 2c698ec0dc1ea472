"""Per-video Cosmos prompt JSON files → one manifest (pure: parsed JSON in, a manifest dict out).

``worldmill manifest import`` reads the files; this module only looks at their names and parsed
contents, so everything it decides can be tested without a disk.

**Grouping, by file name** (``<scenario>[_<duration>s][_v<variant>].json``):

* ``C01_30s.json`` → scenario ``C01`` at 30 s, variant 0; ``C01_5s_v1.json`` → scenario ``C01``
  at 5 s, variant 1; ``R14_2_5s.json`` → 2.5 s (the duration token of prompt ids).
* The series is the scenario's leading letters when a digit follows them (``C01`` → ``C``,
  ``R14`` → ``R``); scenarios without such a prefix (``gcsample``) go to the series ``other``.
* The files of one scenario become one scenario with all their durations; variants are counted
  per duration (``_v0``/``_v1`` or ``_v1``/``_v2``: 2 variants; a file without ``_v`` is variant 0).
* With no duration in the name, it is ``num_output_frames / fps``. With both, they must agree
  (``fps`` is the file's, else the manifest's default 24, which is what the manifest would make).

**Fields** (NVIDIA's Cosmos inference JSON, docs/background.md, #security-cameras and #hand-videos):

=====================================  ==================================================
JSON field                             manifest
=====================================  ==================================================
``prompt``                             scenario ``prompt``
``negative_prompt``                    ``overrides.negative_prompt``
``guidance``                           ``overrides.guidance``
``num_steps`` (or ``steps``)           ``overrides.steps``
``fps``                                ``overrides.fps``
``resolution``                         ``overrides.resolution`` (as written: ``1280x704``)
``model``                              ``overrides.model``
``inference_type``                     ``overrides.mode``
``num_output_frames``                  checked against the duration (the manifest makes
                                       ``duration × fps`` frames); not stored
``seed``                               not carried: the manifest derives a seed per
                                       (scenario, duration, variant); reported as a note
``name``                               not carried (ids come from the file name); a note
                                       when it differs from the file name
``edge``/``depth``/``seg``/``vis``     scenario ``metadata.controls`` (``edge=1,depth=0.5``,
``.control_weight``                    the syntax of ``prompts from-videos --controls``)
``<control>.control_path``             scenario ``metadata["control.<control>.path"]``
``input_path``, ``video_path``         scenario ``metadata`` under the same key
=====================================  ==================================================

An overrides value shared by every scenario moves to ``defaults``, one shared by a series to
that series' ``overrides``; the most common duration list goes to the top-level ``durations``.

Manifests describe text2world scenarios only, so Transfer controls and input videos are kept as
metadata, with a note saying that generation does not use them. Every field not in the table is
returned as *unknown* (file, field); nothing is dropped silently. Values are carried as they
are: the manifest's own rules (whole frames, known models, ranges) are ``check_text``'s job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from worldmill.prompt.expand import DEFAULT_FPS

OTHER_SERIES = "other"
CONTROL_TYPES = ("edge", "depth", "seg", "vis")
NAME_FIELD = "(file name)"

#: JSON field → the overrides (settings) key that carries it.
SETTINGS_FIELDS: dict[str, str] = {
    "model": "model",
    "inference_type": "mode",
    "fps": "fps",
    "resolution": "resolution",
    "guidance": "guidance",
    "num_steps": "steps",
    "steps": "steps",
    "negative_prompt": "negative_prompt",
}
SETTINGS_ORDER = ("model", "mode", "fps", "resolution", "guidance", "steps", "negative_prompt")
INPUT_FIELDS = ("input_path", "video_path")

_NAME = re.compile(r"^(?P<scenario>.+?)(?:_(?P<duration>\d+(?:[._]\d+)?)s)?(?:_v(?P<variant>\d+))?$")
_SERIES = re.compile(r"^[A-Za-z]+(?=\d)")
_TRANSFER_NOTE = (
    "kept in the scenario's metadata only: a manifest makes text2world videos, and generation does not "
    "use controls or input videos; make Transfer specs with `worldmill prompts from-videos"
)


@dataclass(frozen=True)
class Finding:
    """Something about one field of one file: unknown, a problem, or a note."""

    file: str
    field: str
    message: str
    rule: str


@dataclass
class ImportResult:
    """The manifest (a plain dict, ready to dump) and what the files said that it does not carry."""

    manifest: dict[str, Any]
    #: Fields the importer does not know: listed, never dropped silently.
    unknown: list[Finding] = field(default_factory=list)
    #: Where the files contradict themselves or each other (the manifest keeps one reading).
    problems: list[Finding] = field(default_factory=list)
    #: Known fields that are not carried as they were, and why.
    notes: list[Finding] = field(default_factory=list)


@dataclass
class _Entry:
    """One file, read."""

    file: str
    scenario: str
    series: str
    duration: float | None
    variant: int
    #: target ("prompt", "overrides.guidance", "metadata.controls") → (JSON field, value)
    values: dict[str, tuple[str, Any]] = field(default_factory=dict)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


def _plain(x: float) -> int | float:
    """``30.0`` → ``30`` so the YAML reads like a person wrote it."""
    return int(x) if float(x).is_integer() else x


def natural_key(text: str) -> list[Any]:
    """``C2`` before ``C10``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part]


def parse_name(file: str) -> tuple[str, str, float | None, int]:
    """``C01_30s_v1.json`` → (scenario ``C01``, series ``C``, 30.0, 1)."""
    stem = file[: -len(".json")] if file.lower().endswith(".json") else file
    m = _NAME.match(stem)
    if m is None:  # only an empty stem (a file named ".json")
        return stem, OTHER_SERIES, None, 0
    scenario = m.group("scenario")
    token = m.group("duration")
    duration = float(token.replace("_", ".")) if token else None
    variant = int(m.group("variant")) if m.group("variant") else 0
    prefix = _SERIES.match(scenario)
    return scenario, prefix.group(0) if prefix else OTHER_SERIES, duration, variant


def _controls(file: str, data: Mapping[str, Any], entry: _Entry, out: ImportResult) -> None:
    present = [t for t in CONTROL_TYPES if t in data]
    if not present:
        return
    parts = []
    paths: dict[str, tuple[str, Any]] = {}
    for kind in present:
        block = data[kind]
        if not isinstance(block, Mapping):
            out.problems.append(
                Finding(file, kind, 'must be an object such as {"control_weight": 1.0}', "not an object")
            )
            continue
        weight = block.get("control_weight")
        if weight is None:
            parts.append(kind)  # the default weight (1.0), as `--controls edge` means
        elif _number(weight) and 0 <= weight <= 1:
            parts.append(f"{kind}={weight:g}")
        else:
            out.problems.append(
                Finding(file, f"{kind}.control_weight", f"{weight!r} must be a number from 0 to 1", "control weight")
            )
        if "control_path" in block:
            paths[f"metadata.control.{kind}.path"] = (f"{kind}.control_path", block["control_path"])
        for key in block:
            if key not in ("control_weight", "control_path"):
                out.unknown.append(Finding(file, f"{kind}.{key}", "not recognised", "unknown field"))
    if parts:
        entry.values["metadata.controls"] = (", ".join(present), ",".join(parts))
    entry.values.update(paths)
    hint = f" VIDEOS --controls {','.join(parts)}" if parts else " VIDEOS"
    message = f"{_TRANSFER_NOTE}{hint}`"
    out.notes.append(Finding(file, ", ".join(present), message, "not carried"))


def _read(file: str, data: Mapping[str, Any], out: ImportResult) -> _Entry:
    scenario, series, name_duration, variant = parse_name(file)
    entry = _Entry(file, scenario, series, name_duration, variant)
    for key, value in data.items():
        if key == "prompt":
            entry.values["prompt"] = (key, value)
        elif key in SETTINGS_FIELDS:
            target = f"overrides.{SETTINGS_FIELDS[key]}"
            if target in entry.values and not _same(entry.values[target][1], value):
                other = entry.values[target][0]
                out.problems.append(
                    Finding(
                        file, key, f"{value!r} contradicts {other} {entry.values[target][1]!r}", "conflicting values"
                    )
                )
            else:
                entry.values[target] = (key, value)
        elif key in INPUT_FIELDS:
            entry.values[f"metadata.{key}"] = (key, value)
            out.notes.append(Finding(file, key, f"{_TRANSFER_NOTE} VIDEOS`", "not carried"))
        elif key == "seed":
            out.notes.append(
                Finding(
                    file,
                    key,
                    "not carried: the manifest derives a distinct seed per (scenario, duration, variant); "
                    "change seed_salt to re-roll them",
                    "not carried",
                )
            )
        elif key == "name":
            stem = file[: -len(".json")] if file.lower().endswith(".json") else file
            if value != stem:
                out.notes.append(
                    Finding(
                        file, key, f"{value!r} is not carried: ids come from the file name ({stem!r})", "not carried"
                    )
                )
        elif key in CONTROL_TYPES or key == "num_output_frames":
            continue  # below
        else:
            out.unknown.append(Finding(file, key, "not recognised", "unknown field"))
    _controls(file, data, entry, out)
    entry.duration = _duration(file, data, name_duration, out)
    return entry


def _duration(file: str, data: Mapping[str, Any], from_name: float | None, out: ImportResult) -> float | None:
    """The name's duration, checked against ``num_output_frames / fps``; or that quotient."""
    frames = data.get("num_output_frames")
    if "num_output_frames" in data and not (isinstance(frames, int) and not isinstance(frames, bool) and frames > 0):
        out.problems.append(
            Finding(file, "num_output_frames", f"{frames!r} must be a whole number of frames, at least 1", "frames")
        )
        frames = None
    if "fps" not in data:
        fps: float | None = DEFAULT_FPS
        where = f"{DEFAULT_FPS} fps (the manifest's default; the file has no fps)"
    else:
        fps = data["fps"] if _number(data["fps"]) and data["fps"] > 0 else None  # a bad fps is check's to report
        where = f"{data['fps']!r} fps"
    if from_name is not None:
        if isinstance(frames, int) and fps is not None:
            expected = from_name * fps
            if abs(frames - expected) > 1e-6:
                out.problems.append(
                    Finding(
                        file,
                        "num_output_frames",
                        f"{frames} frames at {where} last {frames / fps:.4g} s, but the name says {from_name:g} s "
                        f"({expected:g} frames); the manifest keeps the name's {from_name:g} s",
                        "duration mismatch",
                    )
                )
        return from_name
    if isinstance(frames, int) and fps is not None:
        return frames / fps
    out.problems.append(
        Finding(
            file,
            NAME_FIELD,
            "no duration: the name has no _<seconds>s suffix (e.g. C01_5s.json) and no num_output_frames gives one",
            "no duration",
        )
    )
    return None


def _check_scenario(entries: list[_Entry], out: ImportResult) -> tuple[dict[str, Any], list[float], Any]:
    """One scenario's values (from its first file), durations and variants; conflicts are problems."""
    ref = entries[0]
    values = {k: v for k, (_, v) in ref.values.items()}
    for e in entries[1:]:
        for key in dict.fromkeys([*ref.values, *e.values]):
            mine, theirs = e.values.get(key), ref.values.get(key)
            if mine is not None and theirs is not None and _same(mine[1], theirs[1]):
                continue
            what = (mine or theirs or (key, None))[0]
            if mine is None:
                how = f"is missing here but set in {ref.file}"
            elif theirs is None:
                how = f"is set here but not in {ref.file}"
            else:
                how = f"differs from {ref.file}'s"
            out.problems.append(
                Finding(
                    e.file,
                    what,
                    f"{what} {how}; a scenario has one {what} for all its durations and variants, "
                    f"and the manifest keeps {ref.file}'s",
                    "conflicting values",
                )
            )
    by_duration: dict[float, dict[int, str]] = {}
    for e in entries:
        if e.duration is None:
            continue
        files = by_duration.setdefault(e.duration, {})
        if e.variant in files:
            out.problems.append(
                Finding(
                    e.file,
                    NAME_FIELD,
                    f"{e.scenario} at {e.duration:g} s variant {e.variant} is also {files[e.variant]}",
                    "duplicate file",
                )
            )
            continue
        files[e.variant] = e.file
    durations = sorted(by_duration)
    counts: dict[float, int] = {}
    for d in durations:
        found = sorted(by_duration[d])
        n = len(found)
        if found not in (list(range(n)), list(range(1, n + 1))):
            out.problems.append(
                Finding(
                    by_duration[d][found[-1]],
                    NAME_FIELD,
                    f"the variants of {ref.scenario} at {d:g} s are {', '.join(f'v{v}' for v in found)}: a manifest "
                    f"counts variants, so it makes {n} (v0..v{n - 1})",
                    "variant numbering",
                )
            )
        counts[d] = n
    distinct = set(counts.values())
    variants: Any = distinct.pop() if len(distinct) == 1 else {_plain(d): c for d, c in counts.items()}
    if not counts:
        variants = 1
    return values, durations, variants


def _most_common(items: list[Any]) -> Any:
    """The most frequent value (the first seen on ties)."""
    best: list[tuple[Any, int]] = []
    for item in items:
        for i, (value, n) in enumerate(best):
            if _same(value, item):
                best[i] = (value, n + 1)
                break
        else:
            best.append((item, 1))
    return max(best, key=lambda pair: pair[1])[0] if best else None


@dataclass
class _Scenario:
    id: str
    series: str
    values: dict[str, Any]
    durations: list[float]
    variants: Any


def _shared(scenarios: list[_Scenario], key: str) -> tuple[bool, Any]:
    """Whether every scenario has ``key`` with one value, and that value."""
    if not all(key in s.values for s in scenarios):
        return False, None
    first = scenarios[0].values[key]
    return all(_same(s.values[key], first) for s in scenarios), first


def import_prompts(files: Mapping[str, Mapping[str, Any]], *, name: str, description: str = "") -> ImportResult:
    """A manifest from prompt files, keyed by file name (``C01_30s.json``) with their parsed JSON objects."""
    out = ImportResult(manifest={})
    groups: dict[str, list[_Entry]] = {}
    for file in sorted(files, key=natural_key):
        entry = _read(file, files[file], out)
        groups.setdefault(entry.scenario, []).append(entry)
    scenarios: list[_Scenario] = []
    for scenario_id in sorted(groups, key=natural_key):
        entries = sorted(
            groups[scenario_id], key=lambda e: (e.duration is None, e.duration or 0.0, e.variant, natural_key(e.file))
        )
        values, durations, variants = _check_scenario(entries, out)
        scenarios.append(_Scenario(scenario_id, entries[0].series, values, durations, variants))
    series_ids = sorted({s.series for s in scenarios}, key=lambda x: (x == OTHER_SERIES, natural_key(x)))
    by_series = {sid: [s for s in scenarios if s.series == sid] for sid in series_ids}

    top_durations = _most_common([s.durations for s in scenarios if s.durations]) or []
    top_variants = _most_common([s.variants for s in scenarios if isinstance(s.variants, int)]) or 1
    defaults: dict[str, Any] = {}
    for key in SETTINGS_ORDER:
        shared, value = _shared(scenarios, f"overrides.{key}") if scenarios else (False, None)
        if shared:
            defaults[key] = value

    series_out = [
        _series_out(sid, members, top_durations, top_variants, defaults) for sid, members in by_series.items()
    ]

    manifest: dict[str, Any] = {"format": 1, "name": name}
    if description:
        manifest["description"] = description
    if defaults:
        manifest["defaults"] = defaults
    manifest["durations"] = [_plain(d) for d in top_durations]
    if top_variants != 1:
        manifest["variants"] = top_variants
    manifest["series"] = series_out
    out.manifest = manifest
    return out


def _series_out(
    sid: str, members: list[_Scenario], top_durations: list[float], top_variants: int, defaults: dict[str, Any]
) -> dict[str, Any]:
    s_out: dict[str, Any] = {"id": sid}
    s_durations = _most_common([s.durations for s in members if s.durations]) or top_durations
    if s_durations != top_durations:
        s_out["durations"] = [_plain(d) for d in s_durations]
    s_variants = _most_common([s.variants for s in members if isinstance(s.variants, int)]) or top_variants
    if s_variants != top_variants:
        s_out["variants"] = s_variants
    s_overrides: dict[str, Any] = {}
    for key in SETTINGS_ORDER:
        if key in defaults:
            continue
        shared, value = _shared(members, f"overrides.{key}")
        if shared:
            s_overrides[key] = value
    if s_overrides:
        s_out["overrides"] = s_overrides
    s_out["scenarios"] = [_scenario_out(s, s_durations, s_variants, defaults, s_overrides) for s in members]
    return s_out


def _scenario_out(
    s: _Scenario, durations: list[float], variants: int, defaults: dict[str, Any], series_overrides: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {"id": s.id}
    if "prompt" in s.values:
        out["prompt"] = s.values["prompt"]
    if s.durations != durations:
        out["durations"] = [_plain(d) for d in s.durations]  # [] (no duration found): check says so, here
    if s.variants != variants:
        out["variants"] = s.variants
    overrides = {
        key: s.values[f"overrides.{key}"]
        for key in SETTINGS_ORDER
        if f"overrides.{key}" in s.values and key not in defaults and key not in series_overrides
    }
    if overrides:
        out["overrides"] = overrides
    metadata = {k.removeprefix("metadata."): v for k, v in s.values.items() if k.startswith("metadata.")}
    if metadata:
        out["metadata"] = metadata
    return out


class _Dumper(yaml.SafeDumper):
    """Block style, except short lists of scalars (``durations: [5, 10, 30]``)."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(_number(x) or (isinstance(x, str) and len(x) <= 40) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def to_yaml(manifest: Mapping[str, Any]) -> str:
    """The manifest as YAML, keys in the order the importer built them."""
    return yaml.dump(dict(manifest), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
