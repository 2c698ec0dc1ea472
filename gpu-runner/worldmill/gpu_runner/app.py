"""The GPU runner process: ``worldmill serve gpu-runner``.

It is a service like the others (health and readiness on HTTP, bus and store in the lifespan,
drain on SIGTERM); its work is the runner loop, started in the lifespan. The loop and its job
queue's watchdog are registered with the health routes: ``/readyz`` fails while the runner holds
jobs (or jobs wait for it) and settles none for ``stall_ready_s``; ``/healthz`` after
``stall_live_s``, or when the loop has ended, so an orchestrator restarts it.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from worldmill.contracts.generation import ExecutionSignature
from worldmill.gpu_runner.backends import Backend, BackendConfig, create_backend
from worldmill.gpu_runner.backends.synthetic import SyntheticBackend
from worldmill.gpu_runner.cache import ModelCache
from worldmill.gpu_runner.devices import default_budget_bytes, describe_device, resolve_device
from worldmill.gpu_runner.settings import CPU_BUDGET_GB, RunnerSettings
from worldmill.gpu_runner.worker import Runner
from worldmill.runtime.service import ServiceContext, create_service_app
from worldmill.runtime.settings import RuntimeSettings


def backend_config(settings: RunnerSettings) -> BackendConfig:
    """The backends' configuration from the runner's settings (one shared-components pool per runner)."""
    return BackendConfig(
        checkpoint_root=settings.checkpoint_root,
        device=settings.device,
        safety_checker=settings.safety_checker,
        attention_backend=settings.attention_backend,
        compile=settings.compile,
        load_seconds=settings.synthetic_load_s,
        seconds_per_frame=settings.synthetic_s_per_frame,
        nim_base_url=settings.nim_base_url,
        vllm_omni_base_url=settings.vllm_omni_base_url,
        served_timeout_s=settings.served_timeout_s,
        served_ready_timeout_s=settings.served_ready_timeout_s,
        served_concurrency=settings.served_concurrency,
        native_transfer_url=settings.native_transfer_url,
    )


def memory_budget_bytes(settings: RunnerSettings) -> int:
    """The configured budget, else 90 % of the GPU's memory, else :data:`CPU_BUDGET_GB` (synthetic: never a GPU)."""
    if settings.memory_budget_gb is not None:
        return int(settings.memory_budget_gb * 1024**3)
    if settings.backend != "synthetic":
        device = resolve_device(settings.device)
        if device.startswith("cuda") and (budget := default_budget_bytes(describe_device(device))) is not None:
            return budget
    return int(CPU_BUDGET_GB * 1024**3)


def backend_factory(settings: RunnerSettings):  # type: ignore[no-untyped-def]
    """Backends for signatures: by model family, or the synthetic stand-in for all when configured."""
    config = backend_config(settings)

    def make(signature: ExecutionSignature) -> Backend:
        if settings.backend == "synthetic":
            return SyntheticBackend(config, model=signature.model)
        return create_backend(signature, config)

    return make


def runner_from(settings: RunnerSettings, ctx: ServiceContext[Runner]) -> Runner:
    """A runner wired to this process's bus and store."""
    cache = ModelCache(backend_factory(settings), budget_bytes=memory_budget_bytes(settings))
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
        fps_interpolation=settings.fps_interpolation,
        served_concurrency=settings.served_concurrency,
        outage_patience_s=settings.outage_patience_s,
    )


def create_app(settings: RuntimeSettings) -> FastAPI:
    """The runner's app; the loop runs from startup until SIGTERM, then finishes its job and returns."""
    runner_settings = RunnerSettings.specialize(settings)

    async def startup(ctx: ServiceContext[Runner]) -> Runner:
        runner = runner_from(runner_settings, ctx)
        ctx.resources.push_async_callback(runner.cache.close)
        loop = ctx.loops["runner"] = asyncio.create_task(runner.run(ctx.stop), name="runner")
        ctx.resources.push_async_callback(finish, ctx, loop)
        ctx.watchdogs.append(runner.queue.watchdog)
        return runner

    async def finish(ctx: ServiceContext[Runner], loop: asyncio.Task[None]) -> None:
        ctx.stop.set()
        await asyncio.wait({loop}, timeout=runner_settings.drain_timeout_s)

    return create_service_app(runner_settings, title="worldmill gpu-runner", on_startup=startup)
