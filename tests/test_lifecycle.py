"""``worldmill search|show|delete|verify`` on the real catalog service, NATS and SeaweedFS.

Every asset's objects are really stored (video, provenance, a screenshot) under the keys the
pipeline uses, so a deletion and a verification act on real objects.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.helpers.catalog_events import family, manifest_accepted
from tests.helpers.generation import settings, specs
from tests.helpers.polling import wait_for
from tests.helpers.serve import serve
from worldmill.catalog.app import create_app
from worldmill.catalog.deletion import plan_deletion
from worldmill.catalog.verify import Expected, Stored, check_expected, find_orphans
from worldmill.cli.main import app as cli_app
from worldmill.contracts.catalog import DeletionRequest
from worldmill.contracts.keys import ARTIFACTS_BUCKET, provenance_key, screenshot_key, video_key
from worldmill.runtime.bus import Bus
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.settings import RuntimeSettings
from worldmill.runtime.store import ObjectStore

AUTH = {"Authorization": "Bearer tok"}
T = datetime(2026, 12, 1, tzinfo=UTC)


# --- pure ----------------------------------------------------------------------------------------


def row(asset_id: str, run_id: str, prompt_id: str, **kw: Any) -> dict[str, Any]:
    video = {"bucket": ARTIFACTS_BUCKET, "key": f"runs/{run_id}/attempt-1/video.mp4", "size": 3, "sha256": "a" * 64}
    return {"asset_id": asset_id, "run_id": run_id, "prompt_id": prompt_id, "attempt": 1, "video": video, **kw}


def test_a_plan_names_every_asset_run_and_object_and_what_blocks_it() -> None:
    assets = [row("asset-1", "run-1", "p1", qa_status="passed"), row("asset-2", "run-2", "p2")]
    runs = [{"run_id": "run-2", "prompt_id": "p2"}]
    request = DeletionRequest(assets=("asset-1", "asset-9"), runs=("run-2",), prompts=("p7",))
    plan = plan_deletion(request, assets=assets, runs=runs, prompts_known=set(), exports={"asset-1": ["exp-1"]})
    assert [a.asset_id for a in plan.assets] == ["asset-1", "asset-2"]
    assert plan.assets[0].objects == (f"s3://{ARTIFACTS_BUCKET}/runs/run-1/attempt-1/video.mp4",)
    assert plan.runs == ("run-2",)
    assert plan.unknown == ("asset asset-9", "prompt p7")
    assert plan.exports == ("exp-1",) and plan.blocked
    forced = plan_deletion(
        request.model_copy(update={"force": True}), assets=assets, runs=runs, prompts_known=set(), exports={}
    )
    assert not forced.blocked and forced.exports == ()


def test_verify_finds_missing_mismatched_and_orphaned_objects_and_spares_young_ones() -> None:
    video = Expected("s3://wm-artifacts/runs/r1/attempt-1/video.mp4", "asset-1", "video", 3, "a" * 64)
    shot = Expected("s3://wm-artifacts/qa/asset-1/start.jpg", "asset-1", "screenshot", 5, "b" * 64)
    problems = check_expected([video, shot], {video.uri: None, shot.uri: Stored(6, "b" * 64, None)})
    assert [(p.kind, p.uri) for p in problems] == [("missing", video.uri), ("mismatch", shot.uri)]
    assert problems[0].repair and not problems[1].repair  # a video can be remade; a screenshot is QA's
    old, young = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 12, 1, 11, 59, tzinfo=UTC)
    listed = [
        ("runs/r1/attempt-1/video.mp4", old),
        ("runs/ghost/attempt-1/video.mp4", old),
        ("runs/fresh/attempt-1/video.mp4", young),
        ("qa/asset-9/start.jpg", old),
        ("augmented/x_aug.mp4", old),
    ]
    orphans = find_orphans(
        listed,
        runs={"r1"},
        assets={"asset-1"},
        named=set(),
        now=datetime(2026, 12, 1, 12, tzinfo=UTC),
        min_age=timedelta(minutes=10),
    )
    assert [p.uri.split("wm-artifacts/")[1] for p in orphans] == [
        "runs/ghost/attempt-1/video.mp4",
        "qa/asset-9/start.jpg",
    ]


# --- on the real services ------------------------------------------------------------------------


@pytest.fixture
def catalog(
    nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, ObjectStore]]:
    app = create_app(RuntimeSettings(**settings(nats, s3, tmp_path, "catalog")))
    with serve(app) as url:
        monkeypatch.setenv("WM_CATALOG_URL", url)
        monkeypatch.setenv("WM_API_TOKEN", "tok")
        yield url, ObjectStore(s3.url, s3.access_key, s3.secret_key)


async def stored_dataset(nats: NatsEndpoint, store: ObjectStore, name: str, count: int, fail_every: int) -> list[Any]:
    """``count`` specs made into videos whose objects are really stored; every n-th fails QA."""
    items = specs(name, scenarios=max(1, (count + 2) // 3))[:count]
    events: list[Any] = [manifest_accepted(name, items)]
    for i, spec in enumerate(items):
        run_id, asset_id = f"run-{spec.prompt_id}"[:120], f"asset-{spec.prompt_id}-a1"[:120]
        video = await store.put_bytes(
            ARTIFACTS_BUCKET, video_key(run_id, 1), f"video {i}".encode(), content_type="video/mp4"
        )
        await store.put_bytes(ARTIFACTS_BUCKET, provenance_key(run_id, 1), b"{}", content_type="application/json")
        shot = await store.put_bytes(ARTIFACTS_BUCKET, screenshot_key(asset_id, "start"), f"jpeg {i}".encode())
        failed = bool(fail_every) and (i + 1) % fail_every == 0
        events += family(spec, passed=not failed, at=T, video=video, screenshots=(shot,))
    bus = Bus(nats.url, name="test-lifecycle")
    await bus.connect()
    try:
        for e in events:
            await bus.publish(e)
    finally:
        await bus.close()
    return items


async def clear_owned_objects(store: ObjectStore) -> None:
    for prefix in ("runs/", "qa/"):
        for info in await store.list(ARTIFACTS_BUCKET, prefix):
            await store.delete(ARTIFACTS_BUCKET, info.key)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli_app, list(args))


def asset_ids(url: str, name: str) -> set[str]:
    page = httpx.get(f"{url}/assets", params={"manifest": name, "limit": 100}, headers=AUTH).json()
    return {i["asset_id"] for i in page["items"]}


def exists(store: ObjectStore, key: str) -> bool:
    return asyncio.run(store.exists(ARTIFACTS_BUCKET, key))


def test_search_show_and_delete_with_dry_run_exports_and_lineage(
    catalog: tuple[str, ObjectStore], nats: NatsEndpoint
) -> None:
    url, store = catalog
    name = "life-del"
    items = asyncio.run(stored_dataset(nats, store, name, 4, fail_every=2))
    ids = [f"asset-{s.prompt_id}-a1" for s in items]
    runs = [f"run-{s.prompt_id}" for s in items]
    wait_for(lambda: asset_ids(url, name), lambda found: found == set(ids))
    wait_for(
        lambda: httpx.get(f"{url}/assets", params={"manifest": name, "qa_status": "failed"}, headers=AUTH).json(),
        lambda page: len(page["items"]) == 2,
    )

    found = invoke("search", f"manifest={name}&qa=failed", "--json")
    assert found.exit_code == 0, found.output
    assert {a["asset_id"] for a in json.loads(found.output)} == {ids[1], ids[3]}
    table = invoke("search", f"manifest={name}")
    assert table.exit_code == 0 and "4 asset(s)" in table.output
    assert invoke("search", "colour=red").exit_code == 2  # an unknown filter, named
    shown = invoke("show", ids[0])
    assert shown.exit_code == 0 and "lineage" in shown.output and runs[0] in shown.output
    assert invoke("show", "asset-nope").exit_code == 2

    # A dry run lists the lineage and deletes nothing.
    dry = invoke("delete", ids[0], "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would delete 1 asset(s)" in dry.output
    assert exists(store, video_key(runs[0], 1))

    # An asset an export holds is refused, then deleted with --force.
    sample = {"asset_id": ids[2], "key": "k", "shard": "s-000.tar", "bin": "b", "video_sha256": "c" * 64}
    export = {
        "export_id": "exp-life",
        "format": "webdataset",
        "destination": "/tmp/x",
        "selection": f"manifest={name}",
        "samples": [sample],
        "manifest_sha256": "d" * 64,
        "exported_at": T.isoformat(),
    }
    assert httpx.post(f"{url}/exports", json={"export": export}, headers=AUTH).status_code == 202
    blocked = invoke("delete", ids[2])
    assert blocked.exit_code == 2 and "exp-life" in blocked.output and "--force" in blocked.output
    assert exists(store, video_key(runs[2], 1))
    forced = invoke("delete", ids[2], "--force", "--reason", "leaked a face")
    assert forced.exit_code == 0, forced.output

    # Deleting an asset removes its attempt's objects and QA objects; deleting a spec removes its run too.
    deleted = invoke("delete", ids[0])
    assert deleted.exit_code == 0, deleted.output
    assert "deleted: 1 asset(s), 0 run(s), 3 object(s)" in " ".join(deleted.output.split())
    for key in (video_key(runs[0], 1), provenance_key(runs[0], 1), screenshot_key(ids[0], "start")):
        assert not exists(store, key), key
    by_spec = invoke("delete", items[3].prompt_id)
    assert by_spec.exit_code == 0 and "1 run(s)" in by_spec.output, by_spec.output
    assert not exists(store, video_key(runs[3], 1))
    assert exists(store, video_key(runs[1], 1))  # nothing else was touched
    assert asset_ids(url, name) == {ids[1]}
    assert httpx.get(f"{url}/assets/{ids[0]}", headers=AUTH).status_code == 404

    # The report lists the deleted specs as missing (generate --missing makes them again) ...
    status = httpx.get(f"{url}/manifests/{name}/status", headers=AUTH).json()
    states = {i["prompt_id"]: i["state"] for i in status["items"]}
    assert states[items[0].prompt_id] == "missing" and states[items[3].prompt_id] == "missing"
    assert states[items[1].prompt_id] == "failed"
    # ... and a rebuild from the event stream keeps them deleted (the deletions are events too).
    assert httpx.post(f"{url}/rebuild", headers=AUTH).status_code == 200
    assert asset_ids(url, name) == {ids[1]}

    unknown = invoke("delete", "asset-nope")
    assert unknown.exit_code == 2 and "asset-nope" in unknown.output
    assert invoke("delete").exit_code == 2


def test_verify_reports_and_fixes_what_the_catalog_and_the_store_disagree_on(
    catalog: tuple[str, ObjectStore], nats: NatsEndpoint
) -> None:
    url, store = catalog
    name = "life-verify"
    # The session's store holds other tests' objects, which this catalog does not know: start clean.
    asyncio.run(clear_owned_objects(store))
    items = asyncio.run(stored_dataset(nats, store, name, 3, fail_every=0))
    ids = [f"asset-{s.prompt_id}-a1" for s in items]
    runs = [f"run-{s.prompt_id}" for s in items]
    wait_for(lambda: asset_ids(url, name), lambda found: found == set(ids))
    clean = invoke("verify", "--min-orphan-age", "0")
    assert clean.exit_code == 0, clean.output

    asyncio.run(store.delete(ARTIFACTS_BUCKET, video_key(runs[0], 1)))  # lost behind the catalog's back
    asyncio.run(store.put_bytes(ARTIFACTS_BUCKET, screenshot_key(ids[1], "start"), b"another picture"))
    asyncio.run(store.put_bytes(ARTIFACTS_BUCKET, video_key("run-ghost", 1), b"nobody's"))

    young = invoke("verify", "--json")  # the orphan is new: a runner may still be uploading
    assert young.exit_code == 1
    kinds = sorted(p["kind"] for p in json.loads(young.output)["problems"])
    assert kinds == ["mismatch", "missing"]

    found = invoke("verify", "--min-orphan-age", "0", "--json")
    assert found.exit_code == 1
    problems = {(p["kind"], p["uri"].split("wm-artifacts/")[1]) for p in json.loads(found.output)["problems"]}
    assert problems == {
        ("missing", video_key(runs[0], 1)),
        ("mismatch", screenshot_key(ids[1], "start")),
        ("orphan", video_key("run-ghost", 1)),
    }

    fixed = invoke("verify", "--fix", "--min-orphan-age", "0", "--json")
    assert fixed.exit_code == 1  # the screenshot cannot be repaired here
    report = json.loads(fixed.output)
    assert report["fixed"] == 2
    assert not exists(store, video_key("run-ghost", 1))
    assert httpx.get(f"{url}/assets/{ids[0]}", headers=AUTH).status_code == 404
    assert asset_ids(url, name) == {ids[1], ids[2]}

    after = invoke("verify", "--min-orphan-age", "0", "--json")
    assert [p["kind"] for p in json.loads(after.output)["problems"]] == ["mismatch"]
