"""The augment service process: ``worldmill serve augment``.

Consumers: uploads (``object.created``), MinIO's raw notifications (``wm.s3.minio``, normalised into
``object.created``), augmentation requests, ``video.ready`` and QA verdicts. With ``WM_AUGMENT_POLL``
(the default) a poller lists the inputs bucket for stores that cannot push notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import FastAPI

from worldmill.augment.api import router
from worldmill.augment.service import AugmentService
from worldmill.augment.settings import AugmentSettings
from worldmill.contracts.augment import AugmentRequested
from worldmill.contracts.envelope import wrap
from worldmill.contracts.generation import GenerationRejected, VideoReady
from worldmill.contracts.objects import ObjectCreated, S3Notification
from worldmill.contracts.qa import QaFailed, QaPassed
from worldmill.contracts.subjects import EVENTS, MINIO_NOTIFICATIONS, S3_NOTIFICATIONS, ConsumerSpec, event_subject
from worldmill.runtime.consumer import Consumer, Delivery
from worldmill.runtime.notifications import object_created_event_id, parse_minio_event
from worldmill.runtime.poller import BucketPoller
from worldmill.runtime.service import ServiceContext, create_service_app
from worldmill.runtime.settings import RuntimeSettings

UPLOADS = ConsumerSpec(
    durable="augment-uploads",
    stream=EVENTS.name,
    filter_subject=event_subject("object.created"),
    description="Every upload to the inputs bucket becomes an augmentation.",
)
MINIO = ConsumerSpec(
    durable="augment-minio",
    stream=S3_NOTIFICATIONS.name,
    filter_subject=MINIO_NOTIFICATIONS,
    description="MinIO's bucket notifications, normalised into object.created.",
)
REQUESTS = ConsumerSpec(
    durable="augment-requests",
    stream=EVENTS.name,
    filter_subject=event_subject("augment.requested"),
    ack_wait_s=120.0,
    description="Prepare each augmentation: probe, controls, then the Transfer spec job.",
)
VIDEOS = ConsumerSpec(
    durable="augment-videos",
    stream=EVENTS.name,
    filter_subject=event_subject("video.ready"),
    description="Videos of augmentation specs, copied to augmented/<path>_aug.mp4.",
)
REFUSED = ConsumerSpec(
    durable="augment-generation-rejected",
    stream=EVENTS.name,
    filter_subject=event_subject("generation.rejected"),
    description="Augmentation specs the generate service refused (no configured backend can run them).",
)
VERDICTS = ConsumerSpec(
    durable="augment-verdicts",
    stream=EVENTS.name,
    filter_subject=event_subject("qa.>"),
    backoff_base_s=0.5,
    max_deliver=10,
    description="QA verdicts on augmentation outputs.",
)


def minio_notification(payload: bytes) -> S3Notification:
    """A raw MinIO notification as a message (``InvalidInputError`` when it is not one)."""
    return S3Notification(events=tuple(parse_minio_event(payload)))


def consumers(ctx: ServiceContext[AugmentService]) -> list[Consumer[Any]]:
    """The augment service's six durable consumers."""
    service = ctx.service
    settings = service.settings

    async def on_upload(d: Delivery[ObjectCreated]) -> None:
        await service.on_upload(d.message, event_id=d.envelope.id)

    async def on_minio(d: Delivery[S3Notification]) -> None:
        for event in d.message.events:
            event_id = object_created_event_id(event.bucket, event.key, event.etag, event.sequencer)
            await ctx.bus.publish(wrap(event, source=ctx.source, event_id=event_id))

    async def on_request(d: Delivery[AugmentRequested]) -> None:
        await service.on_request(d.message)

    async def on_video(d: Delivery[VideoReady]) -> None:
        await service.on_video_ready(d.message)

    async def on_refused(d: Delivery[GenerationRejected]) -> None:
        await service.on_generation_rejected(d.message)

    async def on_verdict(d: Delivery[QaPassed | QaFailed]) -> None:
        await service.on_verdict(d.message)

    return [
        Consumer(ctx.bus, UPLOADS, on_upload, accept=(ObjectCreated,), source=ctx.source, prefetch=32),
        Consumer(ctx.bus, MINIO, on_minio, source=ctx.source, decode=minio_notification),
        Consumer(
            ctx.bus,
            REQUESTS,
            on_request,
            accept=(AugmentRequested,),
            source=ctx.source,
            concurrency=settings.concurrency,
        ),
        Consumer(ctx.bus, VIDEOS, on_video, accept=(VideoReady,), source=ctx.source),
        Consumer[QaPassed | QaFailed](ctx.bus, VERDICTS, on_verdict, accept=(QaPassed, QaFailed), source=ctx.source),
        Consumer(ctx.bus, REFUSED, on_refused, accept=(GenerationRejected,), source=ctx.source),
    ]


def create_app(settings: RuntimeSettings) -> FastAPI:
    """The augment service's app (database and outbox relay come with ``documents=True``)."""
    augment_settings = AugmentSettings.specialize(settings)

    async def startup(ctx: ServiceContext[AugmentService]) -> AugmentService:
        service = AugmentService(
            docs=ctx.docs, bus=ctx.bus, store=ctx.store, settings=augment_settings, source=ctx.source
        )
        await ctx.store.ensure_buckets([augment_settings.inputs_bucket, augment_settings.outputs_bucket])
        if augment_settings.poll:
            poller = BucketPoller(
                ctx.store,
                ctx.docs,
                ctx.bus,
                augment_settings.inputs_bucket,
                prefix=augment_settings.poll_prefix,
                source=ctx.source,
            )
            task = asyncio.create_task(
                poller.run(ctx.stop, interval_s=augment_settings.poll_interval_s), name="augment-poller"
            )
            ctx.resources.push_async_callback(stop_poller, ctx, task)
        return service

    async def stop_poller(ctx: ServiceContext[AugmentService], task: asyncio.Task[None]) -> None:
        ctx.stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task, timeout=10)

    return create_service_app(
        augment_settings,
        title="worldmill augment service",
        routers=[router],
        consumers=consumers,
        on_startup=startup,
        documents=True,
    )
