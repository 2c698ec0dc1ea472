"""The demo's augmentation step: one generated video is uploaded as an input and comes back augmented.

The upload goes into the inputs bucket like any other (with a sidecar asking for edge and blur
controls at the 480 tier, to keep it quick on a CPU); the augment service's poller notices it, and
the demo waits for ``{name}_aug.mp4``, then probes it: the input's frame count and fps, its control
videos, a QA verdict, and lineage back to the upload.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from worldmill.contracts.augment import AUGMENT_FINAL_STATES, Augmentation
from worldmill.contracts.base import ObjectRef
from worldmill.contracts.keys import INPUTS_BUCKET
from worldmill.runtime.client import ServiceClient
from worldmill.runtime.media import probe
from worldmill.runtime.stack import StackState
from worldmill.runtime.store import ObjectStore

SIDECAR = {
    "tier": "480",
    "controls": [{"type": "edge", "weight": 0.7}, {"type": "vis", "weight": 0.3, "preset": "low"}],
}


async def _upload(store: ObjectStore, source: ObjectRef, key: str) -> None:
    sidecar = key.rsplit(".", 1)[0] + ".json"
    await store.put_bytes(INPUTS_BUCKET, sidecar, json.dumps(SIDECAR).encode(), content_type="application/json")
    await store.copy(source, INPUTS_BUCKET, key)


async def _probe(store: ObjectStore, ref: ObjectRef) -> tuple[int, float]:
    with tempfile.TemporaryDirectory(prefix="wm-demo-") as tmp:
        path = Path(tmp) / "video.mp4"
        await store.download(ref.bucket, ref.key, path)
        info = await asyncio.to_thread(probe, path)
    return info.frames, float(info.fps)


def augment_one(state: StackState, video: dict[str, Any], run_id: str, *, timeout_s: float = 300.0) -> dict[str, Any]:
    """Upload ``video`` (a generated one) as ``demo/<run>/<scenario>.mp4`` and wait for its augmentation."""
    if "augment" not in state.services:
        return {"ok": False, "error": "the augment service is not running"}
    store = ObjectStore(state.s3_endpoint, state.s3_access_key, state.s3_secret_key)
    source = ObjectRef(bucket=video["bucket"], key=video["key"], size=video["bytes"], sha256=video["sha256"])
    key = f"demo/{run_id}/{video['scenario']}.mp4"
    started = time.perf_counter()
    asyncio.run(_upload(store, source, key))
    aug: Augmentation | None = None
    deadline = time.monotonic() + timeout_s
    with ServiceClient("augment", state.services["augment"], state.api_token) as client:
        while time.monotonic() < deadline:
            items = client.request("GET", "/augmentations", params={"input": f"{INPUTS_BUCKET}/{key}"}).json()["items"]
            if items:
                aug = Augmentation.model_validate(items[0])
                if aug.state in AUGMENT_FINAL_STATES:
                    break
            time.sleep(0.5)
    if aug is None or aug.output is None:
        state_text = aug.state if aug else "nothing"
        return {"ok": False, "input": key, "error": f"no augmentation output ({state_text})"}
    frames, fps = asyncio.run(_probe(store, aug.output))
    exact = (frames, fps) == (video["frames"], video["fps"])
    return {
        "ok": aug.state == "passed" and exact,
        "input": f"s3://{INPUTS_BUCKET}/{key}",
        "augmentation_id": aug.augmentation_id,
        "state": aug.state,
        "output": aug.output.uri(),
        "frames": frames,
        "fps": fps,
        "input_frames": video["frames"],
        "input_fps": video["fps"],
        "controls": [{"type": c.type.value, "weight": c.normalized_weight, "key": c.video.key} for c in aug.controls],
        "qa_passed": aug.qa_passed,
        "upload_event_id": aug.upload_event_id,
        "run_id": aug.run_id,
        "seconds": round(time.perf_counter() - started, 1),
    }


def print_augmentation(result: dict[str, Any], console: Console) -> None:
    """One line for the augmented upload."""
    if "output" not in result:
        console.print(f"[red]augmentation: {result.get('error')}[/]")
        return
    controls = ", ".join(f"{c['type']} {c['weight']:g}" for c in result["controls"])
    verdict = "passed" if result["qa_passed"] else "FAILED"
    console.print(
        f"augmentation: {result['input']} → {result['output']}: {result['frames']} frames at {result['fps']:g} fps "
        f"(input {result['input_frames']} at {result['input_fps']:g}), controls {controls}, QA {verdict}, "
        f"{result['seconds']} s from upload"
    )
