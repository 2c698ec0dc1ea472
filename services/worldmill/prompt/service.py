"""The prompt service's work: store specs as immutable versions and announce them.

Every write goes through one database transaction that also holds the events to publish (the
outbox), so an accepted manifest is never half stored and its events are never lost; the relay
publishes them with their ids as dedup ids. Re-submitting an unchanged manifest stores nothing and
announces nothing.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from worldmill.contracts.augment import InputSpecRequested
from worldmill.contracts.base import Message, ObjectRef
from worldmill.contracts.cards import GenerationMode, ModelCard, builtin_cards
from worldmill.contracts.generation import GenerationRequested
from worldmill.contracts.prompts import (
    ExpansionCounts,
    InputSpecOutcome,
    InputSpecRequest,
    InputSpecResult,
    ManifestAccepted,
    ManifestRejected,
    ManifestResult,
    PromptCreated,
    PromptDetail,
    PromptPage,
    PromptSpec,
)
from worldmill.contracts.upsample import PromptUpsampled
from worldmill.prompt.expand import Expansion, check_text
from worldmill.prompt.input_specs import (
    CATEGORIES,
    VIDEO_SUFFIXES,
    CategoryTemplate,
    InputVideo,
    input_prompt_id,
    input_spec,
    tier_named,
    with_params,
)
from worldmill.prompt.versioning import KIND, MANIFEST_KIND, as_new_version, content_hash, spec_document
from worldmill.runtime.bus import Bus
from worldmill.runtime.docstore import DocumentStore, NewDocument, OutboxItem, OutboxRelay, VersionConflictError
from worldmill.runtime.errors import InvalidInputError, PermanentError
from worldmill.runtime.logs import get_logger
from worldmill.runtime.media import probe
from worldmill.runtime.store import ObjectStore, sha256_file

log = get_logger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


MAX_PAGE = 500
FILTERS = (
    "manifest",
    "series",
    "scenario",
    "tag",
    "risk",
    "duration",
    "model",
    "mode",
    "upsample",
    "upsampled",
    "input",
)


def transfer_setup(
    model: str, template_name: str, tier: str | None, *, field_prefix: str = ""
) -> tuple[ModelCard, CategoryTemplate]:
    """The Transfer card and category template asked for, or InvalidInputError naming the field."""
    card = builtin_cards().get(model)
    if card is None or GenerationMode.TRANSFER not in card.modes:
        transfer = sorted(c.id for c in builtin_cards().values() if GenerationMode.TRANSFER in c.modes)
        raise InvalidInputError(
            f"{field_prefix}model", f"{model!r} is not a Transfer model (known: {', '.join(transfer)})"
        )
    template = CATEGORIES.get(template_name)
    if template is None:
        raise InvalidInputError(
            f"{field_prefix}template", f"{template_name!r} is not a category template ({', '.join(CATEGORIES)})"
        )
    try:
        if tier is not None:  # None: keep the input's resolution
            tier_named(card, tier)
    except ValueError as exc:
        raise InvalidInputError(f"{field_prefix}tier", str(exc)) from exc
    return card, template


class UnknownPromptError(PermanentError):
    """An event names a spec (or a version of it) this service never stored."""

    def __init__(self, prompt_id: str) -> None:
        super().__init__(f"unknown prompt spec {prompt_id}")


class ManifestInvalidError(InvalidInputError):
    """A manifest with problems; ``expansion.problems`` lists every one."""

    def __init__(self, expansion: Expansion) -> None:
        first = expansion.problems[0]
        super().__init__(first.path, f"{first.message} ({len(expansion.problems)} problem(s))")
        self.expansion = expansion


@dataclass
class PromptService:
    """Manifests in, versioned specs and events out. Holds no state of its own."""

    docs: DocumentStore
    bus: Bus | None
    store: ObjectStore | None = None
    source: str = "/worldmill/prompt"

    def _event(self, message: Message, event_id: str) -> OutboxItem:
        return OutboxItem.of(message, source=self.source, event_id=event_id)

    async def publish_pending(self) -> None:
        """Send stored events now (the background relay would, a moment later)."""
        await OutboxRelay.flush_now(self.docs, self.bus)

    async def submit(self, text: str, *, dry_run: bool = False, now: datetime | None = None) -> ManifestResult:
        """Check a manifest; unless it is a dry run, store new spec versions and announce them."""
        expansion = check_text(text, now=now or datetime.now(UTC))
        if not expansion.ok or expansion.manifest is None:
            if not dry_run:
                await self._reject(expansion)
            raise ManifestInvalidError(expansion)
        summary = expansion.summary()
        counts = ExpansionCounts(
            specs=summary.specs,
            frames=summary.frames,
            by_series=summary.by_series,
            frames_by_series=summary.frames_by_series,
        )
        name = expansion.manifest.name
        if dry_run:
            return ManifestResult(
                manifest=name, sha256=expansion.sha256, dry_run=True, counts=counts, specs=tuple(expansion.specs)
            )
        for attempt in range(3):
            try:
                created, unchanged = await self._store(expansion, text)
                break
            except VersionConflictError:
                if attempt == 2:
                    raise
        await self.publish_pending()
        return ManifestResult(
            manifest=name,
            sha256=expansion.sha256,
            dry_run=False,
            counts=counts,
            created=tuple(created),
            unchanged=unchanged,
        )

    async def _store(self, expansion: Expansion, text: str) -> tuple[list[str], int]:
        if expansion.manifest is None:
            raise ManifestInvalidError(expansion)
        new_docs: list[NewDocument] = []
        events: list[OutboxItem] = []
        created: list[str] = []
        unchanged = 0
        for spec in expansion.specs:
            digest = content_hash(spec)
            latest = await self.docs.get(KIND, spec.prompt_id)
            if latest is not None and latest.content_hash == digest:
                unchanged += 1
                continue
            versioned = as_new_version(spec, latest.version if latest else None)
            new_docs.append(spec_document(versioned, digest))
            events.append(
                self._event(PromptCreated(spec=versioned), f"prompt.created-{versioned.prompt_id}-v{versioned.version}")
            )
            created.append(versioned.prompt_id)
        name = expansion.manifest.name
        if new_docs:
            latest_manifest = await self.docs.get(MANIFEST_KIND, name)
            version = (latest_manifest.version + 1) if latest_manifest else 1
            new_docs.append(
                NewDocument(
                    kind=MANIFEST_KIND,
                    doc_id=name,
                    version=version,
                    content_hash=expansion.sha256,
                    body={
                        "name": name,
                        "sha256": expansion.sha256,
                        "text": text,
                        "prompt_ids": [s.prompt_id for s in expansion.specs],
                    },
                    index={"name": (name,)},
                )
            )
            accepted = ManifestAccepted(
                manifest=name,
                manifest_sha256=expansion.sha256,
                prompt_ids=tuple(s.prompt_id for s in expansion.specs),
                created=len(created),
                unchanged=unchanged,
            )
            events.append(self._event(accepted, f"manifest.accepted-{name}-{expansion.sha256[:24]}"))
        await self.docs.commit(new_docs, events)
        return created, unchanged

    async def _reject(self, expansion: Expansion) -> None:
        name = expansion.manifest.name if expansion.manifest else "(unnamed)"
        rejected = ManifestRejected(
            manifest=name, manifest_sha256=expansion.sha256, problems=tuple(expansion.problems[:200])
        )
        await self.docs.commit([], [self._event(rejected, f"manifest.rejected-{expansion.sha256[:24]}")])
        await self.publish_pending()

    async def specs_for_videos(self, req: InputSpecRequest, *, now: datetime | None = None) -> InputSpecResult:
        """A Transfer spec for every video under ``req.prefix``; existing specs are kept unless asked."""
        card, template = transfer_setup(req.model, req.template, req.tier)
        store = self.store
        if store is None:
            raise InvalidInputError("bucket", "this prompt service has no object store configured")
        outcomes: list[InputSpecOutcome] = []
        for obj in await store.list(req.bucket, req.prefix):
            if PurePosixPath(obj.key).suffix.lower() not in VIDEO_SUFFIXES:
                continue
            outcomes.append(
                await self._input_spec(
                    req, obj.key, obj.size, store=store, card=card, template=template, now=now or datetime.now(UTC)
                )
            )
        await self.publish_pending()
        return InputSpecResult(bucket=req.bucket, prefix=req.prefix, outcomes=tuple(outcomes))

    async def _input_spec(
        self,
        req: InputSpecRequest,
        key: str,
        size: int,
        *,
        store: ObjectStore,
        card: ModelCard,
        template: CategoryTemplate,
        now: datetime,
    ) -> InputSpecOutcome:
        pid = input_prompt_id(req.bucket, key)
        latest = await self.docs.get(KIND, pid)
        if latest is not None and not req.new_version:
            return InputSpecOutcome(
                key=key, prompt_id=pid, outcome="kept", reason="a spec exists (ask for a new version)"
            )
        if size == 0:
            return InputSpecOutcome(key=key, outcome="skipped", reason="the file is empty")
        with tempfile.TemporaryDirectory(prefix="wm-probe-") as tmp:
            path = Path(tmp) / PurePosixPath(key).name
            await store.download(req.bucket, key, path)
            try:
                info = await asyncio.to_thread(probe, path)
            except InvalidInputError as exc:
                return InputSpecOutcome(key=key, outcome="skipped", reason=exc.rule)
            digest, _ = await asyncio.to_thread(sha256_file, path)
        ref = ObjectRef(bucket=req.bucket, key=key, size=size, sha256=digest, content_type="video/mp4")
        video = InputVideo(ref=ref, width=info.width, height=info.height, fps=float(info.fps), frames=info.frames)
        spec = input_spec(
            video,
            card=card,
            template=template,
            tier=req.tier,
            controls=tuple(req.controls),
            now=now,
            upsample=req.upsample,
        )
        digest = content_hash(spec)
        if latest is not None and latest.content_hash == digest:
            return InputSpecOutcome(key=key, prompt_id=pid, outcome="kept", reason="unchanged")
        versioned = as_new_version(spec, latest.version if latest else None)
        doc = spec_document(versioned, digest)
        event = self._event(PromptCreated(spec=versioned), f"prompt.created-{pid}-v{versioned.version}")
        await self.docs.commit([doc], [event])
        return InputSpecOutcome(key=key, prompt_id=pid, outcome="created")

    async def store_upsampled(self, message: PromptUpsampled) -> PromptSpec | None:
        """Store an upsampled prompt as the spec's next version; None when stale or already stored.

        The new version is the source version with the rewritten prompt and ``upsampled`` set. It
        keeps the source's content hash, so re-submitting the unchanged manifest does not replace
        the upsampled version with the original again. A rewrite of a version that has since been
        replaced (the manifest changed) is dropped: it describes a spec that no longer exists.
        """
        pid = message.prompt_id
        for attempt in range(3):
            latest = await self.docs.get(KIND, pid)
            if latest is None:
                raise UnknownPromptError(pid)
            current = PromptSpec.model_validate(latest.body)
            base = current.upsampled.source_version if current.upsampled else current.version
            if base != message.source_version:
                log.info("upsample_stale", prompt_id=pid, source_version=message.source_version, latest=current.version)
                return None
            if current.upsampled is not None and current.prompt == message.prompt:
                return None
            source_doc = await self.docs.get(KIND, pid, message.source_version)
            if source_doc is None:
                raise UnknownPromptError(f"{pid} v{message.source_version}")
            source = PromptSpec.model_validate(source_doc.body)
            versioned = source.model_copy(
                update={
                    "version": current.version + 1,
                    "previous_version": current.version,
                    "prompt": message.prompt,
                    "upsampled": message.info,
                }
            )
            doc = spec_document(versioned, source_doc.content_hash)
            event = self._event(PromptCreated(spec=versioned), f"prompt.created-{pid}-v{versioned.version}")
            try:
                await self.docs.commit([doc], [event])
            except VersionConflictError:
                if attempt == 2:
                    raise
                continue
            await self.publish_pending()
            return versioned
        return None

    async def spec_for_augmentation(self, job: InputSpecRequested, *, now: datetime | None = None) -> PromptSpec:
        """The Transfer spec of an augmentation's input (a new version only when it changed), then its generation.

        The spec comes from the input video's category template (or the explicit prompt), keeps the
        input's frames and fps, and carries the augmentation's control videos. ``generation.requested``
        is published with the augmentation's request id whether or not the spec changed, so asking
        again for an unchanged input still produces a video.
        """
        params = job.params
        card, template = transfer_setup(params.model, params.template or "generic", params.tier, field_prefix="params.")
        video = InputVideo(ref=job.input, width=job.width, height=job.height, fps=job.fps, frames=job.frames)
        spec = input_spec(
            video, card=card, template=template, tier=params.tier, controls=job.controls, now=now or _now()
        )
        try:
            spec = with_params(spec, params, card)
        except ValueError as exc:
            field, _, rule = str(exc).partition(": ")
            raise InvalidInputError(f"params.{field}", rule) from exc
        request = GenerationRequested(
            prompt_ids=(spec.prompt_id,), request_id=job.generation_request_id, requested_by=job.requested_by
        )
        for attempt in range(3):
            latest = await self.docs.get(KIND, spec.prompt_id)
            digest = content_hash(spec)
            docs: list[NewDocument] = []
            events: list[OutboxItem] = []
            stored = PromptSpec.model_validate(latest.body) if latest else None
            if latest is None or latest.content_hash != digest:
                stored = as_new_version(spec, latest.version if latest else None)
                docs.append(spec_document(stored, digest))
                events.append(
                    self._event(PromptCreated(spec=stored), f"prompt.created-{stored.prompt_id}-v{stored.version}")
                )
            events.append(self._event(request, f"generation.requested-{job.generation_request_id}"))
            try:
                await self.docs.commit(docs, events)
            except VersionConflictError:
                if attempt == 2:
                    raise
                continue
            await self.publish_pending()
            return stored or spec
        raise VersionConflictError(f"spec {spec.prompt_id} kept changing")

    async def list_prompts(
        self, filters: Mapping[str, str | Sequence[str]], *, limit: int = 100, cursor: str | None = None
    ) -> PromptPage:
        """The latest version of every spec matching all filters, one page at a time."""
        unknown = set(filters) - set(FILTERS)
        if unknown:
            raise InvalidInputError(sorted(unknown)[0], f"is not a filter (filters: {', '.join(FILTERS)})")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInputError("limit", f"must be between 1 and {MAX_PAGE}")
        docs = await self.docs.find(KIND, where=dict(filters), limit=limit + 1, after=cursor)
        items = tuple(PromptSpec.model_validate(d.body) for d in docs[:limit])
        return PromptPage(items=items, next_cursor=items[-1].prompt_id if len(docs) > limit else None)

    async def get_prompt(self, prompt_id: str) -> PromptDetail | None:
        """The latest version of a spec and its whole history."""
        history = await self.docs.history(KIND, prompt_id)
        if not history:
            return None
        specs = tuple(PromptSpec.model_validate(d.body) for d in history)
        return PromptDetail(latest=specs[-1], history=specs)
