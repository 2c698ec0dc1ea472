"""A service's own copy of the prompt specs it has seen on ``prompt.created`` (one document per version).

Services that act on specs (generate, upsample) keep the versions they were told about, so they
never call the prompt service to look one up. Storing is idempotent: a version seen twice is kept once.
"""

from __future__ import annotations

from worldmill.contracts.prompts import PromptSpec
from worldmill.runtime.docstore import DocumentStore, NewDocument, VersionConflictError

#: The document kind spec copies are stored under.
SPEC_KIND = "spec"


def spec_copy(spec: PromptSpec) -> NewDocument:
    """The document that keeps ``spec``'s version (to commit alone, or with other documents)."""
    return NewDocument(
        kind=SPEC_KIND,
        doc_id=spec.prompt_id,
        version=spec.version,
        body=spec.model_dump(mode="json"),
        content_hash=f"v{spec.version}",
        index={"manifest": (spec.manifest,)} if spec.manifest else {},
    )


class SpecCopies:
    """Spec versions kept in a service's document store."""

    def __init__(self, docs: DocumentStore) -> None:
        self.docs = docs

    async def remember(self, spec: PromptSpec) -> bool:
        """Keep a copy of a spec version; False when it was known already."""
        try:
            await self.docs.commit([spec_copy(spec)])
        except VersionConflictError:
            return False
        return True

    async def get(self, prompt_id: str, version: int | None = None) -> PromptSpec | None:
        """A known version of a spec (the latest when ``version`` is None)."""
        doc = await self.docs.get(SPEC_KIND, prompt_id, version)
        return PromptSpec.model_validate(doc.body) if doc else None
