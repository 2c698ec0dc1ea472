"""The demo's upsampling step: every spec marked ``upsample`` gets an outcome from the upsample service.

With ``WM_UPSAMPLE_BASE_URL`` pointing at a vLLM server the specs are rewritten (new versions);
without one the service reports upsampling as unavailable and the demo goes on with the original
prompts, which is what a laptop without a GPU shows.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from worldmill.contracts.upsample import UPSAMPLE_FINAL_STATES, UpsamplerInfo, UpsampleStatus
from worldmill.runtime.client import ServiceClient
from worldmill.runtime.stack import StackState


def wait_for_upsampling(state: StackState, prompt_ids: list[str], *, timeout_s: float = 300.0) -> dict[str, Any]:
    """Wait until each spec's upsample is done, failed or unavailable; counts per state and the reason."""
    if "upsample" not in state.services:
        return {"ok": False, "error": "the upsample service is not running"}
    statuses: dict[str, UpsampleStatus] = {}
    deadline = time.monotonic() + timeout_s
    with ServiceClient("upsample", state.services["upsample"], state.api_token) as client:
        info = UpsamplerInfo.model_validate(client.request("GET", "/upsample/server").json())
        while time.monotonic() < deadline:
            for pid in prompt_ids:
                if pid in statuses and statuses[pid].state in UPSAMPLE_FINAL_STATES:
                    continue
                resp = client.request("GET", f"/upsample/{pid}")
                if resp.status_code == 200:
                    statuses[pid] = UpsampleStatus.model_validate(resp.json())
            if all(pid in statuses and statuses[pid].state in UPSAMPLE_FINAL_STATES for pid in prompt_ids):
                break
            time.sleep(0.3)
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status.state] = counts.get(status.state, 0) + 1
    final = sum(counts.get(s, 0) for s in UPSAMPLE_FINAL_STATES)
    reasons = sorted({s.reason for s in statuses.values() if s.reason and s.state != "done"})
    return {
        "ok": final == len(prompt_ids),
        "available": info.available,
        "model": info.model,
        "profile": info.profile,
        "context_tokens": info.context_tokens,
        "counts": counts,
        "specs": len(prompt_ids),
        "reasons": reasons[:5],
    }


def print_upsampling(result: dict[str, Any], console: Console) -> None:
    """One line: rewritten, or unavailable and why."""
    if "counts" not in result:
        console.print(f"[red]upsampling: {result.get('error')}[/]")
        return
    counts = ", ".join(f"{n} {state}" for state, n in sorted(result["counts"].items())) or "nothing"
    if result["available"]:
        console.print(f"upsampling with {result['model']} ({result['profile']}): {counts} of {result['specs']} spec(s)")
    else:
        console.print(
            f"[yellow]upsampling unavailable[/] for {result['specs']} spec(s) ({counts}): "
            f"{result['reasons'][0] if result['reasons'] else 'no server configured'}"
        )
    for reason in result["reasons"][1 if not result["available"] else 0 :]:
        console.print(f"  {reason}")
