"""The progress journal of an export and what a rerun keeps of it: pure decisions, no I/O.

The writer records every finished unit (a shard, or one sample's files) as a JSON line in
``export_manifest.json.partial`` (:data:`~worldmill.catalog.export.plan.JOURNAL_NAME`). A rerun keeps
a unit only when the journal has it with the same fingerprint and its files on disk still have the
recorded sha256 (:func:`decide_resume`); recorded files the plan no longer has are removed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from pydantic import Field, ValidationError

from worldmill.catalog.export.plan import ExportModel, ExportPlan, PlannedUnit, canonical_json
from worldmill.contracts.base import Sha256

JOURNAL_KIND: Final = "worldmill.export.progress/1"


class FileRecord(ExportModel):
    """A finished file of an export: relative path, sha256, size."""

    path: str
    sha256: Sha256
    bytes: int = Field(ge=0)


class JournalEntry(ExportModel):
    """A finished unit, as the journal records it."""

    unit: str
    fingerprint: str
    files: tuple[FileRecord, ...]


def journal_header(plan: ExportPlan) -> str:
    """The journal's first line: what it is, for which format and selection."""
    return canonical_json({"journal": JOURNAL_KIND, "format": plan.format, "selection": plan.selection}).decode()


def journal_line(entry: JournalEntry) -> str:
    """One finished unit as a JSON line."""
    return canonical_json(entry.model_dump(mode="json")).decode()


def parse_journal(text: str) -> dict[str, JournalEntry] | None:
    """Finished units by unit id (the last record of a unit wins; a torn last line is ignored).

    None when the text is not a journal of ours (the first line is not our header).
    """
    lines = text.splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except ValueError:
        return None
    if not isinstance(header, dict) or header.get("journal") != JOURNAL_KIND:
        return None
    entries: dict[str, JournalEntry] = {}
    for line in lines[1:]:
        try:
            entry = JournalEntry.model_validate_json(line)
        except ValidationError:
            continue
        entries[entry.unit] = entry
    return entries


def files_to_verify(plan: ExportPlan, journal: Mapping[str, JournalEntry]) -> tuple[FileRecord, ...]:
    """Recorded files of units the plan still wants unchanged: the writer re-hashes only these."""
    out: list[FileRecord] = []
    for unit in plan.units:
        entry = journal.get(unit.unit_id)
        if entry is not None and _entry_matches(unit, entry):
            out.extend(entry.files)
    return tuple(out)


def _entry_matches(unit: PlannedUnit, entry: JournalEntry) -> bool:
    return entry.fingerprint == unit.fingerprint and tuple(f.path for f in entry.files) == unit.files


@dataclass(frozen=True)
class ResumeDecision:
    """Which units are already done, which files to delete (recorded, no longer planned)."""

    keep: frozenset[str]
    remove: tuple[str, ...]


def decide_resume(
    plan: ExportPlan, journal: Mapping[str, JournalEntry], on_disk: Mapping[str, FileRecord | None]
) -> ResumeDecision:
    """Keep a unit when the journal has it unchanged and every one of its files is on disk as recorded.

    ``on_disk`` maps each path of :func:`files_to_verify` to what is there now (None: missing).
    Anything else the plan wants is (re)written; recorded files the plan no longer has are removed.
    """
    keep = {
        unit.unit_id
        for unit in plan.units
        if (entry := journal.get(unit.unit_id)) is not None
        and _entry_matches(unit, entry)
        and all(on_disk.get(f.path) == f for f in entry.files)
    }
    planned = {path for unit in plan.units for path in unit.files}
    remove = sorted({f.path for e in journal.values() for f in e.files} - planned)
    return ResumeDecision(frozenset(keep), tuple(remove))
