"""The catalog's web gallery in a real browser: real events on the bus, real videos in S3, headless chromium.

The catalog app runs on a loopback port against the session's nats-server and SeaweedFS. The test
publishes the events the other services would (prompt.created, run.updated, video.ready, qa.*,
job.progress), uploads small real H.264 videos and JPEG screenshots, then drives Debian's chromium
through Playwright's sync API. The test function is sync: publishing and uploading run in
``asyncio.run`` on a worker thread, since Playwright keeps an event loop of its own in this one.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import av
import httpx
import pytest
from PIL import Image
from playwright.sync_api import sync_playwright

from tests.helpers.browser import CHROMIUM_ARGS, chromium_path
from tests.helpers.factories import plan
from tests.helpers.generation import settings
from tests.helpers.polling import wait_for
from tests.helpers.serve import serve
from tests.helpers.video import write_video
from worldmill.catalog.app import create_app
from worldmill.contracts.base import Message, ObjectRef, Resolution
from worldmill.contracts.envelope import wrap
from worldmill.contracts.generation import (
    AttemptRecord,
    GenerationPlan,
    JobProgress,
    Provenance,
    RunRecord,
    RunState,
    RunUpdated,
    Timings,
    VideoReady,
)
from worldmill.contracts.prompts import PromptCreated, PromptSpec, SamplingParams
from worldmill.contracts.qa import Finding, QaFailed, QaPassed, Severity
from worldmill.runtime.bus import Bus
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.settings import RuntimeSettings
from worldmill.runtime.store import ObjectStore

TOKEN = "tok"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WIDTH, HEIGHT, FPS, FRAMES = 64, 48, 24, 48
#: Text a person might type, or a prompt might hold: it must stay text, never markup or script.
HOSTILE = "<script>alert(1)</script> \"double\" 'single' <img src=x onerror=alert(2)>"
NOW = datetime.now(UTC).replace(microsecond=0)
T = TypeVar("T")


# -- the world the gallery shows ---------------------------------------------------------------


@dataclass
class Item:
    """One spec and (if it got that far) its video, screenshots and verdict."""

    key: str
    series: str
    scenario: str
    prompt: str
    verdict: str | None  # "passed", "failed" or None (QA pending)
    prompt_id: str = ""
    asset_id: str = ""
    run_id: str = ""
    seed: int = 0
    video: ObjectRef | None = None
    screenshots: list[ObjectRef] = field(default_factory=list)


@dataclass
class World:
    """Everything one test run publishes, under names no other test uses."""

    tag: str
    manifest: str
    bucket: str
    items: list[Item]
    live_run: str
    live_job: str
    live_prompt: str

    def item(self, key: str) -> Item:
        return next(i for i in self.items if i.key == key)


def _world() -> World:
    tag = uuid.uuid4().hex[:8]
    series_a, series_b = f"GA{tag}", f"GB{tag}"
    items = [
        Item("passed", series_a, "doorstep", f"a parcel at a door {HOSTILE}", "passed"),
        Item("failed", series_a, "driveway", "a van backs into a driveway at dusk", "failed"),
        Item("pending", series_b, "crossing", "a cyclist crosses at a zebra crossing", None),
    ]
    for n, it in enumerate(items):
        it.prompt_id, it.asset_id, it.run_id, it.seed = f"p-{tag}-{n}", f"a-{tag}-{n}", f"run-{tag}-{n}", 100 + n
    return World(
        tag=tag,
        manifest=f"gallery-{tag}",
        bucket=f"gallery-{tag}",
        items=items,
        live_run=f"run-{tag}-live",
        live_job=f"job-{tag}-live",
        live_prompt=f"p-{tag}-live",
    )


def _spec(w: World, prompt_id: str, series: str, scenario: str, prompt: str, seed: int) -> PromptSpec:
    return PromptSpec(
        prompt_id=prompt_id,
        version=1,
        manifest=w.manifest,
        series=series,
        scenario=scenario,
        variant=0,
        duration_s=FRAMES / FPS,
        fps=FPS,
        target_frames=FRAMES,
        seed=seed,
        resolution=Resolution(width=WIDTH, height=HEIGHT),
        model="synthetic",
        prompt=prompt,
        sampling=SamplingParams(guidance=7, steps=4),
        tags=("gallery-test",),
        risk_level="low",
        created_at=NOW,
    )


def _plan(prompt_id: str, seed: int) -> GenerationPlan:
    return plan(prompt_id, FRAMES, FPS, width=WIDTH, height=HEIGHT, seed=seed, steps=4)


def _run(
    run_id: str, job_id: str, prompt_id: str, seed: int, state: RunState, *, asset_id: str | None = None
) -> RunRecord:
    attempt_state: RunState = state if state != "post_processing" else "ready"
    return RunRecord(
        run_id=run_id,
        request_id=f"req-{run_id}",
        prompt_id=prompt_id,
        prompt_version=1,
        state=state,
        plan=_plan(prompt_id, seed),
        max_attempts=3,
        attempts=(
            AttemptRecord(
                attempt=1,
                job_id=job_id,
                state=attempt_state,
                runner="runner-test",
                queued_at=NOW,
                finished_at=NOW if state == "ready" else None,
            ),
        ),
        asset_id=asset_id,
        requested_by="gallery-test",
        created_at=NOW,
        updated_at=NOW + timedelta(seconds=1),
    )


def _screenshots(video: Path) -> list[bytes]:
    """The first and the last frame of a video, as JPEG (what QA would store)."""
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    out = []
    for arr in (frames[0], frames[-1]):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=85)
        out.append(buf.getvalue())
    return out


async def _upload(w: World, s3: S3Endpoint, tmp: Path) -> None:
    store = ObjectStore(s3.url, s3.access_key, s3.secret_key)
    await store.ensure_buckets([w.bucket])
    for it in w.items:
        path = write_video(tmp / f"{it.key}.mp4", width=WIDTH, height=HEIGHT, fps=FPS, frames=FRAMES, seed=it.seed)
        it.video = await store.put_file(w.bucket, f"runs/{it.asset_id}/video.mp4", path, content_type="video/mp4")
        if it.verdict:
            it.screenshots = [
                await store.put_bytes(w.bucket, f"qa/{it.asset_id}/shot-{n}.jpg", data, content_type="image/jpeg")
                for n, data in enumerate(_screenshots(path))
            ]


def _findings(it: Item) -> tuple[Finding, ...]:
    frames = Finding(check="frames", passed=True, severity=Severity.ERROR, measured=FRAMES, expected=FRAMES)
    if it.verdict == "passed":
        return (frames, Finding(check="static", passed=True, severity=Severity.WARNING, measured=0.2, expected=0.05))
    return (
        frames,
        Finding(
            check="fps",
            passed=False,
            severity=Severity.ERROR,
            measured=23.5,
            expected=24,
            message=f"23.5 fps is not 24 {HOSTILE}",
        ),
    )


def _events(w: World) -> list[Message]:
    """What the prompt, generate and QA services would have published for these videos."""
    out: list[Message] = []
    for it in w.items:
        assert it.video is not None
        out.append(PromptCreated(spec=_spec(w, it.prompt_id, it.series, it.scenario, it.prompt, it.seed)))
        job = f"job-{it.run_id}"
        out.append(
            RunUpdated(run=_run(it.run_id, job, it.prompt_id, it.seed, "ready", asset_id=it.asset_id), version=3)
        )
        plan = _plan(it.prompt_id, it.seed)
        out.append(
            VideoReady(
                asset_id=it.asset_id,
                run_id=it.run_id,
                prompt_id=it.prompt_id,
                attempt=1,
                video=it.video,
                plan=plan,
                provenance=Provenance(
                    backend="synthetic",
                    model="synthetic",
                    checkpoint="synthetic-ckpt",
                    plan=plan,
                    prompt=it.prompt,
                    sampling=plan.sampling,
                    seeds=(it.seed,),
                    code_version="gallery-test",
                    device="cpu",
                    runner="runner-test",
                    timings=Timings(load_s=0.5, fetch_s=0.1, infer_s=2.5, encode_s=0.2, upload_s=0.1),
                    started_at=NOW,
                    finished_at=NOW + timedelta(seconds=3),
                ),
                request_id=f"req-{it.run_id}",
                requested_by="gallery-test",
            )
        )
        if it.verdict:
            cls = QaPassed if it.verdict == "passed" else QaFailed
            out.append(
                cls(
                    asset_id=it.asset_id,
                    prompt_id=it.prompt_id,
                    video=it.video,
                    findings=_findings(it),
                    screenshots=tuple(it.screenshots),
                    checked_at=NOW + timedelta(seconds=5),
                    checker_version="gallery-test",
                )
            )
    # A run still generating: its progress must show live in the header.
    out.append(PromptCreated(spec=_spec(w, w.live_prompt, f"GA{w.tag}", "live", "a live run, still generating", 7)))
    out.append(RunUpdated(run=_run(w.live_run, w.live_job, w.live_prompt, 7, "running"), version=2))
    out.append(_progress(w, 0.1))
    return out


def _progress(w: World, fraction: float) -> JobProgress:
    return JobProgress(
        job_id=w.live_job,
        run_id=w.live_run,
        attempt=1,
        phase="generating",
        chunk=0,
        chunks=1,
        step=round(fraction * 20),
        steps=20,
        fraction=fraction,
        runner="runner-test",
    )


def _in_thread(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to the end on a loop of its own, in another thread (Playwright's sync API
    keeps an event loop in this one, so ``asyncio.run`` cannot be called here)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result(timeout=60)


def _publish(nats: NatsEndpoint, messages: list[Message]) -> None:
    async def go() -> None:
        bus = Bus(nats.url, name="gallery-test")
        await bus.connect()
        try:
            for m in messages:
                await bus.publish(wrap(m, source="/test/gallery"))
        finally:
            await bus.close()

    _in_thread(go)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def catalog(nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path) -> Iterator[str]:
    """The real catalog app on a loopback port; yields its base URL."""
    app = create_app(RuntimeSettings(**settings(nats, s3, tmp_path, "catalog")))
    with serve(app) as base:
        yield base


def _get(base: str, path: str, **params: Any) -> Any:
    resp = httpx.get(f"{base}{path}", params=params, headers=AUTH, timeout=10)
    assert resp.status_code == 200, f"GET {path}: {resp.status_code} {resp.text[:500]}"
    return resp.json()


# -- the test ----------------------------------------------------------------------------------


def test_gallery_in_a_real_browser(nats: NatsEndpoint, s3: S3Endpoint, catalog: str, tmp_path: Path) -> None:
    """Cards, filters, hostile text, the detail (player, findings, lineage), rating and live progress."""
    chromium = chromium_path()
    w = _world()
    _in_thread(lambda: _upload(w, s3, tmp_path))
    _publish(nats, _events(w))
    by_status = {it.asset_id: (it.verdict or "pending") for it in w.items}
    page_json = wait_for(
        lambda: _get(catalog, "/assets", manifest=w.manifest, limit=50),
        lambda p: {a["asset_id"]: a["qa_status"] for a in p["items"]} == by_status,
        timeout_s=30,
    )
    assert all(a["video"]["url"] for a in page_json["items"])
    wait_for(
        lambda: _get(catalog, "/runs/status"),
        lambda s: any(r["run_id"] == w.live_run and r["fraction"] is not None for r in s["active"]),
        timeout_s=30,
    )

    dialogs: list[str] = []
    page_errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(15_000)
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            cards = page.locator('[data-testid="asset-card"]')

            # The token comes in the fragment, is kept for the tab and leaves the visible URL.
            page.goto(f"{catalog}/gallery?manifest={w.manifest}#token={TOKEN}")
            page.wait_for_function("n => document.querySelectorAll('[data-testid=asset-card]').length === n", arg=3)
            assert "token" not in page.url and f"manifest={w.manifest}" in page.url
            assert page.evaluate("() => sessionStorage.length") == 1
            page.evaluate("() => { window.__sameDocument = true; }")  # gone if anything reloads the page

            # One card per video, each with its QA badge; the screenshot strips' images really load.
            ids = cards.evaluate_all("cs => cs.map(c => c.dataset.assetId)")
            assert sorted(ids) == sorted(by_status)
            for it in w.items:
                card = page.locator(f'[data-testid="asset-card"][data-asset-id="{it.asset_id}"]')
                card.scroll_into_view_if_needed()
                badge = card.locator('[data-testid="qa-badge"]')
                assert badge.get_attribute("data-status") == (it.verdict or "pending")
                assert badge.inner_text().strip().lower() == (it.verdict or "pending")
                strip = card.locator('[data-testid="screenshot-strip"] img')
                assert strip.count() == len(it.screenshots)
                if it.screenshots:
                    page.wait_for_function(
                        """id => [...document.querySelectorAll(
                             `[data-asset-id="${id}"] [data-testid=screenshot-strip] img`)]
                           .every(i => i.complete && i.naturalWidth > 0)""",
                        arg=it.asset_id,
                    )
            failed_card = page.locator(f'[data-asset-id="{w.item("failed").asset_id}"]')
            assert "fps" in failed_card.inner_text()

            # Filtering by series narrows the grid and is written into the URL.
            page.select_option('[data-testid="filter-series"]', f"GB{w.tag}")
            page.wait_for_function("() => document.querySelectorAll('[data-testid=asset-card]').length === 1")
            assert cards.first.get_attribute("data-asset-id") == w.item("pending").asset_id
            assert f"series=GB{w.tag}" in page.url
            page.select_option('[data-testid="filter-series"]', "")
            page.wait_for_function("() => document.querySelectorAll('[data-testid=asset-card]').length === 3")

            # Hostile search text is only text: no dialog, no new script, no error, no results.
            scripts_before = page.evaluate("() => document.scripts.length")
            page.fill('[data-testid="filter-q"]', HOSTILE + " nothing matches this")
            page.wait_for_function("() => document.querySelectorAll('[data-testid=asset-card]').length === 0")
            page.wait_for_selector('[data-testid="empty"]', state="visible")
            assert page.is_hidden('[data-testid="error"]'), page.inner_text('[data-testid="error"]')
            assert page.evaluate("() => document.scripts.length") == scripts_before
            assert page.input_value('[data-testid="filter-q"]') == HOSTILE + " nothing matches this"
            assert "q=" in page.url
            page.fill('[data-testid="filter-q"]', "")
            page.wait_for_function("() => document.querySelectorAll('[data-testid=asset-card]').length === 3")

            # A request the server refuses: its message is shown in the error banner, then cleared.
            page.fill('[data-testid="filter-min-duration"]', "10")
            page.fill('[data-testid="filter-max-duration"]', "1")
            page.wait_for_selector('[data-testid="error"]', state="visible")
            assert "422" in page.inner_text('[data-testid="error"]')
            assert "min_duration must not be greater than max_duration" in page.inner_text('[data-testid="error"]')
            page.fill('[data-testid="filter-min-duration"]', "")
            page.fill('[data-testid="filter-max-duration"]', "")
            page.wait_for_selector('[data-testid="error"]', state="hidden")
            page.wait_for_function("() => document.querySelectorAll('[data-testid=asset-card]').length === 3")

            # The detail: a player that really plays the presigned mp4, the findings, the lineage.
            failed = w.item("failed")
            page.click(f'[data-testid="asset-card"][data-asset-id="{failed.asset_id}"]')
            detail = page.locator('[data-testid="detail"]')
            detail.wait_for(state="visible")
            player = detail.locator('[data-testid="player"]')
            page.wait_for_function(
                "() => { const v = document.querySelector('[data-testid=player]'); return v.src && v.readyState >= 1; }",
                timeout=20_000,
            )
            assert player.evaluate("v => v.src").startswith(s3.url)
            assert player.evaluate("v => [v.videoWidth, v.videoHeight]") == [WIDTH, HEIGHT]
            rows = detail.locator('[data-testid="findings"] [data-testid="finding"]')
            rows.first.wait_for()
            assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.check + ':' + r.dataset.passed)")) == [
                "fps:false",
                "frames:true",
            ]
            fps_row = detail.locator('[data-testid="finding"][data-check="fps"]').inner_text()
            assert "23.5" in fps_row and "error" in fps_row and HOSTILE in fps_row
            lineage = detail.locator('[data-testid="lineage"] [data-testid="lineage-node"]')
            kinds_ids = lineage.evaluate_all("ns => ns.map(n => [n.dataset.kind, n.dataset.id, n.dataset.known])")
            assert ["asset", failed.asset_id, "true"] in kinds_ids
            assert ["run", failed.run_id, "true"] in kinds_ids
            assert ["spec", f"{failed.prompt_id}@v1", "true"] in kinds_ids
            # The manifest was only named by its specs (no manifest.accepted): greyed, as not seen yet.
            assert ["manifest", w.manifest, "false"] in kinds_ids, json.dumps(kinds_ids)
            assert "not seen yet" in detail.locator('[data-testid="lineage"]').inner_text()

            # Rating: 4 stars, shown in the detail and on the card, and stored.
            page.click('[data-testid="detail"] [data-testid="rate-4"]')
            page.wait_for_function(
                "() => document.querySelector('[data-testid=detail] [data-testid=rating-value]').textContent.trim() === '4'"
            )
            card_rating = page.locator(f'[data-asset-id="{failed.asset_id}"] [data-testid="rating-value"]')
            assert card_rating.inner_text().strip() == "4"
            stored = _get(catalog, f"/assets/{failed.asset_id}")
            assert stored["asset"]["rating"] == 4 and stored["ratings_by_rater"] == {"gallery": 4}

            # A note with markup in it is stored and shown as the very text typed.
            page.fill('[data-testid="note-text"]', HOSTILE)
            page.click('[data-testid="note-submit"]')
            detail.locator('[data-testid="notes"] [data-testid="note"]').first.wait_for()
            assert HOSTILE in detail.locator('[data-testid="notes"]').inner_text()
            assert [n["text"] for n in _get(catalog, f"/assets/{failed.asset_id}")["notes"]] == [HOSTILE]

            # The prompt with markup in it is shown as text in the detail of its own asset.
            page.click('[data-testid="detail-close"]')
            passed = w.item("passed")
            page.click(f'[data-testid="asset-card"][data-asset-id="{passed.asset_id}"]')
            page.wait_for_function(
                "t => document.querySelector('[data-testid=detail-meta]').textContent.includes(t)", arg=passed.prompt
            )
            assert detail.locator('[data-testid="findings"] [data-testid="finding"]').count() == 2
            page.click('[data-testid="detail-close"]')

            # Live progress: job.progress on the bus moves the run's bar without a reload.
            row = page.locator(f'[data-testid="run-status"] [data-testid="run-{w.live_run}"]')
            row.wait_for()
            page.wait_for_selector('[data-testid="live"][data-state="connected"]')
            _publish(nats, [_progress(w, 0.42)])
            page.wait_for_function(
                "id => document.querySelector(`[data-testid='run-${id}']`)?.dataset.fraction === '0.42'",
                arg=w.live_run,
            )
            assert row.locator("progress").evaluate("p => p.value") == pytest.approx(0.42)
            _publish(nats, [_progress(w, 0.9)])
            page.wait_for_function(
                "id => document.querySelector(`[data-testid='run-${id}']`)?.dataset.fraction === '0.9'",
                arg=w.live_run,
            )
            # The run finishes: its row says so (then leaves the list).
            done = _run(w.live_run, w.live_job, w.live_prompt, 7, "failed")
            _publish(nats, [RunUpdated(run=done.model_copy(update={"error": "out of memory"}), version=3)])
            page.wait_for_function(
                "id => { const r = document.querySelector(`[data-testid='run-${id}']`);"
                " return !r || r.dataset.state === 'failed'; }",
                arg=w.live_run,
            )
            assert page.evaluate("() => window.__sameDocument === true"), "the page reloaded"

            # A bad token: the server's message is shown in the error banner, with the token form.
            other = browser.new_page()
            other.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            other.goto(f"{catalog}/gallery#token=wrong")
            other.wait_for_selector('[data-testid="error"]', state="visible")
            assert "invalid bearer token" in other.inner_text('[data-testid="error"]')
            assert other.is_visible('[data-testid="token-form"]')
        finally:
            browser.close()

    assert dialogs == [], f"a script ran: {dialogs}"
    assert page_errors == [], page_errors
    # The page and its files need no token; the data does.
    for path in ("/gallery", "/gallery/static/gallery.js", "/gallery/static/gallery.css"):
        assert httpx.get(f"{catalog}{path}", timeout=10).status_code == 200, path
    assert httpx.get(f"{catalog}/assets", timeout=10).status_code == 401
