"""A three-node JetStream cluster on loopback: replicated streams, and a run that survives its leader's SIGKILL.

The cluster is this module's own (``start_nats_cluster``: routed nodes, each with a file store);
SeaweedFS is the session's. Services are given every node's URL and ``stream_replicas=3``, as
``worldmill up --cluster 3`` gives them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.helpers.generation import AUTH, announce, settings, specs, wait_runs
from worldmill.cli.main import app
from worldmill.contracts.subjects import ALL_STREAMS, GPU_JOBS, JOBS
from worldmill.generate.app import create_app as create_generate_app
from worldmill.generate.settings import GenerateSettings
from worldmill.gpu_runner.app import create_app as create_runner_app
from worldmill.gpu_runner.settings import RunnerSettings
from worldmill.runtime.bus import Bus
from worldmill.runtime.servers import NatsCluster, NatsEndpoint, S3Endpoint, start_nats_cluster
from worldmill.runtime.store import ObjectStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    nodes = start_nats_cluster(tmp_path_factory.mktemp("nats-cluster"), nodes=3)
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
async def cluster_bus(cluster: NatsCluster) -> AsyncIterator[Bus]:
    bus = Bus(cluster.urls, name="test-cluster", stream_replicas=3)
    await bus.connect()
    await bus.ensure_streams(ALL_STREAMS)
    try:
        yield bus
    finally:
        await bus.close()


def _fields(cluster: NatsCluster, s3: S3Endpoint, tmp: Path, service: str) -> dict[str, Any]:
    endpoint = NatsEndpoint(url=cluster.urls, monitor_url=cluster.nodes[0].endpoint.monitor_url, port=0, monitor_port=0)
    return {**settings(endpoint, s3, tmp, service), "stream_replicas": 3}


async def _leader(bus: Bus, stream: str) -> tuple[str, list[str]]:
    info = await bus.js.stream_info(stream)
    assert info.cluster is not None
    return str(info.cluster.leader), [str(r.name) for r in info.cluster.replicas or []]


async def test_streams_have_three_replicas_one_per_node(cluster: NatsCluster, cluster_bus: Bus) -> None:
    names = {n.role.name for n in cluster.nodes}
    for spec in ALL_STREAMS:
        info = await cluster_bus.js.stream_info(spec.name)
        assert info.config.num_replicas == 3, spec.name
        leader, replicas = await _leader(cluster_bus, spec.name)
        assert {leader, *replicas} == names, (spec.name, leader, replicas)


async def test_an_existing_single_replica_stream_is_scaled_to_three(cluster: NatsCluster) -> None:
    """``up --cluster 3`` over streams made by a one-replica deployment: ensure_streams scales them in place."""
    one = Bus(cluster.urls, name="test-r1", stream_replicas=1)
    three = Bus(cluster.urls, name="test-r3", stream_replicas=3)
    await one.connect()
    await three.connect()
    spec = ALL_STREAMS[0].model_copy(
        update={"name": f"T_{uuid.uuid4().hex[:8].upper()}", "subjects": (f"t{uuid.uuid4().hex[:8]}.>",)}
    )
    try:
        await one.ensure_stream(spec)
        assert (await one.js.stream_info(spec.name)).config.num_replicas == 1
        await three.ensure_stream(spec)
        assert (await three.js.stream_info(spec.name)).config.num_replicas == 3
    finally:
        await three.js.delete_stream(spec.name)
        await one.close()
        await three.close()


async def test_a_run_survives_a_sigkill_of_the_job_streams_leader(
    cluster: NatsCluster, cluster_bus: Bus, s3: S3Endpoint, store: ObjectStore, tmp_path: Path
) -> None:
    """Twelve jobs; once two are done the WM_JOBS leader node is SIGKILLed, restarted 3 s later: each job once."""
    name = f"cl-{uuid.uuid4().hex[:8]}"
    items = specs(name, durations=(2,), scenarios=12, resolution="64x48", fps=8)
    await announce(cluster_bus, items)
    gen_fields = {**_fields(cluster, s3, tmp_path, "generate"), "backends": ("synthetic",)}
    run_fields = {**_fields(cluster, s3, tmp_path, "gpu-runner"), "backend": "synthetic", "synthetic_s_per_frame": 0.01}
    leader, _ = await _leader(cluster_bus, JOBS.name)
    index = next(i for i, n in enumerate(cluster.nodes) if n.role.name == leader)
    with (
        TestClient(create_generate_app(GenerateSettings(**gen_fields))) as gen,
        TestClient(create_runner_app(RunnerSettings(**run_fields))) as runner,
    ):
        resp = gen.post("/generations", json={"prompt_ids": [s.prompt_id for s in items]}, headers=AUTH)
        for _ in range(50):  # the generate service learns the specs from prompt.created
            if resp.status_code != 422:
                break
            time.sleep(0.1)
            resp = gen.post("/generations", json={"prompt_ids": [s.prompt_id for s in items]}, headers=AUTH)
        assert resp.status_code == 202, resp.text
        request_id = resp.json()["request_id"]
        before = _wait_ready(gen, request_id, at_least=2)
        await asyncio.to_thread(cluster.kill, index)
        new_leader = await _wait_new_leader(cluster_bus, JOBS.name, leader)
        # The work goes on while the node is down (a one-replica stream would stop until it is back).
        during = _wait_ready(gen, request_id, at_least=min(len(items), before + 2))
        await asyncio.to_thread(cluster.restart, index)
        runs = wait_runs(gen, request_id, len(items), timeout_s=180)
        stats = runner.app.state.ctx.service.stats
    assert new_leader != leader and during >= before + 2
    assert [r["state"] for r in runs] == ["ready"] * len(items), [(r["run_id"], r["state"]) for r in runs]
    assert all(len(r["attempts"]) == 1 for r in runs), "a job was redone after the node loss"
    hashes = {r["video"]["sha256"] for r in runs}
    assert len(hashes) == len(items)  # every video exact and distinct
    for run in runs:  # one video per run in the store: no second asset
        listed = await store.list(run["video"]["bucket"], run["video"]["key"].rsplit("/", 2)[0] + "/")
        assert sum(o.key.endswith(".mp4") for o in listed) == 1, [o.key for o in listed]
    assert stats.failed == 0
    info = await cluster_bus.js.consumer_info(JOBS.name, GPU_JOBS.durable)
    assert info.num_pending == 0


def _wait_ready(client: TestClient, request_id: str, *, at_least: int, timeout_s: float = 60) -> int:
    """How many runs of the request are ready, once at least ``at_least`` are."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        items = client.get("/runs", params={"request_id": request_id, "limit": 500}, headers=AUTH).json()["items"]
        if (ready := sum(r["state"] == "ready" for r in items)) >= at_least:
            return ready
        time.sleep(0.1)
    raise AssertionError(f"fewer than {at_least} runs ready within {timeout_s} s")


async def _wait_new_leader(bus: Bus, stream: str, old: str, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            leader, _ = await _leader(bus, stream)
        except Exception:
            leader = ""
        if leader and leader != old:
            return leader
        await asyncio.sleep(0.2)
    raise AssertionError(f"{stream}: no new leader within {timeout_s} s")


def test_up_refuses_a_cluster_size_out_of_range(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["up", "--data-dir", str(tmp_path / "d"), "--cluster", "0"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2
    assert "--cluster: must be 1 to 7 nats-server nodes, got 0" in result.output
