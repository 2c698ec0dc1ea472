"""The augment service on the real servers: an upload becomes ``{name}_aug.mp4`` with controls, QA and lineage.

The whole pipeline runs for the main test: the augment service (poller on), the prompt service
(Transfer specs), generate, a GPU runner with the synthetic backend, and qa. Bad inputs need only
the augment service: they are refused before any spec exists.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import av
import pytest
from fastapi.testclient import TestClient

from tests.helpers.generation import AUTH, generate_client, runner_client, settings
from tests.helpers.polling import wait_for
from tests.helpers.video import write_video
from worldmill.augment.app import create_app as create_augment_app
from worldmill.augment.settings import AugmentSettings
from worldmill.contracts.augment import AugmentCompleted, AugmentRejected
from worldmill.contracts.envelope import wrap
from worldmill.contracts.keys import ARTIFACTS_BUCKET, INPUTS_BUCKET
from worldmill.contracts.objects import ObjectCreated
from worldmill.contracts.subjects import EVENTS, MINIO_NOTIFICATIONS, event_subject
from worldmill.prompt.app import create_app as create_prompt_app
from worldmill.qa.app import create_app as create_qa_app
from worldmill.runtime.bus import Bus
from worldmill.runtime.media import probe
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.settings import RuntimeSettings
from worldmill.runtime.store import ObjectStore

FIXTURES = Path(__file__).parent / "fixtures"


def augment_client(nats: NatsEndpoint, s3: S3Endpoint, tmp: Path, prefix: str, **extra: Any) -> TestClient:
    """The augment app, its poller watching only this test's prefix of wm-inputs."""
    fields = {
        **settings(nats, s3, tmp, "augment"),
        "poll_prefix": prefix,
        "poll_interval_s": 0.3,
        "settle_s": 0.5,
        **extra,
    }
    return TestClient(create_augment_app(AugmentSettings(**fields)))


def of_input(aug: TestClient, key: str, bucket: str = INPUTS_BUCKET) -> list[dict[str, Any]]:
    """The augmentations of one input."""
    resp = aug.get("/augmentations", params={"input": f"{bucket}/{key}"}, headers=AUTH)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["items"])


def settled(aug: TestClient, key: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """The single augmentation of ``key`` once it is passed, failed or rejected."""
    items = wait_for(
        lambda: of_input(aug, key),
        lambda i: len(i) == 1 and i[0]["state"] in ("passed", "failed", "rejected"),
        timeout_s,
    )
    return dict(items[0])


@pytest.fixture
def pipeline(nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    """Every service an augmentation passes through, and this test's inputs prefix."""
    prefix = f"t-{uuid.uuid4().hex[:8]}/"
    with ExitStack() as stack:
        stack.enter_context(TestClient(create_prompt_app(RuntimeSettings(**settings(nats, s3, tmp_path, "prompt")))))
        stack.enter_context(generate_client(nats, s3, tmp_path))
        stack.enter_context(runner_client(nats, s3, tmp_path))
        stack.enter_context(TestClient(create_qa_app(RuntimeSettings(**settings(nats, s3, tmp_path, "qa")))))
        aug = stack.enter_context(augment_client(nats, s3, tmp_path, prefix))
        yield aug, prefix


async def test_an_upload_becomes_an_augmentation_with_its_frames_fps_controls_verdict_and_lineage(
    pipeline: tuple[TestClient, str], store: ObjectStore, bus: Bus, tmp_path: Path
) -> None:
    """Upload clip.mp4 (120 frames, 24 fps) → augmented/<prefix>clip_aug.mp4 with 120 frames at 24 fps, passed."""
    aug, prefix = pipeline
    video = write_video(tmp_path / "clip.mp4", width=64, height=48, fps=24, frames=120, seed=7)
    await store.put_bytes(INPUTS_BUCKET, f"{prefix}clip.json", json.dumps({"tier": "480"}).encode())
    await store.put_file(INPUTS_BUCKET, f"{prefix}clip.mp4", video, content_type="video/mp4")
    done = settled(aug, f"{prefix}clip.mp4", timeout_s=180)
    assert done["state"] == "passed", done
    assert done["requested_by"] == "upload:poller" and done["qa_passed"] is True
    assert done["output"]["key"] == f"augmented/{prefix}clip_aug.mp4"
    out = tmp_path / "out.mp4"
    await store.download(ARTIFACTS_BUCKET, done["output"]["key"], out)
    info = probe(out)
    assert (info.frames, info.fps) == (120, 24)
    [edge] = done["controls"]
    assert (edge["type"], edge["source"], edge["weight"]) == ("edge", "computed", 1.0)
    assert edge["video"]["key"] == f"augmented/{prefix}clip_control_edge.mp4"
    control = tmp_path / "edge.mp4"
    await store.download(ARTIFACTS_BUCKET, edge["video"]["key"], control)
    assert probe(control).frames == 120
    lineage = json.loads(await store.get_bytes(ARTIFACTS_BUCKET, done["provenance"]["key"]))
    assert lineage["upload_event_id"] == done["upload_event_id"] is not None
    assert lineage["prompt_id"] == done["prompt_id"] and lineage["run_id"] == done["run_id"]
    assert lineage["asset_id"] == done["asset_id"] and lineage["plan"]["expected"]["frames"] == 120
    uploads = [
        e
        async for e, m in bus.replay(EVENTS.name, event_subject("object.created"))
        if isinstance(m, ObjectCreated) and m.key == f"{prefix}clip.mp4"
    ]
    assert [e.id for e in uploads] == [done["upload_event_id"]]
    completed = [
        m
        async for _, m in bus.replay(EVENTS.name, event_subject("augment.completed"))
        if isinstance(m, AugmentCompleted) and m.augmentation.augmentation_id == done["augmentation_id"]
    ]
    assert len(completed) == 1 and completed[0].augmentation.state == "passed"
    history = aug.get(f"/augmentations/{done['augmentation_id']}/history", headers=AUTH).json()
    assert [h["state"] for h in history] == ["received", "queued", "generated", "passed"]


def _no_frames(path: Path) -> Path:
    """An MP4 with a video stream header and not one frame."""
    container = av.open(str(path), mode="w")
    stream = container.add_stream("libx264", rate=24)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()  # writes the header even though no frame follows
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def _bad_inputs(prefix: str, tmp: Path) -> dict[str, tuple[bytes | Path, str]]:
    short = write_video(tmp / "short.mp4", width=64, height=48, fps=24, frames=24, seed=1)
    long = write_video(tmp / "long.mp4", width=64, height=48, fps=24, frames=48, seed=2)
    small = write_video(tmp / "small.mp4", width=32, height=24, fps=24, frames=24, seed=3)
    return {
        f"{prefix}notes.txt": (b"not a video", "is not a video"),
        f"{prefix}empty.mp4": (b"", "is empty (0 bytes)"),
        f"{prefix}garbage.mp4": (bytes(range(256)) * 8, "is not a readable video"),
        f"{prefix}noframes.mp4": (_no_frames(tmp / "noframes.mp4"), "has no video stream"),
        f"{prefix}pair/depth.mp4": (short, ""),  # the control of pair/clip.mp4, with fewer frames
        f"{prefix}pair/clip.mp4": (long, "has 24 frames, the input has 48"),
        f"{prefix}sized/clip_seg.mp4": (small, ""),  # the control of sized/clip.mp4, smaller
        f"{prefix}sized/clip.mp4": (short, "is 32×24, the input is 64×48"),
    }


async def test_bad_uploads_are_rejected_with_the_field_and_the_rule(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, store: ObjectStore, tmp_path: Path
) -> None:
    """Non-video, empty, garbage, no frames, and control videos whose frame count or size differs: each refused."""
    prefix = f"t-{uuid.uuid4().hex[:8]}/"
    cases = _bad_inputs(prefix, tmp_path)
    for key, (content, _) in cases.items():  # in order: each control before its video
        if isinstance(content, Path):
            await store.put_file(INPUTS_BUCKET, key, content)
        else:
            await store.put_bytes(INPUTS_BUCKET, key, content)
    with augment_client(nats, s3, tmp_path, prefix) as aug:
        results = {key: settled(aug, key) for key, (_, rule) in cases.items() if rule}
        controls = of_input(aug, f"{prefix}pair/depth.mp4")
    for key, (_, rule) in cases.items():
        if not rule:
            continue
        assert results[key]["state"] == "rejected", results[key]
        assert rule in results[key]["reason"], (key, results[key]["reason"])
    assert results[f"{prefix}pair/clip.mp4"]["reason"].startswith("controls.depth:")
    assert controls == []  # a control file is not an input of its own
    rejected = [
        m
        async for _, m in bus.replay(EVENTS.name, event_subject("augment.rejected"))
        if isinstance(m, AugmentRejected) and m.input_key.startswith(prefix)
    ]
    assert len(rejected) == 6 and {m.field for m in rejected} == {"input", "controls.depth", "controls.seg"}
    assert results[f"{prefix}sized/clip.mp4"]["reason"].startswith("controls.seg:")


async def test_requests_with_bad_parameters_are_refused_before_anything_is_stored(
    nats: NatsEndpoint, s3: S3Endpoint, store: ObjectStore, tmp_path: Path
) -> None:
    """Weights outside 0–1 or all zero, unknown controls, odd keys, missing objects, missing depth files."""
    prefix = f"t-{uuid.uuid4().hex[:8]}/"
    video = write_video(tmp_path / "v.mp4", width=64, height=48, fps=24, frames=12)
    await store.put_file(INPUTS_BUCKET, f"{prefix}v.mp4", video)
    base = {"inputs": [{"bucket": INPUTS_BUCKET, "key": f"{prefix}v.mp4"}]}
    with augment_client(nats, s3, tmp_path, prefix, poll=False) as aug:
        bad_params = {
            "above-1": {"controls": [{"type": "edge", "weight": 1.2}]},
            "all-zero": {"controls": [{"type": "edge", "weight": 0}, {"type": "vis", "weight": 0}]},
            "unknown": {"controls": [{"type": "normals", "weight": 1}]},
        }
        refused = {
            name: aug.post("/augmentations", json={**base, "params": p}, headers=AUTH) for name, p in bad_params.items()
        }
        nothing = aug.post("/augmentations", json={"inputs": []}, headers=AUTH)
        odd = aug.post(
            "/augmentations", json={"inputs": [{"bucket": INPUTS_BUCKET, "key": f"{prefix}../v.mp4"}]}, headers=AUTH
        )
        missing = aug.post(
            "/augmentations", json={"inputs": [{"bucket": INPUTS_BUCKET, "key": f"{prefix}no.mp4"}]}, headers=AUTH
        )
        depth = aug.post(
            "/augmentations", json={**base, "params": {"controls": [{"type": "depth", "weight": 1}]}}, headers=AUTH
        )
        depth_id = depth.json()["outcomes"][0]["augmentation_id"]
        depth_done = wait_for(
            lambda: aug.get(f"/augmentations/{depth_id}", headers=AUTH).json(), lambda a: a["state"] == "rejected"
        )
        listed = aug.get("/augmentations", params={"input": f"{INPUTS_BUCKET}/{prefix}v.mp4"}, headers=AUTH).json()
    for name, resp in refused.items():
        assert resp.status_code == 422, (name, resp.text)
        assert "controls" in resp.text, (name, resp.text)
    assert "weight above 0" in refused["all-zero"].text and "'edge', 'depth', 'seg' or 'vis'" in refused["unknown"].text
    assert nothing.status_code == 422 and "inputs" in nothing.text
    assert odd.status_code == 202 and odd.json()["outcomes"][0]["outcome"] == "rejected"
    assert "input.key" in odd.json()["outcomes"][0]["reason"]
    assert missing.json()["outcomes"][0]["outcome"] == "rejected" and "does not exist" in missing.text
    assert depth_done["reason"].startswith("controls.depth:") and "needs a model" in depth_done["reason"]
    assert len(listed["items"]) == 1  # only the depth request: the refused ones stored nothing


async def test_the_same_upload_notified_twice_is_one_augmentation_and_minio_events_are_normalised(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, store: ObjectStore, tmp_path: Path
) -> None:
    """A MinIO notification (the documented shape) and the poller's event for one upload: one augmentation."""
    prefix = f"t-{uuid.uuid4().hex[:8]}/"
    key = f"{prefix}day 1/clipé.mp4"
    video = write_video(tmp_path / "v.mp4", width=64, height=48, fps=24, frames=12)
    ref = await store.put_file(INPUTS_BUCKET, key, video, content_type="video/mp4")
    stat = await store.stat(INPUTS_BUCKET, key)
    notification = json.loads((FIXTURES / "minio_put_event.json").read_text())
    record = copy.deepcopy(notification["Records"][0])
    record["s3"]["object"].update({"key": quote_plus(key), "size": ref.size, "eTag": stat.etag})
    notification.update({"Key": f"{INPUTS_BUCKET}/{key}", "Records": [record]})
    payload = json.dumps(notification).encode()
    with augment_client(nats, s3, tmp_path, prefix, poll=False) as aug:
        await bus.publish_raw(MINIO_NOTIFICATIONS, payload, {})
        await bus.publish_raw(MINIO_NOTIFICATIONS, payload, {})  # MinIO retried: the same sequencer and etag
        first = wait_for(lambda: of_input(aug, key), lambda items: len(items) == 1)
    with augment_client(nats, s3, tmp_path, prefix, poll=True) as aug:  # the poller finds the same upload
        time.sleep(2.0)
        after = of_input(aug, key)
    assert first[0]["requested_by"] == "upload:minio"
    assert len(after) == 1 and after[0]["augmentation_id"] == first[0]["augmentation_id"]
    normalised = [
        m
        async for _, m in bus.replay(EVENTS.name, event_subject("object.created"))
        if isinstance(m, ObjectCreated) and m.key == key
    ]
    assert {m.origin for m in normalised} == {"minio", "poller"}
    assert all((m.bucket, m.size, m.etag) == (INPUTS_BUCKET, ref.size, stat.etag) for m in normalised)


async def test_a_control_file_uploaded_just_after_its_video_is_used(
    nats: NatsEndpoint, s3: S3Endpoint, store: ObjectStore, tmp_path: Path
) -> None:
    """A sync in name order uploads clip.mp4 before clip_depth.mp4: the settle time lets the depth file count."""
    prefix = f"t-{uuid.uuid4().hex[:8]}/"
    video = write_video(tmp_path / "clip.mp4", width=64, height=48, fps=24, frames=12, seed=1)
    depth = write_video(tmp_path / "depth.mp4", width=64, height=48, fps=24, frames=12, seed=2)
    with augment_client(nats, s3, tmp_path, prefix, settle_s=3.0) as aug:
        await store.put_file(INPUTS_BUCKET, f"{prefix}clip.mp4", video)
        time.sleep(1.0)
        await store.put_file(INPUTS_BUCKET, f"{prefix}clip_depth.mp4", depth)
        queued = wait_for(
            lambda: of_input(aug, f"{prefix}clip.mp4"),
            lambda items: len(items) == 1 and items[0]["state"] != "received",
            timeout_s=30,
        )
    controls = {c["type"]: c for c in queued[0]["controls"]}
    assert queued[0]["state"] == "queued"
    assert set(controls) == {"depth"} and controls["depth"]["source"] == "provided"
    assert controls["depth"]["video"]["key"] == f"augmented/{prefix}clip_control_depth.mp4"


async def test_an_augmentation_no_configured_backend_can_run_is_rejected_with_the_reason(
    nats: NatsEndpoint, s3: S3Endpoint, store: ObjectStore, tmp_path: Path
) -> None:
    """Edge + blur on a GPU deployment (diffusers: one controlnet): refused at planning, the augmentation says why."""
    prefix = f"t-{uuid.uuid4().hex[:8]}/"
    video = write_video(tmp_path / "clip.mp4", width=64, height=48, fps=24, frames=48, seed=3)
    sidecar = {"tier": "480", "controls": [{"type": "edge", "weight": 0.7}, {"type": "vis", "weight": 0.3}]}
    await store.put_bytes(INPUTS_BUCKET, f"{prefix}clip.json", json.dumps(sidecar).encode())
    await store.put_file(INPUTS_BUCKET, f"{prefix}clip.mp4", video, content_type="video/mp4")
    with ExitStack() as stack:
        stack.enter_context(TestClient(create_prompt_app(RuntimeSettings(**settings(nats, s3, tmp_path, "prompt")))))
        stack.enter_context(generate_client(nats, s3, tmp_path, backends=("diffusers", "synthetic")))
        # Jobs other tests left queued (single-control ones this generate service accepts) run here, not later.
        stack.enter_context(runner_client(nats, s3, tmp_path))
        aug = stack.enter_context(augment_client(nats, s3, tmp_path, prefix))
        done = settled(aug, f"{prefix}clip.mp4", timeout_s=120)
    assert done["state"] == "rejected", done
    assert done["reason"].startswith("controls:"), done["reason"]
    assert "2 controls (edge+vis)" in done["reason"] and "mixes at most 1" in done["reason"]
    assert done["run_id"] is None and done["output"] is None


async def test_a_control_video_named_in_the_request_is_used_and_checked(
    nats: NatsEndpoint, s3: S3Endpoint, store: ObjectStore, tmp_path: Path
) -> None:
    """``controls[].video`` (any bucket) is the control used; a changed file or a missing one is refused by name."""
    prefix = f"t-{uuid.uuid4().hex[:8]}/"
    video = write_video(tmp_path / "clip.mp4", width=64, height=48, fps=24, frames=12, seed=4)
    depth = write_video(tmp_path / "depth.mp4", width=64, height=48, fps=24, frames=12, seed=5)
    await store.put_file(INPUTS_BUCKET, f"{prefix}clip.mp4", video)
    given = await store.put_file(ARTIFACTS_BUCKET, f"{prefix}elsewhere/depth-render.mp4", depth)
    wrong = given.model_copy(update={"sha256": "0" * 64}).model_dump(mode="json")
    gone = given.model_copy(update={"key": f"{prefix}elsewhere/none.mp4"}).model_dump(mode="json")

    def body(ref: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return {
            "inputs": [{"bucket": INPUTS_BUCKET, "key": f"{prefix}clip.mp4"}],
            "params": {"controls": [{"type": "depth", "weight": 1, "video": ref}], **kw},
        }

    with augment_client(nats, s3, tmp_path, prefix, poll=False) as aug:
        ids = {}
        for name, b in {
            "ok": body(given.model_dump(mode="json")),
            "wrong": body(wrong, prompt="another"),
            "gone": body(gone, prompt="a third"),
        }.items():
            resp = aug.post("/augmentations", json=b, headers=AUTH)
            assert resp.status_code == 202, resp.text
            ids[name] = resp.json()["outcomes"][0]["augmentation_id"]
        done = {
            name: wait_for(
                lambda i=i: aug.get(f"/augmentations/{i}", headers=AUTH).json(), lambda a: a["state"] != "received"
            )
            for name, i in ids.items()
        }
    assert done["ok"]["state"] == "queued", done["ok"]
    (control,) = done["ok"]["controls"]
    assert control["source"] == "provided" and control["video"]["sha256"] == given.sha256
    assert done["wrong"]["state"] == "rejected" and done["wrong"]["reason"].startswith("controls.depth.video:")
    assert "not the" in done["wrong"]["reason"] and given.sha256 in done["wrong"]["reason"]
    assert done["gone"]["state"] == "rejected" and "none.mp4 does not exist" in done["gone"]["reason"]


async def test_a_prefix_in_a_missing_bucket_and_an_oversized_requester_are_422_not_500(
    nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path
) -> None:
    """Found by fuzzing: NoSuchBucket answered 500, and ``requested_by`` had no length limit."""
    prefix = f"t-{uuid.uuid4().hex[:8]}/"
    with augment_client(nats, s3, tmp_path, prefix, poll=False) as aug:
        no_bucket = aug.post(
            "/augmentations", json={"prefix": {"bucket": "no-such-bucket-x", "prefix": ""}}, headers=AUTH
        )
        huge = aug.post(
            "/augmentations",
            json={"prefix": {"bucket": INPUTS_BUCKET, "prefix": prefix}, "requested_by": "x" * 200_000},
            headers=AUTH,
        )
    assert no_bucket.status_code == 422, no_bucket.text
    assert no_bucket.json()["detail"][0]["loc"] == ["prefix", "bucket"]
    assert "'no-such-bucket-x' does not exist" in no_bucket.text
    assert huge.status_code == 422 and "requested_by" in huge.text and "200" in huge.text


async def test_an_upload_event_with_a_hostile_key_is_rejected_at_once_with_a_trace(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, tmp_path: Path
) -> None:
    """``object.created`` with ``..``, a control character or ``//`` in the key: rejected for good, not retried."""
    prefix = f"t-{uuid.uuid4().hex[:8]}/"
    keys = [f"{prefix}../escape.mp4", f"{prefix}bell\x07.mp4", f"{prefix}a//b.mp4"]
    with augment_client(nats, s3, tmp_path, prefix, poll=False) as aug:
        for n, key in enumerate(keys):
            event = ObjectCreated(
                bucket=INPUTS_BUCKET, key=key, size=10, etag=f"e{n}", origin="api", event_time=datetime.now(UTC)
            )
            await bus.publish(wrap(event, source="/other/system"))
        found = {key: wait_for(lambda k=key: of_input(aug, k), lambda items: len(items) == 1)[0] for key in keys}
        nacked = {c.spec.durable: c.stats.nacked for c in aug.app.state.ctx.consumers}
    for aug_record in found.values():
        assert aug_record["state"] == "rejected", aug_record
        assert aug_record["reason"].startswith("input.key: object key"), aug_record["reason"]
    rejected = [
        m
        async for _, m in bus.replay(EVENTS.name, event_subject("augment.rejected"))
        if isinstance(m, AugmentRejected) and m.input_key in keys
    ]
    assert sorted(m.input_key for m in rejected) == sorted(keys) and {m.field for m in rejected} == {"input.key"}
    assert sum(nacked.values()) == 0, nacked  # refused at the first delivery, never retried as if transient
