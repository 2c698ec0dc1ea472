"""The catalog service process: ``worldmill serve catalog``.

One durable consumer reads every event (``wm.evt.>``) and applies the ones the catalog keeps; the
database is migrated at start-up; the gallery is served at ``/gallery``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from worldmill.catalog.api import router
from worldmill.catalog.database import CatalogDatabase
from worldmill.catalog.gallery import gallery_router
from worldmill.catalog.service import CatalogService
from worldmill.contracts.subjects import EVENTS, ConsumerSpec
from worldmill.runtime.bus import Bus
from worldmill.runtime.consumer import Consumer, Delivery
from worldmill.runtime.service import ServiceContext, create_service_app
from worldmill.runtime.settings import RuntimeSettings

EVERY_EVENT = ConsumerSpec(
    durable="catalog",
    stream=EVENTS.name,
    filter_subject=f"{EVENTS.subjects[0]}",
    max_ack_pending=1024,
    backoff_base_s=0.5,
    backoff_max_s=30.0,
    max_deliver=10,
    description="Every event: the catalog's read model (idempotent by event id, any order).",
)


#: Messages the catalog's consumer holds and handles at once: their events share transactions
#: (``catalog.ingest``), and each is acked after the commit that applied it.
INGEST_WINDOW = 256


def ingest_consumer(
    bus: Bus, service: CatalogService, *, spec: ConsumerSpec = EVERY_EVENT, source: str = "/worldmill/catalog"
) -> Consumer:
    """The consumer that feeds ``service.ingest``: every fetched message handled concurrently, so the
    events of one fetch are applied in one transaction (the read model does not depend on their order)."""

    async def on_event(d: Delivery) -> None:
        await service.ingest(d.envelope, d.message)

    return Consumer(bus, spec, on_event, source=source, concurrency=INGEST_WINDOW, prefetch=INGEST_WINDOW)


def consumers(ctx: ServiceContext[CatalogService]) -> list[Consumer[Any]]:
    """The catalog's one consumer."""
    return [ingest_consumer(ctx.bus, ctx.service, source=ctx.source)]


def create_app(settings: RuntimeSettings) -> FastAPI:
    """The catalog service's app; its database is ``settings.database_url`` (SQLite by default)."""

    async def startup(ctx: ServiceContext[CatalogService]) -> CatalogService:
        db = CatalogDatabase(settings.database_url_or_default())
        ctx.resources.push_async_callback(db.close)
        await db.open()
        return CatalogService(db=db, store=ctx.store, bus=ctx.bus, source=ctx.source)

    return create_service_app(
        settings,
        title="worldmill catalog service",
        routers=[router],
        public_routers=[gallery_router],
        consumers=consumers,
        on_startup=startup,
    )
