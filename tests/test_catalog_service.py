"""The catalog service for real: events from NATS, presigned links to SeaweedFS, HTTP API, rebuild, SSE."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.helpers.catalog_events import dataset, family, ref
from tests.helpers.generation import settings, specs
from tests.helpers.polling import wait_for
from tests.helpers.serve import serve
from worldmill.catalog.app import create_app
from worldmill.cli.main import app as cli_app
from worldmill.contracts.envelope import wrap
from worldmill.contracts.generation import JobProgress
from worldmill.runtime.bus import Bus
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.settings import RuntimeSettings
from worldmill.runtime.store import ObjectStore

AUTH = {"Authorization": "Bearer tok"}


def catalog(nats: NatsEndpoint, s3: S3Endpoint, tmp: Path, database_url: str | None = None) -> TestClient:
    fields = settings(nats, s3, tmp, "catalog")
    if database_url:
        fields["database_url"] = database_url
    return TestClient(create_app(RuntimeSettings(**fields)))


async def publish(nats: NatsEndpoint, envelopes: list[Any]) -> None:
    bus = Bus(nats.url, name="test-catalog")
    await bus.connect()
    try:
        for e in envelopes:
            await bus.publish(e)
    finally:
        await bus.close()


def wait_assets(client: TestClient, n: int, **params: Any) -> dict[str, Any]:
    def fetch() -> dict[str, Any]:
        page: dict[str, Any] = client.get("/assets", params={"limit": 500, **params}, headers=AUTH).json()
        return page

    page: dict[str, Any] = wait_for(fetch, lambda p: len(p["items"]) >= n)
    return page


def test_search_detail_rating_notes_report_and_rebuild(
    nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path, store_url: str
) -> None:
    url = store_url
    name = f"cat-svc-{store_url.split(':', maxsplit=1)[0].split('+', maxsplit=1)[0]}"
    events = dataset(name, 6, fail_every=3)
    with catalog(nats, s3, tmp_path, url) as client:
        asyncio.run(publish(nats, events))
        page = wait_assets(client, 6, manifest=name)
        # Events are applied in batches: an asset may be visible a moment before its verdict.
        page = wait_for(
            lambda: client.get("/assets", params={"limit": 500, "manifest": name}, headers=AUTH).json(),
            lambda p: len(p["items"]) >= 6 and all(i["qa_status"] != "pending" for i in p["items"]),
        )
        assert {i["qa_status"] for i in page["items"]} == {"passed", "failed"}
        assert len(wait_assets(client, 4, manifest=name, qa_status="passed")["items"]) == 4
        one = page["items"][0]
        assert one["video"]["url"].startswith(s3.url) and "X-Amz-Signature" in one["video"]["url"]
        ten = client.get("/assets", params={"manifest": name, "min_duration": 9, "max_duration": 11}, headers=AUTH)
        assert [i["duration_s"] for i in ten.json()["items"]] == [10.0, 10.0]  # 6 specs: 5, 10, 30 s twice

        detail = client.get(f"/assets/{one['asset_id']}", headers=AUTH).json()
        assert {f["check"] for f in detail["findings"]} == {"frame_count", "black_frames"}
        assert detail["provenance"]["backend"] == "synthetic"
        assert {"manifest", "spec", "run", "job", "qa"} <= {n["kind"] for n in detail["lineage_nodes"]}

        # Ratings 1–5 only; a rater's new rating replaces theirs; the mean is over raters.
        for bad in (0, 6, -1, 3.5, "five"):
            r = client.put(f"/assets/{one['asset_id']}/rating", json={"rating": bad}, headers=AUTH)
            assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "rating", bad
        assert (
            client.put(
                f"/assets/{one['asset_id']}/rating", json={"rating": 2, "rater": "ann"}, headers=AUTH
            ).status_code
            == 200
        )
        assert (
            client.put(f"/assets/{one['asset_id']}/rating", json={"rating": 4, "rater": "ann"}, headers=AUTH).json()[
                "rating"
            ]
            == 4
        )
        rated = client.put(f"/assets/{one['asset_id']}/rating", json={"rating": 5, "rater": "bob"}, headers=AUTH).json()
        assert rated["rating"] == 4.5 and rated["ratings"] == 2
        assert client.put("/assets/asset-nope/rating", json={"rating": 3}, headers=AUTH).status_code == 404
        text = "<script>alert('x')</script> \"quoted\" '; DROP TABLE notes; --"
        note = client.post(f"/assets/{one['asset_id']}/notes", json={"text": text}, headers=AUTH)
        assert note.status_code == 201
        assert client.get(f"/assets/{one['asset_id']}", headers=AUTH).json()["notes"][0]["text"] == text
        assert client.post(f"/assets/{one['asset_id']}/notes", json={"text": ""}, headers=AUTH).status_code == 422

        # Bad input on the search: page sizes, ranges, cursors, enums; and no token.
        for params, field in (
            ({"limit": 0}, "limit"),
            ({"limit": 501}, "limit"),
            ({"min_duration": 10, "max_duration": 5}, "min_duration"),
            ({"cursor": "garbage!"}, "cursor"),
            ({"qa_status": "great"}, "qa_status"),
            ({"q": "x" * 501}, "q"),
        ):
            r = client.get("/assets", params=params, headers=AUTH)
            assert r.status_code == 422, params
            assert field in json.dumps(r.json()["detail"]), (params, r.json())
        assert client.get("/assets").status_code == 401
        paths = client.get("/openapi.json", headers=AUTH).json()["paths"]
        assert {"/assets", "/assets/{asset_id}", "/assets/{asset_id}/rating", "/manifests/{name}/status"} <= set(paths)
        assert client.get("/gallery").status_code == 200  # the page itself holds no data

        status = client.get(f"/manifests/{name}/status", headers=AUTH).json()
        assert status["total"] == 6 and status["counts"]["passed"] == 4 and status["counts"]["failed"] == 2
        assert status["complete"] is False
        assert client.get("/manifests/no-such/status", headers=AUTH).status_code == 404

        # Rebuild from the stream: the same rows (ratings and notes are events too).
        before = client.get("/assets", params={"manifest": name, "limit": 500}, headers=AUTH).json()
        before_detail = client.get(f"/assets/{one['asset_id']}", headers=AUTH).json()
        counts = client.post("/rebuild", headers=AUTH).json()
        assert counts["assets"] >= 6
        after = client.get("/assets", params={"manifest": name, "limit": 500}, headers=AUTH).json()

        def strip(page):
            return [
                {k: v for k, v in i.items() if k not in ("video", "screenshots", "contact_sheet")}
                for i in page["items"]
            ]

        assert strip(after) == strip(before)
        after_detail = client.get(f"/assets/{one['asset_id']}", headers=AUTH).json()
        for key in ("findings", "provenance", "lineage_nodes", "lineage_edges", "ratings_by_rater", "notes"):
            assert after_detail[key] == before_detail[key], key


def test_presigned_links_serve_the_real_video(
    nats: NatsEndpoint, s3: S3Endpoint, store: ObjectStore, tmp_path: Path
) -> None:
    spec = specs("cat-links")[0]
    data_events = family(spec, video=ref(f"{store.test_bucket}-v/x.mp4"))
    video = data_events[-2].data.video
    from tests.helpers.video import write_video  # noqa: PLC0415

    path = write_video(tmp_path / "v.mp4", width=64, height=48, fps=24, frames=8)
    body = path.read_bytes()
    asyncio.run(store.put_bytes(video.bucket, video.key, body, content_type="video/mp4"))
    with catalog(nats, s3, tmp_path) as client:
        asyncio.run(publish(nats, data_events))
        item = wait_assets(client, 1, manifest="cat-links")["items"][0]
        got = httpx.get(item["video"]["url"], timeout=10)
        assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == hashlib.sha256(body).hexdigest()


def test_progress_reaches_the_live_stream(nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path) -> None:
    spec = specs("cat-sse")[0]
    events = family(spec)
    run_updated = events[1]
    with serve(create_app(RuntimeSettings(**settings(nats, s3, tmp_path, "catalog")))) as base:
        asyncio.run(publish(nats, [events[0], run_updated]))
        got: list[str] = []
        opened = threading.Event()

        def read() -> None:
            with httpx.stream("GET", f"{base}/progress/stream", headers=AUTH, timeout=30) as resp:
                opened.set()
                for line in resp.iter_lines():
                    got.append(line)
                    if line.startswith("data:") and '"fraction":0.6' in line:
                        return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert opened.wait(10)
        progress = JobProgress(
            job_id=f"{run_updated.data.run.run_id}-a1",
            run_id=run_updated.data.run.run_id,
            attempt=1,
            phase="generating",
            step=3,
            steps=5,
            fraction=0.6,
            runner="r9",
        )
        wait_for(lambda: httpx.get(f"{base}/runs/status", headers=AUTH).json()["active"], bool)
        asyncio.run(publish(nats, [wrap(progress, source="/test")]))
        reader.join(20)
        assert "event: progress" in got
        data = json.loads(next(line for line in got if line.startswith("data:") and "0.6" in line)[5:])
        assert (
            data["run_id"] == run_updated.data.run.run_id and data["phase"] == "generating" and data["runner"] == "r9"
        )
        status = httpx.get(f"{base}/runs/status", headers=AUTH).json()
        assert status["counts"] == {"queued": 1} and status["active"][0]["fraction"] == 0.6


def test_report_command_prints_the_table_and_writes_generation_status(
    nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "cat-report"
    events = dataset(name, 6, fail_every=2)[:-7]  # the last spec was never made: missing
    manifest_file = tmp_path / "m.yaml"
    manifest_file.write_text(f"name: {name}\n")
    with serve(create_app(RuntimeSettings(**settings(nats, s3, tmp_path, "catalog")))) as base:
        asyncio.run(publish(nats, events))
        monkeypatch.setenv("WM_CATALOG_URL", base)
        monkeypatch.setenv("WM_API_TOKEN", "tok")
        wait_for(
            lambda: httpx.get(f"{base}/assets", params={"manifest": name}, headers=AUTH).json()["items"],
            lambda items: len(items) == 5,
        )
        out = tmp_path / "generation_status.json"
        result = CliRunner().invoke(cli_app, ["report", str(manifest_file), "--json", str(out)])
        assert result.exit_code == 0, result.output
        assert f"{name}: 3/6 passed" in result.output
        assert "not passed yet" in result.output and "C01" in result.output
        status = json.loads(out.read_text())
        assert {c for i in status["items"] for c in i["failed_checks"]} == {"black_frames"}
        assert status["counts"] == {"passed": 3, "in_flight": 0, "unverified": 0, "failed": 2, "missing": 1}
        stats = CliRunner().invoke(cli_app, ["catalog", "stats"])
        assert stats.exit_code == 0 and "assets" in stats.output and "events" in stats.output
        check = CliRunner().invoke(cli_app, ["report", name, "--check"])
        assert check.exit_code == 1
        unknown = CliRunner().invoke(cli_app, ["report", "no-such-manifest"])
        assert unknown.exit_code == 2 and "no-such-manifest" in unknown.output
