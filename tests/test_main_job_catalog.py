"""Done-when of the catalog: after the main job, the gallery shows every video with its screenshots
and QA verdict, ``worldmill report`` prints the manifest's table, and the exported dataset reads
back with the webdataset library. One real stack (``up --detach``), the real demo, a real browser."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import webdataset as wds

from tests.conftest import REPO
from tests.helpers.browser import CHROMIUM_ARGS, chromium_path
from tests.test_stack import CLI, _cli_env
from worldmill.runtime.stack import load_state

MANIFEST = "security-cameras-demo"


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=cwd, env=_cli_env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_main_job_is_catalogued_shown_reported_and_exported(tmp_path: Path) -> None:
    chromium = chromium_path()
    data = tmp_path / ".worldmill"
    up = _run(["up", "--detach", "--data-dir", str(data)], tmp_path, timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        state = load_state(data)
        assert state is not None and "catalog" in state.services
        demo = _run(
            [
                "demo",
                "--json",
                str(tmp_path / "s.json"),
                "--manifest",
                str(REPO / "examples" / f"{MANIFEST}.yaml"),
                "--data-dir",
                str(data),
            ],
            tmp_path,
            timeout=400,
        )
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        videos = {v["asset_id"] for v in json.loads((tmp_path / "s.json").read_text())["generation"]["videos"]}
        assert len(videos) == 18
        base, headers = state.services["catalog"], {"Authorization": f"Bearer {state.api_token}"}

        # The catalog heard every verdict (events are asynchronous: wait for them).
        deadline = time.monotonic() + 60
        while True:
            page = httpx.get(f"{base}/assets", params={"manifest": MANIFEST, "limit": 100}, headers=headers).json()
            done = {i["asset_id"] for i in page["items"] if i["qa_status"] != "pending" and i["screenshots"]}
            if videos <= done or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert videos <= done, f"missing in the catalog: {sorted(videos - done)}"

        # worldmill report: the status table, and generation_status.json.
        report = _run(
            [
                "report",
                MANIFEST,
                "--json",
                str(tmp_path / "generation_status.json"),
                "--check",
                "--data-dir",
                str(data),
            ],
            tmp_path,
        )
        assert report.returncode == 0, report.stdout + report.stderr
        assert f"{MANIFEST}: 18/18 passed" in report.stdout
        status = json.loads((tmp_path / "generation_status.json").read_text())
        assert status["complete"] is True and status["counts"]["passed"] == 18

        # The export reads back with webdataset: every sample has its video, text and metadata.
        dest = tmp_path / "dataset"
        export = _run(
            ["export", "--manifest", MANIFEST, "--format", "webdataset", str(dest), "--data-dir", str(data)], tmp_path
        )
        assert export.returncode == 0, export.stdout + export.stderr
        shards = sorted(str(p) for p in dest.rglob("*.tar"))
        samples = list(wds.WebDataset(shards, shardshuffle=False, empty_check=False))
        passed = {i["asset_id"] for i in page["items"] if i["qa_status"] == "passed"} & videos
        assert len(samples) == len(passed) == 18
        for sample in samples:
            meta = json.loads(sample["json"])
            assert sample["txt"].decode().strip() and sample["mp4"][4:8] == b"ftyp"
            assert meta["asset_id"] in passed
            assert hashlib.sha256(sample["mp4"]).hexdigest() == meta["video"]["sha256"]
        manifest = json.loads((dest / "export_manifest.json").read_text())
        assert manifest["content"]["totals"]["samples"] == 18

        # The gallery's address for a person, and a rebuild from the stream that changes no row.
        gallery = _run(["catalog", "gallery", "--data-dir", str(data)], tmp_path)
        assert gallery.returncode == 0 and f"{base}/gallery#token={state.api_token}" in gallery.stdout
        before = httpx.get(f"{base}/assets", params={"manifest": MANIFEST, "limit": 100}, headers=headers).json()
        rebuilt = _run(["catalog", "rebuild", "--data-dir", str(data)], tmp_path)
        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
        after = httpx.get(f"{base}/assets", params={"manifest": MANIFEST, "limit": 100}, headers=headers).json()
        drop = ("video", "screenshots", "contact_sheet")  # presigned URLs are signed anew on each answer
        assert [{k: v for k, v in i.items() if k not in drop} for i in after["items"]] == [
            {k: v for k, v in i.items() if k not in drop} for i in before["items"]
        ]

        # The gallery: every video as a card with its screenshots and its QA badge, in Debian's chromium.
        from playwright.sync_api import sync_playwright  # noqa: PLC0415

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page_ = browser.new_page()
                page_.goto(f"{base}/gallery?manifest={MANIFEST}#token={state.api_token}")
                cards = page_.locator("[data-testid=asset-card]")
                page_.wait_for_function(
                    "document.querySelectorAll('[data-testid=asset-card]').length >= 18", timeout=30_000
                )
                shown = {cards.nth(i).get_attribute("data-asset-id") for i in range(cards.count())}
                assert videos <= shown
                page_.wait_for_function(
                    "[...document.querySelectorAll('[data-testid=screenshot-strip] img')].filter("
                    "i => i.complete && i.naturalWidth > 0).length >= 18 * 3",
                    timeout=30_000,
                )
                badges = page_.locator("[data-testid=qa-badge]").all_inner_texts()
                assert sum("passed" in b.lower() for b in badges) >= 18
            finally:
                browser.close()

        _pull_delete_regenerate_and_verify(tmp_path, data, base, headers)
    finally:
        down = _run(["down", "--data-dir", str(data)], tmp_path, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr


def _pull_delete_regenerate_and_verify(tmp_path: Path, data: Path, base: str, headers: dict[str, str]) -> None:
    """The users' workflows on the same stack: files by name, a second pull that copies nothing, two
    videos deleted and exactly those two made again by ``generate --missing``, a clean verify."""
    out = tmp_path / "out"
    pulled = _run(["pull", "--manifest", MANIFEST, str(out), "--data-dir", str(data)], tmp_path)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    videos = sorted(p.name for p in (out / "outputs").glob("*.mp4"))
    shots = sorted((out / "screenshots").glob("*.jpg"))
    assert len(videos) == 18 and "C01_5s.mp4" in videos and len(shots) == 54, videos
    assert (out / "generation_status.json").is_file()
    sums = (out / "SHA256SUMS").read_text().splitlines()
    for line in sums:
        digest, name = line.split("  ", 1)
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, name
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = _run(["pull", "--manifest", MANIFEST, str(out), "--data-dir", str(data)], tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps  # nothing copied

    # Two videos deleted (with their objects); generate --missing makes exactly those two again.
    items = httpx.get(f"{base}/assets", params={"manifest": MANIFEST, "limit": 100}, headers=headers).json()["items"]
    gone = sorted(items, key=lambda i: i["asset_id"])[:2]
    # The export above holds them: refused without --force, nothing deleted.
    refused = _run(["delete", *(i["asset_id"] for i in gone), "--data-dir", str(data)], tmp_path)
    assert refused.returncode == 2 and "exports hold" in refused.stderr, refused.stdout + refused.stderr
    deleted = _run(["delete", *(i["asset_id"] for i in gone), "--force", "--data-dir", str(data)], tmp_path)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    report = _run(["report", MANIFEST, "--data-dir", str(data)], tmp_path)
    assert f"{MANIFEST}: 16/18 passed" in report.stdout, report.stdout
    regenerated = _run(["generate", "--manifest", MANIFEST, "--missing", "--data-dir", str(data)], tmp_path)
    assert regenerated.returncode == 0, regenerated.stdout + regenerated.stderr
    assert "2 missing" in regenerated.stdout and "2 run(s)" in regenerated.stdout, regenerated.stdout
    deadline = time.monotonic() + 120
    while True:
        report = _run(["report", MANIFEST, "--check", "--data-dir", str(data)], tmp_path)
        if report.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert report.returncode == 0 and f"{MANIFEST}: 18/18 passed" in report.stdout, report.stdout
    twice = _run(["generate", "--manifest", MANIFEST, "--missing", "--data-dir", str(data)], tmp_path)
    assert twice.returncode == 0 and "nothing to queue" in twice.stdout, twice.stdout
    verified = _run(["verify", "--data-dir", str(data)], tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
