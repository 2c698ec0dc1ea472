"""The prompt service through its real app: real NATS, real SeaweedFS, a real SQLite database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import SecretStr

from worldmill.contracts.prompts import ManifestAccepted, ManifestRejected, PromptCreated
from worldmill.contracts.subjects import EVENTS, event_subject
from worldmill.prompt.app import create_app
from worldmill.runtime.bus import Bus
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.settings import RuntimeSettings

AUTH = {"Authorization": "Bearer tok"}


def _manifest(name: str, *, prompt: str = "A delivery driver leaves a parcel at the door.") -> dict[str, object]:
    return {
        "name": name,
        "defaults": {"model": "synthetic", "fps": 24, "resolution": "320x192"},
        "durations": [5, 10, 30],
        "templates": {"door": "A {camera} view of {subject} at the front door."},
        "series": [
            {
                "id": "C",
                "risk_level": "medium",
                "tags": ["core"],
                "scenarios": [
                    {"id": "C01", "prompt": prompt, "tags": ["delivery"]},
                    {"id": "C02", "template": "door", "vars": {"camera": "doorbell", "subject": "a cat"}},
                ],
            },
            {
                "id": "R",
                "risk_level": "high",
                "tags": ["threat"],
                "variants": {5: 2, 10: 1, 30: 1},
                "scenarios": [
                    {"id": "R14", "prompt": "A person takes a parcel from the porch and runs."},
                ],
            },
        ],
    }


def _text(doc: dict[str, object]) -> str:
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture
def client(nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path) -> Iterator[TestClient]:
    """The prompt service app with its lifespan running."""
    settings = RuntimeSettings(
        service="prompt",
        nats_url=nats.url,
        s3_endpoint=s3.url,
        s3_access_key=SecretStr(s3.access_key),
        s3_secret_key=SecretStr(s3.secret_key),
        api_tokens=(SecretStr("tok"),),
        database_url=f"sqlite:///{tmp_path / 'prompt.sqlite3'}",
    )
    with TestClient(create_app(settings)) as c:
        yield c


async def _events(bus: Bus, fact: str, manifest: str) -> list[object]:
    out = []
    async for _, msg in bus.replay(EVENTS.name, event_subject(fact)):
        spec = getattr(msg, "spec", None)
        if getattr(msg, "manifest", None) == manifest or (spec is not None and spec.manifest == manifest):
            out.append(msg)
    return out


async def test_events_and_idempotent_resubmission(client: TestClient, bus: Bus) -> None:
    """Re-submitting an unchanged manifest creates nothing and publishes nothing new."""
    name = f"m-{uuid.uuid4().hex[:8]}"
    text = _text(_manifest(name))
    assert client.post("/manifests", json={"content": text}, headers=AUTH).status_code == 201
    again = client.post("/manifests", json={"content": text}, headers=AUTH)
    assert again.status_code == 200
    assert again.json()["created"] == [] and again.json()["unchanged"] == 10
    created = await _events(bus, "prompt.created", name)
    accepted = await _events(bus, "manifest.accepted", name)
    assert len(created) == 10 and all(isinstance(e, PromptCreated) for e in created)
    assert len(accepted) == 1 and isinstance(accepted[0], ManifestAccepted) and accepted[0].created == 10
    seeds = {(e.spec.scenario, e.spec.duration_s, e.spec.variant): e.spec.seed for e in created}  # type: ignore[attr-defined]
    assert len(set(seeds.values())) == 10 and 0 not in seeds.values()


async def test_an_edit_creates_new_versions_linked_to_the_old(client: TestClient, bus: Bus) -> None:
    """Changing one scenario's prompt adds version 2 of its three specs; the rest stay at version 1."""
    name = f"m-{uuid.uuid4().hex[:8]}"
    client.post("/manifests", json={"content": _text(_manifest(name))}, headers=AUTH)
    edited = client.post(
        "/manifests", json={"content": _text(_manifest(name, prompt="A courier waits at the gate."))}, headers=AUTH
    )
    assert edited.status_code == 201
    assert sorted(edited.json()["created"]) == sorted(f"{name}-C01-{d}s-v0" for d in (5, 10, 30))
    assert edited.json()["unchanged"] == 7
    detail = client.get(f"/prompts/{name}-C01-10s-v0", headers=AUTH).json()
    assert [s["version"] for s in detail["history"]] == [1, 2]
    assert detail["latest"]["previous_version"] == 1
    assert detail["history"][0]["prompt"].startswith("A delivery driver")
    assert detail["latest"]["prompt"] == "A courier waits at the gate."
    assert detail["latest"]["seed"] == detail["history"][0]["seed"]
    untouched = client.get(f"/prompts/{name}-R14-5s-v1", headers=AUTH).json()
    assert [s["version"] for s in untouched["history"]] == [1]
    assert len(await _events(bus, "prompt.created", name)) == 13


async def test_a_bad_manifest_is_refused_whole_with_every_problem(client: TestClient, bus: Bus) -> None:
    """422 lists each problem with path, line and rule; nothing is stored; manifest.rejected is published."""
    name = f"m-{uuid.uuid4().hex[:8]}"
    doc = _manifest(name)
    doc["durations"] = [5, 2.3]  # 2.3 s × 24 fps is not whole
    doc["defaults"] = {"model": "synthetic", "fps": 24, "resolution": "320x192", "guidance": 9}
    resp = client.post("/manifests", json={"content": _text(doc)}, headers=AUTH)
    assert resp.status_code == 422
    problems = resp.json()["detail"]
    rules = {p["type"] for p in problems}
    assert {"whole frames", "guidance out of range"} <= rules
    assert all(p["line"] for p in problems)
    assert client.get("/prompts", params={"manifest": name}, headers=AUTH).json()["items"] == []
    rejected = await _events(bus, "manifest.rejected", name)
    assert len(rejected) == 1 and isinstance(rejected[0], ManifestRejected)


def test_dry_run_returns_the_expansion_and_stores_nothing(client: TestClient) -> None:
    """dry_run shows every spec with exact frames and seeds, and stores none of them."""
    name = f"m-{uuid.uuid4().hex[:8]}"
    resp = client.post("/manifests", json={"content": _text(_manifest(name)), "dry_run": True}, headers=AUTH)
    assert resp.status_code == 200
    specs = resp.json()["specs"]
    assert len(specs) == 10
    assert {(s["duration_s"], s["target_frames"]) for s in specs} == {(5.0, 120), (10.0, 240), (30.0, 720)}
    assert client.get("/prompts", params={"manifest": name}, headers=AUTH).json()["items"] == []


def test_listing_filters_and_pages(client: TestClient) -> None:
    """GET /prompts filters by series, tag, risk, duration and model, and pages with a cursor."""
    name = f"m-{uuid.uuid4().hex[:8]}"
    client.post("/manifests", json={"content": _text(_manifest(name))}, headers=AUTH)

    def ids(**params: object) -> list[str]:
        page = client.get("/prompts", params={"manifest": name, **params}, headers=AUTH).json()
        return [s["prompt_id"] for s in page["items"]]

    assert len(ids(series="R")) == 4
    assert ids(tag="delivery") == sorted(f"{name}-C01-{d}s-v0" for d in (10, 30, 5))
    assert len(ids(risk="high", duration="5")) == 2
    assert len(ids(duration="30s")) == 3
    assert ids(model="cosmos-predict2.5-2b") == []
    first = client.get("/prompts", params={"manifest": name, "limit": 4}, headers=AUTH).json()
    second = client.get(
        "/prompts", params={"manifest": name, "limit": 4, "cursor": first["next_cursor"]}, headers=AUTH
    ).json()
    third = client.get(
        "/prompts", params={"manifest": name, "limit": 4, "cursor": second["next_cursor"]}, headers=AUTH
    ).json()
    pages = [s["prompt_id"] for p in (first, second, third) for s in p["items"]]
    assert len(pages) == 10 and len(set(pages)) == 10 and third["next_cursor"] is None
    bad = client.get("/prompts", params={"limit": 0}, headers=AUTH)
    assert bad.status_code == 422


def test_unknown_prompt_is_404_and_routes_need_the_token(client: TestClient) -> None:
    """A missing id is a 404 naming it; every route refuses a request without the token."""
    missing = client.get("/prompts/nope", headers=AUTH)
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    assert client.get("/prompts").status_code == 401
    assert client.post("/manifests", json={"content": "x"}).status_code == 401
    assert "/manifests" in client.get("/openapi.json", headers=AUTH).json()["paths"]


def test_coverage_is_the_catalogs_not_the_prompt_services(client: TestClient) -> None:
    """Coverage comes from the catalog's /manifests/{name}/status: the prompt service has no route for it."""
    assert not any(p.endswith("/coverage") for p in client.get("/openapi.json", headers=AUTH).json()["paths"])
    assert client.get("/manifests/anything/coverage", headers=AUTH).status_code == 404
