"""Pure rules about what an upload is and what an augmentation of it uses (no I/O).

* **What a key is**: a video to augment, a control video that belongs to one, a sidecar JSON with
  the augmentation's parameters (the ``{name}.json`` of docs/background.md#hand-videos), or something else.
* **Control files next to an input** (docs/background.md#web-ui): ``depth.mp4``, ``seg.mp4``/``segmentation.mp4``,
  ``edge.mp4``, ``vis.mp4``/``blur.mp4`` in the input's folder (one input per folder), or
  ``{name}_depth.mp4`` … next to ``{name}.mp4``.
* **Which controls are used**: the explicit ones (a provided file wins over computing; edge and
  vis are computed on CPU; depth and seg must be provided), else every provided file, else edge.
  Several weights are scaled to sum to 1, as Transfer does.
* **The id** of an augmentation: from the input (bucket, key, etag) and its parameters, so the same
  upload notified twice is one augmentation and other parameters are another.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from worldmill.contracts.augment import AugmentParams, ControlSpec
from worldmill.contracts.base import ObjectRef
from worldmill.contracts.cards import ControlType, GenerationMode, Preset, builtin_cards
from worldmill.runtime.digest import canonical_json, sha256_hex

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})
#: Control-file names (without suffix) and the control they provide.
CONTROL_NAMES: Mapping[str, ControlType] = {
    "depth": ControlType.DEPTH,
    "seg": ControlType.SEG,
    "segmentation": ControlType.SEG,
    "edge": ControlType.EDGE,
    "edges": ControlType.EDGE,
    "vis": ControlType.VIS,
    "blur": ControlType.VIS,
}
#: Controls the augment service computes on CPU (plain image processing).
COMPUTED = frozenset({ControlType.EDGE, ControlType.VIS})
#: The prefix under which outputs and control videos are written (mirrors the input's path).
OUTPUT_PREFIX = "augmented/"

KeyKind = Literal["video", "control", "sidecar", "other"]


class ControlsError(ValueError):
    """The controls asked for cannot be used for this input; ``field`` names which."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


def split(key: str) -> tuple[str, str, str]:
    """``(folder, stem, suffix)`` of a key; the suffix lower-cased."""
    folder, name = posixpath.split(key)
    stem, suffix = posixpath.splitext(name)
    return folder, stem, suffix.lower()


def _control_of_name(stem: str) -> ControlType | None:
    return CONTROL_NAMES.get(stem.lower())


def _control_suffix(stem: str) -> tuple[str, ControlType] | None:
    """``("clip", DEPTH)`` for ``clip_depth``."""
    base, sep, tail = stem.rpartition("_")
    if sep and base and tail.lower() in CONTROL_NAMES:
        return base, CONTROL_NAMES[tail.lower()]
    return None


def classify(key: str, siblings: Iterable[str] = ()) -> KeyKind:
    """What ``key`` is, given the other keys in its folder (to tell ``clip_depth.mp4`` from a video)."""
    folder, stem, suffix = split(key)
    if key.startswith(OUTPUT_PREFIX):
        return "other"
    if suffix == ".json":
        return "sidecar"
    if suffix not in VIDEO_SUFFIXES:
        return "other"
    if _control_of_name(stem) is not None:
        return "control"
    paired = _control_suffix(stem)
    if paired is not None:
        base = paired[0]
        for sibling in siblings:
            s_folder, s_stem, s_suffix = split(sibling)
            if s_folder == folder and s_stem == base and s_suffix in VIDEO_SUFFIXES:
                return "control"
    return "video"


def control_files(input_key: str, siblings: Iterable[str]) -> dict[ControlType, str]:
    """Control videos provided next to an input: ``{name}_{control}.*`` first, then folder-wide names."""
    folder, stem, _ = split(input_key)
    named: dict[ControlType, str] = {}
    folder_wide: dict[ControlType, str] = {}
    for key in sorted(siblings):
        k_folder, k_stem, k_suffix = split(key)
        if k_folder != folder or k_suffix not in VIDEO_SUFFIXES or key == input_key:
            continue
        paired = _control_suffix(k_stem)
        if paired is not None and paired[0] == stem:
            named.setdefault(paired[1], key)
            continue
        control = _control_of_name(k_stem)
        if control is not None:
            folder_wide.setdefault(control, key)
    return {**folder_wide, **named}


def sidecar_key(input_key: str) -> str:
    """``folder/name.json`` next to ``folder/name.mp4``."""
    folder, stem, _ = split(input_key)
    return posixpath.join(folder, f"{stem}.json")


#: Top-level fields a sidecar may have: ours (``AugmentParams``) and the Transfer spec shape
#: (docs/background.md#hand-videos).
SIDECAR_FIELDS = (
    "name",
    "prompt",
    "negative_prompt",
    "seed",
    "guidance",
    "controls",
    "template",
    "model",
    "tier",
    *(c.value for c in ControlType),
)
#: Fields of a control block (``"edge": {"control_weight": 0.6, "preset_edge_threshold": "low"}``).
BLOCK_FIELDS: Mapping[ControlType, tuple[str, ...]] = {
    ControlType.EDGE: ("control_weight", "preset_edge_threshold", "preset"),
    ControlType.VIS: ("control_weight", "preset_blur_strength", "preset"),
    ControlType.DEPTH: ("control_weight",),
    ControlType.SEG: ("control_weight",),
}


def params_from_sidecar(text: str | bytes) -> AugmentParams:
    """Parameters from a sidecar JSON: ours (``AugmentParams``) or the Transfer spec shape
    (docs/background.md#hand-videos).

    The Transfer shape: ``{"name", "prompt", "negative_prompt", "seed", "guidance", "edge":
    {"control_weight": 0.6, "preset_edge_threshold": "low"}, "vis": {"control_weight": 0.4,
    "preset_blur_strength": "high"}, "depth": {…}, "seg": {…}}``. Every field is used (see
    :data:`SIDECAR_FIELDS`); an unknown one, at the top or in a control block, is refused with its
    name (:class:`ControlsError` ``sidecar.<field>``), never ignored, and so is a bad value (field and rule).
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ControlsError("sidecar", f"is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ControlsError("sidecar", "must be a JSON object")
    for key in data:
        if key not in SIDECAR_FIELDS:
            raise ControlsError(f"sidecar.{key}", f"is not a known field (known: {', '.join(SIDECAR_FIELDS)})")
    fields: dict[str, Any] = {
        k: data[k]
        for k in ("name", "prompt", "negative_prompt", "seed", "guidance", "template", "model", "tier")
        if k in data
    }
    if isinstance(fields.get("seed"), bool) or isinstance(fields.get("guidance"), bool):
        bad = "seed" if isinstance(fields.get("seed"), bool) else "guidance"
        raise ControlsError(f"sidecar.{bad}", "must be a number, not true/false")
    listed = data.get("controls") or []
    if not isinstance(listed, list):
        raise ControlsError("sidecar.controls", "must be a list of {type, weight, preset}")
    controls: list[Any] = list(listed)
    controls += [_control_block(c, data[c.value]) for c in ControlType if data.get(c.value) is not None]
    if controls:
        fields["controls"] = controls
    try:
        params = AugmentParams.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "sidecar"
        raise ControlsError(f"sidecar.{where}", first["msg"]) from exc
    check_params(params, field_prefix="sidecar.")
    return params


def _control_block(control: ControlType, block: object) -> dict[str, Any]:
    """A Transfer control block (docs/background.md#hand-videos) (``{"control_weight": 0.6, "preset_edge_threshold":
    "low"}``) as a control spec."""
    if not isinstance(block, dict):
        raise ControlsError(f"sidecar.{control.value}", "must be an object (control_weight, preset)")
    for key in block:
        if key not in BLOCK_FIELDS[control]:
            hint = (
                f"; put the control video next to the input as <name>_{control.value}.mp4"
                if key == "control_path"
                else ""
            )
            raise ControlsError(
                f"sidecar.{control.value}.{key}",
                f"is not a known field of a {control.value} control (known: {', '.join(BLOCK_FIELDS[control])}){hint}",
            )
    entry: dict[str, Any] = {"type": control.value, "weight": block.get("control_weight", 1.0)}
    preset = block.get("preset_edge_threshold") or block.get("preset_blur_strength") or block.get("preset")
    if preset is not None:
        entry["preset"] = preset
    return entry


def check_params(params: AugmentParams, *, field_prefix: str = "params.") -> None:
    """What the model card refuses, before anything is prepared: a Transfer model, a tier it has, guidance in range."""
    card = builtin_cards().get(params.model)
    if card is None or GenerationMode.TRANSFER not in card.modes:
        known = sorted(c.id for c in builtin_cards().values() if GenerationMode.TRANSFER in c.modes)
        raise ControlsError(
            f"{field_prefix}model", f"{params.model!r} is not a Transfer model (known: {', '.join(known)})"
        )
    tiers = [t.name for t in card.resolution_tiers]
    if params.tier is not None and params.tier not in tiers:
        raise ControlsError(
            f"{field_prefix}tier",
            f"{card.id} has no resolution tier {params.tier!r} (tiers: {', '.join(tiers)}; "
            "leave it out to keep the input's resolution)",
        )
    if params.guidance is not None and not card.guidance_min <= params.guidance <= card.guidance_max:
        raise ControlsError(
            f"{field_prefix}guidance",
            f"{params.guidance:g} is outside {card.id}'s range {card.guidance_min:g}–{card.guidance_max:g}",
        )


def augmentation_id(bucket: str, key: str, etag: str, params: AugmentParams) -> str:
    """``aug-<hex>``: the same input bytes and parameters give the same id."""
    material = canonical_json(
        {"bucket": bucket, "key": key, "etag": etag.strip('"'), "params": params.model_dump(mode="json")},
        ensure_ascii=True,  # stored ids: these bytes
        allow_nan=True,
    )
    return "aug-" + sha256_hex(material)[:32]


@dataclass(frozen=True)
class ChosenControl:
    """A control to use: its weight (as given and normalised), preset, and where its video comes from."""

    type: ControlType
    weight: float
    normalized_weight: float
    preset: Preset | None
    provided_key: str | None  # None: computed on CPU
    #: The control video the request named (``controls[].video``): its bucket, and the size and sha256 it must have.
    given: ObjectRef | None = None


def normalize(weights: Mapping[ControlType, float]) -> dict[ControlType, float]:
    """One control keeps its weight; several are scaled to sum to 1 (Transfer's multi-control rule)."""
    if len(weights) <= 1:
        return dict(weights)
    total = sum(weights.values())
    if total <= 0:
        raise ControlsError("controls", "at least one control needs a weight above 0")
    return {t: w / total for t, w in weights.items()}


def choose_controls(params: AugmentParams, provided: Mapping[ControlType, str]) -> list[ChosenControl]:
    """The controls an augmentation uses, or :class:`ControlsError` naming the one that cannot be had."""
    asked: list[ControlSpec] = list(params.controls)
    if not asked:
        asked = [ControlSpec(type=t) for t in sorted(provided)] or [ControlSpec(type=ControlType.EDGE)]
    chosen: list[tuple[ControlSpec, str | None]] = []
    for spec in asked:
        key = spec.video.key if spec.video is not None else provided.get(spec.type)
        if key is None and spec.type not in COMPUTED:
            names = " or ".join(n for n, t in CONTROL_NAMES.items() if t is spec.type)
            raise ControlsError(
                f"controls.{spec.type.value}",
                f"no {spec.type.value} video was provided (controls[].video in the request, {names}.mp4 in the "
                f"input's folder, or <name>_{spec.type.value}.mp4), and {spec.type.value} needs a model to compute "
                "(only edge and vis are computed here)",
            )
        chosen.append((spec, key))
    weights = normalize({spec.type: spec.weight for spec, _ in chosen})
    return [
        ChosenControl(
            type=spec.type,
            weight=spec.weight,
            normalized_weight=round(weights[spec.type], 6),
            preset=spec.preset if spec.type in COMPUTED else None,
            provided_key=key,
            given=spec.video,
        )
        for spec, key in chosen
    ]
