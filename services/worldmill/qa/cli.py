"""``worldmill audit PATH_OR_S3_URL`` and ``worldmill qa show ASSET_ID``.

``audit`` checks a folder (or an ``s3://bucket/prefix``) of delivered videos on this machine, with
no service running: every file decoded once, checked against its expectation, then the checks
across files (see :mod:`worldmill.qa.audit`). Objects are downloaded one at a time into a
temporary folder and deleted once analysed, so one video at most is on disk at a time.

Expectations come from ``--manifest FILE`` (or a manifest's name: its specs as the prompt service
holds them) or from the file names. Expanding a manifest is the
prompt service's code, which this package must not import (services never import each other, see
docs/architecture.md): the CLI that composes the services hands it in once with
:func:`set_manifest_expander` (``worldmill.cli.main``:
``set_manifest_expander(lambda raw: check_text(raw, now=datetime.now(UTC)))``).

Exit codes: 0 every file passed and nothing is missing; 1 a file failed, a variant is missing, no
video was found or the store failed; 2 bad usage (no such folder, not an s3:// URL, a manifest that
cannot be read or has problems, a report that cannot be written).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Protocol

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from worldmill.contracts.prompts import ManifestProblem, PromptSpec
from worldmill.contracts.qa import Finding, Severity
from worldmill.qa.audit import VIDEO_SUFFIXES, Audit, Auditor, Expectations, find_videos, is_video
from worldmill.qa.audit_report import write_html, write_json
from worldmill.qa.findings import passed
from worldmill.runtime.cli_support import is_manifest_file, service_client
from worldmill.runtime.client import (
    RequestFailedError,
    ServiceClient,
    ServiceUnavailableError,
    error_detail,
    list_manifest_specs,
    locate_store,
)
from worldmill.runtime.errors import WorldmillError
from worldmill.runtime.store import ObjectStore

__all__ = ["ManifestExpansion", "audit", "qa_app", "set_manifest_expander"]

EXIT_FAILED, EXIT_USAGE = 1, 2
#: Failed files listed one per row in the terminal; the rest are counted (the reports have all).
MAX_ROWS = 50

console = Console()
err = Console(stderr=True)

qa_app = typer.Typer(help="Show QA verdicts of generated videos.", no_args_is_help=True)
DataDir = Annotated[Path, typer.Option("--data-dir", envvar="WM_DATA_DIR", help="The local stack's folder.")]


class ManifestExpansion(Protocol):
    """What expanding a manifest gives: its specs, or its problems."""

    @property
    def specs(self) -> Sequence[PromptSpec]: ...

    @property
    def problems(self) -> Sequence[ManifestProblem]: ...


ManifestExpander = Callable[[bytes], ManifestExpansion]
_WIRING: dict[str, ManifestExpander] = {}


def set_manifest_expander(expander: ManifestExpander) -> None:
    """Give ``audit --manifest`` the function that expands a manifest document (the prompt service's)."""
    _WIRING["expander"] = expander


def _usage(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(EXIT_USAGE)


def _expectations(manifest: str | None, fps: float, data_dir: Path) -> Expectations:
    if manifest is None:
        return Expectations(fps=fps)
    if not is_manifest_file(manifest):
        return Expectations(_stored_specs(manifest, data_dir))
    expander = _WIRING.get("expander")
    if expander is None:
        raise _usage("--manifest: manifest expansion is not available in this program (set_manifest_expander)")
    try:
        raw = Path(manifest).read_bytes()
    except OSError as exc:
        raise _usage(f"MANIFEST: cannot read {manifest}: {exc.strerror or exc}") from exc
    expansion = expander(raw)
    if expansion.problems:
        err.print(f"[bold red]{len(expansion.problems)} problem(s)[/] in {escape(str(manifest))}:")
        for p in expansion.problems:
            where = f"{manifest}:{p.line}:{p.column}" if p.line else str(manifest)
            err.print(escape(f"  {where}: {p.path}: {p.message} [{p.rule}]"))
        raise typer.Exit(EXIT_USAGE)
    return Expectations(list(expansion.specs))


def _stored_specs(name: str, data_dir: Path) -> list[PromptSpec]:
    """The latest spec versions of manifest ``name`` as the prompt service holds them (exit 2 if none)."""
    with service_client("prompt", data_dir) as prompts:
        try:
            specs = list_manifest_specs(prompts, name)
        except ServiceUnavailableError as exc:
            err.print(f"[bold red]failed:[/] {escape(str(exc))}")
            raise typer.Exit(EXIT_FAILED) from exc
        except RequestFailedError as exc:
            err.print(f"[bold red]failed:[/] {escape(error_detail(exc.response))}")
            raise typer.Exit(EXIT_FAILED) from exc
    if not specs:
        raise _usage(
            f"--manifest: no manifest named {name!r} is known to the prompt service "
            "(pass its file, or submit it with `worldmill manifest submit FILE`)"
        )
    return specs


def _parse_s3(url: str) -> tuple[str, str]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise _usage(f"PATH: {url} names no bucket (expected s3://bucket/prefix)")
    return bucket, prefix


def _progress() -> Progress:
    return Progress(
        TextColumn("auditing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[name]}"),
        console=console,
    )


@contextmanager
def _one_at_a_time(store: ObjectStore, bucket: str) -> Iterator[Callable[[str], Path]]:
    """A fetch function: each call downloads one object into one temp folder, deleting the one before."""
    with tempfile.TemporaryDirectory(prefix="wm-audit-") as tmp:
        held: list[Path] = []

        def fetch(key: str) -> Path:
            while held:
                held.pop().unlink(missing_ok=True)
            dest = Path(tmp) / (PurePosixPath(key).name or "object")
            held.append(dest)
            asyncio.run(store.download(bucket, key, dest))
            return dest

        yield fetch
        while held:
            held.pop().unlink(missing_ok=True)


def _audit_s3(url: str, auditor: Auditor, data_dir: Path) -> None:
    bucket, prefix = _parse_s3(url)
    try:
        store = locate_store(data_dir)
        keys = [o.key for o in asyncio.run(store.list(bucket, prefix)) if is_video(o.key)]
    except WorldmillError as exc:
        err.print(f"[bold red]failed:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILED) from exc
    with _progress() as progress, _one_at_a_time(store, bucket) as fetch:
        task = progress.add_task("audit", total=len(keys), name="")
        for key in keys:
            name = key.removeprefix(prefix).lstrip("/") or key
            progress.update(task, name=escape(name))
            try:
                local = fetch(key)
            except WorldmillError as exc:
                auditor.add_unreadable(name, f"cannot download s3://{bucket}/{key}: {exc}")
            else:
                auditor.add(name, local)
            progress.advance(task)


def _audit_folder(folder: Path, auditor: Auditor) -> None:
    videos = find_videos(folder)
    with _progress() as progress:
        task = progress.add_task("audit", total=len(videos), name="")
        for path in videos:
            name = path.relative_to(folder).as_posix()
            progress.update(task, name=escape(name))
            auditor.add(name, path)
            progress.advance(task)


def _print_summary(result: Audit) -> None:
    failures = result.failures_by_check()
    if failures:
        table = Table(title="failures by check")
        table.add_column("check")
        table.add_column("files", justify="right")
        for check_name, count in failures.items():
            table.add_row(escape(check_name), str(count))
        console.print(table)
    failed = result.failed_files
    if failed:
        table = Table(title=f"{len(failed)} failed file(s)")
        for column in ("file", "frames", "fps", "duration", "failed checks"):
            table.add_column(column)
        for r in failed[:MAX_ROWS]:
            checks = sorted({f.check for f in r.findings if not f.passed and f.severity is Severity.ERROR})
            table.add_row(
                escape(r.name),
                str(r.frames),
                "" if r.fps is None else f"{r.fps:g}",
                f"{r.duration_s:.2f} s",
                escape(", ".join(checks)),
            )
        console.print(table)
        if len(failed) > MAX_ROWS:
            console.print(f"… and {len(failed) - MAX_ROWS} more failed file(s) (see --json / --html)")
    for group in result.identical:
        console.print(f"[red]identical:[/] {escape(', '.join(group.files))}")
    for group in result.near_identical:
        console.print(f"[red]near-identical ({escape(group.scenario or '')}):[/] {escape(', '.join(group.files))}")
    for m in result.missing:
        console.print(f"[red]missing:[/] {escape(m.expected_name)} ({escape(m.reason)})")
    verdict = "[green]passed[/]" if result.ok else "[bold red]failed[/]"
    rate = len(result.files) / result.elapsed_s if result.elapsed_s > 0 else 0.0
    console.print(
        f"{verdict}: {len(result.files)} file(s), {len(result.passed_files)} passed, {len(failed)} failed, "
        f"{len(result.missing)} missing, {len(result.identical)} identical group(s), "
        f"{len(result.near_identical)} near-identical group(s) in {result.elapsed_s:.1f} s ({rate:.1f} files/s)"
    )


def audit(
    path: Annotated[str, typer.Argument(help="A folder of videos (recursive) or s3://bucket/prefix.")],
    manifest: Annotated[
        str | None,
        typer.Option(
            "--manifest",
            help="The manifest the videos were made from: its file (YAML, JSON) or its name (the stored specs).",
        ),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON here.")] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Write the report as one HTML page (with screenshots) here.")
    ] = None,
    fps: Annotated[
        float, typer.Option("--fps", min=1.0, max=240.0, help="Expected fps when expectations come from file names.")
    ] = 24.0,
    data_dir: DataDir = Path(".worldmill"),
) -> None:
    """Audit delivered videos: decode each once, check it against what it should be, find copies and gaps."""
    remote = path.startswith("s3://")
    if remote:
        _parse_s3(path)
    else:
        folder = Path(path)
        if not folder.exists():
            raise _usage(f"PATH: {path} does not exist")
        if not folder.is_dir():
            raise _usage(f"PATH: {path} is neither a folder nor an s3:// URL")
    expectations = _expectations(manifest, fps, data_dir)
    auditor = Auditor(expectations, source=path, manifest=str(manifest) if manifest else None)
    if remote:
        _audit_s3(path, auditor, data_dir)
    else:
        _audit_folder(Path(path), auditor)
    result = auditor.finish()
    if not result.files:
        err.print(f"[bold red]failed:[/] no video files ({', '.join(sorted(VIDEO_SUFFIXES))}) under {escape(path)}")
    _print_summary(result)
    for out, write, what in ((json_out, write_json, "JSON"), (html_out, write_html, "HTML")):
        if out is None:
            continue
        try:
            write(result, out)
        except OSError as exc:
            raise _usage(f"cannot write the {what} report to {out}: {exc.strerror or exc}") from exc
        console.print(f"{what} report: {escape(str(out))}")
    if not result.ok:
        raise typer.Exit(EXIT_FAILED)


def _client(data_dir: Path) -> ServiceClient:
    return service_client("qa", data_dir)


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return escape(", ".join(str(v) for v in value))
    return "" if value is None else escape(str(value))


@qa_app.command("show")
def show(
    asset_id: Annotated[str, typer.Argument(help="The asset whose verdict to show.")],
    data_dir: DataDir = Path(".worldmill"),
) -> None:
    """Show an asset's QA verdict: every finding, measured against expected."""
    try:
        with _client(data_dir) as client:
            resp = client.request("GET", f"/qa/{asset_id}")
    except ServiceUnavailableError as exc:
        err.print(f"[bold red]failed:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILED) from exc
    if resp.status_code == 404:
        raise _usage(f"ASSET_ID: no verdict for {asset_id!r}: {error_detail(resp)}")
    if resp.status_code >= 400:
        err.print(f"[bold red]failed:[/] HTTP {resp.status_code}: {escape(error_detail(resp))}")
        raise typer.Exit(EXIT_FAILED)
    body = resp.json()
    try:
        findings = [Finding.model_validate(f) for f in body.get("findings", [])]
    except ValidationError as exc:
        err.print(f"[bold red]failed:[/] the qa service sent a verdict this CLI cannot read: {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILED) from exc
    verdict = "[green]passed[/]" if passed(findings) else "[bold red]failed[/]"
    video = body.get("video") or {}
    table = Table(title=f"asset {escape(asset_id)}: {verdict}")
    for column in ("check", "result", "severity", "measured", "expected", "message"):
        table.add_column(column)
    for f in findings:
        result = "[green]passed[/]" if f.passed else "[red]failed[/]"
        table.add_row(
            escape(f.check), result, f.severity.value, _cell(f.measured), _cell(f.expected), escape(f.message)
        )
    console.print(table)
    console.print(
        f"prompt: {_cell(body.get('prompt_id'))}  video: s3://{_cell(video.get('bucket'))}/{_cell(video.get('key'))}"
        f"  checked: {_cell(body.get('checked_at'))} ({_cell(body.get('checker_version'))},"
        f" attempt {_cell(body.get('attempt'))})"
    )
    for shot in body.get("screenshots", []):
        console.print(f"screenshot: s3://{_cell(shot.get('bucket'))}/{_cell(shot.get('key'))}")
