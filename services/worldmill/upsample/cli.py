"""``worldmill upsample PROMPT_ID…|--manifest FILE``: rewrite prompts with the upsampling server, with progress."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from worldmill.contracts.base import ObjectLocation
from worldmill.contracts.upsample import (
    UPSAMPLE_FINAL_STATES,
    UpsampleAccepted,
    UpsamplerInfo,
    UpsampleStatus,
    UpsampleStatusPage,
)
from worldmill.runtime import cli_support
from worldmill.runtime.cli_support import (
    EXIT_FAILED,
    fail_response,
    post_once_specs_are_known,
    progress_bar,
    prompt_ids_or_manifest,
    service_client,
)
from worldmill.runtime.client import ServiceClient, ServiceUnavailableError

console, err = cli_support.console, cli_support.err_console


def parse_hint(text: str) -> ObjectLocation:
    """``s3://bucket/key`` as an object reference; typer.BadParameter (exit 2) otherwise."""
    if not text.startswith("s3://") or "/" not in text[5:] or text.endswith("/"):
        raise typer.BadParameter("must look like s3://BUCKET/KEY", param_hint="--hint")
    bucket, key = text[5:].split("/", 1)
    try:
        return ObjectLocation(bucket=bucket, key=key)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--hint") from exc


def server_info(client: ServiceClient) -> UpsamplerInfo:
    """``GET /upsample/server``."""
    resp = client.request("GET", "/upsample/server")
    if resp.status_code >= 400:
        fail_response(resp)
    return UpsamplerInfo.model_validate(resp.json())


def request_upsample(
    client: ServiceClient, body: dict[str, Any], *, wait_for_specs_s: float = 10.0
) -> UpsampleAccepted:
    """POST /upsample; specs just created may take a moment to reach the upsample service."""
    resp = post_once_specs_are_known(client, "/upsample", body, wait_s=wait_for_specs_s)
    if resp.status_code >= 400:
        fail_response(resp)
    return UpsampleAccepted.model_validate(resp.json())


def wait_for_upsamples(client: ServiceClient, request_id: str, total: int, *, timeout_s: float) -> list[UpsampleStatus]:
    """Poll the request until every spec is done, failed or unavailable (or the timeout), with a progress bar."""
    deadline = time.monotonic() + timeout_s
    items: list[UpsampleStatus] = []
    with progress_bar() as bar:
        task = bar.add_task("prompts upsampled", total=total)
        while time.monotonic() < deadline:
            resp = client.request("GET", "/upsample", params={"request_id": request_id})
            if resp.status_code >= 400:
                fail_response(resp)
            items = list(UpsampleStatusPage.model_validate(resp.json()).items)
            finished = sum(i.state in UPSAMPLE_FINAL_STATES for i in items)
            bar.update(task, completed=finished)
            if finished >= total:
                break
            time.sleep(0.3)
    return items


def print_statuses(items: list[UpsampleStatus]) -> None:
    """One line per spec: state, frames sent, tokens, cache, and the rewrite's start or the reason."""
    table = Table(title="upsampled prompts")
    for column in ("prompt", "state", "frames", "tokens est/used", "cached", "result"):
        table.add_column(column)
    for item in sorted(items, key=lambda i: i.prompt_id):
        info = item.info
        frames = "-"
        if info is not None and info.frame_resolution is not None:
            frames = f"{info.frames_sent}×{info.frame_resolution}"
        elif info is not None:
            frames = str(info.frames_sent)
        tokens = f"{info.tokens_estimated}/{info.tokens_used if info.tokens_used is not None else '?'}" if info else "-"
        result = (item.prompt or "")[:70] if item.state == "done" else (item.reason or "")[:120]
        table.add_row(item.prompt_id, item.state, frames, tokens, "yes" if info and info.cached else "", escape(result))
    console.print(table)


def upsample(
    prompt_ids: Annotated[list[str] | None, typer.Argument(help="Prompt ids to upsample.")] = None,
    manifest: Annotated[
        str | None,
        typer.Option(help="Upsample all specs of this manifest: its name, or its file (submitted first)."),
    ] = None,
    hint: Annotated[str | None, typer.Option(help="s3://BUCKET/KEY image or video to take hint frames from.")] = None,
    force: Annotated[bool, typer.Option(help="Ask the model again even when a cached answer exists.")] = False,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", envvar="WM_DATA_DIR", help="The local stack's folder.")
    ] = Path(".worldmill"),
    wait: Annotated[bool, typer.Option(help="Wait until every prompt is finished.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 1800.0,
) -> None:
    """Rewrite prompt specs with the vision-language upsampler; each rewrite becomes a new spec version."""
    try:
        _upsample(prompt_ids, manifest, hint, force=force, data_dir=data_dir, wait=wait, timeout=timeout)
    except ServiceUnavailableError as exc:
        err.print(f"[bold red]failed:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILED) from exc


def _upsample(
    prompt_ids: list[str] | None,
    manifest: str | None,
    hint: str | None,
    *,
    force: bool,
    data_dir: Path,
    wait: bool,
    timeout: float,
) -> None:
    hint_ref = parse_hint(hint) if hint else None
    ids = prompt_ids_or_manifest(prompt_ids, manifest, data_dir)
    with service_client("upsample", data_dir) as client:
        info = server_info(client)
        if not info.available:
            err.print(f"[bold yellow]unavailable:[/] {escape(info.reason or 'no upsampling server')}")
            raise typer.Exit(EXIT_FAILED)
        body: dict[str, Any] = {"prompt_ids": list(dict.fromkeys(ids)), "force": force, "requested_by": "cli"}
        if hint_ref is not None:
            body["hint"] = hint_ref.model_dump(mode="json")
        accepted = request_upsample(client, body)
        console.print(
            f"request {accepted.request_id}: {len(accepted.queued)} prompt(s) queued for {info.model} "
            f"({info.profile}, {info.context_tokens}-token context, up to {info.concurrency} at a time)"
        )
        if not wait:
            return
        items = wait_for_upsamples(client, accepted.request_id, len(accepted.queued), timeout_s=timeout)
    print_statuses(items)
    if len(items) < len(accepted.queued) or any(i.state != "done" for i in items):
        raise typer.Exit(EXIT_FAILED)
