"""The qa service on the real servers: every video.ready gets a verdict; failures can regenerate."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers.generation import AUTH, announce, generate_client, runner_client, settings, specs, wait_runs
from tests.helpers.video import write_video
from worldmill.contracts.catalog import AssetDeleted
from worldmill.contracts.envelope import wrap
from worldmill.contracts.generation import GenerationRequested, VideoReady
from worldmill.contracts.subjects import EVENTS, event_subject
from worldmill.qa.app import create_app
from worldmill.runtime.bus import Bus
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.settings import RuntimeSettings
from worldmill.runtime.store import ObjectStore


@pytest.fixture
def qa(nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path) -> Iterator[TestClient]:
    """The qa service app on the real servers."""
    with TestClient(create_app(RuntimeSettings(**settings(nats, s3, tmp_path, "qa")))) as client:
        yield client


def _verdict(qa: TestClient, asset_id: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        resp = qa.get(f"/qa/{asset_id}", headers=AUTH)
        if resp.status_code == 200:
            return resp.json()
        time.sleep(0.2)
    raise AssertionError(f"no verdict for {asset_id}")


async def test_every_generated_video_gets_a_verdict_with_screenshots(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, store: ObjectStore, tmp_path: Path, qa: TestClient
) -> None:
    """Videos of 5 and 10 s pass every check; screenshots and a contact sheet are stored next to them."""
    name = f"q-{uuid.uuid4().hex[:8]}"
    items = specs(name, durations=(5, 10))
    await announce(bus, items)
    with generate_client(nats, s3, tmp_path) as gen, runner_client(nats, s3, tmp_path):
        for _ in range(50):
            resp = gen.post("/generations", json={"prompt_ids": [s.prompt_id for s in items]}, headers=AUTH)
            if resp.status_code == 202:
                break
            time.sleep(0.1)
        runs = wait_runs(gen, resp.json()["request_id"], 2)
    for run in runs:
        verdict = _verdict(qa, run["asset_id"])
        failed = [f for f in verdict["findings"] if not f["passed"] and f["severity"] == "error"]
        assert failed == [], failed
        checks = {f["check"] for f in verdict["findings"]}
        assert {"frames", "fps", "duration", "identical", "near_duplicate"} <= checks
        assert verdict["prompt_id"] == run["prompt_id"]
        assert sorted(s["key"].rsplit("/", 1)[1] for s in verdict["screenshots"]) == [
            "end.jpg",
            "middle.jpg",
            "start.jpg",
        ]
        assert await store.exists("wm-artifacts", verdict["contact_sheet"]["key"])
    assert qa.get("/qa/nope", headers=AUTH).status_code == 404


async def test_a_copied_video_fails_as_identical_and_asks_for_a_regeneration(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, tmp_path: Path, qa: TestClient
) -> None:
    """The copies of docs/background.md#security-cameras: the same bytes announced as a second variant fail 'identical' and are regenerated."""
    name = f"q-{uuid.uuid4().hex[:8]}"
    items = specs(name, durations=(5, 10))
    await announce(bus, items)
    with generate_client(nats, s3, tmp_path) as gen, runner_client(nats, s3, tmp_path):
        for _ in range(50):
            resp = gen.post("/generations", json={"prompt_ids": [items[0].prompt_id]}, headers=AUTH)
            if resp.status_code == 202:
                break
            time.sleep(0.1)
        [run] = wait_runs(gen, resp.json()["request_id"], 1)
    first = _verdict(qa, run["asset_id"])
    assert all(f["passed"] or f["severity"] != "error" for f in first["findings"])
    [original] = [
        m
        async for _, m in bus.replay(EVENTS.name, event_subject("video.ready"))
        if isinstance(m, VideoReady) and m.asset_id == run["asset_id"]
    ]
    copy = original.model_copy(
        update={"asset_id": f"asset-copy-{name}", "prompt_id": items[1].prompt_id, "run_id": f"run-copy-{name}"}
    )
    await bus.publish(wrap(copy, source="/test"))
    verdict = _verdict(qa, copy.asset_id)
    failed = {f["check"]: f for f in verdict["findings"] if not f["passed"]}
    assert "identical" in failed and run["asset_id"] in failed["identical"]["message"]
    assert "near_duplicate" in failed  # a sibling (same scenario) that looks the same
    regen = [
        m
        async for _, m in bus.replay(EVENTS.name, event_subject("generation.requested"))
        if isinstance(m, GenerationRequested) and m.requested_by == f"qa:{copy.asset_id}"
    ]
    assert len(regen) == 1 and regen[0].prompt_ids == (items[1].prompt_id,)


async def _generated(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, tmp_path: Path, qa: TestClient, spec: Any
) -> tuple[dict[str, Any], VideoReady]:
    """Generate one spec on the synthetic runner; its run and its video.ready, once QA has judged it."""
    with generate_client(nats, s3, tmp_path) as gen, runner_client(nats, s3, tmp_path):
        for _ in range(50):
            resp = gen.post("/generations", json={"prompt_ids": [spec.prompt_id]}, headers=AUTH)
            if resp.status_code == 202:
                break
            time.sleep(0.1)
        [run] = wait_runs(gen, resp.json()["request_id"], 1)
    _verdict(qa, run["asset_id"])
    [ready] = [
        m
        async for _, m in bus.replay(EVENTS.name, event_subject("video.ready"))
        if isinstance(m, VideoReady) and m.asset_id == run["asset_id"]
    ]
    return run, ready


async def test_the_same_bytes_from_a_rerun_of_the_same_spec_are_a_warning_not_a_failure(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, tmp_path: Path, qa: TestClient
) -> None:
    """A deterministic model run twice on one spec gives the same bytes: flagged as a warning, the verdict passes."""
    name = f"q-{uuid.uuid4().hex[:8]}"
    items = specs(name, durations=(5,))
    await announce(bus, items)
    run, original = await _generated(nats, s3, bus, tmp_path, qa, items[0])
    rerun = original.model_copy(update={"asset_id": f"asset-rerun-{name}", "run_id": f"run-rerun-{name}"})
    await bus.publish(wrap(rerun, source="/test"))
    verdict = _verdict(qa, rerun.asset_id)
    identical = next(f for f in verdict["findings"] if f["check"] == "identical")
    assert [f for f in verdict["findings"] if not f["passed"] and f["severity"] == "error"] == []
    assert identical["passed"] is False and identical["severity"] == "warning"
    assert "earlier run(s) of the same spec" in identical["message"] and run["asset_id"] in identical["message"]


async def test_an_audit_of_a_bucket_prefix_runs_in_the_background(
    nats: NatsEndpoint, s3: S3Endpoint, store: ObjectStore, tmp_path: Path, qa: TestClient
) -> None:
    """POST /qa/audit answers at once with an id; the report finds the copied duration variant."""
    bucket = store.test_bucket  # type: ignore[attr-defined]
    good = write_video(tmp_path / "a.mp4", width=64, height=48, fps=24, frames=120, seed=1)
    await store.put_file(bucket, "shoot/C01_5s.mp4", good)
    await store.put_file(
        bucket, "shoot/C01_10s.mp4", good
    )  # docs/background.md#security-cameras: a "10 s" copy of the 5 s clip
    bad = qa.post("/qa/audit", json={"url": "bucket-without-scheme"}, headers=AUTH)
    assert bad.status_code == 422 and "s3://" in bad.text
    started = qa.post("/qa/audit", json={"url": f"s3://{bucket}/shoot/"}, headers=AUTH)
    assert started.status_code == 202
    audit_id = started.json()["audit_id"]
    deadline = time.monotonic() + 60
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = qa.get(f"/qa/audits/{audit_id}", headers=AUTH).json()
        if body["state"] != "running":
            break
        time.sleep(0.2)
    assert body["state"] == "done" and body["ok"] is False
    text = json.dumps(body["report"])
    assert "C01_10s.mp4" in text and "identical" in text
    assert qa.get("/qa/audits/audit-nope", headers=AUTH).status_code == 404


def test_the_vlm_critic_is_asked_when_configured(nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path) -> None:
    """With WM_QA_VLM_BASE_URL set, the critic is built from settings; unset, there is none."""
    from worldmill.qa.app import critic_from  # noqa: PLC0415
    from worldmill.qa.settings import QaSettings  # noqa: PLC0415

    off = QaSettings(**settings(nats, s3, tmp_path, "qa"))
    assert critic_from(off) is None
    on = QaSettings(**settings(nats, s3, tmp_path, "qa"), vlm_base_url="http://vllm.test/v1", vlm_trials=2)
    critic = critic_from(on)
    assert critic is not None and critic.config.base_url == "http://vllm.test/v1" and critic.config.trials == 2


def test_the_regeneration_policy_is_bounded_and_configurable() -> None:
    """Only regenerable failures ask for a new run, at most max_regenerations times per spec."""
    from worldmill.contracts.qa import Finding, Severity  # noqa: PLC0415
    from worldmill.qa.policy import RegenerationPolicy  # noqa: PLC0415

    frames = Finding(check="frames", passed=False, severity=Severity.ERROR, measured=93, expected=240)
    flicker = Finding(check="flicker", passed=False, severity=Severity.ERROR)
    policy = RegenerationPolicy(max_regenerations=2)
    assert policy.wants([frames], done=0) and policy.wants([frames], done=1)
    assert not policy.wants([frames], done=2)
    assert not policy.wants([flicker], done=0)
    assert not RegenerationPolicy(max_regenerations=0).wants([frames], done=0)
    assert RegenerationPolicy(checks=frozenset({"flicker"})).wants([flicker], done=0)


def _reencode(src: Path, dest: Path, crf: int) -> Path:
    """The same picture in other bytes (another crf)."""
    import av  # noqa: PLC0415

    with av.open(str(src)) as inp, av.open(str(dest), mode="w") as out:
        vin = inp.streams.video[0]
        stream = out.add_stream("libx264", rate=vin.average_rate)
        stream.width, stream.height, stream.pix_fmt = vin.width, vin.height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": str(crf)}
        for frame in inp.decode(video=0):
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return dest


async def test_the_same_clip_under_another_id_fails_copy_of_naming_the_first_even_after_a_restart(
    nats: NatsEndpoint,
    s3: S3Endpoint,
    bus: Bus,
    store: ObjectStore,
    tmp_path: Path,
) -> None:
    """A re-encode (other bytes, same picture) delivered for another spec: copy_of fails; the index survives a restart."""
    name, other = f"q-{uuid.uuid4().hex[:8]}", f"r-{uuid.uuid4().hex[:8]}"
    items, others = specs(name, durations=(5,)), specs(other, durations=(5,))
    await announce(bus, items + others)
    fields = settings(nats, s3, tmp_path, "qa")
    with TestClient(create_app(RuntimeSettings(**fields))) as qa:
        run, original = await _generated(nats, s3, bus, tmp_path, qa, items[0])
        first = _verdict(qa, run["asset_id"])
        assert next(f for f in first["findings"] if f["check"] == "copy_of")["passed"] is True
        src = tmp_path / "original.mp4"
        await store.download(original.video.bucket, original.video.key, src)
        copy_file = _reencode(src, tmp_path / "copy.mp4", crf=40)
        ref = await store.put_file(original.video.bucket, f"copies/{name}/copy.mp4", copy_file)
        assert ref.sha256 != original.video.sha256
        copy = original.model_copy(
            update={
                "asset_id": f"asset-copy-{name}",
                "prompt_id": others[0].prompt_id,  # another scenario: not a sibling, not the same bytes
                "run_id": f"run-copy-{name}",
                "video": ref,
            }
        )
        await bus.publish(wrap(copy, source="/test"))
        verdict = _verdict(qa, copy.asset_id)
        checks = {f["check"]: f for f in verdict["findings"]}
        assert checks["identical"]["passed"] is True and checks["near_duplicate"]["passed"] is True
        found = checks["copy_of"]
        assert found["passed"] is False and found["severity"] == "error", found
        assert found["measured"][:2] == [run["asset_id"], "equal"] and run["asset_id"] in found["message"]
        assert found["measured"][-1] >= 0.8
        await bus.publish(wrap(copy, source="/test", event_id="a-redelivery"))  # the same event again
        service = qa.app.state.ctx.service.qa  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(service.index) < 2:
            time.sleep(0.1)
        time.sleep(1.0)
        assert len(service.index) == 2
    # A restart: the index is rebuilt from the stored fingerprints.
    with TestClient(create_app(RuntimeSettings(**fields))) as qa:
        service = qa.app.state.ctx.service.qa  # type: ignore[attr-defined]
        assert sorted(service.index.asset_ids()) == sorted([run["asset_id"], copy.asset_id])
        third = copy.model_copy(update={"asset_id": f"asset-third-{name}", "run_id": f"run-third-{name}"})
        await bus.publish(wrap(third, source="/test"))
        verdict = _verdict(qa, third.asset_id)
        found = next(f for f in verdict["findings"] if f["check"] == "copy_of")
        assert found["passed"] is False and found["severity"] == "error"
        assert run["asset_id"] in found["message"]  # the first one, known only from the store


async def test_a_video_made_from_another_asset_follows_it_without_being_a_copy(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, store: ObjectStore, tmp_path: Path
) -> None:
    """A Transfer of an uploaded asset (the asset is its input) may share its picture: copy_of passes, saying why."""
    name, other = f"d-{uuid.uuid4().hex[:8]}", f"e-{uuid.uuid4().hex[:8]}"
    items, others = specs(name, durations=(5,)), specs(other, durations=(5,))
    await announce(bus, items + others)
    with TestClient(create_app(RuntimeSettings(**settings(nats, s3, tmp_path, "qa")))) as qa:
        run, original = await _generated(nats, s3, bus, tmp_path, qa, items[0])
        src = tmp_path / "original.mp4"
        await store.download(original.video.bucket, original.video.key, src)
        ref = await store.put_file(
            original.video.bucket, f"derived/{name}.mp4", _reencode(src, tmp_path / "d.mp4", crf=38)
        )
        base = original.model_copy(update={"prompt_id": others[0].prompt_id, "video": ref})
        derived = base.model_copy(
            update={
                "asset_id": f"asset-derived-{name}",
                "run_id": f"run-derived-{name}",
                "provenance": original.provenance.model_copy(update={"inputs": (original.video,)}),
            }
        )
        await bus.publish(wrap(derived, source="/test"))
        found = next(f for f in _verdict(qa, derived.asset_id)["findings"] if f["check"] == "copy_of")
        assert found["passed"] is True and "follows only its own input" in found["message"], found
        assert run["asset_id"] in found["message"]
        stranger = base.model_copy(update={"asset_id": f"asset-stranger-{name}", "run_id": f"run-stranger-{name}"})
        await bus.publish(wrap(stranger, source="/test"))  # the same picture without that lineage: a copy
        found = next(f for f in _verdict(qa, stranger.asset_id)["findings"] if f["check"] == "copy_of")
        assert found["passed"] is False and found["severity"] == "error"


def test_copy_severity_another_spec_fails_a_rendition_or_the_same_input_warns() -> None:
    """A copy across specs is an error; the same spec re-rendered, or two augmentations of one input, warn."""
    from worldmill.contracts.qa import Severity  # noqa: PLC0415
    from worldmill.qa.policy import copy_severity  # noqa: PLC0415

    assert copy_severity("a-5s-v0", "b-5s-v0") is Severity.ERROR
    assert copy_severity("a-5s-v0", "a-5s-v0") is Severity.WARNING
    assert copy_severity("aug-1", "aug-2", shared_input=True) is Severity.WARNING
    assert copy_severity(None, None) is Severity.ERROR


async def test_a_deleted_asset_is_forgotten_so_its_copy_is_no_longer_a_copy_even_after_a_restart(
    nats: NatsEndpoint,
    s3: S3Endpoint,
    bus: Bus,
    store: ObjectStore,
    tmp_path: Path,
) -> None:
    """asset.deleted takes the fingerprint out of the index (and out of the index a restart builds)."""
    name, other = f"d-{uuid.uuid4().hex[:8]}", f"e-{uuid.uuid4().hex[:8]}"
    items, others = specs(name, durations=(5,)), specs(other, durations=(5,))
    await announce(bus, items + others)
    fields = settings(nats, s3, tmp_path, "qa")
    with TestClient(create_app(RuntimeSettings(**fields))) as qa:
        run, original = await _generated(nats, s3, bus, tmp_path, qa, items[0])
        _verdict(qa, run["asset_id"])
        service = qa.app.state.ctx.service.qa  # type: ignore[attr-defined]
        assert run["asset_id"] in service.index
        deleted = AssetDeleted(asset_id=run["asset_id"], reason="test", deleted_at=datetime.now(UTC))
        await bus.publish(wrap(deleted, source="/test"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and run["asset_id"] in service.index:
            time.sleep(0.1)
        assert run["asset_id"] not in service.index
        # The same picture for another spec is now nobody's copy.
        copy = original.model_copy(
            update={"asset_id": f"asset-after-{name}", "prompt_id": others[0].prompt_id, "run_id": f"run-after-{name}"}
        )
        await bus.publish(wrap(copy, source="/test"))
        found = next(f for f in _verdict(qa, copy.asset_id)["findings"] if f["check"] == "copy_of")
        assert found["passed"] is True, found
    with TestClient(create_app(RuntimeSettings(**fields))) as qa:
        service = qa.app.state.ctx.service.qa  # type: ignore[attr-defined]
        assert run["asset_id"] not in service.index.asset_ids()
        assert copy.asset_id in service.index.asset_ids()
