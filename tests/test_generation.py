"""From specs to exactly the videos asked for: generate service + GPU runner on the real servers."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from fastapi.testclient import TestClient

from tests.helpers.generation import AUTH, announce, generate_client, runner_client, specs, wait_runs
from worldmill.contracts.generation import VideoReady
from worldmill.contracts.subjects import EVENTS, event_subject
from worldmill.runtime.bus import Bus
from worldmill.runtime.media import probe
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.store import ObjectStore


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
        loads = runner.app.state.ctx.state["runner"].cache.stats.loads
    assert [r["state"] for r in runs] == ["ready"] * 3
    assert loads == 1  # one model load for three jobs of the same signature
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
    ready = [m async for _, m in bus.replay(EVENTS.name, event_subject("video.ready"))
             if isinstance(m, VideoReady) and m.prompt_id.startswith(name)]
    assert sorted(m.prompt_id for m in ready) == sorted(s.prompt_id for s in items)
    assert all(m.provenance.plan.expected.frames == m.plan.expected.frames for m in ready)


async def test_bad_requests_are_refused_before_any_gpu_time(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, tmp_path: Path
) -> None:
    """Unknown prompt ids and specs the model cannot meet are 422s naming them; nothing is queued."""
    name = f"g-{uuid.uuid4().hex[:8]}"
    good = specs(name, durations=(5,))
    bad = [s.model_copy(update={"prompt_id": f"{name}-bad", "model": "cosmos-predict2.5-2b",
                                "resolution": {"width": 1920, "height": 1080}}) for s in good]
    await announce(bus, good + bad)
    with generate_client(nats, s3, tmp_path) as gen:
        time.sleep(0.5)
        unknown = gen.post("/generations", json={"prompt_ids": ["nope-1"]}, headers=AUTH)
        assert unknown.status_code == 422 and "nope-1" in unknown.text
        refused = gen.post("/generations", json={"prompt_ids": [good[0].prompt_id, f"{name}-bad"]}, headers=AUTH)
        assert refused.status_code == 422
        assert f"{name}-bad" in refused.text and "resolution" in refused.text
        assert gen.get("/runs", params={"prompt_id": good[0].prompt_id}, headers=AUTH).json()["items"] == []


async def test_a_repeated_request_id_finds_its_runs(nats: NatsEndpoint, s3: S3Endpoint, bus: Bus,
                                                    tmp_path: Path) -> None:
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


async def test_cancel_queued_running_and_finished(nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, store: ObjectStore,
                                                  tmp_path: Path) -> None:
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
