"""The GPU runner process: ``worldmill serve gpu-runner``.

It is a service like the others (health and readiness on HTTP, bus and store in the lifespan,
drain on SIGTERM); its work is the runner loop, started in the lifespan.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from worldmill.contracts.generation import ExecutionSignature
from worldmill.gpu_runner.backends import Backend, BackendConfig, create_backend
from worldmill.gpu_runner.backends.synthetic import SyntheticBackend
from worldmill.gpu_runner.cache import ModelCache
from worldmill.gpu_runner.settings import RunnerSettings
from worldmill.gpu_runner.worker import Runner
from worldmill.runtime.service import ServiceContext, create_service_app
from worldmill.runtime.settings import RuntimeSettings


def backend_factory(settings: RunnerSettings):  # type: ignore[no-untyped-def]
    """Backends for signatures: by model family, or the synthetic stand-in for all when configured."""
    config = BackendConfig(
        checkpoint_root=settings.checkpoint_root,
        device=settings.device,
        safety_checker=settings.safety_checker,
        load_seconds=settings.synthetic_load_s,
        seconds_per_frame=settings.synthetic_s_per_frame,
    )

    def make(signature: ExecutionSignature) -> Backend:
        if settings.backend == "synthetic":
            return SyntheticBackend(config, model=signature.model)
        return create_backend(signature, config)

    return make


def runner_from(settings: RunnerSettings, ctx: ServiceContext) -> Runner:
    """A runner wired to this process's bus and store."""
    cache = ModelCache(backend_factory(settings), budget_bytes=int(settings.memory_budget_gb * 1024**3))
    return Runner(
        ctx.bus,
        ctx.store,
        cache,
        name=settings.name or None,
        window=settings.window,
        max_passes=settings.max_passes,
        progress_interval_s=settings.progress_interval_s,
        source=ctx.source,
        device=settings.device,
    )


def create_app(settings: RuntimeSettings) -> FastAPI:
    """The runner's app; the loop runs from startup until SIGTERM, then finishes its job and returns."""
    runner_settings = RunnerSettings.specialize(settings)

    async def startup(ctx: ServiceContext) -> None:
        runner = runner_from(runner_settings, ctx)
        ctx.state["runner"] = runner
        ctx.state["loop"] = asyncio.create_task(runner.run(ctx.stop))

    async def shutdown(ctx: ServiceContext) -> None:
        if (loop := ctx.state.get("loop")) is not None:
            await asyncio.wait({loop}, timeout=runner_settings.drain_timeout_s)
        if (runner := ctx.state.get("runner")) is not None:
            await runner.cache.close()

    return create_service_app(runner_settings, title="worldmill gpu-runner", on_startup=startup, on_shutdown=shutdown)
