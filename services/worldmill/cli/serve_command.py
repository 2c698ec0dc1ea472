"""``worldmill serve SERVICE``: run one service (or the GPU runner) as a long-lived process.

Each service package, the GPU runner included, exposes ``create_app(settings) -> FastAPI`` in its
``app`` module (``worldmill.<service>.app``, ``worldmill.gpu_runner.app``). They are imported by
name at run time: starting one service never imports the others (nor torch, unless it is the runner).
"""

from __future__ import annotations

import importlib
from enum import StrEnum
from typing import Annotated

import typer

from worldmill.cli.console import fail_usage
from worldmill.runtime.service import run_service
from worldmill.runtime.settings import RuntimeSettings


class ServiceName(StrEnum):
    """Every long-running process of worldmill."""

    PROMPT = "prompt"
    UPSAMPLE = "upsample"
    GENERATE = "generate"
    AUGMENT = "augment"
    QA = "qa"
    CATALOG = "catalog"
    GPU_RUNNER = "gpu-runner"


def entry_module(service: ServiceName) -> str:
    """The module that holds a service's entry point."""
    if service is ServiceName.GPU_RUNNER:
        return "worldmill.gpu_runner.app"
    return f"worldmill.{service.value}.app"


def serve(
    service: Annotated[ServiceName, typer.Argument(help="Which service to run.")],
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default: settings).")] = None,
) -> None:
    """Run one service until SIGTERM/SIGINT; it drains its consumers before exiting."""
    try:
        module = importlib.import_module(entry_module(service))
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("worldmill."):
            fail_usage(f"SERVICE: {service.value!r} is not part of this build yet (no module {exc.name})")
        raise
    overrides = {k: v for k, v in {"http_host": host, "http_port": port}.items() if v is not None}
    settings = RuntimeSettings.for_service(service.value, **overrides)
    run_service(module.create_app(settings), settings)
