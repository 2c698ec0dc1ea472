"""Pure rules of spec versioning: what counts as a change, how a stored spec is indexed, the document it is."""

from __future__ import annotations

from typing import Any

from worldmill.contracts.prompts import PromptSpec
from worldmill.prompt.identity import duration_token
from worldmill.runtime.digest import canonical_json, sha256_hex
from worldmill.runtime.docstore import NewDocument

#: Fields that do not make a spec different: bookkeeping, not content.
BOOKKEEPING = frozenset({"version", "previous_version", "created_at", "manifest_sha256"})
KIND = "prompt"
MANIFEST_KIND = "manifest"


def content_hash(spec: PromptSpec) -> str:
    """sha256 of the spec's content (canonical JSON, bookkeeping fields left out)."""
    body = spec.model_dump(mode="json", exclude=set(BOOKKEEPING))
    return sha256_hex(canonical_json(body, ensure_ascii=True, allow_nan=True))  # stored hashes: these bytes


def index_of(spec: PromptSpec) -> dict[str, tuple[str, ...]]:
    """The fields ``GET /prompts`` filters on."""
    index: dict[str, tuple[str, ...]] = {
        "scenario": (spec.scenario,),
        "duration": (duration_token(spec.duration_s), f"{spec.duration_s:g}"),
        "model": (spec.model,),
        "mode": (spec.mode.value,),
        "upsample": (str(spec.upsample).lower(),),
        "upsampled": (str(spec.upsampled is not None).lower(),),
        "tag": tuple(spec.tags),
    }
    if spec.manifest:
        index["manifest"] = (spec.manifest,)
    if spec.series:
        index["series"] = (spec.series,)
    if spec.risk_level:
        index["risk"] = (spec.risk_level,)
    if spec.input is not None:
        index["input"] = (f"{spec.input.bucket}/{spec.input.key}",)
    return index


def as_new_version(spec: PromptSpec, latest_version: int | None) -> PromptSpec:
    """The spec numbered after the latest stored version (or as version 1)."""
    if latest_version is None:
        return spec.model_copy(update={"version": 1, "previous_version": None})
    return spec.model_copy(update={"version": latest_version + 1, "previous_version": latest_version})


def spec_body(spec: PromptSpec) -> dict[str, Any]:
    """The JSON body stored for a spec."""
    return spec.model_dump(mode="json")


def spec_document(spec: PromptSpec, content_hash: str) -> NewDocument:
    """The stored version of a spec, indexed for ``GET /prompts``."""
    return NewDocument(
        kind=KIND,
        doc_id=spec.prompt_id,
        version=spec.version,
        body=spec_body(spec),
        content_hash=content_hash,
        index=index_of(spec),
    )
