"""Outages heal themselves: nats-server or SeaweedFS killed mid-run and brought back, no restart of ours.

Each test starts its own nats-server and SeaweedFS (the session's are shared), runs real work on
them, kills one by PID (SIGKILL), keeps it down, starts it again on the same ports with the same
data, and then waits — with no manual step — until every piece of work is done exactly once.
Before the fix the runner's loop died on the first failed call and sat with jobs pending until it
was restarted by hand; consumers dead-lettered messages whose handler met the outage.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers.bus import PrivateStream, private_stream, run_until
from tests.helpers.factories import synthetic_job
from tests.helpers.generation import runner_client
from tests.helpers.outage import KillableServers
from worldmill.contracts.envelope import wrap
from worldmill.contracts.generation import GpuJob, JobCompleted, JobFailed
from worldmill.contracts.keys import ALL_BUCKETS, ARTIFACTS_BUCKET
from worldmill.contracts.objects import ObjectCreated
from worldmill.contracts.subjects import ALL_STREAMS, EVENTS, GPU_JOBS, ConsumerSpec, event_subject
from worldmill.runtime.bus import Bus
from worldmill.runtime.consumer import Consumer, Delivery
from worldmill.runtime.store import ObjectStore


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[KillableServers]:
    """A nats-server and a SeaweedFS of this test alone."""
    both = KillableServers.start(tmp_path / "servers")
    try:
        yield both
    finally:
        both.stop()


@pytest.fixture
async def bus(servers: KillableServers) -> AsyncIterator[Bus]:
    """The test's own connection (it lives through the outages too)."""
    b = Bus(servers.nats.url, name="outage-test", reconnect_wait_s=0.2)
    await b.connect()
    await b.ensure_streams(ALL_STREAMS)
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def store(servers: KillableServers) -> ObjectStore:
    """A store on the test's SeaweedFS, with worldmill's buckets."""
    st = ObjectStore(servers.s3.url, servers.s3.access_key, servers.s3.secret_key)
    await st.ensure_buckets(ALL_BUCKETS)
    return st


def _job(tag: str, i: int) -> GpuJob:
    return synthetic_job(f"o{tag}-{i}", i)


async def _outcomes(bus: Bus, runs: set[str]) -> tuple[Counter[str], list[JobCompleted], list[JobFailed]]:
    """Completions per run, and the completed and failed events of these runs, as stored in WM_EVENTS."""
    counts: Counter[str] = Counter()
    completed: list[JobCompleted] = []
    failed: list[JobFailed] = []
    async for _, m in bus.replay(EVENTS.name, event_subject("job.>")):
        if isinstance(m, JobCompleted) and m.run_id in runs:
            counts[m.run_id] += 1
            completed.append(m)
        elif isinstance(m, JobFailed) and m.run_id in runs:
            failed.append(m)
    return counts, completed, failed


async def _wait_all_done(bus: Bus, runs: set[str], timeout_s: float) -> tuple[Counter[str], list[JobCompleted]]:
    """Poll the event log until every run has its completion (or one failed); fail at the timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            counts, completed, failed = await _outcomes(bus, runs)
        except Exception as exc:  # the test's own bus may still be reconnecting
            last = exc
        else:
            assert not failed, [f.error for f in failed]
            if set(counts) == runs:
                return counts, completed
            last = f"{len(counts)} of {len(runs)} done"
        await asyncio.sleep(0.5)
    raise AssertionError(f"not every job done {timeout_s:.0f} s after the outage: {last}")


def _runner(servers: KillableServers, tmp: Path) -> TestClient:
    """The GPU-runner service (synthetic backend, slowed so the outage lands mid-run) on the test's servers."""
    return runner_client(
        servers.nats,
        servers.s3,
        tmp,
        synthetic_s_per_frame=0.01,
        window=2,
        nats_reconnect_wait_s=0.2,
        s3_retries=0,
        stall_ready_s=600,
        stall_live_s=900,
    )


async def _runner_survives(
    servers: KillableServers, bus: Bus, store: ObjectStore, tmp: Path, what: str, down_s: float
) -> None:
    """12 jobs, ``what`` down for ``down_s`` once two are done; then every job completes once, with its video."""
    tag = uuid.uuid4().hex[:6]
    jobs = [_job(tag, i) for i in range(12)]
    runs = {j.run_id for j in jobs}
    with _runner(servers, tmp) as client:
        runner = client.app.state.ctx.service
        for job in jobs:
            await bus.publish(wrap(job, source="/test", event_id=job.job_id))
        deadline = time.monotonic() + 60
        while runner.stats.completed < 2:
            assert time.monotonic() < deadline, runner.stats
            await asyncio.sleep(0.1)
        assert runner.stats.completed < len(jobs), "the outage must land mid-run"
        outage = asyncio.create_task(servers.outage(what, down_s))
        await asyncio.sleep(min(2.0, down_s / 2))
        during = await asyncio.to_thread(client.get, "/readyz")
        await outage
        counts, completed = await _wait_all_done(bus, runs, timeout_s=180)
        ready = await asyncio.to_thread(client.get, "/readyz")
        live = await asyncio.to_thread(client.get, "/healthz")
        task = client.app.state.ctx.loops["runner"]
        assert not task.done(), task
        generated = runner.stats.completed
    assert during.status_code == 503 and during.json()["checks"][what] != "ok"
    assert ready.status_code == 200, ready.json()
    assert live.status_code == 200, live.json()
    assert counts == Counter(dict.fromkeys(runs, 1)), "each job completed exactly once"
    assert generated == len(jobs), "no job was generated twice (a redelivery of a held job is merged into it)"
    for done in completed:  # the videos are really there, with the bytes the events name
        info = await store.stat(done.video.bucket, done.video.key)
        assert info.sha256 == done.video.sha256 and info.size == done.video.size
    consumer = await bus.js.consumer_info(GPU_JOBS.stream, GPU_JOBS.durable)
    assert (consumer.num_pending, consumer.num_ack_pending) == (0, 0), "nothing left queued or held"


async def test_the_runner_resumes_by_itself_after_nats_is_down_10s(
    servers: KillableServers, bus: Bus, store: ObjectStore, tmp_path: Path
) -> None:
    """nats-server killed for 10 s mid-run: the runner's queue pulls again by itself; every job done once."""
    await _runner_survives(servers, bus, store, tmp_path, "nats", 10)


async def test_the_runner_resumes_by_itself_after_the_store_is_down_10s(
    servers: KillableServers, bus: Bus, store: ObjectStore, tmp_path: Path
) -> None:
    """SeaweedFS killed for 10 s mid-run: uploads and checks wait it out; every job done once, none failed."""
    await _runner_survives(servers, bus, store, tmp_path, "s3", 10)


@pytest.mark.slow
async def test_the_runner_resumes_by_itself_after_nats_is_down_60s(
    servers: KillableServers, bus: Bus, store: ObjectStore, tmp_path: Path
) -> None:
    """A minute without nats-server, longer than the queue's ack wait: held jobs are not run twice."""
    await _runner_survives(servers, bus, store, tmp_path, "nats", 60)


@pytest.mark.slow
async def test_the_runner_resumes_by_itself_after_the_store_is_down_60s(
    servers: KillableServers, bus: Bus, store: ObjectStore, tmp_path: Path
) -> None:
    """A minute without the object store: jobs in hand wait, no delivery spent, nothing failed."""
    await _runner_survives(servers, bus, store, tmp_path, "s3", 60)


# -- a plain consumer ------------------------------------------------------------------------------


async def _private_stream(bus: Bus) -> PrivateStream:
    return await private_stream(bus, retention="workqueue", description="outage test stream")


def _event(n: int) -> ObjectCreated:
    return ObjectCreated(
        bucket="wm-inputs", key=f"in/{n}.mp4", size=n + 1, etag=f"e{n}", origin="api", event_time=datetime.now(UTC)
    )


async def test_a_consumer_pulls_again_by_itself_after_nats_is_down_10s(servers: KillableServers, bus: Bus) -> None:
    """Messages before and after a 10 s nats-server crash are all handled; the loop never stopped."""
    stream = await _private_stream(bus)
    spec = ConsumerSpec(durable="outage-nats", stream=stream.spec.name, filter_subject=stream.subject(">"))
    seen: set[str] = set()

    async def handler(d: Delivery) -> None:
        seen.add(d.envelope.id)

    consumer = Consumer(bus, spec, handler, accept=(ObjectCreated,))
    ids = []
    for n in range(5):
        ids.append((await bus.publish(wrap(_event(n), source="/t"), subject=stream.subject())).envelope_id)

    async def outage_then_more() -> None:
        while len(seen) < 5:
            await asyncio.sleep(0.05)
        await servers.outage("nats", 10)
        for n in range(5, 10):
            envelope = wrap(_event(n), source="/t")  # one id: a publish retried after a timeout is stored once
            ids.append(envelope.id)
            for _ in range(100):  # the test's own connection may still be reconnecting
                try:
                    await bus.publish(envelope, subject=stream.subject())
                    break
                except Exception:
                    await asyncio.sleep(0.2)

    side = asyncio.create_task(outage_then_more())
    await run_until(consumer, lambda: side.done() and len(seen) == 10, timeout_s=120)
    await side
    assert seen == set(ids)
    assert consumer.stats.dead_lettered == 0 and consumer.stats.acked == 10


async def test_a_consumer_waits_out_a_store_outage_without_spending_deliveries(
    servers: KillableServers, bus: Bus, store: ObjectStore
) -> None:
    """A handler that writes to S3 meets a 10 s outage: it is called again with the same delivery, nothing is
    dead-lettered although the delivery limit (2) is far below the retries it took."""
    stream = await _private_stream(bus)
    spec = ConsumerSpec(durable="outage-s3", stream=stream.spec.name, filter_subject=stream.subject(">"), max_deliver=2)
    down = asyncio.Event()
    stored: set[str] = set()

    async def handler(d: Delivery) -> None:
        down.set()
        await store.put_bytes(ARTIFACTS_BUCKET, f"outage/{d.envelope.id}", b"x")
        stored.add(d.envelope.id)

    consumer = Consumer(bus, spec, handler, accept=(ObjectCreated,), patience_s=120)
    await asyncio.to_thread(servers.kill_s3)
    ids = [(await bus.publish(wrap(_event(n), source="/t"), subject=stream.subject())).envelope_id for n in range(3)]

    async def bring_back() -> None:
        await down.wait()
        await asyncio.sleep(10)
        await asyncio.to_thread(servers.restart_s3)

    side = asyncio.create_task(bring_back())
    await run_until(consumer, lambda: len(stored) == 3, timeout_s=120)
    await side
    assert stored == set(ids)
    assert consumer.stats.dead_lettered == 0 and consumer.stats.nacked == 0
    assert consumer.stats.outage_retries > 0
    assert store.outage.count == 1 and not store.outage.down  # one outage, seen and over
    for envelope_id in ids:
        assert await store.get_bytes(ARTIFACTS_BUCKET, f"outage/{envelope_id}") == b"x"
