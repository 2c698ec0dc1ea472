"""The prompt service process: ``worldmill serve prompt``."""

from __future__ import annotations

from fastapi import FastAPI

from worldmill.prompt.api import router
from worldmill.prompt.service import PromptService
from worldmill.runtime.service import ServiceContext, create_service_app
from worldmill.runtime.settings import RuntimeSettings


def create_app(settings: RuntimeSettings) -> FastAPI:
    """The prompt service's app (its database and outbox relay come with ``documents=True``)."""

    async def startup(ctx: ServiceContext) -> None:
        ctx.state["prompts"] = PromptService(docs=ctx.docs, bus=ctx.bus, store=ctx.store, source=ctx.source)

    return create_service_app(
        settings, title="worldmill prompt service", routers=[router], on_startup=startup, documents=True
    )
