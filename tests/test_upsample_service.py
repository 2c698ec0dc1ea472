"""The upsample service on the real servers (NATS, SeaweedFS, SQLite); respx stands in only for vLLM.

The prompt service runs next to it, so a rewrite is followed all the way: spec v1 → job → request to
the model → ``prompt.upsampled`` → spec v2 with its metadata → ``prompt.created`` v2.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import yaml
from fastapi.testclient import TestClient

from tests.helpers.generation import AUTH, generate_client, settings
from tests.helpers.polling import wait_for
from tests.helpers.video import write_video
from tests.test_upsampler import PIXTRAL, completion, context_error, prompt_tokens_of, sent_images
from worldmill.contracts.prompts import PromptCreated, PromptSpec
from worldmill.contracts.subjects import EVENTS, UPSAMPLE_JOBS, event_subject
from worldmill.contracts.upsample import PromptUpsampled, UpsampleInfo, UpsampleSkipped
from worldmill.prompt.app import create_app as create_prompt_app
from worldmill.prompt.service import PromptService
from worldmill.runtime.bus import Bus
from worldmill.runtime.docstore import DocumentStore
from worldmill.runtime.errors import PermanentError
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.settings import RuntimeSettings
from worldmill.runtime.store import ObjectStore
from worldmill.upsample import app as upsample_app
from worldmill.upsample.settings import UpsampleSettings

BASE = "http://vllm.test:8000/v1"
FINAL = ("done", "failed", "unavailable")


def rewrite_of(request: httpx.Request) -> str:
    """A plausible rewrite: longer than the prompt in the request, and different from it."""
    text = next(p["text"] for p in json.loads(request.content)["messages"][1]["content"] if p["type"] == "text")
    prompt = text.split("The prompt:", 1)[1].strip()
    return (
        f"Seen from a fixed camera mounted high on a wall: {prompt.rstrip('.')}, rendered in plain physical terms. "
        "Soft evening light falls from the left and casts long shadows across the concrete, leaves stir in a light "
        "breeze, and every object keeps its shape and size as it moves through the frame."
    )


def answers(request: httpx.Request) -> httpx.Response:
    """The vLLM stand-in's normal answer: a rewrite of whatever prompt it was sent."""
    return httpx.Response(200, json=completion(rewrite_of(request), prompt_tokens=prompt_tokens_of(request, PIXTRAL)))


@pytest.fixture
def vllm() -> Iterator[respx.MockRouter]:
    """respx in place of the vLLM server (only its host is mocked)."""
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


def upsample_client(nats: NatsEndpoint, s3: S3Endpoint, tmp: Path, **extra: Any) -> TestClient:
    """The upsample service app; ``base_url`` defaults to the respx vLLM (pass None for no server)."""
    fields = {
        **settings(nats, s3, tmp, "upsample"),
        "base_url": BASE,
        "backoff_base_s": 0.001,
        "max_retries": 1,
        **extra,
    }
    return TestClient(upsample_app.create_app(UpsampleSettings(**fields)))


def prompt_client(nats: NatsEndpoint, s3: S3Endpoint, tmp: Path) -> TestClient:
    """The prompt service app."""
    return TestClient(create_prompt_app(RuntimeSettings(**settings(nats, s3, tmp, "prompt"))))


def manifest(name: str, *, upsample: bool, auto_generate: bool = False, scenarios: int = 1) -> str:
    """A small text-to-world manifest on the synthetic model."""
    doc = {
        "name": name,
        "defaults": {
            "model": "synthetic",
            "fps": 24,
            "resolution": "64x48",
            "steps": 4,
            "upsample": upsample,
            "auto_generate": auto_generate,
        },
        "durations": [5],
        "series": [
            {
                "id": "C",
                "scenarios": [
                    {"id": f"C{i:02d}", "prompt": f"Scene {i}: a courier leaves a parcel at a blue front door."}
                    for i in range(1, scenarios + 1)
                ],
            }
        ],
    }
    return yaml.safe_dump(doc)


def submit(prompts: TestClient, text: str) -> list[str]:
    """Submit a manifest; the prompt ids it created."""
    resp = prompts.post("/manifests", json={"content": text}, headers=AUTH)
    assert resp.status_code == 201, resp.text
    return list(resp.json()["created"])


def latest(prompts: TestClient, pid: str) -> dict[str, Any]:
    """The prompt service's latest version of a spec."""
    resp = prompts.get(f"/prompts/{pid}", headers=AUTH)
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["latest"])


def status(ups: TestClient, pid: str) -> dict[str, Any]:
    """The upsample service's status of a spec ({} before there is one)."""
    resp = ups.get(f"/upsample/{pid}", headers=AUTH)
    return dict(resp.json()) if resp.status_code == 200 else {}


def queue(ups: TestClient, body: dict[str, Any]) -> httpx.Response:
    """POST /upsample, waiting out the moment specs take to reach the service."""
    return wait_for(
        lambda: ups.post("/upsample", json=body, headers=AUTH),
        lambda r: not (r.status_code == 422 and "unknown prompt" in r.text),
        timeout_s=15,
    )


async def events(bus: Bus, fact: str, kind: type[Any], pid: str) -> list[Any]:
    """Every ``fact`` event of one spec in the event stream, oldest first."""
    found = []
    async for _, m in bus.replay(EVENTS.name, event_subject(fact)):
        owner = m.spec.prompt_id if isinstance(m, PromptCreated) else getattr(m, "prompt_id", None)
        if isinstance(m, kind) and owner == pid:
            found.append(m)
    return found


async def test_an_input_video_spec_is_upsampled_from_its_own_1080p_frames_after_a_context_error(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, store: ObjectStore, tmp_path: Path, vllm: respx.MockRouter
) -> None:
    """1080p input → too-large first request answered 400 → smaller retry → spec v2 with every number recorded."""
    bucket = store.test_bucket  # type: ignore[attr-defined]
    name = f"ups-{uuid.uuid4().hex[:8]}"
    video = write_video(tmp_path / "porch.mp4", width=1920, height=1080, fps=24, frames=8)
    await store.put_file(bucket, f"{name}/porch.mp4", video)
    route = vllm.post("/chat/completions").mock(side_effect=[context_error(4400, 4100), answers])
    with prompt_client(nats, s3, tmp_path) as prompts, upsample_client(nats, s3, tmp_path) as ups:
        resp = prompts.post(
            "/input-specs", json={"bucket": bucket, "prefix": f"{name}/", "upsample": True}, headers=AUTH
        )
        assert resp.status_code == 200, resp.text
        [outcome] = resp.json()["outcomes"]
        pid = outcome["prompt_id"]
        v2 = wait_for(lambda: latest(prompts, pid), lambda s: s["version"] == 2)
        done = wait_for(lambda: status(ups, pid), lambda s: s.get("state") == "done")
        v1 = PromptSpec.model_validate(prompts.get(f"/prompts/{pid}", headers=AUTH).json()["history"][0])
    assert route.call_count == 2
    first, second = route.calls
    assert prompt_tokens_of(second.request, PIXTRAL) < prompt_tokens_of(first.request, PIXTRAL)
    assert prompt_tokens_of(second.request, PIXTRAL) + json.loads(second.request.content)["max_tokens"] <= 4096
    spec = PromptSpec.model_validate(v2)
    info = spec.upsampled
    assert info is not None and spec.previous_version == 1 and spec.upsample
    assert spec.prompt == rewrite_of(second.request) and spec.prompt != v1.prompt
    assert info.original_prompt == v1.prompt and info.source_version == 1
    assert info.upsampler_model == "mistralai/Pixtral-12B-2409" and info.profile == "pixtral-12b"
    assert info.attempts == 2 and info.context_retries == 1
    assert info.frames_sent == len(sent_images(second.request)) >= 1
    assert info.frame_resolution is not None
    assert (info.frame_resolution.width, info.frame_resolution.height) == sent_images(second.request)[0]
    assert info.tokens_used == prompt_tokens_of(second.request, PIXTRAL)
    assert info.hint is not None and info.hint.key == f"{name}/porch.mp4"
    assert v1.input is not None and info.hint.sha256 == v1.input.sha256
    assert (info.temperature, info.max_tokens) == (0.6, 300)
    assert done["info"]["cache_key"] == info.cache_key and done["prompt"] == spec.prompt
    upsampled = await events(bus, "prompt.upsampled", PromptUpsampled, pid)
    assert [(e.source_version, e.prompt) for e in upsampled] == [(1, spec.prompt)]
    created = await events(bus, "prompt.created", PromptCreated, pid)
    assert [e.spec.version for e in created] == [1, 2]


async def test_on_demand_rewrites_are_cached_forced_again_and_survive_a_manifest_resubmission(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, tmp_path: Path, vllm: respx.MockRouter
) -> None:
    """POST /upsample → v2; again → cached, no call, no v3; --force → a new call and v3; resubmit → no change."""
    texts = iter(["first", "second"])

    def numbered(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=completion(f"{rewrite_of(request)} Take {next(texts)}."))

    route = vllm.post("/chat/completions").mock(side_effect=numbered)
    text = manifest(f"ups-{uuid.uuid4().hex[:8]}", upsample=False)
    with prompt_client(nats, s3, tmp_path) as prompts, upsample_client(nats, s3, tmp_path) as ups:
        [pid] = submit(prompts, text)
        first = queue(ups, {"prompt_ids": [pid]})
        assert first.status_code == 202, first.text
        rid = first.json()["request_id"]
        page = wait_for(
            lambda: ups.get("/upsample", params={"request_id": rid}, headers=AUTH).json(),
            lambda p: p["counts"].get("done") == 1,
        )
        assert page["items"][0]["info"]["cached"] is False
        wait_for(lambda: latest(prompts, pid), lambda s: s["version"] == 2)
        again = queue(ups, {"prompt_ids": [pid]}).json()["request_id"]
        cached = wait_for(
            lambda: ups.get("/upsample", params={"request_id": again}, headers=AUTH).json(),
            lambda p: p["counts"].get("done") == 1,
        )
        assert cached["items"][0]["info"]["cached"] is True and route.call_count == 1
        forced = queue(ups, {"prompt_ids": [pid], "force": True}).json()["request_id"]
        wait_for(
            lambda: ups.get("/upsample", params={"request_id": forced}, headers=AUTH).json(),
            lambda p: p["counts"].get("done") == 1,
        )
        v3 = wait_for(lambda: latest(prompts, pid), lambda s: s["version"] == 3)
        resubmitted = prompts.post("/manifests", json={"content": text}, headers=AUTH).json()
        after = latest(prompts, pid)
    assert route.call_count == 2
    assert v3["prompt"].endswith("Take second.") and v3["previous_version"] == 2
    assert v3["upsampled"]["source_version"] == 1 and v3["upsampled"]["frames_sent"] == 0
    assert resubmitted["created"] == [] and resubmitted["unchanged"] == 1
    assert after["version"] == 3 and after["prompt"] == v3["prompt"]
    created = await events(bus, "prompt.created", PromptCreated, pid)
    assert [e.spec.version for e in created] == [1, 2, 3]  # the cached answer stored nothing new


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (httpx.Response(200, json=completion("   \n  ")), "empty"),
        (
            httpx.Response(200, json=completion("Scene 1: a courier leaves a parcel at a blue front door.")),
            "repeats the input",
        ),
        (httpx.Response(200, text="<html>Bad Gateway</html>"), "non-JSON"),
        (httpx.Response(200, json={"object": "chat.completion", "choices": []}), "empty"),
    ],
    ids=["whitespace", "repeat", "not-json", "no-choice"],
)
async def test_unusable_answers_leave_the_spec_as_it_was_and_say_why(
    nats: NatsEndpoint,
    s3: S3Endpoint,
    bus: Bus,
    tmp_path: Path,
    vllm: respx.MockRouter,
    answer: httpx.Response,
    reason: str,
) -> None:
    """A rejected answer: status failed with the reason, upsample.skipped(failed), spec still v1."""
    vllm.post("/chat/completions").mock(return_value=answer)
    with prompt_client(nats, s3, tmp_path) as prompts, upsample_client(nats, s3, tmp_path) as ups:
        [pid] = submit(prompts, manifest(f"ups-{uuid.uuid4().hex[:8]}", upsample=True))
        failed = wait_for(lambda: status(ups, pid), lambda s: s.get("state") in FINAL)
        spec = latest(prompts, pid)
    assert failed["state"] == "failed" and reason in failed["reason"]
    assert spec["version"] == 1 and spec["upsampled"] is None
    [skipped] = await events(bus, "upsample.skipped", UpsampleSkipped, pid)
    assert skipped.status == "failed" and reason in skipped.reason and skipped.version == 1


async def test_a_server_error_is_retried_and_then_succeeds(
    nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path, vllm: respx.MockRouter
) -> None:
    """502 then a good answer: the client retries within the same job and the spec gets its v2."""
    route = vllm.post("/chat/completions").mock(
        side_effect=[httpx.Response(502, json={"object": "error", "message": "Bad Gateway", "code": 502}), answers]
    )
    with prompt_client(nats, s3, tmp_path) as prompts, upsample_client(nats, s3, tmp_path) as ups:
        [pid] = submit(prompts, manifest(f"ups-{uuid.uuid4().hex[:8]}", upsample=True))
        v2 = wait_for(lambda: latest(prompts, pid), lambda s: s["version"] == 2)
        done = status(ups, pid)
    assert route.call_count == 2 and done["state"] == "done"
    assert v2["upsampled"]["attempts"] == 1 and v2["upsampled"]["tokens_used"] > 0


async def test_a_server_that_keeps_timing_out_fails_the_job_after_the_last_delivery(
    nats: NatsEndpoint,
    s3: S3Endpoint,
    bus: Bus,
    tmp_path: Path,
    vllm: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Timeouts are transient: the job is retried by the queue, and only its last delivery gives up."""
    monkeypatch.setattr(
        upsample_app, "UPSAMPLE_JOBS", UPSAMPLE_JOBS.model_copy(update={"max_deliver": 2, "backoff_base_s": 0.05})
    )
    route = vllm.post("/chat/completions").mock(side_effect=httpx.ReadTimeout("read timed out"))
    with prompt_client(nats, s3, tmp_path) as prompts, upsample_client(nats, s3, tmp_path, max_retries=0) as ups:
        [pid] = submit(prompts, manifest(f"ups-{uuid.uuid4().hex[:8]}", upsample=True))
        failed = wait_for(lambda: status(ups, pid), lambda s: s.get("state") in FINAL)
    assert route.call_count == 2  # one call per delivery (no client retries configured)
    assert failed["state"] == "failed" and "stayed unavailable" in failed["reason"]
    assert "ReadTimeout" in failed["reason"]
    [skipped] = await events(bus, "upsample.skipped", UpsampleSkipped, pid)
    assert skipped.status == "failed"


async def test_without_a_server_upsampling_is_unavailable_and_specs_keep_their_prompts(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, tmp_path: Path
) -> None:
    """No WM_UPSAMPLE_BASE_URL: 'unavailable' with the reason, POST /upsample 503, specs unchanged."""
    with prompt_client(nats, s3, tmp_path) as prompts, upsample_client(nats, s3, tmp_path, base_url=None) as ups:
        ids = submit(prompts, manifest(f"ups-{uuid.uuid4().hex[:8]}", upsample=True, scenarios=2))
        states = [wait_for(lambda p=pid: status(ups, p), lambda s: s.get("state") in FINAL) for pid in ids]
        server = ups.get("/upsample/server", headers=AUTH).json()
        refused = ups.post("/upsample", json={"prompt_ids": ids}, headers=AUTH)
        specs = [latest(prompts, pid) for pid in ids]
    assert [s["state"] for s in states] == ["unavailable", "unavailable"]
    assert all("WM_UPSAMPLE_BASE_URL" in s["reason"] for s in states)
    assert server["available"] is False and "WM_UPSAMPLE_BASE_URL" in server["reason"]
    assert refused.status_code == 503 and "unavailable" in refused.json()["detail"]
    assert [s["version"] for s in specs] == [1, 1]
    for pid in ids:
        [skipped] = await events(bus, "upsample.skipped", UpsampleSkipped, pid)
        assert skipped.status == "unavailable"


async def test_bad_requests_are_refused_with_the_field_and_the_rule(
    nats: NatsEndpoint, s3: S3Endpoint, store: ObjectStore, tmp_path: Path, vllm: respx.MockRouter
) -> None:
    """Unknown ids, hints that are not media or do not exist, empty lists and missing tokens."""
    bucket = store.test_bucket  # type: ignore[attr-defined]
    await store.put_bytes(bucket, "notes/readme.txt", b"hello")
    with prompt_client(nats, s3, tmp_path) as prompts, upsample_client(nats, s3, tmp_path) as ups:
        [pid] = submit(prompts, manifest(f"ups-{uuid.uuid4().hex[:8]}", upsample=False))
        queue(ups, {"prompt_ids": [pid], "hint": {"bucket": bucket, "key": "notes/readme.txt"}})
        unknown = ups.post("/upsample", json={"prompt_ids": [pid, "no-such-prompt"]}, headers=AUTH)
        not_media = ups.post(
            "/upsample", json={"prompt_ids": [pid], "hint": {"bucket": bucket, "key": "notes/readme.txt"}}, headers=AUTH
        )
        missing = ups.post(
            "/upsample", json={"prompt_ids": [pid], "hint": {"bucket": bucket, "key": "nope/a.mp4"}}, headers=AUTH
        )
        empty = ups.post("/upsample", json={"prompt_ids": []}, headers=AUTH)
        bad_id = ups.post("/upsample", json={"prompt_ids": ["has spaces"]}, headers=AUTH)
        no_token = ups.post("/upsample", json={"prompt_ids": [pid]})
        no_status = ups.get("/upsample/never-requested", headers=AUTH)
        spec = latest(prompts, pid)
    assert unknown.status_code == 422 and "no-such-prompt" in unknown.text and "prompt_ids" in unknown.text
    assert not_media.status_code == 422 and "hint" in not_media.text and "image or a video" in not_media.text
    assert missing.status_code == 422 and "does not exist" in missing.text
    assert empty.status_code == 422 and "prompt_ids" in empty.text
    assert bad_id.status_code == 422 and "prompt_ids" in bad_id.text
    assert no_token.status_code == 401
    assert no_status.status_code == 404
    assert spec["version"] == 1  # nothing was queued by the refused requests


@pytest.mark.parametrize("server", [True, False], ids=["upsampled", "unavailable"])
async def test_auto_generation_waits_for_the_upsampled_version_or_goes_on_with_the_original(
    nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path, vllm: respx.MockRouter, server: bool
) -> None:
    """auto_generate + upsample: one run, of v2 when a rewrite comes, of v1 when upsampling is unavailable."""
    vllm.post("/chat/completions").mock(side_effect=answers)
    extra = {} if server else {"base_url": None}
    with (
        prompt_client(nats, s3, tmp_path) as prompts,
        upsample_client(nats, s3, tmp_path, **extra) as ups,
        generate_client(nats, s3, tmp_path) as gen,
    ):
        [pid] = submit(prompts, manifest(f"ups-{uuid.uuid4().hex[:8]}", upsample=True, auto_generate=True))
        wait_for(lambda: status(ups, pid), lambda s: s.get("state") in FINAL)
        runs = wait_for(
            lambda: gen.get("/runs", params={"prompt_id": pid}, headers=AUTH).json()["items"],
            lambda items: len(items) >= 1,
        )
        time.sleep(1.0)  # a second run, if one were wrongly started for the other version, would show by now
        runs = gen.get("/runs", params={"prompt_id": pid}, headers=AUTH).json()["items"]
    assert len(runs) == 1
    assert runs[0]["prompt_version"] == (2 if server else 1)
    assert runs[0]["requested_by"] == "auto"


async def test_the_prompt_service_drops_stale_and_repeated_rewrites(tmp_path: Path) -> None:
    """A rewrite of a replaced version is dropped; the same rewrite twice is stored once; unknown specs fail."""
    docs = DocumentStore(f"sqlite:///{tmp_path / 'prompt.sqlite3'}")
    await docs.open()
    service = PromptService(docs=docs, bus=None)
    name = f"ups-{uuid.uuid4().hex[:8]}"
    [pid] = (await service.submit(manifest(name, upsample=True))).created
    v1 = (await service.get_prompt(pid)).latest  # type: ignore[union-attr]
    info = UpsampleInfo(
        upsampler_model="m",
        profile="pixtral-12b",
        source_version=1,
        original_prompt=v1.prompt,
        tokens_estimated=100,
        context_tokens=4096,
        frames_sent=0,
        temperature=0.6,
        top_p=0.95,
        max_tokens=300,
        cache_key="c" * 64,
        created_at=datetime.now(UTC),
    )
    rewrite = PromptUpsampled(prompt_id=pid, source_version=1, prompt="A much longer rewrite. " * 4, info=info)
    stored = await service.store_upsampled(rewrite)
    again = await service.store_upsampled(rewrite)
    assert stored is not None and stored.version == 2 and stored.upsampled == info
    assert again is None
    changed = manifest(name, upsample=True).replace("blue front door", "red front door")
    await service.submit(changed)
    stale = await service.store_upsampled(rewrite)
    detail = await service.get_prompt(pid)
    assert stale is None and detail is not None and detail.latest.version == 3 and detail.latest.upsampled is None
    with pytest.raises(PermanentError, match="unknown prompt spec"):
        await service.store_upsampled(rewrite.model_copy(update={"prompt_id": "no-such-spec"}))
    await docs.close()


async def test_a_batch_runs_concurrently_up_to_the_limit_and_no_further(
    nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path, vllm: respx.MockRouter
) -> None:
    """Seven specs with WM_UPSAMPLE_CONCURRENCY=3: the server sees three requests at once, never four."""
    in_flight = peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.4)
        in_flight -= 1
        return answers(request)

    route = vllm.post("/chat/completions").mock(side_effect=slow)
    with prompt_client(nats, s3, tmp_path) as prompts, upsample_client(nats, s3, tmp_path, concurrency=3) as ups:
        ids = submit(prompts, manifest(f"ups-{uuid.uuid4().hex[:8]}", upsample=False, scenarios=7))
        rid = queue(ups, {"prompt_ids": ids}).json()["request_id"]
        page = wait_for(
            lambda: ups.get("/upsample", params={"request_id": rid}, headers=AUTH).json(),
            lambda p: p["counts"].get("done") == 7,
        )
    assert route.call_count == 7 and len(page["items"]) == 7
    assert peak == 3
