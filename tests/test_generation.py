"""From specs to exactly the videos asked for: generate service + GPU runner on the real servers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import av
import numpy as np
from fastapi.testclient import TestClient

from tests.conftest import REPO
from tests.helpers.generation import AUTH, announce, generate_client, runner_client, specs, wait_runs
from tests.helpers.video import write_video
from worldmill.contracts.generation import ExecutionSignature, GpuJob, VideoReady
from worldmill.contracts.subjects import EVENTS, GPU_JOBS, event_subject
from worldmill.gpu_runner.backends import BackendConfig, ChunkRequest, SyntheticBackend
from worldmill.gpu_runner.backends.base import Frames, StepCallback
from worldmill.gpu_runner.cache import ModelCache
from worldmill.gpu_runner.worker import Runner
from worldmill.runtime.bus import Bus
from worldmill.runtime.dead_letters import dead_letter
from worldmill.runtime.decode import parse
from worldmill.runtime.docstore import DocumentStore
from worldmill.runtime.media import probe
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint, free_port
from worldmill.runtime.spec_copies import SpecCopies
from worldmill.runtime.store import ObjectStore


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


class _Flaky(SyntheticBackend):
    """The synthetic backend, failing on its first ``failures`` chunks."""

    def __init__(self, failures: int) -> None:
        super().__init__(BackendConfig())
        self.left = failures

    def generate(self, request: ChunkRequest, on_step: StepCallback) -> Frames:
        if self.left > 0:
            self.left -= 1
            raise RuntimeError("GPU fell over")
        return super().generate(request, on_step)


@contextlib.asynccontextmanager
async def flaky_runner(bus: Bus, s3: S3Endpoint, failures: int) -> AsyncIterator[Runner]:
    """An in-process runner whose backend fails ``failures`` times before working."""
    backend = _Flaky(failures)

    def factory(_: ExecutionSignature) -> SyntheticBackend:
        return backend

    store = ObjectStore(s3.url, s3.access_key, s3.secret_key)
    runner = Runner(bus, store, ModelCache(factory, budget_bytes=10**9), name="flaky", window=1)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield runner
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def _take_job(bus: Bus, run_id: str):  # type: ignore[no-untyped-def]
    """Fetch (without acking) the queued job of a run, as a crashing runner would."""
    await bus.ensure_consumer(GPU_JOBS)
    sub = await bus.js.pull_subscribe_bind(GPU_JOBS.durable, stream=GPU_JOBS.stream)
    try:
        for _ in range(20):
            for msg in await sub.fetch(10, timeout=2):
                _, job = parse(msg.data, None)
                if isinstance(job, GpuJob) and job.run_id == run_id:
                    return msg
                await msg.nak()
    finally:
        await sub.unsubscribe()
    raise AssertionError("job not found")


def _submit(client: TestClient, prompt_ids: list[str], **extra: object) -> dict:
    for _ in range(50):  # the generate service learns specs from events: give it a moment
        resp = client.post("/generations", json={"prompt_ids": prompt_ids, **extra}, headers=AUTH)
        if resp.status_code != 422 or "unknown prompt" not in resp.text:
            break
        time.sleep(0.1)
    assert resp.status_code == 202, resp.text
    return resp.json()


async def test_every_spec_becomes_exactly_its_video(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, store: ObjectStore, tmp_path: Path
) -> None:
    """5/10/30 s at 24 fps become 120/240/720-frame videos, distinct, with provenance and video.ready."""
    name = f"g-{uuid.uuid4().hex[:8]}"
    items = specs(name)
    await announce(bus, items)
    with generate_client(nats, s3, tmp_path) as gen, runner_client(nats, s3, tmp_path) as runner:
        accepted = _submit(gen, [s.prompt_id for s in items])
        runs = wait_runs(gen, accepted["request_id"], 3)
        stats = runner.app.state.ctx.service.cache.stats
    assert [r["state"] for r in runs] == ["ready"] * 3
    # One model load for three jobs of the same signature. The session's job queue is shared, so a
    # leftover job of another test may load its own (other) signature too: no signature twice.
    assert stats.loads >= 1 and stats.evictions == 0
    assert len(set(stats.loaded_signatures)) == len(stats.loaded_signatures), stats.loaded_signatures
    by_prompt = {r["prompt_id"]: r for r in runs}
    hashes = set()
    for spec in items:
        run = by_prompt[spec.prompt_id]
        path = tmp_path / f"{spec.prompt_id}.mp4"
        await store.download(run["video"]["bucket"], run["video"]["key"], path)
        info = probe(path)
        assert (info.frames, float(info.fps)) == (spec.target_frames, 24.0)
        assert info.frames == round(spec.duration_s * 24)
        assert abs(info.duration_s - spec.duration_s) < 1e-9
        hashes.add(run["video"]["sha256"])
        prov = json.loads(await store.get_bytes(run["provenance_ref"]["bucket"], run["provenance_ref"]["key"]))
        assert prov["seeds"] == [c["seed"] for c in run["plan"]["chunks"]]
        assert prov["plan"]["expected"]["frames"] == spec.target_frames
        assert prov["backend"] == "synthetic" and prov["code_version"] and prov["runner"]
        assert set(prov["timings"]) == {"load_s", "fetch_s", "infer_s", "encode_s", "upload_s"}
    assert len(hashes) == 3
    ready = [
        m
        async for _, m in bus.replay(EVENTS.name, event_subject("video.ready"))
        if isinstance(m, VideoReady) and m.prompt_id.startswith(name)
    ]
    assert sorted(m.prompt_id for m in ready) == sorted(s.prompt_id for s in items)
    assert all(m.provenance.plan.expected.frames == m.plan.expected.frames for m in ready)


async def test_bad_requests_are_refused_before_any_gpu_time(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, tmp_path: Path
) -> None:
    """Unknown prompt ids and specs the model cannot meet are 422s naming them; nothing is queued."""
    name = f"g-{uuid.uuid4().hex[:8]}"
    good = specs(name, durations=(5,))
    bad = [
        s.model_copy(
            update={
                "prompt_id": f"{name}-bad",
                "model": "cosmos-predict2.5-2b",
                "resolution": {"width": 1920, "height": 1080},
            }
        )
        for s in good
    ]
    await announce(bus, good + bad)
    with generate_client(nats, s3, tmp_path) as gen:
        time.sleep(0.5)
        unknown = gen.post("/generations", json={"prompt_ids": ["nope-1"]}, headers=AUTH)
        assert unknown.status_code == 422 and "nope-1" in unknown.text
        refused = gen.post("/generations", json={"prompt_ids": [good[0].prompt_id, f"{name}-bad"]}, headers=AUTH)
        assert refused.status_code == 422
        assert f"{name}-bad" in refused.text and "resolution" in refused.text
        assert gen.get("/runs", params={"prompt_id": good[0].prompt_id}, headers=AUTH).json()["items"] == []


async def test_a_repeated_request_id_finds_its_runs(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, tmp_path: Path
) -> None:
    """Submitting the same request id twice returns the same runs and queues nothing new."""
    name = f"g-{uuid.uuid4().hex[:8]}"
    items = specs(name, durations=(5,))
    await announce(bus, items)
    with generate_client(nats, s3, tmp_path) as gen:
        first = _submit(gen, [items[0].prompt_id], request_id=f"req-{name}")
        again = _submit(gen, [items[0].prompt_id], request_id=f"req-{name}")
        info = await bus.js.stream_info("WM_JOBS")
    assert [r["run_id"] for r in first["runs"]] == [r["run_id"] for r in again["runs"]]
    assert info.state.messages >= 1


async def test_a_spec_kept_before_a_crash_still_gets_its_run_when_its_event_comes_again(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, tmp_path: Path
) -> None:
    """A generate process killed after keeping an auto-generate spec's copy but before storing its run
    gets prompt.created again: the run is made then (the 1,000-job chaos run lost one spec so), once."""
    name = f"g-{uuid.uuid4().hex[:8]}"
    [spec] = [s.model_copy(update={"auto_generate": True}) for s in specs(name, durations=(5,))]
    docs = DocumentStore(f"sqlite:///{tmp_path / 'generate.sqlite3'}")  # the service's own database
    await docs.open()
    try:
        assert await SpecCopies(docs).remember(spec)  # what the killed process did before it died
    finally:
        await docs.close()
    await announce(bus, [spec])
    with generate_client(nats, s3, tmp_path) as gen:
        runs = wait_runs(gen, f"auto-{spec.prompt_id}-v{spec.version}", 1, final=("queued",))
        await announce(bus, [spec.model_copy(update={"auto_generate": True})])  # a second redelivery
        time.sleep(1.0)
        again = gen.get("/runs", params={"prompt_id": spec.prompt_id}, headers=AUTH).json()["items"]
    assert [r["prompt_id"] for r in runs] == [spec.prompt_id]
    assert [r["run_id"] for r in again] == [runs[0]["run_id"]]


async def test_cancel_queued_running_and_finished(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, store: ObjectStore, tmp_path: Path
) -> None:
    """A queued run cancels at once; a running one stops between steps; a finished one is refused (409)."""
    name = f"g-{uuid.uuid4().hex[:8]}"
    items = specs(name, durations=(5, 10))
    await announce(bus, items)
    with generate_client(nats, s3, tmp_path) as gen:
        queued = _submit(gen, [items[0].prompt_id])["runs"][0]
        canceled = gen.post(f"/runs/{queued['run_id']}/cancel", headers=AUTH)
        assert canceled.status_code == 200 and canceled.json()["state"] == "canceled"
        with runner_client(nats, s3, tmp_path, synthetic_s_per_frame=0.05) as _runner:
            slow = _submit(gen, [items[1].prompt_id])["runs"][0]
            deadline = time.monotonic() + 60
            while gen.get(f"/runs/{slow['run_id']}", headers=AUTH).json()["state"] == "queued":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert gen.post(f"/runs/{slow['run_id']}/cancel", headers=AUTH).status_code == 200
            runs = wait_runs(gen, slow["request_id"], 1, timeout_s=60)
            assert runs[0]["state"] == "canceled"
            refused = gen.post(f"/runs/{queued['run_id']}/cancel", headers=AUTH)
            assert refused.status_code == 409 and "already canceled" in refused.json()["detail"]
        assert not await store.exists("wm-artifacts", f"runs/{slow['run_id']}/attempt-1/video.mp4")
        assert not await store.exists("wm-artifacts", f"runs/{queued['run_id']}/attempt-1/video.mp4")


async def test_video2world_conditions_on_the_input_video(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, store: ObjectStore, tmp_path: Path
) -> None:
    """A video2world spec downloads its input; the video starts from the input's last frames."""
    name = f"g-{uuid.uuid4().hex[:8]}"
    source = write_video(tmp_path / "in.mp4", width=64, height=48, fps=24, frames=30, seed=9)
    ref = await store.put_file("wm-inputs", f"tests/{name}/in.mp4", source, content_type="video/mp4")
    [spec] = specs(name, durations=(2,))
    spec = spec.model_copy(update={"mode": "video2world", "input": ref})
    await announce(bus, [spec])
    with generate_client(nats, s3, tmp_path) as gen, runner_client(nats, s3, tmp_path):
        accepted = _submit(gen, [spec.prompt_id])
        [run] = wait_runs(gen, accepted["request_id"], 1)
    assert run["state"] == "ready", run.get("error")
    out = tmp_path / "out.mp4"
    await store.download(run["video"]["bucket"], run["video"]["key"], out)
    assert probe(out).frames == 48
    first_out = _frames(out)[0].astype(int)
    cond_first = _frames(source)[-5].astype(int)  # chunk 0 repeats the 5 conditioning frames
    assert abs(first_out - cond_first).mean() < 12  # same picture, up to two H.264 encodings
    prov = json.loads(await store.get_bytes(run["provenance_ref"]["bucket"], run["provenance_ref"]["key"]))
    assert prov["inputs"][0]["key"] == ref.key


async def test_a_failing_backend_gets_a_new_attempt_then_succeeds(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, tmp_path: Path
) -> None:
    """A backend that raises mid-run: job.failed (retryable), attempt 2 is queued and succeeds."""
    name = f"g-{uuid.uuid4().hex[:8]}"
    [spec] = specs(name, durations=(1,))
    await announce(bus, [spec])
    with generate_client(nats, s3, tmp_path) as gen:
        accepted = _submit(gen, [spec.prompt_id], max_attempts=3)
        async with flaky_runner(bus, s3, failures=1):
            # Poll from a thread: the in-process runner shares this test's event loop.
            [run] = await asyncio.to_thread(wait_runs, gen, accepted["request_id"], 1, 60.0)
        history = gen.get(f"/runs/{run['run_id']}/history", headers=AUTH).json()
    assert run["state"] == "ready"
    assert [a["state"] for a in run["attempts"]] == ["failed", "ready"]
    assert run["attempts"][0]["retryable"] is True and "RuntimeError: GPU fell over" in run["attempts"][0]["error"]
    assert run["video"]["key"].endswith("attempt-2/video.mp4")
    assert history[0]["state"] == "queued" and history[-1]["state"] == "ready"


async def test_a_missing_checkpoint_fails_for_good_with_the_path(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, tmp_path: Path
) -> None:
    """A Cosmos job on a runner without the checkpoint fails once (not retried), naming the folder."""
    name = f"g-{uuid.uuid4().hex[:8]}"
    [spec] = specs(name, durations=(5,), model="cosmos-predict2.5-2b", resolution="1280x704", fps=16)
    await announce(bus, [spec])
    empty = tmp_path / "checkpoints"
    empty.mkdir()
    with (
        generate_client(nats, s3, tmp_path, backends=("diffusers", "synthetic")) as gen,
        runner_client(nats, s3, tmp_path, backend="auto", checkpoint_root=empty, safety_checker=False),
    ):
        accepted = _submit(gen, [spec.prompt_id], max_attempts=3)
        [run] = wait_runs(gen, accepted["request_id"], 1, timeout_s=120)
    assert run["state"] == "failed" and len(run["attempts"]) == 1
    assert run["attempts"][0]["retryable"] is False
    assert "CheckpointError" in run["error"] and "cosmos-predict2.5-2b" in run["error"]


async def test_a_dead_lettered_job_shows_its_run_as_lost(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, tmp_path: Path
) -> None:
    """A job the queue gives up on (crash loop) makes its run 'lost', never 'ready'."""
    name = f"g-{uuid.uuid4().hex[:8]}"
    [spec] = specs(name, durations=(1,))
    await announce(bus, [spec])
    with generate_client(nats, s3, tmp_path) as gen:
        [queued] = _submit(gen, [spec.prompt_id])["runs"]
        job_msg = await _take_job(bus, queued["run_id"])
        await dead_letter(
            bus,
            job_msg,
            consumer="gpu-runner",
            source="/test",
            reason="max_deliveries",
            error="delivered 5 times without an answer",
        )
        [run] = wait_runs(gen, queued["request_id"], 1, timeout_s=30)
    assert run["state"] == "lost" and "max_deliveries" in run["error"]


async def test_a_runner_killed_mid_job_leaves_one_video(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, store: ObjectStore, tmp_path: Path
) -> None:
    """SIGKILL the runner mid-job: the job is redelivered to another runner and ends as one video, one attempt."""
    name = f"g-{uuid.uuid4().hex[:8]}"
    [spec] = specs(name, durations=(4,))
    await announce(bus, [spec])
    env = {
        **os.environ,
        "WM_GPU_RUNNER_NATS_URL": nats.url,
        "WM_GPU_RUNNER_S3_ENDPOINT": s3.url,
        "WM_GPU_RUNNER_S3_ACCESS_KEY": s3.access_key,
        "WM_GPU_RUNNER_S3_SECRET_KEY": s3.secret_key,
        "WM_GPU_RUNNER_BACKEND": "synthetic",
        "WM_GPU_RUNNER_SYNTHETIC_S_PER_FRAME": "0.1",
        "WM_GPU_RUNNER_HTTP_PORT": str(free_port()),
        "WM_GPU_RUNNER_API_TOKENS": "t",
    }
    with generate_client(nats, s3, tmp_path) as gen:
        [queued] = _submit(gen, [spec.prompt_id])["runs"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "worldmill.cli", "serve", "gpu-runner"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while gen.get(f"/runs/{queued['run_id']}", headers=AUTH).json()["state"] == "queued":
                assert time.monotonic() < deadline, "the runner never started the job"
                time.sleep(0.1)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        with runner_client(nats, s3, tmp_path):
            [run] = wait_runs(gen, queued["request_id"], 1, timeout_s=120)
    assert run["state"] == "ready" and len(run["attempts"]) == 1
    objects = await store.list("wm-artifacts", f"runs/{queued['run_id']}/")
    assert sorted(o.key.rsplit("/", 1)[1] for o in objects) == ["provenance.json", "video.mp4"]


async def test_an_input_that_is_not_a_video_fails_the_run_for_good(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, store: ObjectStore, tmp_path: Path
) -> None:
    """A video2world input that is not a video: job.failed, not retryable, the message names the file."""
    name = f"g-{uuid.uuid4().hex[:8]}"
    ref = await store.put_bytes("wm-inputs", f"tests/{name}/notes.mp4", b"these are meeting notes, not a video")
    [spec] = specs(name, durations=(1,))
    spec = spec.model_copy(update={"mode": "video2world", "input": ref})
    await announce(bus, [spec])
    with generate_client(nats, s3, tmp_path) as gen, runner_client(nats, s3, tmp_path):
        accepted = _submit(gen, [spec.prompt_id], max_attempts=3)
        [run] = wait_runs(gen, accepted["request_id"], 1, timeout_s=60)
    assert run["state"] == "failed" and len(run["attempts"]) == 1
    assert "notes.mp4" in run["error"] and "not a readable" in run["error"]


async def test_a_spec_for_an_unknown_model_is_refused(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, tmp_path: Path
) -> None:
    """A spec naming a model no card describes is refused with the model's name; nothing is queued."""
    name = f"g-{uuid.uuid4().hex[:8]}"
    [spec] = specs(name, durations=(1,))
    spec = spec.model_copy(update={"model": "cosmos-predict9"})
    await announce(bus, [spec])
    with generate_client(nats, s3, tmp_path) as gen:
        for _ in range(50):
            resp = gen.post("/generations", json={"prompt_ids": [spec.prompt_id]}, headers=AUTH)
            if "unknown prompt" not in resp.text:
                break
            time.sleep(0.1)
    assert resp.status_code == 422 and "cosmos-predict9" in resp.text
