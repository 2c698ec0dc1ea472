"""Run GPU jobs through a real ``Runner`` on the test servers, until THOSE jobs have an outcome.

The job queue (durable ``gpu-runner``) is shared by the whole test session: a job another test left
queued may reach this runner too. So settling is judged by the outcome events of the given jobs'
runs, never by the runner's counters, and those events are returned for the test to check.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from worldmill.contracts.envelope import wrap
from worldmill.contracts.generation import GpuJob, JobCompleted, JobFailed
from worldmill.contracts.subjects import event_subject
from worldmill.gpu_runner.cache import ModelCache
from worldmill.gpu_runner.worker import Runner
from worldmill.runtime.bus import Bus
from worldmill.runtime.decode import parse


def outcomes(events: list[Any]) -> dict[str, str]:
    """Run id → ``JobCompleted`` / ``JobFailed`` of the events (the last one per run)."""
    return {e.run_id: type(e).__name__ for e in events if isinstance(e, JobCompleted | JobFailed)}


async def run_jobs(
    runner: Runner, cache: ModelCache, bus: Bus, jobs: list[GpuJob], timeout_s: float = 240
) -> list[Any]:
    """Publish the jobs, run the runner until each has completed or failed, stop it, free the cache.

    Returns every event (progress, outcome) of the jobs' runs, in arrival order.
    """
    events: list[Any] = []
    runs = {j.run_id for j in jobs}

    async def seen(msg: Any) -> None:
        _, message = parse(msg.data, None)
        if getattr(message, "run_id", None) in runs:
            events.append(message)

    sub = await bus.nc.subscribe(event_subject("job.>"), cb=seen)
    for job in jobs:
        await bus.publish(wrap(job, source="/test", event_id=job.job_id))
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        deadline = time.monotonic() + timeout_s
        while len(outcomes(events)) < len(runs):
            assert time.monotonic() < deadline, f"stats={runner.stats} outcomes={outcomes(events)}"
            assert not task.done(), task.exception()
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await cache.close()
        await asyncio.sleep(0.3)  # the last progress events
        await sub.unsubscribe()
    return events
