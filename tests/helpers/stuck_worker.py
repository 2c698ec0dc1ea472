"""A worker process that takes one message and then hangs, to be killed mid-message by a test.

Usage: python -m tests.helpers.stuck_worker NATS_URL STREAM DURABLE FILTER ACK_WAIT MARKER
It writes MARKER once the handler has the message, then sleeps until killed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from worldmill.contracts.subjects import ConsumerSpec
from worldmill.runtime.bus import Bus
from worldmill.runtime.consumer import Consumer, Delivery


async def main(*, url: str, stream: str, durable: str, subject: str, ack_wait: float, marker: Path) -> None:
    bus = Bus(url, name="stuck-worker")
    await bus.connect()

    async def handler(delivery: Delivery) -> None:
        marker.write_text(f"{delivery.envelope.id} {delivery.num_delivered}")
        await asyncio.sleep(3600)

    spec = ConsumerSpec(durable=durable, stream=stream, filter_subject=subject, ack_wait_s=ack_wait)
    await Consumer(bus, spec, handler).run(asyncio.Event())


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(url=a[0], stream=a[1], durable=a[2], subject=a[3], ack_wait=float(a[4]), marker=Path(a[5])))
