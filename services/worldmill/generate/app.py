"""The generate service process: ``worldmill serve generate``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from worldmill.contracts.deadletter import DeadLetter
from worldmill.contracts.generation import (
    GenerationRequested,
    GenerationSubmission,
    GpuJob,
    JobCanceled,
    JobCompleted,
    JobFailed,
    JobProgress,
)
from worldmill.contracts.prompts import PromptCreated, PromptSpec
from worldmill.contracts.subjects import DLQ, EVENTS, GPU_JOBS, ConsumerSpec, dlq_subject, event_subject
from worldmill.contracts.upsample import UpsampleSkipped
from worldmill.generate.api import router
from worldmill.generate.service import GenerateService, PlansRejectedError, UnknownPromptsError
from worldmill.generate.settings import GenerateSettings
from worldmill.runtime.cancel import CancelFlags
from worldmill.runtime.consumer import Consumer, Delivery
from worldmill.runtime.decode import parse
from worldmill.runtime.errors import TransientError
from worldmill.runtime.logs import get_logger
from worldmill.runtime.service import ServiceContext, create_service_app
from worldmill.runtime.settings import RuntimeSettings

log = get_logger(__name__)

SPECS = ConsumerSpec(
    durable="generate-specs",
    stream=EVENTS.name,
    filter_subject=event_subject("prompt.created"),
    description="Keeps a copy of every spec; starts runs for auto-generate specs.",
)
REQUESTS = ConsumerSpec(
    durable="generate-requests",
    stream=EVENTS.name,
    filter_subject=event_subject("generation.requested"),
    description="Generation requests published by other systems (and the prompt service for augmentations).",
    backoff_base_s=0.5,
    backoff_max_s=10.0,
    max_deliver=8,
)
JOB_EVENTS = ConsumerSpec(
    durable="generate-jobs",
    stream=EVENTS.name,
    filter_subject=event_subject("job.>"),
    description="Runner progress and outcomes that move runs.",
)
UPSAMPLE_SKIPS = ConsumerSpec(
    durable="generate-upsample-skips",
    stream=EVENTS.name,
    filter_subject=event_subject("upsample.skipped"),
    description="Auto-generate specs waiting for an upsample that will not come: go with the original prompt.",
)
LOST_JOBS = ConsumerSpec(
    durable="generate-lost",
    stream=DLQ.name,
    filter_subject=dlq_subject(GPU_JOBS.durable),
    description="GPU jobs the queue gave up on: their runs are lost.",
)


#: What the runners report about a run (``generate-jobs``).
JobEvent = JobProgress | JobCompleted | JobFailed | JobCanceled


def consumers(ctx: ServiceContext[GenerateService]) -> list[Consumer[Any]]:
    """The generate service's five durable consumers."""
    service = ctx.service

    async def auto_generate(spec: PromptSpec) -> None:
        try:
            await service.submit(
                GenerationSubmission(
                    prompt_ids=(spec.prompt_id,),
                    requested_by="auto",
                    request_id=f"auto-{spec.prompt_id}-v{spec.version}"[:128],
                )
            )
        except PlansRejectedError as exc:  # published as generation.rejected; the spec itself is kept
            log.warning("auto_generate.rejected", prompt_id=spec.prompt_id, reason=str(exc))

    async def on_spec(d: Delivery[PromptCreated]) -> None:
        spec = d.message.spec
        await service.remember_spec(spec)
        # A spec marked for upsampling waits for its upsampled version (or upsample.skipped). Whether
        # the copy was new does not matter: a process killed after keeping it and before its run was
        # stored gets the event again, and the run must still be made (the request id makes a second
        # submit find the first's runs). Only the newest version of a spec is generated automatically.
        if spec.auto_generate and not (spec.upsample and spec.upsampled is None):
            latest = await service.spec(spec.prompt_id)
            if latest is not None and latest.version == spec.version:
                await auto_generate(spec)

    async def on_upsample_skipped(d: Delivery[UpsampleSkipped]) -> None:
        m = d.message
        spec = await service.spec(m.prompt_id, m.version)
        if spec is None:
            raise TransientError(f"spec {m.prompt_id} v{m.version} is not known here yet")
        latest = await service.spec(m.prompt_id)
        if spec.auto_generate and latest is not None and latest.version == spec.version:
            await auto_generate(spec)

    async def on_request(d: Delivery[GenerationRequested]) -> None:
        m = d.message
        submission = GenerationSubmission(
            prompt_ids=m.prompt_ids,
            request_id=m.request_id,
            max_attempts=m.max_attempts,
            requested_by=m.requested_by,
            regeneration=m.regeneration,
        )
        try:
            await service.submit(submission)
        except PlansRejectedError as exc:  # generation.rejected says why (the augment service listens)
            log.warning("generation_request.rejected", request_id=m.request_id, reason=str(exc))
        except UnknownPromptsError as exc:
            # The spec's prompt.created may simply not have reached this service yet (another consumer):
            # retry with backoff; after the delivery limit the request is dead-lettered with this reason.
            raise TransientError(f"not known here (yet): {', '.join(exc.missing[:20])}") from exc

    async def on_job(d: Delivery[JobEvent]) -> None:
        await service.on_job_event(d.message)

    async def on_lost(d: Delivery[DeadLetter]) -> None:
        try:
            _, job = parse(d.message.payload.encode(), None)
        except Exception:
            return
        if isinstance(job, GpuJob):
            await service.on_job_lost(job.run_id, job.attempt, f"{d.message.reason}: {d.message.error}")

    return [
        Consumer(ctx.bus, SPECS, on_spec, accept=(PromptCreated,), source=ctx.source, prefetch=64),
        Consumer(ctx.bus, REQUESTS, on_request, accept=(GenerationRequested,), source=ctx.source),
        Consumer[JobEvent](
            ctx.bus,
            JOB_EVENTS,
            on_job,
            accept=(JobProgress, JobCompleted, JobFailed, JobCanceled),
            source=ctx.source,
            prefetch=64,
        ),
        Consumer(ctx.bus, UPSAMPLE_SKIPS, on_upsample_skipped, accept=(UpsampleSkipped,), source=ctx.source),
        Consumer(ctx.bus, LOST_JOBS, on_lost, accept=(DeadLetter,), source=ctx.source),
    ]


def create_app(settings: RuntimeSettings) -> FastAPI:
    """The generate service's app (database and outbox relay come with ``documents=True``)."""

    generate_settings = GenerateSettings.specialize(settings)

    async def startup(ctx: ServiceContext[GenerateService]) -> GenerateService:
        return GenerateService(
            docs=ctx.docs,
            bus=ctx.bus,
            cancel_flags=CancelFlags(ctx.bus),
            source=ctx.source,
            backends=generate_settings.capabilities(),
        )

    return create_service_app(
        generate_settings,
        title="worldmill generate service",
        routers=[router],
        consumers=consumers,
        on_startup=startup,
        documents=True,
    )
