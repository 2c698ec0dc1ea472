"""A small real service built on the service base, run as a process by the tests.

Env: the usual WM_* settings for service "probe", plus PROBE_STREAM, PROBE_SUBJECT and
PROBE_DIR (where the handler writes ``started-<id>`` and ``done-<id>`` markers).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from fastapi import APIRouter

from worldmill.contracts.subjects import ConsumerSpec
from worldmill.runtime.consumer import Consumer, Delivery
from worldmill.runtime.service import ServiceContext, create_service_app, run_service
from worldmill.runtime.settings import RuntimeSettings


def build(settings: RuntimeSettings) -> object:
    marker_dir = Path(os.environ["PROBE_DIR"])
    router = APIRouter()

    @router.get("/things")
    async def things() -> dict[str, bool]:
        return {"ok": True}

    def consumers(ctx: ServiceContext) -> list[Consumer]:
        async def handle(d: Delivery) -> None:
            (marker_dir / f"started-{d.envelope.id}").write_text(str(d.num_delivered))
            await asyncio.sleep(float(os.environ.get("PROBE_WORK_S", "2")))
            (marker_dir / f"done-{d.envelope.id}").write_text(str(d.num_delivered))

        spec = ConsumerSpec(
            durable="probe",
            stream=os.environ["PROBE_STREAM"],
            filter_subject=os.environ["PROBE_SUBJECT"],
            ack_wait_s=1.0,
        )
        return [Consumer(ctx.bus, spec, handle, source=ctx.source)]

    return create_service_app(settings, title="probe", routers=[router], consumers=consumers)


if __name__ == "__main__":
    cfg = RuntimeSettings.for_service("probe")
    run_service(build(cfg), cfg)  # type: ignore[arg-type]
