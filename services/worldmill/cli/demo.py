"""``worldmill demo``: the main job, run end to end on the local stack.

First the foundation: it stores an object in S3 (sha256 recorded), announces it with an
``object.created`` event on JetStream, consumes that event through a durable consumer, downloads
the object again and checks its sha256, shows that republishing the same event id is dropped, and
fetches the object through a presigned URL. Then the pipeline: it submits the demo manifest twice
(specs, then nothing new), waits for the specs marked for upsampling, generates every spec's video
and waits for its QA verdict, uploads one video as an input and waits for its augmentation, and
checks the catalog (verdicts, lineage, ``generation_status.json``, an export). It starts the local
stack if none is running, and stops what it started; exit 1 when any step fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from worldmill.cli.console import EXIT_FAILED, console, fail_usage
from worldmill.cli.demo_augment import augment_one, print_augmentation
from worldmill.cli.demo_catalog import catalog_manifest, print_catalog
from worldmill.cli.demo_upsample import print_upsampling, wait_for_upsampling
from worldmill.cli.demo_videos import generate_videos, print_videos, wait_for_verdicts
from worldmill.cli.stack_commands import DataDir, start_local_stack
from worldmill.contracts.envelope import wrap
from worldmill.contracts.keys import ARTIFACTS_BUCKET, probe_key
from worldmill.contracts.objects import ObjectCreated
from worldmill.contracts.prompts import ManifestResult, PromptSpec
from worldmill.contracts.subjects import EVENTS, ConsumerSpec, event_subject
from worldmill.runtime.bus import Bus
from worldmill.runtime.client import ServiceClient, error_detail
from worldmill.runtime.consumer import Consumer, Delivery
from worldmill.runtime.stack import StackState, running_state
from worldmill.runtime.store import ObjectStore


def _payload(run_id: str, size: int = 256 * 1024) -> bytes:
    """Deterministic pseudo-random bytes for this run (so the hash is meaningful, not constant)."""
    out = bytearray()
    block = hashlib.sha256(run_id.encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out.extend(block)
    return bytes(out[:size])


async def consume_one(bus: Bus, event_id: str, *, durable: str, timeout_s: float = 30.0) -> Delivery:
    """Read object.created events through a temporary durable consumer until ``event_id`` arrives."""
    received: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()

    async def handle(delivery: Delivery) -> None:
        if delivery.envelope.id == event_id and not received.done():
            received.set_result(delivery)

    spec = ConsumerSpec(
        durable=durable, stream=EVENTS.name, filter_subject=event_subject("object.created"), ack_wait_s=10
    )
    stop = asyncio.Event()
    task = asyncio.create_task(Consumer(bus, spec, handle, accept=(ObjectCreated,), prefetch=64).run(stop))
    try:
        waiters: set[asyncio.Future[Any]] = {received, task}
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if not received.done():
            if task.done():
                task.result()  # re-raise what stopped the consumer
            raise TimeoutError(f"the published event was not consumed within {timeout_s:g} s")
        return received.result()
    finally:
        stop.set()
        await task
        await bus.js.delete_consumer(EVENTS.name, durable)


async def roundtrip(state: StackState, run_id: str) -> dict[str, Any]:
    """Store → announce → consume → verify → dedup → presigned fetch. Returns the summary."""
    steps: list[dict[str, Any]] = []

    def step(name: str, ok: bool, detail: str, started: float) -> None:
        steps.append({"step": name, "ok": ok, "detail": detail, "ms": round((time.perf_counter() - started) * 1000, 1)})

    store = ObjectStore(state.s3_endpoint, state.s3_access_key, state.s3_secret_key)
    bus = state.bus("worldmill-demo")
    await bus.connect()
    try:
        t = time.perf_counter()
        data = _payload(run_id)
        ref = await store.put_bytes(ARTIFACTS_BUCKET, probe_key(run_id), data, metadata={"run": run_id})
        step("store object", True, f"{ref.uri()} {ref.size} B sha256 {ref.sha256[:12]}…", t)

        t = time.perf_counter()
        event = ObjectCreated(
            bucket=ref.bucket,
            key=ref.key,
            size=ref.size,
            etag=ref.etag or "",
            content_type=ref.content_type,
            sha256=ref.sha256,
            origin="worldmill",
            event_time=datetime.now(UTC),
        )
        envelope = wrap(event, source="/worldmill/cli/demo", event_id=f"demo-{run_id}")
        first = await bus.publish(envelope)
        step("publish event", not first.duplicate, f"{envelope.type} → {first.stream} seq {first.sequence}", t)

        t = time.perf_counter()
        delivery = await consume_one(bus, envelope.id, durable=f"demo-{run_id}")
        got = delivery.message
        if not isinstance(got, ObjectCreated):
            raise TypeError(f"expected object.created, got {delivery.envelope.type}")
        step(
            "consume event",
            got.sha256 == ref.sha256,
            f"durable consumer got {delivery.envelope.id} (delivery {delivery.num_delivered})",
            t,
        )

        t = time.perf_counter()
        back = await store.get_bytes(got.bucket, got.key)
        same = hashlib.sha256(back).hexdigest() == got.sha256
        step("verify object", same, f"downloaded {len(back)} B, sha256 {'matches' if same else 'DIFFERS'}", t)

        t = time.perf_counter()
        again = await bus.publish(envelope)
        step("dedup", again.duplicate, f"republished id {envelope.id}: duplicate={again.duplicate}", t)

        t = time.perf_counter()
        url = store.presigned_url(ref.bucket, ref.key)
        async with httpx.AsyncClient(timeout=10) as client:
            resp = await client.get(url)
        ok = resp.status_code == 200 and hashlib.sha256(resp.content).hexdigest() == ref.sha256
        step("presigned URL", ok, f"GET → HTTP {resp.status_code}, {len(resp.content)} B", t)
    finally:
        await bus.close()
    return {
        "ok": all(s["ok"] for s in steps),
        "run_id": run_id,
        "nats": state.nats_url,
        "s3": state.s3_endpoint,
        "object": {
            "bucket": ref.bucket,
            "key": ref.key,
            "size": ref.size,
            "sha256": ref.sha256,
            "presigned_url": url,
        },
        "event": {"id": envelope.id, "type": envelope.type, "subject": ObjectCreated.subject()},
        "steps": steps,
    }


DEMO_MANIFEST = Path("examples/security-cameras-demo.yaml")


def submit_manifest(state: StackState, text: str) -> dict[str, Any]:
    """Submit the demo manifest twice through the prompt service: specs, then nothing new."""
    if "prompt" not in state.services:
        return {"ok": False, "error": "the prompt service is not running"}
    with ServiceClient("prompt", state.services["prompt"], state.api_token) as client:
        t = time.perf_counter()
        first = client.request("POST", "/manifests", json={"content": text})
        ms_first = round((time.perf_counter() - t) * 1000, 1)
        if first.status_code >= 400:
            return {"ok": False, "error": f"HTTP {first.status_code}: {error_detail(first)}"}
        again = client.request("POST", "/manifests", json={"content": text})
        result = ManifestResult.model_validate(first.json())
        repeat = ManifestResult.model_validate(again.json())
        listed = client.request("GET", "/prompts", params={"manifest": result.manifest, "limit": 500}).json()
    specs = [PromptSpec.model_validate(x) for x in listed["items"]]
    return {
        "ok": repeat.created == () and len(specs) == result.counts.specs,
        "manifest": result.manifest,
        "sha256": result.sha256,
        "counts": result.counts.model_dump(),
        "created": len(result.created),
        "unchanged_on_resubmit": repeat.unchanged,
        "created_on_resubmit": len(repeat.created),
        "submit_ms": ms_first,
        "specs": [
            {
                "prompt_id": s.prompt_id,
                "version": s.version,
                "series": s.series,
                "scenario": s.scenario,
                "duration_s": s.duration_s,
                "variant": s.variant,
                "fps": s.fps,
                "frames": s.target_frames,
                "seed": s.seed,
                "resolution": str(s.resolution),
                "model": s.model,
                "upsample": s.upsample,
            }
            for s in specs
        ],
    }


def demo(
    data_dir: DataDir = Path(".worldmill"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the summary as JSON here.")] = None,
    manifest: Annotated[Path, typer.Option(help="The manifest the demo submits.")] = DEMO_MANIFEST,
) -> None:
    """Run the main job on the local stack (starting it if needed) and print a summary."""
    try:
        manifest_text = manifest.read_text(encoding="utf-8")
    except OSError as exc:
        fail_usage(f"--manifest: cannot read {manifest}: {exc.strerror or exc} (run from the repository root)")
    state = running_state(data_dir)
    started = None
    if state is None:
        console.print("No stack running: starting one for the demo…")
        started = start_local_stack(data_dir)
        state = started.state
    try:
        run_id = f"{int(time.time())}-{os.getpid()}"
        summary = asyncio.run(roundtrip(state, run_id))
        summary["manifest"] = submit_manifest(state, manifest_text)
        marked = [s["prompt_id"] for s in summary["manifest"].get("specs", []) if s.get("upsample")]
        summary["upsample"] = wait_for_upsampling(state, marked) if marked else {"ok": True, "specs": 0}
        summary["generation"] = (
            generate_videos(state, summary["manifest"]["specs"])
            if summary["manifest"]["ok"]
            else {"ok": False, "error": "the manifest was not submitted"}
        )
        if summary["generation"]["ok"]:
            wait_for_verdicts(state, summary["generation"])
            shortest = min(summary["generation"]["videos"], key=lambda v: v.get("frames") or 0)
            summary["augmentation"] = augment_one(state, shortest, run_id)
        else:
            summary["augmentation"] = {"ok": False, "error": "no generated video to augment"}
        summary["catalog"] = (
            catalog_manifest(state, summary["manifest"]["manifest"], data_dir, run_id)
            if summary["generation"]["ok"]
            else {"ok": False, "error": "no generated video to catalogue"}
        )
        qa_ok = summary["generation"].get("qa", {}).get("ok", False)
        steps_ok = (
            summary["manifest"]["ok"]
            and summary["upsample"]["ok"]
            and summary["generation"]["ok"]
            and summary["augmentation"]["ok"]
            and summary["catalog"]["ok"]
        )
        summary["ok"] = summary["ok"] and steps_ok and qa_ok
    finally:
        if started is not None:
            started.stop()
    table = Table(title=f"worldmill demo {summary['run_id']}")
    for col in ("step", "", "what happened", "ms"):
        table.add_column(col)
    for s in summary["steps"]:
        table.add_row(s["step"], "[green]ok[/]" if s["ok"] else "[red]FAIL[/]", s["detail"], str(s["ms"]))
    console.print(table)
    _print_manifest(summary["manifest"])
    if summary["upsample"].get("specs"):
        print_upsampling(summary["upsample"], console)
    print_videos(summary["generation"], console)
    print_augmentation(summary["augmentation"], console)
    print_catalog(summary["catalog"], console)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(summary, indent=2))
        console.print(f"Summary written to {json_out}")
    if not summary["ok"]:
        raise typer.Exit(EXIT_FAILED)
    console.print(
        "[green]Demo succeeded:[/] object stored, event published and consumed once, duplicate dropped, "
        f"presigned URL works; manifest {summary['manifest']['manifest']} → {summary['manifest']['counts']['specs']} "
        f"specs (re-submitted with nothing new) → {len(summary['generation']['videos'])} videos, each exactly "
        "its planned frames and fps; one of them uploaded as an input came back augmented with the same frames and "
        "fps and a passing QA verdict; the catalog holds every video with its verdict and lineage, the manifest's "
        "generation_status.json is written and its dataset exported as webdataset shards."
    )


def _print_manifest(m: dict[str, Any]) -> None:
    if not m.get("counts"):
        console.print(f"[red]manifest: {m.get('error')}[/]")
        return
    counts = m["counts"]
    durations = sorted({d for per in counts["by_series"].values() for d in per}, key=lambda t: float(t[:-1]))
    table = Table(title=f"manifest {m['manifest']}: specs per series and duration")
    for col in ("series", *durations, "frames"):
        table.add_column(col, justify="right" if col != "series" else "left")
    for series, per in counts["by_series"].items():
        table.add_row(series, *(str(per.get(d, 0)) for d in durations), f"{counts['frames_by_series'][series]:,}")
    console.print(table)
    console.print(
        f"{m['created']} spec(s) created ({counts['frames']:,} frames to generate); re-submitting created "
        f"{m['created_on_resubmit']} and found {m['unchanged_on_resubmit']} unchanged."
    )
