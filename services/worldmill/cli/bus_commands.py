"""``worldmill bus init``: create (or update) every JetStream stream and durable consumer, then exit.

Every service ensures the streams and its own consumers when it starts, which is enough on one host.
On Kubernetes the consumers must exist *before* their services run: KEDA's ``nats-jetstream`` scaler
reads a consumer's lag, and a GPU runner scaled to zero never starts to create ``gpu-runner``. So a
Job runs this once per rollout (deploy/base/bus-init-job.yaml). It is idempotent.

The consumers are found, not listed: every ``ConsumerSpec`` at module level in the CPU services'
``app`` modules and in ``contracts.subjects`` (where the GPU runners' queue is defined). The service
modules are imported by name here, as ``worldmill serve`` does, so other commands never load them.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Annotated

import typer

from worldmill.cli.console import console, fail
from worldmill.cli.serve_command import ServiceName, entry_module
from worldmill.contracts.subjects import ALL_STREAMS, CANCEL_BUCKET, ConsumerSpec
from worldmill.runtime.cancel import CancelFlags
from worldmill.runtime.errors import WorldmillError
from worldmill.runtime.nats_auth import permissions_table, render_config
from worldmill.runtime.service import bus_from
from worldmill.runtime.settings import RuntimeSettings

#: Where consumers are defined: the GPU runner uses only ``contracts.subjects.GPU_JOBS`` (its module
#: imports the model libraries, which the CPU image that runs this command does not have).
CONSUMER_MODULES = (
    "worldmill.contracts.subjects",
    *(entry_module(s) for s in ServiceName if s is not ServiceName.GPU_RUNNER),
)

bus_app = typer.Typer(help="NATS JetStream set-up: streams and durable consumers.", no_args_is_help=True)


def all_consumers() -> list[ConsumerSpec]:
    """Every durable consumer of worldmill, once each (by stream and name), in a stable order."""
    found: dict[tuple[str, str], ConsumerSpec] = {}
    for name in CONSUMER_MODULES:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, ConsumerSpec):
                found.setdefault((value.stream, value.durable), value)
    return [found[key] for key in sorted(found)]


async def ensure_all(settings: RuntimeSettings, consumers: list[ConsumerSpec]) -> None:
    """Connect, ensure every stream of ``contracts.subjects.ALL_STREAMS``, the cancel bucket, then every consumer."""
    bus = bus_from(settings)
    await bus.connect()
    try:
        await bus.ensure_streams(ALL_STREAMS)
        await CancelFlags(bus).ensure()
        for spec in consumers:
            await bus.ensure_consumer(spec)
    finally:
        await bus.close()


@bus_app.command("init")
def init(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be ensured; connect to nothing.")
    ] = False,
) -> None:
    """Create or update every stream, the cancel bucket and every durable consumer; exit 1 if NATS refuses.

    Run it as the ``admin`` NATS user (WM_NATS_URL, WM_NATS_USER/WM_NATS_PASSWORD or WM_NATS_TOKEN):
    services may read the streams' settings but not create or change them.
    """
    consumers = all_consumers()
    if not dry_run:
        settings = RuntimeSettings.for_service("bus")
        try:
            asyncio.run(ensure_all(settings, consumers))
        except WorldmillError as exc:
            fail(str(exc))
    verb = "would ensure" if dry_run else "ensured"
    for stream in ALL_STREAMS:
        console.print(f"{verb} stream {stream.name} ({', '.join(stream.subjects)})")
    for spec in consumers:
        console.print(f"{verb} consumer {spec.stream}/{spec.durable} ({spec.filter_subject})")
    console.print(f"{verb} key-value bucket {CANCEL_BUCKET}")


@bus_app.command("permissions")
def permissions(
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the grants as a Markdown table (docs/architecture.md §19).")
    ] = False,
) -> None:
    """Print nats-server's ``authorization`` block: one user per service, allowed only its own subjects.

    Passwords are ``$WM_NATS_PASSWORD_<USER>`` references nats-server reads from its environment
    (compose and Kubernetes give them from secrets); docker/nats-auth.conf and
    deploy/base/nats-auth.conf are this output (a test compares them).
    """
    typer.echo(permissions_table() if markdown else render_config(), nl=False)
