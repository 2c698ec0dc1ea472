"""The qa service on the real servers: every video.ready gets a verdict; failures can regenerate."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers.generation import AUTH, announce, generate_client, runner_client, settings, specs, wait_runs
from tests.helpers.video import write_video
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
    """seeds/000's copies: the same bytes announced as a second variant fail 'identical' and are regenerated."""
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


async def test_the_same_bytes_from_a_rerun_of_the_same_spec_are_a_warning_not_a_failure(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, tmp_path: Path, qa: TestClient
) -> None:
    """A deterministic model run twice on one spec gives the same bytes: flagged as a warning, the verdict passes."""
    name = f"q-{uuid.uuid4().hex[:8]}"
    items = specs(name, durations=(5,))
    await announce(bus, items)
    with generate_client(nats, s3, tmp_path) as gen, runner_client(nats, s3, tmp_path):
        for _ in range(50):
            resp = gen.post("/generations", json={"prompt_ids": [items[0].prompt_id]}, headers=AUTH)
            if resp.status_code == 202:
                break
            time.sleep(0.1)
        [run] = wait_runs(gen, resp.json()["request_id"], 1)
    _verdict(qa, run["asset_id"])
    [original] = [
        m
        async for _, m in bus.replay(EVENTS.name, event_subject("video.ready"))
        if isinstance(m, VideoReady) and m.asset_id == run["asset_id"]
    ]
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
    await store.put_file(bucket, "shoot/C01_10s.mp4", good)  # seeds/000: a "10 s" copy of the 5 s clip
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
