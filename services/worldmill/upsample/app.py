"""The upsample service process: ``worldmill serve upsample``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from worldmill.contracts.prompts import PromptCreated
from worldmill.contracts.subjects import EVENTS, UPSAMPLE_JOBS, ConsumerSpec, event_subject
from worldmill.contracts.upsample import UpsampleRequested, UpsamplerInfo
from worldmill.runtime.consumer import Consumer, Delivery
from worldmill.runtime.service import ServiceContext, create_service_app
from worldmill.runtime.settings import RuntimeSettings
from worldmill.runtime.vlm import VlmClient, VlmConfig
from worldmill.upsample.api import UpsampleState, router
from worldmill.upsample.request import Sampling
from worldmill.upsample.service import NO_SERVER, UpsampleService
from worldmill.upsample.settings import UpsampleSettings
from worldmill.upsample.upsampler import Upsampler

SPECS = ConsumerSpec(
    durable="upsample-specs",
    stream=EVENTS.name,
    filter_subject=event_subject("prompt.created"),
    description="Keeps a copy of every spec; queues the ones marked for upsampling.",
)


def make_upsampler(settings: UpsampleSettings) -> Upsampler | None:
    """The upsampler the settings describe, or None when no server is configured."""
    if not settings.base_url:
        return None
    profile = settings.model_profile()
    client = VlmClient(
        VlmConfig(
            base_url=settings.base_url,
            model=settings.served_model(),
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            timeout_s=settings.timeout_s,
            max_retries=settings.max_retries,
            backoff_base_s=settings.backoff_base_s,
            concurrency=settings.concurrency,
        )
    )
    sampling = Sampling(
        temperature=profile.default_temperature,
        top_p=settings.top_p,
        max_tokens=profile.default_max_tokens,
        seed=settings.seed,
    )
    return Upsampler(
        client,
        profile,
        model=settings.served_model(),
        sampling=sampling,
        hint_frames=settings.hint_frames,
        hint_as_video=settings.hint_as_video,
        margin=settings.margin_tokens,
        context_retries=settings.context_retries,
    )


def describe(settings: UpsampleSettings) -> UpsamplerInfo:
    """What ``GET /upsample/server`` reports."""
    profile = settings.model_profile()
    return UpsamplerInfo(
        available=bool(settings.base_url),
        reason=None if settings.base_url else NO_SERVER,
        base_url=settings.base_url,
        model=settings.served_model() if settings.base_url else None,
        profile=profile.name,
        context_tokens=profile.context_tokens,
        max_new_tokens=profile.default_max_tokens,
        hint_frames=settings.hint_frames,
        hint_as_video=settings.hint_as_video,
        concurrency=settings.concurrency,
        calibration=1.0,
    )


def consumers(ctx: ServiceContext[UpsampleState]) -> list[Consumer[Any]]:
    """Spec copies (and automatic queueing), and the job queue worked ``concurrency`` at a time."""
    service, settings = ctx.service.service, ctx.service.settings

    async def on_spec(d: Delivery[PromptCreated]) -> None:
        await service.on_spec(d.message.spec)

    async def on_job(d: Delivery[UpsampleRequested]) -> None:
        await service.run_job(d.message, final_delivery=d.num_delivered >= UPSAMPLE_JOBS.max_deliver)

    return [
        Consumer(ctx.bus, SPECS, on_spec, accept=(PromptCreated,), source=ctx.source, prefetch=64),
        Consumer(
            ctx.bus,
            UPSAMPLE_JOBS,
            on_job,
            accept=(UpsampleRequested,),
            source=ctx.source,
            concurrency=settings.concurrency,
        ),
    ]


def create_app(settings: RuntimeSettings) -> FastAPI:
    """The upsample service's app (database and outbox relay come with ``documents=True``)."""
    upsample_settings = UpsampleSettings.specialize(settings)
    upsample_settings.model_profile()  # an unknown profile fails here, before anything starts

    async def startup(ctx: ServiceContext[UpsampleState]) -> UpsampleState:
        upsampler = make_upsampler(upsample_settings)
        if upsampler is not None:
            ctx.resources.push_async_callback(upsampler.client.aclose)
        service = UpsampleService(docs=ctx.docs, bus=ctx.bus, store=ctx.store, upsampler=upsampler, source=ctx.source)
        return UpsampleState(service=service, settings=upsample_settings, info=describe(upsample_settings))

    return create_service_app(
        upsample_settings,
        title="worldmill upsample service",
        routers=[router],
        consumers=consumers,
        on_startup=startup,
        documents=True,
    )
