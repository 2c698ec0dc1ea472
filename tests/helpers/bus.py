"""Bus test helpers: run a consumer until a condition holds, read dead letters."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from worldmill.contracts.deadletter import DeadLetter
from worldmill.contracts.envelope import Envelope
from worldmill.contracts.subjects import DLQ, StreamSpec, dlq_subject
from worldmill.runtime.bus import Bus
from worldmill.runtime.consumer import Consumer


@dataclass(frozen=True)
class PrivateStream:
    """A private stream for one test."""

    spec: StreamSpec
    prefix: str

    def subject(self, leaf: str = "x") -> str:
        """A subject inside this stream."""
        return f"{self.prefix}.{leaf}"


async def private_stream(
    bus: Bus, *, retention: Literal["limits", "workqueue", "interest"] = "limits", description: str = "test stream"
) -> PrivateStream:
    """Create a stream ``T_<id>`` on subjects ``t<id>.>`` for one test (the caller deletes it, if it must)."""
    tag = uuid.uuid4().hex[:10]
    spec = StreamSpec(
        name=f"T_{tag.upper()}",
        subjects=(f"t{tag}.>",),
        retention=retention,
        max_age_s=3600,
        duplicate_window_s=120,
        description=description,
    )
    await bus.ensure_stream(spec)
    return PrivateStream(spec=spec, prefix=f"t{tag}")


async def run_until(consumer: Consumer, done: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Run ``consumer`` until ``done()`` is true, then stop it (draining) and return."""
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    deadline = time.monotonic() + timeout_s
    try:
        while not done():
            if task.done():
                task.result()
                raise AssertionError("consumer stopped early")
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout_s} s; stats={consumer.stats}")
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


T = TypeVar("T")


async def eventually(get: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout_s: float = 5.0) -> T:
    """Poll ``get()`` until ``ok`` holds for its value (servers apply acks asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await get()
        if ok(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def dead_letters(bus: Bus, durable: str, count: int, timeout_s: float = 10.0) -> list[DeadLetter]:
    """The first ``count`` dead letters a consumer wrote (waits for them)."""
    sub = await bus.js.pull_subscribe(dlq_subject(durable), durable=None, stream=DLQ.name)
    out: list[DeadLetter] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < count and time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(count - len(out), timeout=1.0)
            except TimeoutError:  # nats-py raises its own subclass and plain asyncio timeouts
                continue
            for m in msgs:
                env = Envelope.model_validate_json(m.data)
                out.append(DeadLetter.model_validate(env.data))
                await m.ack()
    finally:
        await sub.unsubscribe()
    return out
