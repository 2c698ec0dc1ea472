"""The prompt service process: ``worldmill serve prompt``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from worldmill.contracts.augment import InputSpecRequested
from worldmill.contracts.subjects import EVENTS, INPUT_SPEC_JOBS, ConsumerSpec, event_subject
from worldmill.contracts.upsample import PromptUpsampled
from worldmill.prompt.api import router
from worldmill.prompt.service import PromptService
from worldmill.runtime.consumer import Consumer, Delivery
from worldmill.runtime.service import ServiceContext, create_service_app
from worldmill.runtime.settings import RuntimeSettings

UPSAMPLED = ConsumerSpec(
    durable="prompt-upsampled",
    stream=EVENTS.name,
    filter_subject=event_subject("prompt.upsampled"),
    description="Rewritten prompts, stored as the next version of their spec.",
)


def consumers(ctx: ServiceContext[PromptService]) -> list[Consumer[Any]]:
    """Upsampled prompts become new spec versions; augmentations' input videos become Transfer specs."""
    service = ctx.service

    async def on_upsampled(d: Delivery[PromptUpsampled]) -> None:
        await service.store_upsampled(d.message)

    async def on_input_spec(d: Delivery[InputSpecRequested]) -> None:
        await service.spec_for_augmentation(d.message)

    return [
        Consumer(ctx.bus, UPSAMPLED, on_upsampled, accept=(PromptUpsampled,), source=ctx.source),
        Consumer(ctx.bus, INPUT_SPEC_JOBS, on_input_spec, accept=(InputSpecRequested,), source=ctx.source),
    ]


def create_app(settings: RuntimeSettings) -> FastAPI:
    """The prompt service's app (its database and outbox relay come with ``documents=True``)."""

    async def startup(ctx: ServiceContext[PromptService]) -> PromptService:
        return PromptService(docs=ctx.docs, bus=ctx.bus, store=ctx.store, source=ctx.source)

    return create_service_app(
        settings,
        title="worldmill prompt service",
        routers=[router],
        consumers=consumers,
        on_startup=startup,
        documents=True,
    )
