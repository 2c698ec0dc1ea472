"""``worldmill manifest check|submit|import`` and ``worldmill prompts ls|show``."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from worldmill.contracts.augment import ControlSpec
from worldmill.contracts.cards import builtin_cards
from worldmill.contracts.catalog import GenerationStatus
from worldmill.contracts.keys import INPUTS_BUCKET
from worldmill.contracts.prompts import (
    InputSpecResult,
    ManifestProblem,
    ManifestResult,
    PromptDetail,
    PromptPage,
)
from worldmill.prompt.expand import Summary, check_text
from worldmill.prompt.identity import duration_token, slug
from worldmill.prompt.importer import Finding, import_prompts, to_yaml
from worldmill.prompt.input_specs import CATEGORIES, VIDEO_SUFFIXES, CategoryTemplate
from worldmill.runtime.cli_support import fail_response, service_client
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


#: Control-video names the augment service reads next to an input (``depth.mp4``, ``clip_depth.mp4``):
#: not videos of their own, so they get no sidecar.
CONTROL_STEMS = frozenset({"depth", "seg", "segmentation", "edge", "edges", "vis", "blur"})
TRANSFER_MODEL = "cosmos-transfer2.5-2b"


def is_control_video(path: Path) -> bool:
    """``depth.mp4`` in a folder, or ``clip_depth.mp4`` next to ``clip.mp4``."""
    stem = path.stem.lower()
    if stem in CONTROL_STEMS:
        return True
    base, sep, tail = path.stem.rpartition("_")
    if not sep or not base or tail.lower() not in CONTROL_STEMS:
        return False
    return any((path.parent / f"{base}{suffix}").is_file() for suffix in VIDEO_SUFFIXES)


def sidecar_for(
    video: Path, folder: Path, template: CategoryTemplate, controls: list[dict[str, Any]]
) -> dict[str, Any]:
    """The ``{name}.json`` (docs/background.md#hand-videos) for one video: name, prompt, negative prompt, seed,
    guidance, controls.

    The prompt is the category template's; the seed a stable hash of the video's path in the
    folder (so each video of a folder has its own); the guidance the Transfer card's default; the
    controls ``edge`` at 1.0 unless given. Every field is used by ``worldmill augment``.
    """
    rel = video.relative_to(folder).as_posix()
    guidance = builtin_cards()[TRANSFER_MODEL].default_guidance
    doc: dict[str, Any] = {
        "name": video.stem,
        "prompt": template.prompt,
        "negative_prompt": template.negative_prompt,
        "seed": int.from_bytes(hashlib.sha256(f"sidecar\x1f{rel}".encode()).digest()[:4], "big"),
        "guidance": int(guidance) if float(guidance).is_integer() else guidance,
    }
    for control in controls or [{"type": "edge", "weight": 1.0}]:
        doc[str(control["type"])] = {"control_weight": control["weight"]}
    return doc


def write_sidecars(folder: Path, template: CategoryTemplate, controls: list[dict[str, Any]]) -> list[tuple[Path, str]]:
    """Write ``{name}.json`` next to every video of ``folder`` that has none: ``(path, "written" | "kept")``."""
    done: list[tuple[Path, str]] = []
    for video in videos_in(folder):
        if is_control_video(video):
            continue
        target = video.with_suffix(".json")
        text = json.dumps(sidecar_for(video, folder, template, controls), indent=2) + "\n"
        try:
            with target.open("x", encoding="utf-8") as fh:  # "x": never replaces an existing file
                fh.write(text)
        except FileExistsError:
            done.append((target, "kept"))
            continue
        except OSError as exc:
            err.print(f"[bold red]failed:[/] cannot write {escape(str(target))}: {escape(exc.strerror or str(exc))}")
            raise typer.Exit(EXIT_FAILED) from exc
        done.append((target, "written"))
    return done


def _sidecars_command(source: str, template_name: str, controls: list[dict[str, Any]], *, upsample: bool) -> None:
    """``from-videos DIR --write-sidecars``: editable specs next to the videos; nothing is uploaded."""
    if source.startswith("s3://"):
        err.print("[bold red]error:[/] --write-sidecars: SOURCE must be a local folder (the sidecars go next to it)")
        raise typer.Exit(EXIT_USAGE)
    if upsample:
        err.print(
            "[bold red]error:[/] --write-sidecars takes the prompt from --template; the VLM rewrite (--upsample) "
            "runs in the services, on specs, not on local sidecars"
        )
        raise typer.Exit(EXIT_USAGE)
    folder = Path(source)
    if not folder.is_dir():
        err.print(f"[bold red]error:[/] SOURCE: {escape(source)} is not a folder")
        raise typer.Exit(EXIT_USAGE)
    template = CATEGORIES.get(template_name)
    if template is None:
        err.print(f"[bold red]error:[/] --template: {template_name!r} is not one of {', '.join(CATEGORIES)}")
        raise typer.Exit(EXIT_USAGE)
    done = write_sidecars(folder, template, controls)
    table = Table(title=f"sidecars in {escape(str(folder))}")
    for col in ("sidecar", "outcome"):
        table.add_column(col)
    for path, outcome in done:
        table.add_row(escape(str(path)), outcome if outcome == "written" else "kept (exists; not overwritten)")
    console.print(table)
    written = sum(o == "written" for _, o in done)
    console.print(
        f"{written} written, {len(done) - written} kept; edit them, then `worldmill augment {escape(source)}`"
    )


@prompts_app.command("from-videos")
def from_videos(
    source: Annotated[str, typer.Argument(help="A local folder (uploaded to wm-inputs) or s3://bucket/prefix.")],
    data_dir: DataDir = Path(".worldmill"),
    template: Annotated[str, typer.Option(help=f"Category template: {', '.join(CATEGORIES)}.")] = "generic",
    controls: Annotated[str | None, typer.Option(help="e.g. edge=0.6,vis=0.4 (default edge=1.0).")] = None,
    tier: Annotated[str, typer.Option(help="Resolution tier to map inputs onto: 720 or 480.")] = "720",
    new_version: Annotated[bool, typer.Option(help="Add a new version where a spec already exists.")] = False,
    upsample: Annotated[bool, typer.Option(help="Have each prompt rewritten from the video's own frames.")] = False,
    sidecars: Annotated[
        bool,
        typer.Option(
            "--write-sidecars",
            help="Only write an editable {name}.json next to each video of the folder (name, prompt, negative "
            "prompt, seed, guidance, controls; an existing one is never overwritten) for `worldmill augment`.",
        ),
    ] = False,
) -> None:
    """Make a Transfer spec for every video in a folder or bucket prefix (existing specs are kept)."""
    control_specs = parse_controls(controls)
    if sidecars:
        _sidecars_command(source, template, control_specs, upsample=upsample)
        return
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
    """Which (scenario, duration, variant) have no finished video, or none that passed QA (the catalog's status)."""
    with service_client("catalog", data_dir) as client:
        resp = client.request("GET", f"/manifests/{quote(name, safe='')}/status")
    if resp.status_code >= 400:
        fail_response(resp)  # exit 2 for an unknown manifest, 1 for a failure
    report = GenerationStatus.model_validate(resp.json())
    table = Table(title=f"coverage of {report.manifest} (catalog)")
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
            str(len(item.assets)),
            item.state,
        )
    console.print(table)
    console.print(", ".join(f"{k}: {v}" for k, v in sorted(report.counts.items())) + f" (of {report.total})")


def _json_files(sources: list[Path]) -> tuple[list[Path], str]:
    """The files to import (a folder's ``*.json``, sorted) and the folder name; exit 2 naming a bad path."""
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            found = sorted(p for p in source.glob("*.json") if p.is_file())
            if not found:
                err.print(f"[bold red]error:[/] FILES: no *.json files in {escape(str(source))}")
                raise typer.Exit(EXIT_USAGE)
            files.extend(found)
        elif source.is_file():
            files.append(source)
        else:
            err.print(f"[bold red]error:[/] FILES: {escape(str(source))} is neither a file nor a folder")
            raise typer.Exit(EXIT_USAGE)
    seen: dict[str, Path] = {}
    for path in files:
        if path.name in seen and seen[path.name].resolve() != path.resolve():
            err.print(
                f"[bold red]error:[/] FILES: {escape(str(path))} and {escape(str(seen[path.name]))} have the same "
                "name; scenarios, durations and variants come from file names, so they must differ"
            )
            raise typer.Exit(EXIT_USAGE)
        seen[path.name] = path
    folder = sources[0] if sources[0].is_dir() else sources[0].parent
    return [seen[n] for n in dict.fromkeys(p.name for p in files)], folder.resolve().name or "manifest"


def _parse_json_files(files: list[Path]) -> dict[str, dict[str, Any]]:
    """Each file's JSON object by file name; exit 2 listing every file that is not one."""
    parsed: dict[str, dict[str, Any]] = {}
    bad: list[str] = []
    for path in files:
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except OSError as exc:
            bad.append(f"{path}: cannot read: {exc.strerror or exc}")
            continue
        except UnicodeDecodeError as exc:
            bad.append(f"{path}: is not UTF-8 text ({exc.reason} at byte {exc.start})")
            continue
        except json.JSONDecodeError as exc:
            bad.append(f"{path}:{exc.lineno}:{exc.colno}: is not JSON: {exc.msg}")
            continue
        if not isinstance(data, dict):
            bad.append(f"{path}: is a JSON {type(data).__name__}, not an object of prompt fields")
            continue
        parsed[path.name] = data
    if bad:
        err.print(f"[bold red]error:[/] FILES: {len(bad)} file(s) are not JSON objects:")
        for line in bad:
            err.print(escape(f"  {line}"))
        raise typer.Exit(EXIT_USAGE)
    return parsed


def _print_findings(title: str, findings: list[Finding], style: str) -> None:
    err.print(f"[{style}]{len(findings)} {title}[/]:")
    for f in findings:
        err.print(escape(f"  {f.file}: {f.field}: {f.message} [{f.rule}]"))


def _print_notes(notes: list[Finding]) -> None:
    """Notes grouped: the same note for 496 files is one line with a count."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for n in notes:
        grouped.setdefault((n.field, n.message), []).append(n.file)
    err.print(f"[yellow]{len(notes)} field(s) not carried as written[/]:")
    for (field_name, message), names in grouped.items():
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        err.print(escape(f"  {field_name} ({len(names)} file(s): {shown}): {message}"))


def _write_manifest(target: Path, text: str, *, force: bool) -> None:
    """Write the YAML; without ``force`` never over an existing file (checked again at open: ``x`` mode)."""
    try:
        with target.open("w" if force else "x", encoding="utf-8") as fh:
            fh.write(text)
    except FileExistsError as exc:
        err.print(f"[bold red]error:[/] OUTPUT: {escape(str(target))} exists; pass --force to overwrite it")
        raise typer.Exit(EXIT_USAGE) from exc
    except OSError as exc:
        err.print(f"[bold red]error:[/] OUTPUT: cannot write {escape(str(target))}: {exc.strerror or exc}")
        raise typer.Exit(EXIT_USAGE) from exc


@manifest_app.command("import")
def import_files(
    sources: Annotated[
        list[Path], typer.Argument(help="Per-video prompt JSON files, or a folder of them (its *.json, sorted).")
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write the manifest (default: ./<folder>.yaml).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="The manifest's name (default: the folder's name as a slug).")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the YAML and its check; write nothing.")] = False,
    force: Annotated[bool, typer.Option(help="Overwrite the output file if it exists.")] = False,
    allow_unknown: Annotated[
        bool, typer.Option(help="Write the manifest even though some JSON fields are not recognised (still listed).")
    ] = False,
) -> None:
    """Turn per-video Cosmos prompt JSON files into one manifest, then check it as `manifest check` does.

    Files are grouped by name: C01_30s.json is scenario C01 of series C at 30 s, C01_5s_v1.json its
    5 s variant 1; without a duration in the name it is num_output_frames / fps. prompt,
    negative_prompt, guidance, num_steps, fps, resolution, model and inference_type are carried;
    seed is not (the manifest derives one per scenario, duration and variant); Transfer controls
    (edge/depth/seg/vis) and input paths go to scenario metadata only. Every other field is listed
    with its file.

    Exit 0: written (or, with --dry-run, would be) and it checks. Exit 1: the files contradict
    themselves (e.g. a name's duration against num_output_frames) or the manifest has check
    problems; it is written anyway, so the problems' lines point into it. Exit 2: bad input,
    nothing written: a path that is missing, a file that is not a JSON object, a folder without
    *.json, an existing output without --force, or fields not recognised without --allow-unknown.
    """
    files, folder_name = _json_files(sources)
    target = output or Path(f"{folder_name}.yaml")
    if not dry_run and target.exists() and not force:
        err.print(f"[bold red]error:[/] OUTPUT: {escape(str(target))} exists; pass --force to overwrite it")
        raise typer.Exit(EXIT_USAGE)
    parsed = _parse_json_files(files)
    manifest_name = name if name is not None else slug(folder_name)
    where = f"{len(files)} prompt JSON file(s) in {folder_name}/"
    result = import_prompts(parsed, name=manifest_name, description=f"Imported from {where}.")
    text = to_yaml(result.manifest)
    blocked = bool(result.unknown) and not allow_unknown
    written = not dry_run and not blocked
    if dry_run:
        typer.echo(text, nl=False)
    elif written:
        _write_manifest(target, text, force=force)
    expansion = check_text(text, now=datetime.now(UTC))
    if expansion.ok:
        print_summary(manifest_name, expansion.summary())
        console.print(f"[green]ok:[/] {len(expansion.specs)} specs, {expansion.summary().frames:,} frames to generate")
    else:
        print_problems(expansion.problems, str(target))
    if result.notes:
        _print_notes(result.notes)
    if result.problems:
        _print_findings("problem(s) in the JSON files", result.problems, "bold red")
    if result.unknown:
        _print_findings("field(s) not recognised", result.unknown, "bold red" if blocked else "yellow")
    if written:
        console.print(f"wrote {escape(str(target))} from {escape(where)}")
    elif dry_run:
        console.print(f"dry run: {escape(str(target))} not written")
    if blocked:
        err.print(
            "[bold red]not written:[/] fields are not recognised; map them by hand, or pass --allow-unknown "
            "to write the manifest without them"
        )
        raise typer.Exit(EXIT_USAGE)
    if result.problems or not expansion.ok:
        count = len(result.problems) + len(expansion.problems)
        then = f"fix {target} or the JSON files (then rerun with --force)" if written else "fix the JSON files"
        err.print(f"[bold red]failed:[/] {count} problem(s); {escape(then)}")
        raise typer.Exit(EXIT_FAILED)
