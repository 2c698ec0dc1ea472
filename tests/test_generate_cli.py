"""``worldmill generate`` (ids, a manifest by name, ``--missing/--failed/--unverified``) and ``worldmill runs``.

The backlog is planned by pure code (first tests); then the commands run through typer against the
real catalog and generate services over HTTP, on the session's real nats-server and SeaweedFS.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.helpers.catalog_events import dataset
from tests.helpers.generation import settings
from tests.helpers.polling import wait_for
from tests.helpers.serve import serve
from tests.helpers.video import write_video
from worldmill.catalog.app import create_app as create_catalog_app
from worldmill.cli.main import app as cli_app
from worldmill.contracts.catalog import StatusItem
from worldmill.contracts.prompts import PromptCreated
from worldmill.generate.app import create_app as create_generate_app
from worldmill.generate.backlog import plan_backlog, replacement
from worldmill.generate.settings import GenerateSettings
from worldmill.prompt.app import create_app as create_prompt_app
from worldmill.runtime.bus import Bus
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.settings import RuntimeSettings

AUTH = {"Authorization": "Bearer tok"}


def item(pid: str, state: str, assets: tuple[str, ...] = (), passed: tuple[str, ...] = (), **kw: Any) -> StatusItem:
    return StatusItem.model_validate(
        {
            "prompt_id": pid,
            "version": 1,
            "scenario": "C01",
            "duration_s": 5,
            "variant": 0,
            "state": state,
            "assets": assets,
            "passed_assets": passed,
            **kw,
        }
    )


# --- the backlog, pure ---------------------------------------------------------------------------


def test_the_backlog_is_exactly_the_specs_in_the_states_asked_for() -> None:
    items = [
        item("a", "missing"),
        item("b", "failed", ("asset-b1",), failed_checks=("black_frames",)),
        item("c", "passed", ("asset-c1",), ("asset-c1",)),
        item("d", "unverified", ("asset-d1",)),
        item("e", "in_flight", run_state="running"),
    ]
    only_missing = plan_backlog(items, {"missing"}, active=set())
    assert only_missing.generate == ("a",) and only_missing.regenerate == ()
    both = plan_backlog(items, {"missing", "failed"}, active=set())
    assert both.generate == ("a",)
    assert [(r.prompt_id, r.regeneration.replaces) for r in both.regenerate] == [("b", "asset-b1")]
    assert both.regenerate[0].regeneration.failed_checks == ("black_frames",)
    assert both.counts == {"missing": 1, "failed": 1}
    unverified = plan_backlog(items, {"unverified"}, active=set())
    assert unverified.generate == ("d",)
    with pytest.raises(ValueError, match="passed"):
        plan_backlog(items, {"passed"}, active=set())


def test_specs_with_a_run_in_flight_are_left_alone() -> None:
    items = [item("a", "missing"), item("b", "failed", ("asset-b1",)), item("c", "missing", run_state="queued")]
    backlog = plan_backlog(items, {"missing", "failed"}, active={"a"})
    assert backlog.generate == () and [r.prompt_id for r in backlog.regenerate] == ["b"]
    assert set(backlog.in_flight) == {"a", "c"}
    assert plan_backlog(items, {"missing", "failed"}, active={"a", "b"}).regenerate == ()


def test_a_regeneration_gets_a_new_number_and_a_request_id_that_changes_only_with_new_failures() -> None:
    once = replacement(item("b", "failed", ("asset-b1",)))
    assert once.regeneration.number == 1 and once.regeneration.replaces == "asset-b1"
    assert replacement(item("b", "failed", ("asset-b1",))).request_id == once.request_id  # asked twice: one request
    twice = replacement(item("b", "failed", ("asset-b1", "asset-b2")))
    assert twice.regeneration.number == 2 and twice.request_id != once.request_id  # its regeneration failed too
    # A passed video is never the one replaced.
    with pytest.raises(ValueError, match="no failed video"):
        replacement(item("b", "failed", ("asset-b1",), ("asset-b1",)))


# --- the commands on the real services -----------------------------------------------------------


async def publish(nats: NatsEndpoint, envelopes: list[Any]) -> None:
    bus = Bus(nats.url, name="test-generate-cli")
    await bus.connect()
    try:
        for e in envelopes:
            await bus.publish(e)
    finally:
        await bus.close()


@pytest.fixture
def services(
    nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str]]:
    """The real catalog and generate services (no runner: runs stay queued), found through WM_*_URL."""
    catalog = create_catalog_app(RuntimeSettings(**settings(nats, s3, tmp_path, "catalog")))
    generate = create_generate_app(
        GenerateSettings(**settings(nats, s3, tmp_path, "generate"), backends=("synthetic",))
    )
    with serve(catalog) as catalog_url, serve(generate) as generate_url:
        monkeypatch.setenv("WM_CATALOG_URL", catalog_url)
        monkeypatch.setenv("WM_GENERATE_URL", generate_url)
        monkeypatch.setenv("WM_API_TOKEN", "tok")
        yield catalog_url, generate_url


def all_runs(generate_url: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = httpx.get(f"{generate_url}/runs", params={"limit": 500}, headers=AUTH).json()["items"]
    return runs


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli_app, list(args))


def test_generate_missing_and_failed_queues_exactly_what_the_report_lists_once(
    services: tuple[str, str], nats: NatsEndpoint
) -> None:
    catalog_url, generate_url = services
    name = "gen-backlog"
    # Six specs: three passed, two failed QA, the last one was never made (missing).
    events = dataset(name, 6, fail_every=2)[:-7]
    specs = [e.data.spec for e in events if isinstance(e.data, PromptCreated)]
    asyncio.run(publish(nats, events))
    status = wait_for(
        lambda: httpx.get(f"{catalog_url}/manifests/{name}/status", headers=AUTH).json(),
        lambda s: s.get("total") == 6 and s["counts"]["passed"] == 3 and s["counts"]["failed"] == 2,
    )
    by_state = {i["prompt_id"]: i for i in status["items"]}
    missing = {p for p, i in by_state.items() if i["state"] == "missing"}
    failed = {p: i for p, i in by_state.items() if i["state"] == "failed"}
    assert len(missing) == 1 and len(failed) == 2 and {s.prompt_id for s in specs} == set(by_state)

    dry = invoke("generate", "--manifest", name, "--missing", "--failed", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.output.count("would generate") == 1 and dry.output.count("would regenerate") == 2
    assert all_runs(generate_url) == []  # a dry run queues nothing

    first = invoke("generate", "--manifest", name, "--missing", "--failed", "--no-wait")
    assert first.exit_code == 0, first.output
    assert "3 run(s) queued in 3 request(s)" in " ".join(first.output.split())
    runs = all_runs(generate_url)
    assert sorted(r["prompt_id"] for r in runs) == sorted([*missing, *failed])
    for run in runs:
        regeneration = run["plan"].get("regeneration")
        if run["prompt_id"] in failed:  # a new seed, replacing the failed video
            assert regeneration["replaces"] == failed[run["prompt_id"]]["assets"][0]
            spec = next(s for s in specs if s.prompt_id == run["prompt_id"])
            assert run["plan"]["chunks"][0]["seed"] != spec.seed
        else:
            assert regeneration is None

    again = invoke("generate", "--manifest", name, "--missing", "--failed", "--no-wait")
    assert again.exit_code == 0, again.output
    # Whether the catalog already lists them in flight or the generate service says they are queued,
    # nothing is asked for twice.
    assert "nothing to queue" in again.output
    assert len(all_runs(generate_url)) == 3

    # `worldmill runs`: list, show, cancel, with their exit codes.
    listed = invoke("runs", "ls", "--state", "queued")
    assert listed.exit_code == 0 and "3 run(s)" in listed.output
    run_id = runs[0]["run_id"]
    shown = invoke("runs", "show", run_id)
    assert shown.exit_code == 0 and run_id in shown.output
    assert invoke("runs", "show", "run-nope").exit_code == 2
    canceled = invoke("runs", "cancel", run_id)
    assert canceled.exit_code == 0 and run_id in canceled.output
    after = httpx.get(f"{generate_url}/runs/{run_id}", headers=AUTH).json()
    assert after["state"] == "canceled"


MANIFEST = """\
name: gen-by-name
defaults: {model: synthetic, fps: 24, resolution: 64x48, steps: 4}
durations: [1]
variants: 2
series:
  - id: C
    scenarios:
      - id: C01
        prompt: a parcel at a door
"""


def test_generate_takes_a_manifest_by_name_or_by_file_and_refuses_bad_usage(
    services: tuple[str, str], nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, generate_url = services
    prompt = create_prompt_app(RuntimeSettings(**settings(nats, s3, tmp_path, "prompt")))
    with serve(prompt) as prompt_url:
        monkeypatch.setenv("WM_PROMPT_URL", prompt_url)
        manifest_file = tmp_path / "gen-by-name.yaml"
        manifest_file.write_text(MANIFEST)
        submitted = invoke("manifest", "submit", str(manifest_file))
        assert submitted.exit_code == 0, submitted.output
        by_name = invoke("generate", "--manifest", "gen-by-name", "--no-wait")
        assert by_name.exit_code == 0, by_name.output
        assert "2 run(s) queued" in by_name.output
        assert sorted(r["prompt_id"] for r in all_runs(generate_url)) == [
            "gen-by-name-C01-1s-v0",
            "gen-by-name-C01-1s-v1",
        ]
        # The same manifest as a file: submitted again (unchanged), the same two specs asked for.
        by_file = invoke("generate", "--manifest", str(manifest_file), "--no-wait")
        assert by_file.exit_code == 0 and "2 run(s) queued" in by_file.output, by_file.output
        # Flags that need a manifest, or contradict each other: exit 2 naming the argument.
        no_manifest = invoke("generate", "--missing")
        assert no_manifest.exit_code == 2 and "--manifest" in no_manifest.output
        with_ids = invoke("generate", "some-id", "--manifest", "gen-by-name", "--failed")
        assert with_ids.exit_code == 2 and "PROMPT_IDS" in with_ids.output
        dry_alone = invoke("generate", "some-id", "--dry-run")
        assert dry_alone.exit_code == 2 and "--dry-run" in dry_alone.output
        nothing = invoke("generate")
        assert nothing.exit_code == 2 and "PROMPT_IDS" in nothing.output
        unknown = invoke("generate", "--manifest", "no-such-manifest", "--no-wait")
        assert unknown.exit_code == 2 and "no-such-manifest" in unknown.output
        missing_file = invoke("generate", "--manifest", "nowhere/m.yaml", "--no-wait")
        assert missing_file.exit_code == 2 and "nowhere/m.yaml" in missing_file.output
        # `prompts ls` and `prompts show` on the same service.
        listed = invoke("prompts", "ls", "--manifest", "gen-by-name")
        assert listed.exit_code == 0 and "2 prompt spec(s)" in listed.output
        shown = invoke("prompts", "show", "gen-by-name-C01-1s-v0")
        assert shown.exit_code == 0 and "a parcel at a door" in shown.output
        assert invoke("prompts", "show", "no-such-spec").exit_code == 2
        # `audit --manifest NAME`: the expectations are the stored specs (v1 was never delivered).
        videos = tmp_path / "delivered"
        write_video(videos / "C01_1s.mp4", width=64, height=48, fps=24, frames=24, seed=1)
        report = tmp_path / "audit.json"
        audited = invoke("audit", str(videos), "--manifest", "gen-by-name", "--json", str(report))
        assert audited.exit_code == 1, audited.output  # a variant is missing
        body = json.loads(report.read_text())
        assert body["files"][0]["expected"]["source"] == "manifest", body["files"][0]
        assert [m["prompt_id"] for m in body["missing"]] == ["gen-by-name-C01-1s-v1"], body["missing"]
        unknown_audit = invoke("audit", str(videos), "--manifest", "no-such-manifest")
        assert unknown_audit.exit_code == 2 and "no-such-manifest" in unknown_audit.output
