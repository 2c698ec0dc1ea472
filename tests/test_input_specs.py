"""Transfer specs for input videos: real files in real S3, probed with PyAV, through the real app."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.helpers.video import write_video
from worldmill.contracts.base import ObjectRef, Resolution
from worldmill.contracts.cards import builtin_cards
from worldmill.prompt.app import create_app
from worldmill.prompt.input_specs import CATEGORIES, InputVideo, input_spec, nearest_resolution, tier_named
from worldmill.runtime.media import probe
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.settings import RuntimeSettings
from worldmill.runtime.store import ObjectStore

AUTH = {"Authorization": "Bearer tok"}


@pytest.mark.parametrize(
    ("size", "key", "expected"),
    [
        ((1920, 1080), "16,9", (1280, 704)),
        ((640, 480), "4,3", (960, 704)),
        ((720, 1280), "9,16", (704, 1280)),
        ((1000, 1000), "1,1", (960, 960)),
        ((2560, 1080), "16,9", (1280, 704)),
        ((1440, 1080), "4,3", (960, 704)),
    ],
)
def test_inputs_map_to_the_nearest_supported_aspect(size: tuple[int, int], key: str, expected: tuple[int, int]) -> None:
    """Each input size maps to the 720 tier size with the nearest aspect ratio."""
    tier = tier_named(builtin_cards()["cosmos-transfer2.5-2b"], "720")
    got_key, res = nearest_resolution(*size, tier)
    assert (got_key, (res.width, res.height)) == (key, expected)


def test_probe_reads_size_rate_and_exact_frames(tmp_path: Path) -> None:
    """probe() gives width, height, fps (as a fraction) and the exact frame count of a real file."""
    path = write_video(tmp_path / "a.mp4", width=320, height=240, fps=Fraction(30000, 1001), frames=37)
    info = probe(path)
    assert (info.width, info.height, info.frames) == (320, 240, 37)
    assert info.fps == Fraction(30000, 1001)
    assert info.codec == "h264"


@pytest.fixture
def client(nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path) -> Iterator[TestClient]:
    """The prompt service app on the real servers, with its own SQLite file."""
    settings = RuntimeSettings(
        service="prompt",
        nats_url=nats.url,
        s3_endpoint=s3.url,
        s3_access_key=SecretStr(s3.access_key),
        s3_secret_key=SecretStr(s3.secret_key),
        api_tokens=(SecretStr("tok"),),
        database_url=f"sqlite:///{tmp_path / 'p.sqlite3'}",
    )
    with TestClient(create_app(settings)) as c:
        yield c


async def test_a_spec_per_input_video_keeping_length_and_rate(
    client: TestClient, store: ObjectStore, tmp_path: Path
) -> None:
    """Videos become Transfer specs (edge 1.0 by default) with their frames and fps; bad files are skipped."""
    bucket = store.test_bucket  # type: ignore[attr-defined]
    wide = write_video(tmp_path / "wide.mp4", width=640, height=360, fps=30, frames=45, seed=1)
    tall = write_video(tmp_path / "tall.mp4", width=360, height=640, fps=24, frames=24, seed=2)
    await store.put_file(bucket, "cams/front/wide.mp4", wide)
    await store.put_file(bucket, "cams/front/tall.mp4", tall)
    await store.put_bytes(bucket, "cams/front/broken.mp4", b"this is not a video at all")
    await store.put_bytes(bucket, "cams/front/empty.mp4", b"")
    await store.put_bytes(bucket, "cams/front/notes.txt", b"ignored")
    resp = client.post(
        "/input-specs", json={"bucket": bucket, "prefix": "cams/", "template": "security-camera"}, headers=AUTH
    )
    assert resp.status_code == 200, resp.text
    outcomes = {o["key"]: o for o in resp.json()["outcomes"]}
    assert set(outcomes) == {f"cams/front/{n}.mp4" for n in ("wide", "tall", "broken", "empty")}
    assert outcomes["cams/front/broken.mp4"]["outcome"] == "skipped"
    assert "not a readable video" in outcomes["cams/front/broken.mp4"]["reason"]
    assert outcomes["cams/front/empty.mp4"]["reason"] == "the file is empty"
    spec = client.get(f"/prompts/{outcomes['cams/front/wide.mp4']['prompt_id']}", headers=AUTH).json()["latest"]
    assert (spec["target_frames"], spec["fps"], spec["duration_s"]) == (45, 30.0, 1.5)
    assert spec["resolution"] == Resolution(width=1280, height=704).model_dump()
    assert spec["mode"] == "transfer" and spec["model"] == "cosmos-transfer2.5-2b"
    assert spec["controls"] == [{"type": "edge", "weight": 1.0, "preset": None, "video": None}]
    assert spec["input"]["key"] == "cams/front/wide.mp4" and len(spec["input"]["sha256"]) == 64
    assert spec["metadata"]["input_width"] == 640 and spec["metadata"]["template"] == "security-camera"
    tall_spec = client.get(f"/prompts/{outcomes['cams/front/tall.mp4']['prompt_id']}", headers=AUTH).json()["latest"]
    assert tall_spec["resolution"] == {"width": 704, "height": 1280}


async def test_existing_specs_are_kept_unless_a_new_version_is_asked(
    client: TestClient, store: ObjectStore, tmp_path: Path
) -> None:
    """A second run keeps the spec; new_version with other controls adds version 2 linked to 1."""
    bucket = store.test_bucket  # type: ignore[attr-defined]
    await store.put_file(
        bucket, "in/clip.mp4", write_video(tmp_path / "c.mp4", width=320, height=240, fps=24, frames=12)
    )
    first = client.post("/input-specs", json={"bucket": bucket, "prefix": "in/"}, headers=AUTH).json()
    again = client.post("/input-specs", json={"bucket": bucket, "prefix": "in/"}, headers=AUTH).json()
    assert first["outcomes"][0]["outcome"] == "created"
    assert again["outcomes"][0]["outcome"] == "kept"
    newer = client.post(
        "/input-specs",
        headers=AUTH,
        json={
            "bucket": bucket,
            "prefix": "in/",
            "new_version": True,
            "template": "robot-arm",
            "controls": [{"type": "edge", "weight": 0.6}, {"type": "vis", "weight": 0.4, "preset": "medium"}],
        },
    ).json()
    assert newer["outcomes"][0]["outcome"] == "created"
    detail = client.get(f"/prompts/{newer['outcomes'][0]['prompt_id']}", headers=AUTH).json()
    assert [s["version"] for s in detail["history"]] == [1, 2]
    assert detail["latest"]["previous_version"] == 1
    assert [c["type"] for c in detail["latest"]["controls"]] == ["edge", "vis"]


def test_bad_requests_name_the_field(client: TestClient) -> None:
    """Unknown template, non-Transfer model or tier, and a weight over 1 are 422s naming the field."""
    bad_template = client.post("/input-specs", json={"template": "cooking"}, headers=AUTH)
    assert bad_template.status_code == 422 and "template" in str(bad_template.json())
    bad_model = client.post("/input-specs", json={"model": "cosmos-predict2.5-2b"}, headers=AUTH)
    assert bad_model.status_code == 422 and "not a Transfer model" in str(bad_model.json())
    bad_tier = client.post("/input-specs", json={"tier": "1080"}, headers=AUTH)
    assert bad_tier.status_code == 422 and "tier" in str(bad_tier.json())
    bad_weight = client.post("/input-specs", json={"controls": [{"type": "edge", "weight": 1.5}]}, headers=AUTH)
    assert bad_weight.status_code == 422 and "weight" in str(bad_weight.json())


def _input(width: int, height: int) -> InputVideo:
    ref = ObjectRef(bucket="wm-inputs", key="clips/a.mp4", size=1, sha256="a" * 64, content_type="video/mp4")
    return InputVideo(ref=ref, width=width, height=height, fps=24.0, frames=48)


@pytest.mark.parametrize(
    ("size", "expected", "kept"),
    [
        ((96, 64), (96, 64), True),  # the input's own size
        ((100, 70), (96, 64), True),  # rounded to the card's multiple of 16 (the planner records it)
        ((3840, 2160), (0, 0), False),  # larger than any tier: the largest tier, not a size no GPU holds
    ],
)
def test_without_a_tier_a_transfer_keeps_the_inputs_size_unless_no_tier_is_that_large(
    size: tuple[int, int], expected: tuple[int, int], kept: bool
) -> None:
    card = builtin_cards()["cosmos-transfer2.5-2b"]
    spec = input_spec(
        _input(*size), card=card, template=CATEGORIES["generic"], tier=None, controls=(), now=datetime.now(UTC)
    )
    largest = max(r.width * r.height for t in card.resolution_tiers for r in t.sizes.values())
    if kept:
        assert (spec.resolution.width, spec.resolution.height) == expected
        assert spec.input_resolution == Resolution(width=size[0], height=size[1])
    else:
        assert spec.resolution.width * spec.resolution.height <= largest
        assert spec.input_resolution is None and spec.metadata["resolution_tier"] != "input"
