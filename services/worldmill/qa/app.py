"""The qa service process: ``worldmill serve qa``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from worldmill.contracts.catalog import AssetDeleted
from worldmill.contracts.generation import VideoReady
from worldmill.contracts.subjects import EVENTS, ConsumerSpec, event_subject
from worldmill.qa.api import QaState, router
from worldmill.qa.audits import AuditRunner
from worldmill.qa.critic_gate import CriticDefaults
from worldmill.qa.policy import REGENERABLE, RegenerationPolicy
from worldmill.qa.service import QaService
from worldmill.qa.settings import QaSettings
from worldmill.runtime.consumer import Consumer, Delivery
from worldmill.runtime.logs import get_logger
from worldmill.runtime.service import ServiceContext, create_service_app
from worldmill.runtime.settings import RuntimeSettings
from worldmill.runtime.vlm import VlmClient, VlmConfig

log = get_logger(__name__)

VIDEOS = ConsumerSpec(
    durable="qa-videos",
    stream=EVENTS.name,
    filter_subject=event_subject("video.ready"),
    ack_wait_s=60.0,
    description="Every finished video gets a verdict.",
)


DELETIONS = ConsumerSpec(
    durable="qa-deletions",
    stream=EVENTS.name,
    filter_subject=event_subject("asset.deleted"),
    ack_wait_s=30.0,
    description="A deleted asset's fingerprint is forgotten (its spec's next video is no copy of it).",
)


def consumers(ctx: ServiceContext[QaState]) -> list[Consumer[Any]]:
    """video.ready → verdict (two at a time: decoding is the cost); asset.deleted → fingerprint forgotten."""
    service = ctx.service.qa

    async def on_video(d: Delivery[VideoReady]) -> None:
        await service.on_video_ready(d.message)

    async def on_deleted(d: Delivery[AssetDeleted]) -> None:
        await service.on_asset_deleted(d.message)

    return [
        Consumer(ctx.bus, VIDEOS, on_video, accept=(VideoReady,), concurrency=2, source=ctx.source),
        Consumer(ctx.bus, DELETIONS, on_deleted, accept=(AssetDeleted,), source=ctx.source),
    ]


def critic_from(settings: QaSettings) -> VlmClient | None:
    """The VLM critic when configured (off otherwise)."""
    if not settings.vlm_base_url:
        return None
    key = settings.vlm_api_key.get_secret_value() if settings.vlm_api_key else None
    return VlmClient(
        VlmConfig(
            base_url=settings.vlm_base_url,
            model=settings.vlm_model,
            api_key=key,
            trials=settings.vlm_trials,
            fps=settings.vlm_fps,
            timeout_s=settings.vlm_timeout_s,
            max_retries=settings.vlm_max_retries,
        )
    )


def critic_defaults_from(settings: QaSettings) -> CriticDefaults:
    """The gate, kind and threshold a spec's ``qa.critic`` overrides."""
    return CriticDefaults(gate=settings.vlm_gate, kind=settings.vlm_kind, threshold=settings.critic_threshold)


def create_app(settings: RuntimeSettings) -> FastAPI:
    """The qa service's app: database and outbox relay (``documents=True``) and the optional critic."""
    qa_settings = QaSettings.specialize(settings)

    async def startup(ctx: ServiceContext[QaState]) -> QaState:
        critic = critic_from(qa_settings)
        if critic is not None:
            ctx.resources.push_async_callback(critic.aclose)
        policy = RegenerationPolicy(
            max_regenerations=qa_settings.max_regenerations,
            checks=frozenset(qa_settings.regenerate_checks) if qa_settings.regenerate_checks else REGENERABLE,
        )
        qa = QaService(
            docs=ctx.docs,
            bus=ctx.bus,
            store=ctx.store,
            critic=critic,
            critic_defaults=critic_defaults_from(qa_settings),
            policy=policy,
            source=ctx.source,
        )
        # Every stored fingerprint, before the first video is consumed: copies are found across restarts.
        held = await qa.load_index()
        log.info("qa.index_loaded", fingerprints=held, samples=qa.index.samples)
        return QaState(qa=qa, audits=AuditRunner(docs=ctx.docs, store=ctx.store))

    return create_service_app(
        qa_settings,
        title="worldmill qa service",
        routers=[router],
        consumers=consumers,
        on_startup=startup,
        documents=True,
    )
