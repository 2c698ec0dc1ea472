"""The prompt service process: ``worldmill serve prompt``."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from worldmill.prompt.api import router
from worldmill.prompt.service import PromptService
from worldmill.runtime.docstore import DocumentStore, OutboxRelay
from worldmill.runtime.service import ServiceContext, create_service_app
from worldmill.runtime.settings import RuntimeSettings


def create_app(settings: RuntimeSettings) -> FastAPI:
    """The prompt service's app: its database opens and its outbox relay starts in the lifespan."""

    async def startup(ctx: ServiceContext) -> None:
        docs = DocumentStore(settings.database_url_or_default())
        await docs.open()
        ctx.state["docs"] = docs
        ctx.state["prompts"] = PromptService(docs=docs, bus=ctx.bus, store=ctx.store, source=ctx.source)
        ctx.state["relay"] = asyncio.create_task(OutboxRelay(docs, ctx.bus).run(ctx.stop))

    async def shutdown(ctx: ServiceContext) -> None:
        relay = ctx.state.get("relay")
        if relay is not None:
            await asyncio.wait({relay}, timeout=10)
        docs = ctx.state.get("docs")
        if docs is not None:
            await docs.close()

    return create_service_app(
        settings, title="worldmill prompt service", routers=[router], on_startup=startup, on_shutdown=shutdown
    )
