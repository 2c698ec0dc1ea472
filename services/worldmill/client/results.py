"""What the client's composite calls return."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from worldmill.contracts.base import ObjectRef
from worldmill.contracts.generation import GenerationAccepted, RunRecord
from worldmill.contracts.prompts import ManifestResult


@dataclass(frozen=True)
class QuickResult:
    """``quick_generate``: the manifest submitted, the generation request, its finished runs, downloads."""

    manifest: ManifestResult
    request: GenerationAccepted
    runs: list[RunRecord]
    #: The downloaded videos (with ``download_to``), in the order of ``runs``.
    videos: list[Path] = field(default_factory=list)

    @property
    def prompt_ids(self) -> list[str]:
        """The specs generated."""
        return [r.prompt_id for r in self.runs]

    @property
    def asset_ids(self) -> list[str]:
        """The catalog's asset ids of the videos."""
        return [r.asset_id for r in self.runs if r.asset_id]

    @property
    def video_refs(self) -> list[ObjectRef]:
        """Where the videos are in the object store."""
        return [r.video for r in self.runs if r.video]
