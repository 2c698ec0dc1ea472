"""The qa service process: ``worldmill serve qa``."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from worldmill.contracts.generation import VideoReady
from worldmill.contracts.subjects import EVENTS, ConsumerSpec, event_subject
from worldmill.qa.api import router
from worldmill.qa.service import QaService
from worldmill.runtime.consumer import Consumer, Delivery
from worldmill.runtime.docstore import DocumentStore, OutboxRelay
from worldmill.runtime.service import ServiceContext, create_service_app
from worldmill.runtime.settings import RuntimeSettings

VIDEOS = ConsumerSpec(
    durable="qa-videos",
    stream=EVENTS.name,
    filter_subject=event_subject("video.ready"),
    ack_wait_s=60.0,
    description="Every finished video gets a verdict.",
)


def consumers(ctx: ServiceContext) -> list[Consumer]:
    """One consumer: video.ready → verdict (two at a time: decoding is the cost)."""
    service: QaService = ctx.state["qa"]

    async def on_video(d: Delivery) -> None:
        if isinstance(d.message, VideoReady):
            await service.on_video_ready(d.message)

    return [Consumer(ctx.bus, VIDEOS, on_video, accept=(VideoReady,), concurrency=2, source=ctx.source)]


def create_app(settings: RuntimeSettings) -> FastAPI:
    """The qa service's app: its database and outbox relay open in the lifespan."""

    async def startup(ctx: ServiceContext) -> None:
        docs = DocumentStore(settings.database_url_or_default())
        await docs.open()
        ctx.state["docs"] = docs
        ctx.state["qa"] = QaService(docs=docs, bus=ctx.bus, store=ctx.store, source=ctx.source)
        ctx.state["relay"] = asyncio.create_task(OutboxRelay(docs, ctx.bus).run(ctx.stop))
        ctx.state["audits"] = {}

    async def shutdown(ctx: ServiceContext) -> None:
        if (relay := ctx.state.get("relay")) is not None:
            await asyncio.wait({relay}, timeout=10)
        if (docs := ctx.state.get("docs")) is not None:
            await docs.close()

    return create_service_app(
        settings,
        title="worldmill qa service",
        routers=[router],
        consumers=consumers,
        on_startup=startup,
        on_shutdown=shutdown,
    )
