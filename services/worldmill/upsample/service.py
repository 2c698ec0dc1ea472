"""The upsample service's work: queue rewrites, run them through the upsampler, record and announce.

* A ``prompt.created`` spec marked ``upsample`` (and not itself an upsampled version) is queued at
  once: the spec copy, its status and the job are stored in one transaction.
* ``POST /upsample`` queues the listed specs the same way (after checking every id).
* A job rewrites the spec's *original* prompt (an upsampled version is traced back to its source).
  A cached answer (same model, text, hint, parameters) is reused without calling the server. The
  result, its cache entry, the status and the ``prompt.upsampled`` event are committed together.
* Without an upsampler, or when the rewrite fails for good, the status says why and
  ``upsample.skipped`` lets auto-generation go on with the original prompt.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from worldmill.contracts.base import Message, ObjectLocation, ObjectRef
from worldmill.contracts.cards import builtin_cards
from worldmill.contracts.prompts import PromptSpec
from worldmill.contracts.upsample import (
    UPSAMPLE_FINAL_STATES,
    PromptUpsampled,
    UpsampleAccepted,
    UpsampleInfo,
    UpsampleRequested,
    UpsampleSkipped,
    UpsampleState,
    UpsampleStatus,
    UpsampleStatusPage,
    UpsampleSubmission,
)
from worldmill.runtime.bus import Bus
from worldmill.runtime.docstore import DocumentStore, NewDocument, OutboxItem, OutboxRelay, VersionConflictError
from worldmill.runtime.errors import InvalidInputError, ObjectNotFoundError, PermanentError
from worldmill.runtime.logs import get_logger
from worldmill.runtime.spec_copies import SpecCopies, spec_copy
from worldmill.runtime.store import ObjectStore, sha256_file
from worldmill.runtime.vlm import VlmUnavailable
from worldmill.upsample.structured import CaptionTarget
from worldmill.upsample.upsampler import Hint, Upsampled, UpsampleFailedError, Upsampler

log = get_logger(__name__)

STATUS, CACHE = "upsample", "upsample-cache"
#: Suffixes hint frames can be taken from (stills and videos).
HINT_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".jpg", ".jpeg", ".png", ".webp"})
NO_SERVER = (
    "upsampling is unavailable: no upsampling server is configured "
    "(set WM_UPSAMPLE_BASE_URL to a vLLM OpenAI-compatible /v1 endpoint); specs keep their original prompts"
)


class UnknownSpecsError(InvalidInputError):
    """Prompt ids this service has no spec for."""

    def __init__(self, missing: Sequence[str]) -> None:
        super().__init__("prompt_ids", f"unknown prompt id(s): {', '.join(missing)}")
        self.missing = tuple(missing)


class UpsampleUnavailableError(Exception):
    """No upsampler is configured; the message says how to configure one."""


@dataclass
class UpsampleService:
    """Upsample requests in, rewrites and their records out."""

    docs: DocumentStore
    bus: Bus | None
    store: ObjectStore | None
    upsampler: Upsampler | None
    unavailable_reason: str = NO_SERVER
    source: str = "/worldmill/upsample"

    @property
    def available(self) -> bool:
        """Whether an upsampling server is configured."""
        return self.upsampler is not None

    def _event(self, message: Message, event_id: str) -> OutboxItem:
        return OutboxItem.of(message, source=self.source, event_id=event_id)

    async def publish_pending(self) -> None:
        """Send stored events and jobs now (the background relay would, a moment later)."""
        await OutboxRelay.flush_now(self.docs, self.bus)

    # -- queueing -------------------------------------------------------------------------------

    async def on_spec(self, spec: PromptSpec) -> bool:
        """Keep a copy of a new spec version and queue it when it asks for upsampling; False if known."""
        docs = [spec_copy(spec)]
        jobs: list[OutboxItem] = []
        if spec.upsample and spec.upsampled is None:
            job = UpsampleRequested(prompt_id=spec.prompt_id, version=spec.version, requested_by="auto")
            status, item = await self._queue(job, spec.version, f"upsample-{spec.prompt_id}-v{spec.version}")
            docs.append(status)
            jobs.append(item)
        try:
            await self.docs.commit(docs, jobs)
        except VersionConflictError:
            return False
        await self.publish_pending()
        return True

    async def submit(self, req: UpsampleSubmission) -> UpsampleAccepted:
        """Queue a rewrite of each listed spec's latest version; every id is checked first."""
        if self.upsampler is None:
            raise UpsampleUnavailableError(self.unavailable_reason)
        specs: list[PromptSpec] = []
        missing: list[str] = []
        for pid in dict.fromkeys(req.prompt_ids):
            spec = await SpecCopies(self.docs).get(pid)
            if spec is None:
                missing.append(pid)
            else:
                specs.append(spec)
        if missing:
            raise UnknownSpecsError(missing)
        if req.hint is not None:
            await self._check_hint(req.hint)
        request_id = req.request_id or f"ups-{secrets.token_hex(8)}"
        for attempt in range(3):
            docs: list[NewDocument] = []
            jobs: list[OutboxItem] = []
            for spec in specs:
                job = UpsampleRequested(
                    prompt_id=spec.prompt_id,
                    version=spec.version,
                    hint=req.hint,
                    force=req.force,
                    request_id=request_id,
                    requested_by=req.requested_by,
                )
                status, item = await self._queue(job, spec.version, f"upsample-{request_id}-{spec.prompt_id}")
                docs.append(status)
                jobs.append(item)
            try:
                await self.docs.commit(docs, jobs)
                break
            except VersionConflictError:
                if attempt == 2:
                    raise
        await self.publish_pending()
        return UpsampleAccepted(request_id=request_id, queued=tuple(s.prompt_id for s in specs))

    async def _queue(self, job: UpsampleRequested, version: int, job_id: str) -> tuple[NewDocument, OutboxItem]:
        status = UpsampleStatus(
            prompt_id=job.prompt_id,
            version=version,
            state="queued",
            request_id=job.request_id,
            updated_at=datetime.now(UTC),
        )
        return await self._status_doc(status), self._event(job, job_id[:200])

    async def _check_hint(self, hint: ObjectLocation) -> None:
        if PurePosixPath(hint.key).suffix.lower() not in HINT_SUFFIXES:
            raise InvalidInputError("hint.key", f"must be an image or a video ({', '.join(sorted(HINT_SUFFIXES))})")
        if self.store is None:
            raise InvalidInputError("hint", "this upsample service has no object store configured")
        try:
            await self.store.stat(hint.bucket, hint.key)
        except ObjectNotFoundError as exc:
            raise InvalidInputError("hint", f"s3://{hint.bucket}/{hint.key} does not exist") from exc

    # -- status ---------------------------------------------------------------------------------

    async def _status_doc(self, status: UpsampleStatus) -> NewDocument:
        latest = await self.docs.get(STATUS, status.prompt_id)
        index: dict[str, tuple[str, ...]] = {"state": (status.state,)}
        if status.request_id:
            index["request"] = (status.request_id,)
        return NewDocument(
            kind=STATUS,
            doc_id=status.prompt_id,
            version=(latest.version + 1) if latest else 1,
            body=status.model_dump(mode="json"),
            content_hash=status.state,
            index=index,
        )

    async def status(self, prompt_id: str) -> UpsampleStatus | None:
        """Where a spec's latest upsample stands."""
        doc = await self.docs.get(STATUS, prompt_id)
        return UpsampleStatus.model_validate(doc.body) if doc else None

    async def request_status(self, request_id: str) -> UpsampleStatusPage:
        """Every spec of one request, with counts per state (specs requested again since show their newer state)."""
        items: list[UpsampleStatus] = []
        after: str | None = None
        while True:
            page = await self.docs.find(STATUS, where={"request": request_id}, limit=1000, after=after)
            items.extend(UpsampleStatus.model_validate(d.body) for d in page)
            if len(page) < 1000:
                break
            after = page[-1].doc_id
        counts: dict[str, int] = {}
        for item in items:
            counts[item.state] = counts.get(item.state, 0) + 1
        return UpsampleStatusPage(request_id=request_id, counts=counts, items=tuple(items))

    async def _set(
        self,
        job: UpsampleRequested,
        version: int,
        state: UpsampleState,
        *,
        reason: str | None = None,
        result: Upsampled | None = None,
        extra_docs: Sequence[NewDocument] = (),
        events: Sequence[OutboxItem] = (),
    ) -> None:
        for attempt in range(3):
            status = UpsampleStatus(
                prompt_id=job.prompt_id,
                version=version,
                state=state,
                request_id=job.request_id,
                reason=reason,
                prompt=result.prompt if result else None,
                info=result.info if result else None,
                updated_at=datetime.now(UTC),
            )
            try:
                await self.docs.commit([*extra_docs, await self._status_doc(status)], events)
                break
            except VersionConflictError:
                if attempt == 2:
                    raise
        await self.publish_pending()

    # -- work -----------------------------------------------------------------------------------

    async def run_job(self, job: UpsampleRequested, *, final_delivery: bool = False) -> UpsampleState:
        """Do one upsample job; transient server trouble raises (retry later) unless this is the last try."""
        spec = await SpecCopies(self.docs).get(job.prompt_id, job.version)
        if spec is None:
            raise PermanentError(f"unknown prompt spec {job.prompt_id}" + (f" v{job.version}" if job.version else ""))
        source_version = spec.upsampled.source_version if spec.upsampled else spec.version
        original = spec.upsampled.original_prompt if spec.upsampled else spec.prompt
        current = await self.status(job.prompt_id)
        if (
            current is not None
            and current.state in UPSAMPLE_FINAL_STATES
            and (current.request_id, current.version) == (job.request_id, spec.version)
        ):
            return current.state  # a redelivered job that was finished already
        if self.upsampler is None:
            await self._skip(job, spec.version, "unavailable", self.unavailable_reason)
            return "unavailable"
        try:
            result, cache_hit = await self._rewrite(self.upsampler, job, spec, original, source_version)
        except UpsampleFailedError as exc:
            await self._skip(job, spec.version, "failed", str(exc))
            return "failed"
        except InvalidInputError as exc:
            await self._skip(job, spec.version, "failed", f"{exc.field}: {exc.rule}")
            return "failed"
        except VlmUnavailable as exc:
            if final_delivery:
                await self._skip(job, spec.version, "failed", f"the upsampling server stayed unavailable: {exc}")
                return "failed"
            await self._set(job, spec.version, "queued", reason=f"retrying later: {exc}")
            raise
        await self._done(job, spec.version, result, cache_hit=cache_hit)
        return "done"

    async def _rewrite(
        self, upsampler: Upsampler, job: UpsampleRequested, spec: PromptSpec, original: str, source_version: int
    ) -> tuple[Upsampled, bool]:
        """The cached rewrite when there is one (looked up before any download when the hint's digest is
        known), else a new one from the server; and whether it came from the cache."""
        hint_at, known_sha256 = (job.hint, None) if job.hint else _hint_of(spec)
        structured = caption_target(spec)
        if hint_at is not None and known_sha256 is None:
            known_sha256 = await self._recorded_sha256(hint_at)
        if not job.force and (hint_at is None or known_sha256 is not None):
            cached = await self._cached(upsampler.key(original, known_sha256, structured), source_version)
            if cached is not None:
                return cached, True
        with tempfile.TemporaryDirectory(prefix="wm-upsample-") as tmp:
            hint = await self._fetch_hint(hint_at, known_sha256, Path(tmp)) if hint_at else None
            if hint is not None and known_sha256 is None and not job.force:
                cached = await self._cached(upsampler.key(original, hint.sha256, structured), source_version)
                if cached is not None:
                    return cached, True
            await self._set(job, spec.version, "running")
            upsampled = await upsampler.upsample(
                original, source_version=source_version, hint=hint, structured=structured
            )
            return upsampled, False

    async def _done(self, job: UpsampleRequested, version: int, result: Upsampled, *, cache_hit: bool) -> None:
        info = result.info
        docs: list[NewDocument] = []
        if not cache_hit:
            docs.append(
                NewDocument(
                    kind=CACHE,
                    doc_id=info.cache_key,
                    version=1,
                    body={"prompt": result.prompt, "info": info.model_dump(mode="json")},
                    content_hash=info.cache_key,
                    index={"model": (info.upsampler_model,)},
                )
            )
        text_id = hashlib.sha256(result.prompt.encode()).hexdigest()[:16]
        event = PromptUpsampled(
            prompt_id=job.prompt_id,
            source_version=info.source_version,
            prompt=result.prompt,
            info=info,
            request_id=job.request_id,
        )
        event_id = f"prompt.upsampled-{job.prompt_id}-v{info.source_version}-{text_id}"
        try:
            await self._set(job, version, "done", result=result, extra_docs=docs, events=[self._event(event, event_id)])
        except VersionConflictError:  # another worker cached the same key meanwhile: keep theirs, record ours
            await self._set(job, version, "done", result=result, events=[self._event(event, event_id)])

    async def _skip(self, job: UpsampleRequested, version: int, status: str, reason: str) -> None:
        state: UpsampleState = "unavailable" if status == "unavailable" else "failed"
        skipped = UpsampleSkipped(
            prompt_id=job.prompt_id,
            version=version,
            status="unavailable" if status == "unavailable" else "failed",
            reason=reason[:2000],
            request_id=job.request_id,
        )
        event_id = f"upsample.skipped-{job.prompt_id}-v{version}-{job.request_id or 'auto'}"
        log.warning("upsample_skipped", prompt_id=job.prompt_id, version=version, status=status, reason=reason)
        await self._set(job, version, state, reason=reason, events=[self._event(skipped, event_id[:200])])

    async def _cached(self, key: str, source_version: int) -> Upsampled | None:
        doc = await self.docs.get(CACHE, key)
        if doc is None:
            return None
        info = UpsampleInfo.model_validate(doc.body["info"])
        info = info.model_copy(update={"cached": True, "source_version": source_version})
        return Upsampled(prompt=str(doc.body["prompt"]), info=info)

    async def _recorded_sha256(self, at: ObjectLocation) -> str | None:
        """The sha256 the store recorded for the hint (objects worldmill uploaded have one), if any."""
        if self.store is None:
            return None
        try:
            return (await self.store.stat(at.bucket, at.key)).sha256
        except ObjectNotFoundError as exc:
            raise InvalidInputError("hint", f"{at.uri()} does not exist") from exc

    async def _fetch_hint(self, at: ObjectLocation, known_sha256: str | None, tmp: Path) -> Hint:
        if self.store is None:
            raise InvalidInputError("hint", "this upsample service has no object store configured")
        path = tmp / (PurePosixPath(at.key).name or "hint")
        try:
            await self.store.download(at.bucket, at.key, path)
        except ObjectNotFoundError as exc:
            raise InvalidInputError("hint", f"{at.uri()} does not exist") from exc
        digest = known_sha256 or (await asyncio.to_thread(sha256_file, path))[0]
        suffix = PurePosixPath(at.key).suffix.lower()
        content_type = mimetypes.types_map.get(suffix, "application/octet-stream")
        ref = ObjectRef(
            bucket=at.bucket, key=at.key, size=path.stat().st_size, sha256=digest, content_type=content_type
        )
        return Hint(path=path, sha256=digest, ref=ref)


def _hint_of(spec: PromptSpec) -> tuple[ObjectLocation | None, str | None]:
    """The spec's conditioning input (and its digest), when it is something hint frames can come from."""
    if spec.input is None or PurePosixPath(spec.input.key).suffix.lower() not in HINT_SUFFIXES:
        return None, None
    return ObjectLocation(bucket=spec.input.bucket, key=spec.input.key), spec.input.sha256


#: Model families whose prompts are Cosmos 3 structured JSON captions when upsampled.
STRUCTURED_FAMILIES = frozenset({"cosmos3"})


def caption_target(spec: PromptSpec) -> CaptionTarget | None:
    """What a structured caption of ``spec`` describes, for a model that takes them; None for plain prompts."""
    card = builtin_cards().get(spec.model)
    if card is None or card.family not in STRUCTURED_FAMILIES:
        return None
    return CaptionTarget(
        duration_s=spec.target_frames / spec.fps,
        fps=spec.fps,
        width=spec.resolution.width,
        height=spec.resolution.height,
    )
