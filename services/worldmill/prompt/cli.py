"""``worldmill manifest check|submit`` and ``worldmill prompts ls|show``."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from worldmill.contracts.augment import ControlSpec
from worldmill.contracts.keys import INPUTS_BUCKET
from worldmill.contracts.prompts import (
    CoverageReport,
    InputSpecResult,
    ManifestProblem,
    ManifestResult,
    PromptDetail,
    PromptPage,
)
from worldmill.prompt.expand import Summary, check_text
from worldmill.prompt.identity import duration_token, slug
from worldmill.prompt.input_specs import CATEGORIES, VIDEO_SUFFIXES
from worldmill.runtime.cli_support import service_client
from worldmill.runtime.client import ServiceClient, ServiceUnavailableError, error_detail, locate_store

EXIT_FAILED, EXIT_USAGE = 1, 2

console = Console()
err = Console(stderr=True)

manifest_app = typer.Typer(help="Check and submit scenario manifests.", no_args_is_help=True)
prompts_app = typer.Typer(help="List and show prompt specs.", no_args_is_help=True)

DataDir = Annotated[Path, typer.Option("--data-dir", envvar="WM_DATA_DIR", help="The local stack's folder.")]
ManifestFile = Annotated[Path, typer.Argument(help="Manifest file (YAML or JSON).")]


def read_manifest(path: Path) -> bytes:
    """The file's bytes, or exit 2 naming the problem."""
    try:
        return path.read_bytes()
    except OSError as exc:
        err.print(f"[bold red]error:[/] FILE: cannot read {path}: {exc.strerror or exc}")
        raise typer.Exit(EXIT_USAGE) from exc


def print_problems(problems: list[ManifestProblem] | list[dict[str, Any]], source: str) -> None:
    """Every problem on one line: file:line:column: path: message [rule]."""
    err.print(f"[bold red]{len(problems)} problem(s)[/] in {source}:")
    for p in problems:
        if isinstance(p, ManifestProblem):
            item = p.model_dump()
        else:  # a 422 body's problem: loc is a list of path parts (one part, the manifest path, for manifests)
            loc = p.get("loc")
            path = ".".join(str(part) for part in loc) if isinstance(loc, list) else loc
            item = {**p, "path": path, "rule": p.get("type")}
        where = f"{source}:{item['line']}:{item['column']}" if item.get("line") else source
        message = item.get("message") or item.get("msg")
        err.print(escape(f"  {where}: {item['path']}: {message} [{item['rule']}]"))


def print_summary(name: str, summary: Summary | dict[str, Any]) -> None:
    """Specs per series and duration, and frames to generate."""
    by_series = summary.by_series if isinstance(summary, Summary) else summary["by_series"]
    frames = summary.frames_by_series if isinstance(summary, Summary) else summary["frames_by_series"]
    durations = sorted({d for per in by_series.values() for d in per}, key=lambda t: float(t[:-1].replace("_", ".")))
    table = Table(title=f"manifest {name}")
    table.add_column("series")
    for d in durations:
        table.add_column(d, justify="right")
    table.add_column("specs", justify="right")
    table.add_column("frames", justify="right")
    for series, per in by_series.items():
        table.add_row(
            series, *(str(per.get(d, 0)) for d in durations), str(sum(per.values())), f"{frames.get(series, 0):,}"
        )
    total_specs = sum(sum(per.values()) for per in by_series.values())
    table.add_row(
        "[bold]total",
        *(str(sum(p.get(d, 0) for p in by_series.values())) for d in durations),
        f"[bold]{total_specs}",
        f"[bold]{sum(frames.values()):,}",
    )
    console.print(table)


@manifest_app.command("check")
def check(path: ManifestFile) -> None:
    """Validate a manifest offline and print what it expands to (exit 2 on any problem)."""
    expansion = check_text(read_manifest(path), now=datetime.now(UTC))
    if not expansion.ok:
        print_problems(expansion.problems, str(path))
        raise typer.Exit(EXIT_USAGE)
    name = expansion.manifest.name if expansion.manifest else str(path)
    print_summary(name, expansion.summary())
    console.print(f"[green]ok:[/] {len(expansion.specs)} specs, {expansion.summary().frames:,} frames to generate")


def _client(data_dir: Path) -> ServiceClient:
    return service_client("prompt", data_dir)


@manifest_app.command("submit")
def submit(
    path: ManifestFile,
    data_dir: DataDir = Path(".worldmill"),
    dry_run: Annotated[bool, typer.Option(help="Check on the server and show the expansion; store nothing.")] = False,
) -> None:
    """Submit a manifest to the prompt service; unchanged specs are not stored again."""
    try:
        content = read_manifest(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        err.print(f"[bold red]error:[/] FILE: {escape(str(path))} is not UTF-8 text ({exc.reason} at byte {exc.start})")
        raise typer.Exit(EXIT_USAGE) from exc
    with _client(data_dir) as client:
        resp = client.request("POST", "/manifests", json={"content": content, "dry_run": dry_run})
    if resp.status_code == 422:
        body = resp.json()
        print_problems(body.get("detail", []), str(path))
        raise typer.Exit(EXIT_USAGE)
    if resp.status_code >= 400:
        err.print(f"[bold red]failed:[/] HTTP {resp.status_code}: {error_detail(resp)}")
        raise typer.Exit(EXIT_FAILED)
    result = ManifestResult.model_validate(resp.json())
    print_summary(result.manifest, result.counts.model_dump())
    if dry_run:
        console.print(f"dry run: {result.counts.specs} specs would be checked against what is stored")
    else:
        console.print(f"[green]submitted:[/] {len(result.created)} new spec version(s), {result.unchanged} unchanged")


@prompts_app.command("ls")
def ls(
    data_dir: DataDir = Path(".worldmill"),
    manifest: str | None = None,
    series: str | None = None,
    tag: Annotated[list[str] | None, typer.Option(help="Repeat for several (any of them).")] = None,
    risk: str | None = None,
    duration: str | None = None,
    model: str | None = None,
    limit: int = 100,
    cursor: Annotated[str | None, typer.Option(help="Continue after this prompt id (from the previous page).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the latest version of prompt specs, filtered."""
    params: dict[str, Any] = {
        k: v
        for k, v in {
            "manifest": manifest,
            "series": series,
            "risk": risk,
            "duration": duration,
            "model": model,
            "limit": limit,
            "cursor": cursor,
        }.items()
        if v is not None
    }
    if tag:
        params["tag"] = tag
    with _client(data_dir) as client:
        resp = client.request("GET", "/prompts", params=params)
    if resp.status_code >= 400:
        err.print(f"[bold red]error:[/] {error_detail(resp)}")
        raise typer.Exit(EXIT_USAGE if resp.status_code == 422 else EXIT_FAILED)
    page = PromptPage.model_validate(resp.json())
    if json_out:
        console.print_json(json.dumps(resp.json()))
        return
    table = Table(title=f"{len(page.items)} prompt spec(s)")
    for col in ("id", "v", "series", "duration", "frames", "fps", "seed", "model", "prompt"):
        table.add_column(col)
    for s in page.items:
        table.add_row(
            s.prompt_id,
            str(s.version),
            s.series or "",
            duration_token(s.duration_s),
            str(s.target_frames),
            str(s.fps),
            str(s.seed),
            s.model,
            s.prompt[:60] + ("…" if len(s.prompt) > 60 else ""),
        )
    console.print(table)
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}")


@prompts_app.command("show")
def show(prompt_id: str, data_dir: DataDir = Path(".worldmill")) -> None:
    """Show a spec's latest version and its history."""
    with _client(data_dir) as client:
        resp = client.request("GET", f"/prompts/{prompt_id}")
    if resp.status_code == 404:
        err.print(f"[bold red]error:[/] PROMPT_ID: {error_detail(resp)}")
        raise typer.Exit(EXIT_USAGE)
    if resp.status_code >= 400:
        err.print(f"[bold red]failed:[/] {error_detail(resp)}")
        raise typer.Exit(EXIT_FAILED)
    detail = PromptDetail.model_validate(resp.json())
    console.print_json(detail.latest.model_dump_json())
    console.print(
        f"{len(detail.history)} version(s): "
        + ", ".join(f"v{s.version} ({s.created_at:%Y-%m-%d %H:%M})" for s in detail.history)
    )


def parse_controls(text: str | None) -> list[dict[str, Any]]:
    """``"edge=0.6,vis=0.4"`` → control specs; ``BadParameter`` naming the rule otherwise."""
    if not text:
        return []
    out = []
    for part in text.split(","):
        name, _, weight = part.partition("=")
        try:
            control = ControlSpec(type=name.strip(), weight=float(weight) if weight else 1.0)
        except (ValueError, ValidationError) as exc:
            raise typer.BadParameter(
                f"{part!r}: each control is TYPE=WEIGHT with TYPE one of edge, depth, seg, vis and WEIGHT in 0..1",
                param_hint="--controls",
            ) from exc
        out.append(control.model_dump(mode="json"))
    return out


def videos_in(folder: Path) -> list[Path]:
    """Video files under a folder, in a stable order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


async def _upload_folder(folder: Path, videos: list[Path], data_dir: Path) -> tuple[str, str, int]:
    store = locate_store(data_dir)
    prefix = f"local/{slug(folder.name, 80)}/"
    count = 0
    for path in videos:
        key = prefix + path.relative_to(folder).as_posix()
        await store.put_file(INPUTS_BUCKET, key, path, content_type="video/mp4")
        count += 1
    return INPUTS_BUCKET, prefix, count


@prompts_app.command("from-videos")
def from_videos(
    source: Annotated[str, typer.Argument(help="A local folder (uploaded to wm-inputs) or s3://bucket/prefix.")],
    data_dir: DataDir = Path(".worldmill"),
    template: Annotated[str, typer.Option(help=f"Category template: {', '.join(CATEGORIES)}.")] = "generic",
    controls: Annotated[str | None, typer.Option(help="e.g. edge=0.6,vis=0.4 (default edge=1.0).")] = None,
    tier: Annotated[str, typer.Option(help="Resolution tier to map inputs onto: 720 or 480.")] = "720",
    new_version: Annotated[bool, typer.Option(help="Add a new version where a spec already exists.")] = False,
    upsample: Annotated[bool, typer.Option(help="Have each prompt rewritten from the video's own frames.")] = False,
) -> None:
    """Make a Transfer spec for every video in a folder or bucket prefix (existing specs are kept)."""
    control_specs = parse_controls(controls)
    if source.startswith("s3://"):
        bucket, _, prefix = source.removeprefix("s3://").partition("/")
    else:
        folder = Path(source)
        if not folder.is_dir():
            err.print(f"[bold red]error:[/] SOURCE: {escape(source)} is neither a folder nor an s3:// URL")
            raise typer.Exit(EXIT_USAGE)
        try:
            bucket, prefix, uploaded = asyncio.run(_upload_folder(folder, videos_in(folder), data_dir))
        except ServiceUnavailableError as exc:
            err.print(f"[bold red]failed:[/] {exc}")
            raise typer.Exit(EXIT_FAILED) from exc
        console.print(f"uploaded {uploaded} video(s) to s3://{bucket}/{prefix}")
    body = {
        "bucket": bucket,
        "prefix": prefix,
        "template": template,
        "tier": tier,
        "controls": control_specs,
        "new_version": new_version,
        "upsample": upsample,
    }
    with _client(data_dir) as client:
        resp = client.request("POST", "/input-specs", json=body)
    if resp.status_code >= 400:
        err.print(f"[bold red]error:[/] {escape(error_detail(resp))}")
        raise typer.Exit(EXIT_USAGE if resp.status_code == 422 else EXIT_FAILED)
    result = InputSpecResult.model_validate(resp.json())
    table = Table(title=f"input specs for s3://{bucket}/{prefix}")
    for col in ("video", "outcome", "prompt id", "reason"):
        table.add_column(col)
    for o in result.outcomes:
        table.add_row(o.key, o.outcome, o.prompt_id or "", o.reason)
    console.print(table)


@manifest_app.command("coverage")
def coverage(
    name: Annotated[str, typer.Argument(help="The manifest's name.")],
    data_dir: DataDir = Path(".worldmill"),
    missing_only: Annotated[bool, typer.Option("--missing", help="List only what has no passed video.")] = False,
) -> None:
    """Which (scenario, duration, variant) have no finished video, or none that passed QA."""
    with _client(data_dir) as client:
        resp = client.request("GET", f"/manifests/{name}/coverage")
    if resp.status_code == 404:
        err.print(f"[bold red]error:[/] NAME: {escape(error_detail(resp))}")
        raise typer.Exit(EXIT_USAGE)
    if resp.status_code >= 400:
        err.print(f"[bold red]failed:[/] {escape(error_detail(resp))}")
        raise typer.Exit(EXIT_FAILED)
    report = CoverageReport.model_validate(resp.json())
    table = Table(title=f"coverage of {report.manifest} ({report.computed_from})")
    for col in ("prompt id", "series", "scenario", "duration", "variant", "videos", "state"):
        table.add_column(col)
    for item in report.items:
        if missing_only and item.state == "passed":
            continue
        table.add_row(
            item.prompt_id,
            item.series or "",
            item.scenario,
            duration_token(item.duration_s),
            str(item.variant),
            str(item.videos),
            item.state,
        )
    console.print(table)
    console.print(", ".join(f"{k}: {v}" for k, v in sorted(report.counts.items())) + f" (of {report.total})")
