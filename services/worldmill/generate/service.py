"""The generate service's work: remember specs, plan them, enqueue GPU jobs, follow every run.

Specs arrive as ``prompt.created`` events (the service keeps its own copy: no call to the prompt
service is needed to plan). Runs are documents whose every state is a new version; jobs and
``video.ready`` go out through the outbox in the same transaction as the state that caused them.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from worldmill.contracts.backends import BackendCapabilities, builtin_backends
from worldmill.contracts.base import Message
from worldmill.contracts.cards import builtin_cards
from worldmill.contracts.generation import (
    FINAL_STATES,
    GenerationAccepted,
    GenerationRejected,
    GenerationSubmission,
    JobCanceled,
    JobCompleted,
    JobFailed,
    JobProgress,
    RunPage,
    RunRecord,
    RunUpdated,
    VideoReady,
)
from worldmill.contracts.prompts import PromptSpec
from worldmill.generate.planning import PlanningError, plan_on_backends
from worldmill.generate.runs import (
    job_for,
    new_run,
    on_canceled,
    on_completed,
    on_failed,
    on_lost,
    on_progress,
    request_cancel,
    run_id_for,
)
from worldmill.runtime.bus import Bus
from worldmill.runtime.cancel import CancelFlags
from worldmill.runtime.docstore import DocumentStore, NewDocument, OutboxItem, OutboxRelay
from worldmill.runtime.errors import InvalidInputError, WorldmillError
from worldmill.runtime.spec_copies import SpecCopies

RUN = "run"
MAX_PAGE = 500


class UnknownPromptsError(InvalidInputError):
    """Some prompt ids were never announced by the prompt service."""

    def __init__(self, missing: Sequence[str]) -> None:
        super().__init__("prompt_ids", f"unknown prompt id(s): {', '.join(missing[:20])}")
        self.missing = list(missing)


class PlansRejectedError(InvalidInputError):
    """Specs the models cannot meet; nothing was enqueued."""

    def __init__(self, problems: dict[str, str]) -> None:
        first = next(iter(problems.items()))
        super().__init__("prompt_ids", f"{len(problems)} spec(s) cannot be generated; {first[0]}: {first[1]}")
        self.problems = problems


class CancelRefusedError(WorldmillError):
    """A finished run cannot be canceled; the message says its state."""


@dataclass
class GenerateService:
    """Plans, jobs and run states. Holds no state but a short-lived progress view."""

    docs: DocumentStore
    bus: Bus | None
    cancel_flags: CancelFlags | None = None
    source: str = "/worldmill/generate"
    backends: tuple[BackendCapabilities, ...] = field(
        default_factory=lambda: tuple(builtin_backends()[n] for n in ("diffusers", "cosmos3", "synthetic"))
    )
    progress: dict[str, JobProgress] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _event(self, message: Message, event_id: str) -> OutboxItem:
        return OutboxItem.of(message, source=self.source, event_id=event_id)

    async def publish_pending(self) -> None:
        """Send stored jobs and events now (the relay would, a moment later)."""
        await OutboxRelay.flush_now(self.docs, self.bus)

    # -- specs ----------------------------------------------------------------------------------

    async def remember_spec(self, spec: PromptSpec) -> bool:
        """Keep a copy of a spec version; False when it was known already (idempotent)."""
        return await SpecCopies(self.docs).remember(spec)

    async def spec(self, prompt_id: str, version: int | None = None) -> PromptSpec | None:
        """A known version of a spec (the latest by default)."""
        return await SpecCopies(self.docs).get(prompt_id, version)

    # -- requests -------------------------------------------------------------------------------

    async def submit(self, req: GenerationSubmission, *, now: datetime | None = None) -> GenerationAccepted:
        """Plan every spec first (all or nothing), then store the runs and their first jobs.

        A submission with a ``regeneration`` plans every spec with the regeneration's seed
        (``planning.regeneration_seed``) and gets run ids of its own; repeated, it finds its runs.
        """
        now = now or datetime.now(UTC)
        request_id = req.request_id or f"req-{secrets.token_hex(8)}"
        cards = builtin_cards()
        specs: list[PromptSpec] = []
        missing: list[str] = []
        for pid in dict.fromkeys(req.prompt_ids):
            spec = await self.spec(pid)
            if spec is None:
                missing.append(pid)
            else:
                specs.append(spec)
        if missing:
            raise UnknownPromptsError(missing)
        runs: list[RunRecord] = []
        docs: list[NewDocument] = []
        events: list[OutboxItem] = []
        problems: dict[str, str] = {}
        regeneration = req.regeneration
        number = regeneration.number if regeneration is not None else 0
        for spec in specs:
            run_id = run_id_for(request_id, spec.prompt_id, number)
            existing = await self.docs.get(RUN, run_id)
            if existing is not None:
                runs.append(RunRecord.model_validate(existing.body))
                continue
            card = cards.get(spec.model)
            if card is None:
                problems[spec.prompt_id] = f"model: {spec.model!r} is not a known model"
                continue
            try:
                plan = plan_on_backends(
                    spec,
                    card,
                    self.backends,
                    plan_id=f"plan-{run_id}",
                    known=tuple(builtin_backends().values()),
                    regeneration=regeneration,
                )
            except PlanningError as exc:
                problems[spec.prompt_id] = str(exc)
                continue
            run = new_run(
                spec, plan, request_id=request_id, max_attempts=req.max_attempts, requested_by=req.requested_by, now=now
            )
            job = job_for(run, spec, card)
            runs.append(run)
            docs.append(self._run_doc(run, 1))
            events.extend((self._run_event(run, 1), self._event(job, job.job_id)))
        if problems:
            await self._rejected(request_id, req, problems)
            raise PlansRejectedError(problems)
        if docs:
            await self.docs.commit(docs, events)
            await self.publish_pending()
        return GenerationAccepted(request_id=request_id, runs=tuple(runs))

    async def _rejected(self, request_id: str, req: GenerationSubmission, problems: dict[str, str]) -> None:
        """Say so on the bus (``generation.rejected``): whoever asked, or waits for these specs, learns why."""
        event = GenerationRejected(
            request_id=request_id,
            prompt_ids=tuple(problems),
            problems=problems,
            requested_by=req.requested_by,
        )
        digest = hashlib.sha256("\x1f".join(f"{k}={v}" for k, v in sorted(problems.items())).encode()).hexdigest()
        await self.docs.commit([], [self._event(event, f"generation.rejected-{request_id}-{digest[:16]}")])
        await self.publish_pending()

    def _run_event(self, run: RunRecord, version: int) -> OutboxItem:
        """``run.updated`` for this version of a run (the catalog follows runs through it)."""
        return self._event(RunUpdated(run=run, version=version), f"run-{run.run_id}-v{version}")

    def _run_doc(self, run: RunRecord, version: int) -> NewDocument:
        index: dict[str, tuple[str, ...]] = {
            "state": (run.state,),
            "prompt_id": (run.prompt_id,),
            "request_id": (run.request_id,),
            "final": (str(run.state in FINAL_STATES).lower(),),
        }
        return NewDocument(
            kind=RUN,
            doc_id=run.run_id,
            version=version,
            body=run.model_dump(mode="json"),
            content_hash=f"{run.state}-{len(run.attempts)}",
            index=index,
        )

    # -- runs -----------------------------------------------------------------------------------

    async def run(self, run_id: str) -> RunRecord | None:
        """A run's latest state."""
        doc = await self.docs.get(RUN, run_id)
        return RunRecord.model_validate(doc.body) if doc else None

    async def history(self, run_id: str) -> list[RunRecord]:
        """Every state a run went through, oldest first."""
        return [RunRecord.model_validate(d.body) for d in await self.docs.history(RUN, run_id)]

    async def list_runs(
        self,
        *,
        state: str | None = None,
        prompt_id: str | None = None,
        request_id: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> RunPage:
        """Runs matching the filters, by id."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInputError("limit", f"must be between 1 and {MAX_PAGE}")
        where = {k: v for k, v in {"state": state, "prompt_id": prompt_id, "request_id": request_id}.items() if v}
        docs = await self.docs.find(RUN, where=where, limit=limit + 1, after=cursor)
        items = tuple(RunRecord.model_validate(d.body) for d in docs[:limit])
        return RunPage(items=items, next_cursor=items[-1].run_id if len(docs) > limit else None)

    async def _update(self, run_id: str, change: object, *, events: Sequence[OutboxItem] = ()) -> RunRecord | None:
        """Store the new state of a run as its next version, with the events it causes."""
        if not isinstance(change, RunRecord):
            return None
        latest = await self.docs.get(RUN, run_id)
        version = (latest.version if latest else 0) + 1
        await self.docs.commit([self._run_doc(change, version)], [self._run_event(change, version), *events])
        return change

    async def cancel(self, run_id: str, reason: str = "canceled on request") -> RunRecord:
        """Cancel a queued or running run; a finished one is refused with its state."""
        async with self._lock:
            run = await self.run(run_id)
            if run is None:
                raise InvalidInputError("run_id", f"run {run_id!r} does not exist")
            if run.state in FINAL_STATES:
                raise CancelRefusedError(f"run {run_id} is already {run.state}; nothing to cancel")
            if self.cancel_flags is not None:
                await self.cancel_flags.cancel(run_id, reason)
            updated = request_cancel(run, reason, datetime.now(UTC))
            await self._update(run_id, updated)
            return updated

    # -- job events -----------------------------------------------------------------------------

    async def on_job_event(self, message: Message) -> None:
        """Move a run according to a runner's progress, completion, failure or cancel event."""
        now = datetime.now(UTC)
        if isinstance(message, JobProgress):
            self.progress[message.run_id] = message
        async with self._lock:
            run = await self.run(getattr(message, "run_id", ""))
            if run is None:
                return
            if isinstance(message, JobProgress):
                await self._update(run.run_id, on_progress(run, message, now))
            elif isinstance(message, JobCompleted):
                ready = on_completed(run, message, now)
                if ready is not None and ready.asset_id:
                    video = VideoReady(
                        asset_id=ready.asset_id,
                        run_id=run.run_id,
                        prompt_id=run.prompt_id,
                        attempt=message.attempt,
                        video=message.video,
                        plan=run.plan,
                        provenance=message.provenance,
                        request_id=run.request_id,
                        requested_by=run.requested_by,
                    )
                    await self._update(run.run_id, ready, events=[self._event(video, f"video.ready-{message.job_id}")])
            elif isinstance(message, JobFailed):
                updated = on_failed(run, message, now)
                events: list[OutboxItem] = []
                if updated is not None and updated.state == "queued":
                    spec = await self.spec(run.prompt_id, run.prompt_version)
                    card = builtin_cards().get(run.plan.model)
                    if spec is not None and card is not None:
                        job = job_for(updated, spec, card)
                        events.append(self._event(job, job.job_id))
                await self._update(run.run_id, updated, events=events)
            elif isinstance(message, JobCanceled):
                await self._update(run.run_id, on_canceled(run, message, now))
        await self.publish_pending()

    async def on_job_lost(self, run_id: str, attempt: int, reason: str) -> None:
        """A job the queue gave up on (dead-lettered): its run is lost, not done."""
        async with self._lock:
            run = await self.run(run_id)
            if run is not None:
                await self._update(run_id, on_lost(run, attempt, reason, datetime.now(UTC)))
