"""``worldmill.client`` against the real services over real HTTP (no mocks).

The prompt, generate, catalog and augment apps are served with uvicorn on loopback ports, QA and a
GPU runner with the synthetic backend consume from the session's real nats-server and SeaweedFS,
so runs really finish, QA really judges, and the catalog really presigns links.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers.generation import runner_client, settings
from tests.helpers.polling import wait_for
from tests.helpers.serve import serve
from tests.helpers.video import write_video
from worldmill.augment.app import create_app as create_augment_app
from worldmill.augment.settings import AugmentSettings
from worldmill.catalog.app import create_app as create_catalog_app
from worldmill.client import (
    AsyncWorldmill,
    ChecksumMismatchError,
    ConflictError,
    NotFoundError,
    RequestRejectedError,
    StoreConfig,
    UnauthorizedError,
    UnavailableError,
    Worldmill,
    parse_controls,
)
from worldmill.contracts.generation import RunRecord
from worldmill.generate.app import create_app as create_generate_app
from worldmill.generate.settings import GenerateSettings
from worldmill.prompt.app import create_app as create_prompt_app
from worldmill.qa.app import create_app as create_qa_app
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint, free_port
from worldmill.runtime.settings import RuntimeSettings

TOKEN = "tok"


def manifest(name: str, *, variants: int = 2) -> str:
    return f"""\
name: {name}
defaults: {{model: synthetic, fps: 24, resolution: 64x48, steps: 4}}
durations: [1]
variants: {variants}
series:
  - id: C
    scenarios:
      - id: C01
        prompt: a parcel at a door
"""


class Stack:
    def __init__(self, urls: dict[str, str], s3: S3Endpoint, prefix: str) -> None:
        self.urls = urls
        self.store = StoreConfig(s3.url, s3.access_key, s3.secret_key)
        self.prefix = prefix

    def client(self, **kw: Any) -> Worldmill:
        return Worldmill(urls=self.urls, token=TOKEN, store=self.store, poll_s=0.2, **kw)

    def aclient(self) -> AsyncWorldmill:
        return AsyncWorldmill(urls=self.urls, token=TOKEN, store=self.store, poll_s=0.2)


@pytest.fixture(scope="module")
def stack(nats: NatsEndpoint, s3: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("client-stack")
    prefix = f"client-{uuid.uuid4().hex[:8]}/"
    with ExitStack() as es:
        urls = {
            "prompt": es.enter_context(serve(create_prompt_app(RuntimeSettings(**settings(nats, s3, tmp, "prompt"))))),
            "generate": es.enter_context(
                serve(
                    create_generate_app(
                        GenerateSettings(**settings(nats, s3, tmp, "generate"), backends=("synthetic",))
                    )
                )
            ),
            "catalog": es.enter_context(
                serve(create_catalog_app(RuntimeSettings(**settings(nats, s3, tmp, "catalog"))))
            ),
        }
        es.enter_context(TestClient(create_qa_app(RuntimeSettings(**settings(nats, s3, tmp, "qa")))))
        es.enter_context(runner_client(nats, s3, tmp))
        aug = AugmentSettings(
            **settings(nats, s3, tmp, "augment"), poll_prefix=prefix, poll_interval_s=0.3, settle_s=0.5
        )
        urls["augment"] = es.enter_context(serve(create_augment_app(aug)))
        yield Stack(urls, s3, prefix)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_manifest_is_generated_waited_for_found_downloaded_and_reported(stack: Stack, tmp_path: Path) -> None:
    name = "client-flow"
    path = tmp_path / f"{name}.yaml"
    path.write_text(manifest(name))
    with stack.client() as wm:
        result = wm.submit_manifest(path)
        assert result.manifest == name and not result.dry_run
        assert sorted(result.created) == [f"{name}-C01-1s-v0", f"{name}-C01-1s-v1"]
        specs = list(wm.prompts(manifest=name))
        assert [s.prompt_id for s in specs] == [f"{name}-C01-1s-v0", f"{name}-C01-1s-v1"]
        assert {s.resolution.width for s in specs} == {64} and {s.model for s in specs} == {"synthetic"}
        detail = wm.prompt(specs[0].prompt_id)
        assert detail.latest.prompt == "a parcel at a door" and len(detail.history) == 1
        assert list(wm.prompts(manifest=name, page_size=1)) == specs  # every page is followed

        accepted = wm.generate(manifest=name, max_attempts=2)
        assert sorted(r.prompt_id for r in accepted.runs) == [s.prompt_id for s in specs]
        assert {r.max_attempts for r in accepted.runs} == {2}

        calls: list[tuple[int, int, list[RunRecord]]] = []
        runs = wm.wait(accepted, timeout=120, on_progress=lambda done, total, seen: calls.append((done, total, seen)))
        assert sorted(r.run_id for r in runs) == sorted(r.run_id for r in accepted.runs)
        assert {r.state for r in runs} == {"ready"}, [(r.run_id, r.state, r.error) for r in runs]
        dones = [c[0] for c in calls]
        assert dones == sorted(set(dones)) and dones[-1] == 2, dones  # strictly increasing, ends at the total
        assert {c[1] for c in calls} == {2}
        for done, _, seen in calls:  # each report is consistent with the runs it hands over
            assert done == sum(r.state in {"ready", "failed", "canceled", "lost"} for r in seen)
        # A run id or a request id can be waited for as well: already final, answered at once.
        assert [r.run_id for r in wm.wait(runs[0].run_id, timeout=5)] == [runs[0].run_id]
        assert len(wm.wait(accepted.request_id, timeout=5)) == 2
        listed = list(wm.runs(request_id=accepted.request_id, page_size=1))
        assert sorted(r.run_id for r in listed) == sorted(r.run_id for r in runs)
        one = wm.run(runs[0].run_id)
        assert one.state == "ready" and one.video is not None and one.asset_id is not None
        with pytest.raises(ConflictError) as finished:
            wm.cancel(one.run_id)
        assert finished.value.status_code == 409 and finished.value.service == "generate"

        # The catalog: both assets, with verdicts; detail; download (sha256 checked); the report.
        for r in runs:
            assert r.asset_id is not None
            wm.wait_for_asset(r.asset_id, timeout=60, verdict=True)
        found = list(wm.search(manifest=name))
        assert sorted(a.asset_id for a in found) == sorted(r.asset_id for r in runs if r.asset_id)
        assert {a.qa_status for a in found} <= {"passed", "failed"} and {a.width for a in found} == {64}
        assert list(wm.search(manifest=name, page_size=1)) == found
        assert list(wm.search(manifest=name, min_duration=5)) == []
        asset = wm.asset(one.asset_id)
        assert asset.asset.run_id == one.run_id and asset.asset.video is not None
        assert asset.asset.video.ref.sha256 == one.video.sha256
        assert asset.provenance is not None and asset.provenance["backend"] == "synthetic"

        target = wm.download(one.asset_id, tmp_path / "videos" / "one.mp4")
        assert target == tmp_path / "videos" / "one.mp4"
        assert sha256(target) == one.video.sha256 and target.stat().st_size == one.video.size
        folder = tmp_path / "folder"
        folder.mkdir()
        into = wm.download(one.asset_id, folder)
        assert into.parent == folder and into.name == Path(one.video.key).name and sha256(into) == one.video.sha256
        fresh = wm.download(one.asset_id, f"{tmp_path}/new-folder/")  # a trailing slash: a folder, made
        assert fresh == tmp_path / "new-folder" / Path(one.video.key).name and sha256(fresh) == one.video.sha256
        with pytest.raises(ChecksumMismatchError) as tampered:
            wm.download(one.asset_id, tmp_path / "bad.mp4", expected_sha256="0" * 64)
        assert tampered.value.actual == one.video.sha256 and tampered.value.expected == "0" * 64
        assert not (tmp_path / "bad.mp4").exists() and not list(tmp_path.glob(".bad.mp4*"))  # nothing left

        status = wm.status(name)
        assert status.manifest == name and status.total == 2
        assert sorted(i.prompt_id for i in status.items) == [s.prompt_id for s in specs]
        assert all(i.assets for i in status.items)
        assert status.counts.get("missing", 0) == 0
        assert wm.status(path).manifest == name  # a manifest file: its name is read from it

        # Delete one video (a dry run first): its spec is missing again; an unknown id is refused.
        plan = wm.delete(assets=[one.asset_id], dry_run=True)
        assert [a.asset_id for a in plan.assets] == [one.asset_id] and not plan.deleted
        assert wm.asset(one.asset_id).asset.asset_id == one.asset_id  # still there
        done = wm.delete(assets=[one.asset_id], reason="client test")
        assert done.deleted and done.objects_deleted >= 1
        with pytest.raises(NotFoundError):
            wm.asset(one.asset_id)
        assert wm.status(name).counts.get("missing", 0) == 1
        with pytest.raises(NotFoundError):
            wm.delete(assets=["asset-nope"])
        report = wm.verify(min_orphan_age_s=3600)
        assert all(p.asset_id != one.asset_id for p in report.problems)


async def test_the_async_client_quick_generates_one_prompt_and_finds_it(stack: Stack, tmp_path: Path) -> None:
    progress: list[tuple[int, int]] = []
    async with stack.aclient() as wm:
        quick = await wm.quick_generate(
            "a forklift reversing in a warehouse",
            duration_s=1,
            model="synthetic",
            fps=24,
            resolution="64x48",
            steps=4,
            timeout=120,
            on_progress=lambda done, total, _: progress.append((done, total)),
            download_to=tmp_path / "quick",
        )
        assert len(quick.runs) == 1 and quick.runs[0].state == "ready"
        assert progress[-1] == (1, 1)
        assert quick.manifest.manifest.startswith("quick-") and quick.prompt_ids == [quick.runs[0].prompt_id]
        (video,) = quick.videos
        assert video.parent == tmp_path / "quick" and sha256(video) == quick.video_refs[0].sha256
        spec = (await wm.prompt(quick.prompt_ids[0])).latest
        assert spec.prompt == "a forklift reversing in a warehouse" and spec.duration_s == 1
        found = [a async for a in wm.search(manifest=quick.manifest.manifest)]
        assert [a.asset_id for a in found] == quick.asset_ids
        assert [p.prompt_id async for p in wm.prompts(manifest=quick.manifest.manifest)] == quick.prompt_ids
        assert [r.run_id async for r in wm.runs(request_id=quick.request.request_id)] == [quick.runs[0].run_id]
        status = await wm.status(quick.manifest.manifest)
        assert status.total == 1 and status.items[0].assets == tuple(quick.asset_ids)
        with pytest.raises(NotFoundError):
            await wm.asset("asset-nope")


def test_a_bad_manifest_is_rejected_with_every_problem_and_a_dry_run_stores_nothing(stack: Stack) -> None:
    bad = """\
name: client-bad
defaults: {model: synthetic, fps: 24, resolution: 64x48, steps: 4}
durations: [-3]
series:
  - id: C
    scenarios:
      - id: C01
"""
    with stack.client() as wm:
        with pytest.raises(RequestRejectedError) as rejected:
            wm.submit_manifest(bad)
        err = rejected.value
        assert err.status_code == 422 and err.service == "prompt"
        assert err.sha256 == hashlib.sha256(bad.encode()).hexdigest()  # the body names the text refused
        assert len(err.problems) >= 2, err.problems
        paths = {str(p.loc[0]) for p in err.problems}
        assert any("durations" in p for p in paths) and any("C01" in p or "scenarios" in p for p in paths), paths
        assert all(p.msg and p.type for p in err.problems)
        assert any(p.line is not None for p in err.problems)
        assert "durations" in str(err)

        dry = wm.submit_manifest(manifest("client-dry"), dry_run=True)
        assert dry.dry_run and [s.prompt_id for s in dry.specs] == ["client-dry-C01-1s-v0", "client-dry-C01-1s-v1"]
        assert list(wm.prompts(manifest="client-dry")) == []
        with pytest.raises(NotFoundError, match="client-dry"):
            wm.generate(manifest="client-dry")


def test_unknown_ids_raise_not_found_or_rejected_naming_them(stack: Stack) -> None:
    with stack.client() as wm:
        with pytest.raises(NotFoundError) as prompt:
            wm.prompt("no-such-spec")
        assert prompt.value.status_code == 404 and prompt.value.service == "prompt"
        assert "no-such-spec" in prompt.value.detail
        with pytest.raises(RequestRejectedError) as gen:
            wm.generate(["no-such-spec"], wait_for_specs_s=0.5)
        assert [(p.loc, p.type) for p in gen.value.problems] == [(["body", "prompt_ids"], "unknown prompt")]
        assert "no-such-spec" in gen.value.problems[0].msg
        for call, service in (
            (lambda: wm.run("run-nope"), "generate"),
            (lambda: wm.asset("asset-nope"), "catalog"),
            (lambda: wm.status("no-such-manifest"), "catalog"),
            (lambda: wm.augmentation("aug-nope"), "augment"),
        ):
            with pytest.raises(NotFoundError) as missing:
                call()
            assert missing.value.service == service
        with pytest.raises(RequestRejectedError) as cancel:  # the generate service answers 422 naming the field
            wm.cancel("run-nope")
        assert [(p.loc[-1], p.type) for p in cancel.value.problems] == [("run_id", "invalid")]
        assert "run-nope" in cancel.value.problems[0].msg
        with pytest.raises(NotFoundError, match="neither a run nor a generation request"):
            wm.wait("nothing-by-this-id", timeout=1)


def test_an_unreachable_or_unconfigured_service_raises_unavailable_naming_it(stack: Stack) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with Worldmill(urls={"prompt": dead}, token=TOKEN) as wm:
        with pytest.raises(UnavailableError) as down:
            wm.prompt("anything")
        assert down.value.service == "prompt" and down.value.url == dead
        assert "prompt" in str(down.value) and dead in str(down.value)
        with pytest.raises(UnavailableError) as unset:
            wm.run("run-x")
        assert unset.value.service == "generate" and unset.value.url is None and "urls=" in str(unset.value)
        with pytest.raises(UnavailableError) as nostore:
            wm.augment_file(Path(__file__))
        assert nostore.value.service == "object store"
    with Worldmill(urls=stack.urls, token="wrong") as wm, pytest.raises(UnauthorizedError) as denied:
        wm.prompt("anything")
    assert denied.value.status_code == 401


def test_discovery_from_the_environment_and_the_local_stack(
    stack: Stack, s3: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("WM_PROMPT_URL", "WM_UPSAMPLE_URL", "WM_GENERATE_URL", "WM_AUGMENT_URL", "WM_QA_URL", "WM_CATALOG_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("WM_API_TOKEN", raising=False)
    with pytest.raises(UnavailableError, match="worldmill up"):
        Worldmill.local(tmp_path / "no-stack")
    monkeypatch.setenv("WM_PROMPT_URL", stack.urls["prompt"])
    monkeypatch.setenv("WM_API_TOKEN", TOKEN)
    monkeypatch.setenv("WM_S3_ENDPOINT", s3.url)
    monkeypatch.setenv("WM_S3_ACCESS_KEY", s3.access_key)
    monkeypatch.setenv("WM_S3_SECRET_KEY", s3.secret_key)
    with Worldmill.from_env() as wm:
        assert dict(wm.endpoints.urls) == {"prompt": stack.urls["prompt"]}
        assert wm.endpoints.store == StoreConfig(s3.url, s3.access_key, s3.secret_key)
        with pytest.raises(NotFoundError):
            wm.prompt("no-such-spec")  # reached, with the token from the environment
        with pytest.raises(UnavailableError, match="WM_CATALOG_URL"):
            wm.asset("a")
    with Worldmill.local(tmp_path / "no-stack") as wm:  # no stack, but the environment names a service
        assert wm.endpoints.urls == {"prompt": stack.urls["prompt"]}


def test_controls_are_read_as_the_cli_reads_them() -> None:
    edge, depth = parse_controls("edge=0.6:low, depth=0.4")
    assert (edge.type.value, edge.weight, edge.preset is not None) == ("edge", 0.6, True)
    assert (depth.type.value, depth.weight, depth.preset) == ("depth", 0.4, None)
    for bad, match in (("edge", "TYPE=WEIGHT"), ("edge=lots", "not a number"), ("=1", "TYPE=WEIGHT")):
        with pytest.raises(ValueError, match=match):
            parse_controls(bad)


def test_a_local_video_is_uploaded_and_augmented(stack: Stack, tmp_path: Path) -> None:
    clip = write_video(tmp_path / "shoot" / "walk.mp4", width=64, height=48, fps=24, frames=24, seed=3)
    with stack.client() as wm:
        aug = wm.augment_file(clip, controls="edge=1:low", prefix=stack.prefix, timeout=180)
        assert aug.state == "passed", (aug.state, aug.reason)
        assert aug.input.key == f"{stack.prefix}walk.mp4" and aug.input_frames == 24 and aug.input_fps == 24
        assert aug.output is not None and aug.output.key == f"augmented/{stack.prefix}walk_aug.mp4"
        assert [c.type.value for c in aug.controls] == ["edge"]
        assert wm.augmentation(aug.augmentation_id) == aug
        # Asked again: skipped, answered with the augmentation that passed.
        again = wm.augment_file(clip, controls="edge=1:low", prefix=stack.prefix, timeout=30)
        assert again.augmentation_id == aug.augmentation_id and again.state == "passed"
        assert aug.asset_id is not None
        catalogued = wait_for(
            lambda: [a.asset_id for a in wm.search(kind="augmentation")],
            lambda ids: aug.asset_id in ids,
            timeout_s=60,
        )
        assert aug.asset_id in catalogued
