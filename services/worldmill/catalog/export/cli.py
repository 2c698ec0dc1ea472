"""``worldmill export DEST (--manifest NAME | --query FILTERS)``: QA-passed videos as a training dataset.

The command asks the catalog for the QA-passed assets of a manifest (or of a filter query), reads
each one's detail, plans the export (:mod:`worldmill.catalog.export.plan`), writes it to DEST
(:mod:`worldmill.catalog.export.write`: ``webdataset`` shards or the ``cosmos-video2world``
folders), then tells the catalog (``POST /exports``, which publishes ``dataset.exported``).

Order matters for what a failure leaves: arguments and DEST are checked before any service is
asked (exit 2, nothing written); the export on disk is complete (its manifest written) before the
catalog is told. If telling it fails, the export stays as it is and the command exits 1; running the
same command again finds the finished export, rewrites nothing and tells the catalog again (the
export id is derived from the plan and DEST, so the catalog sees the same export).

Exit codes: 0 exported and recorded; 1 a service or the store failed, nothing matched, or the
catalog was not told; 2 bad usage (options, query, DEST).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import parse_qsl, urlencode

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from worldmill.catalog.export.manifest import ExportManifest
from worldmill.catalog.export.plan import (
    DEFAULT_MAX_SAMPLES_PER_SHARD,
    ExportItem,
    ExportOptions,
    ExportPlan,
    NotExportableError,
    SkippedItem,
    plan_export,
)
from worldmill.catalog.export.write import (
    DestinationError,
    ExportResult,
    VideoMismatchError,
    prepare_destination,
    write_export,
)
from worldmill.contracts.base import ObjectRef
from worldmill.contracts.catalog import (
    AssetDetail,
    AssetPage,
    AssetSummary,
    DatasetExported,
    ExportedSample,
    ExportRecordRequest,
)
from worldmill.runtime import cli_support
from worldmill.runtime.cli_support import fail, fail_response, fail_usage, manifest_name, progress_bar, service_client
from worldmill.runtime.client import ServiceClient, ServiceUnavailableError, error_detail, locate_store
from worldmill.runtime.errors import WorldmillError

console = cli_support.console

#: ``GET /assets`` filters a ``--query`` may use (``qa_status`` is always ``passed``).
QUERY_KEYS: Final = frozenset(
    {
        "manifest",
        "series",
        "scenario",
        "risk_level",
        "model",
        "tag",
        "q",
        "min_duration",
        "max_duration",
        "created_from",
        "created_to",
        "kind",
    }
)
_REPEATABLE: Final = frozenset({"tag"})
_NUMBERS: Final = frozenset({"min_duration", "max_duration"})
_TIMES: Final = frozenset({"created_from", "created_to"})
_KINDS: Final = ("video", "augmentation")
PAGE_SIZE: Final = 500
MAX_SELECTION: Final = 4000
#: Skipped assets listed one per row; the rest are counted (the manifest has all).
MAX_SKIPPED_ROWS: Final = 20


class Format(StrEnum):
    """``--format`` choices."""

    WEBDATASET = "webdataset"
    COSMOS = "cosmos-video2world"


class QueryError(ValueError):
    """A ``--query`` breaks a rule; the message names the key and the rule."""


#: Short names ``worldmill search`` also takes.
ALIASES: Final = {"qa": "qa_status", "risk": "risk_level"}
_QA_STATUSES: Final = ("pending", "passed", "failed")


def parse_query(text: str, *, option: str = "--query", any_qa_status: bool = False) -> list[tuple[str, str]]:
    """``series=a&risk_level=high&tag=x&tag=y`` as sorted (filter, value) pairs; :class:`QueryError` if bad.

    An export takes QA-passed assets only; ``worldmill search`` (``any_qa_status``) may filter on
    ``qa_status`` (or ``qa``) too, and accepts ``risk`` for ``risk_level``.
    """
    pairs = [(ALIASES.get(k, k) if any_qa_status else k, v) for k, v in parse_qsl(text, keep_blank_values=True)]
    if not pairs:
        raise QueryError(f"{option}: no filter given (e.g. {option} 'series=a&risk_level=high')")
    seen: set[str] = set()
    for key, value in pairs:
        if any_qa_status and key == "qa_status":
            if value not in _QA_STATUSES or key in seen:
                raise QueryError(f"{option}: filter 'qa_status' takes one of {', '.join(_QA_STATUSES)}, once")
        else:
            try:
                _check_pair(key, value, seen)
            except QueryError as exc:
                raise QueryError(str(exc).replace("--query", option, 1)) from None
        seen.add(key)
    return sorted(pairs)


def _check_pair(key: str, value: str, seen: set[str]) -> None:
    if key == "qa_status":
        raise QueryError("--query: qa_status cannot be chosen: an export takes QA-passed assets only")
    if key not in QUERY_KEYS:
        raise QueryError(f"--query: unknown filter {key!r} (known: {', '.join(sorted(QUERY_KEYS))})")
    if not value.strip():
        raise QueryError(f"--query: filter {key!r} has no value")
    if key in seen and key not in _REPEATABLE:
        raise QueryError(f"--query: filter {key!r} is given twice (only tag may repeat)")
    if key in _NUMBERS:
        try:
            float(value)
        except ValueError:
            raise QueryError(f"--query: filter {key!r} must be a number of seconds, not {value!r}") from None
    if key in _TIMES:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise QueryError(f"--query: filter {key!r} must be an ISO 8601 time, not {value!r}") from None
    if key == "kind" and value not in _KINDS:
        raise QueryError(f"--query: filter 'kind' must be one of {', '.join(_KINDS)}, not {value!r}")


def selection_of(manifest: str | None, query: str | None) -> tuple[list[tuple[str, str]], str]:
    """The ``/assets`` filters (with ``qa_status=passed``) and the selection string recorded with the export.

    Exactly one of ``manifest`` and ``query``; :class:`QueryError` otherwise. The selection string is
    the filters sorted and URL-encoded, so the same selection always reads the same.
    """
    if (manifest is None) == (query is None):
        raise QueryError("give exactly one of --manifest NAME and --query FILTERS")
    if manifest is not None:
        if not manifest.strip():
            raise QueryError("--manifest: the manifest name is empty")
        filters = [("manifest", manifest)]
    else:
        filters = parse_query(query or "")
    filters = sorted([*filters, ("qa_status", "passed")])
    selection = urlencode(filters)
    if len(selection) > MAX_SELECTION:
        raise QueryError(f"--query: the selection is {len(selection)} characters; at most {MAX_SELECTION}")
    return filters, selection


# -- the catalog ---------------------------------------------------------------------------------


def _get(catalog: ServiceClient, path: str, params: list[tuple[str, Any]] | None = None) -> Any:
    resp = catalog.request("GET", path, params=params)
    if resp.status_code >= 400:
        fail_response(resp)
    return resp.json()


def list_assets(catalog: ServiceClient, filters: list[tuple[str, str]]) -> list[AssetSummary]:
    """Every asset matching ``filters`` (``GET /assets``, page by page)."""
    summaries: list[AssetSummary] = []
    cursor: str | None = None
    while True:
        params: list[tuple[str, Any]] = [*filters, ("limit", PAGE_SIZE)]
        if cursor:
            params.append(("cursor", cursor))
        page = AssetPage.model_validate(_get(catalog, "/assets", params))
        summaries.extend(page.items)
        cursor = page.next_cursor
        if not cursor:
            return summaries


def collect_items(catalog: ServiceClient, filters: list[tuple[str, str]]) -> tuple[list[ExportItem], list[SkippedItem]]:
    """Every matching asset as an :class:`ExportItem`, or as skipped with the reason."""
    summaries = list_assets(catalog, filters)
    items: list[ExportItem] = []
    skipped: list[SkippedItem] = []
    with progress_bar() as bar:
        task = bar.add_task("reading the catalog", total=len(summaries))
        for summary in summaries:
            detail = AssetDetail.model_validate(_get(catalog, f"/assets/{summary.asset_id}"))
            try:
                items.append(ExportItem.from_detail(detail))
            except NotExportableError as exc:
                skipped.append(SkippedItem(asset_id=exc.asset_id, reason=exc.reason))
            bar.advance(task)
    return items, skipped


def dataset_exported(result: ExportResult) -> DatasetExported:
    """The ``dataset.exported`` record of a complete export."""
    manifest = result.manifest
    content = manifest.content
    return DatasetExported(
        export_id=manifest.export_id,
        format=content.format,
        destination=manifest.destination,
        selection=content.selection,
        samples=tuple(
            ExportedSample(asset_id=s.asset_id, key=s.key, shard=s.shard, bin=s.bin, video_sha256=s.video_sha256)
            for s in content.samples
        ),
        manifest_sha256=result.manifest_sha256,
        exported_at=manifest.created_at,
    )


def record_export(catalog: ServiceClient, result: ExportResult) -> str | None:
    """Tell the catalog; None when it accepted, else why not."""
    try:
        body = ExportRecordRequest(export=dataset_exported(result)).model_dump(mode="json")
        resp = catalog.request("POST", "/exports", json=body)
    except (ServiceUnavailableError, ValidationError) as exc:
        return str(exc)
    if resp.status_code >= 400:
        return f"HTTP {resp.status_code}: {error_detail(resp)}"
    return None


# -- writing and reporting -----------------------------------------------------------------------


def _write(plan: ExportPlan, dest: Path, data_dir: Path) -> ExportResult:
    try:
        store = locate_store(data_dir)
    except ServiceUnavailableError as exc:
        fail(escape(str(exc)))

    async def fetch(ref: ObjectRef, path: Path) -> None:
        await store.download(ref.bucket, ref.key, path)

    try:
        with progress_bar() as bar:
            task = bar.add_task("exporting samples", total=len(plan.samples))
            return asyncio.run(
                write_export(
                    plan, dest, fetch, progress=lambda done, total: bar.update(task, completed=done, total=total)
                )
            )
    except DestinationError as exc:
        fail_usage(escape(str(exc)))
    except VideoMismatchError as exc:
        fail(escape(f"{exc}; no manifest was written (the finished shards stay for a rerun once this is fixed)"))
    except WorldmillError as exc:
        fail(escape(f"{exc}; no manifest was written: run the same command again to resume"))


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f}"


def print_summary(manifest: ExportManifest, dest: Path) -> None:
    """Per bin: samples, shards, MB; the totals; what was skipped and why."""
    content = manifest.content
    sharded = content.format == "webdataset"
    table = Table(title=f"{content.format} export in {escape(str(dest))}")
    table.add_column("bin")
    for col in ("samples", "shards", "MB") if sharded else ("samples", "MB"):
        table.add_column(col, justify="right")
    rows = [*content.bins.items(), ("[bold]total[/]", content.totals)]
    for name, stats in rows:
        counts = (str(stats.samples), str(stats.shards)) if sharded else (str(stats.samples),)
        table.add_row(name, *counts, _mb(stats.bytes))
    console.print(table)
    if content.short_clips:
        console.print(f"{content.short_clips} clip(s) shorter than 5 s are in duration_0_5 (cosmos-curate drops them)")
    if content.skipped:
        console.print(f"[yellow]{len(content.skipped)} asset(s) skipped:[/]")
        for item in content.skipped[:MAX_SKIPPED_ROWS]:
            console.print(escape(f"  {item.asset_id}: {item.reason}"))
        if len(content.skipped) > MAX_SKIPPED_ROWS:
            console.print(f"  … and {len(content.skipped) - MAX_SKIPPED_ROWS} more (see the manifest)")


def _report_run(result: ExportResult) -> None:
    if result.already_complete:
        console.print("the export was already complete; nothing was rewritten")
    elif result.kept_units:
        console.print(f"resumed: {result.kept_units} finished unit(s) kept, {result.written_units} written")
    console.print(f"manifest {escape(str(result.manifest_path))} (sha256 {result.manifest_sha256})")


def export(
    dest: Annotated[Path, typer.Argument(help="Folder to write the dataset to (empty, or an export to resume).")],
    *,
    manifest: Annotated[
        str | None, typer.Option("--manifest", help="Export the QA-passed videos of a manifest (its name or its file).")
    ] = None,
    query: Annotated[
        str | None,
        typer.Option(
            "--query", help="Catalog filters, e.g. 'series=a&risk_level=high&tag=night' (instead of --manifest)."
        ),
    ] = None,
    export_format: Annotated[Format, typer.Option("--format", help="Dataset layout.")] = Format.WEBDATASET,
    max_samples_per_shard: Annotated[
        int, typer.Option("--max-samples-per-shard", min=1, help="Samples per webdataset shard at most.")
    ] = DEFAULT_MAX_SAMPLES_PER_SHARD,
    shard_mb: Annotated[
        int, typer.Option("--shard-mb", min=1, help="Target size of a webdataset shard in MB (10^6 bytes).")
    ] = 500,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", envvar="WM_DATA_DIR", help="The local stack's folder.")
    ] = Path(".worldmill"),
) -> None:
    """Export QA-passed videos to DEST as webdataset shards or the Cosmos video2world folders."""
    if manifest is not None:
        manifest = manifest_name(manifest)
    try:
        filters, selection = selection_of(manifest, query)
    except QueryError as exc:
        fail_usage(escape(str(exc)))
    options = ExportOptions(max_samples_per_shard=max_samples_per_shard, target_shard_bytes=shard_mb * 1_000_000)
    try:
        folder = prepare_destination(dest)
    except DestinationError as exc:
        fail_usage(escape(str(exc)))
    with service_client("catalog", data_dir) as catalog:
        try:
            items, skipped = collect_items(catalog, filters)
        except ServiceUnavailableError as exc:
            fail(escape(str(exc)))
        plan = plan_export(
            items, export_format=export_format.value, selection=selection, options=options, skipped=skipped
        )
        if not plan.samples:
            for item in plan.skipped[:MAX_SKIPPED_ROWS]:
                console.print(escape(f"  skipped {item.asset_id}: {item.reason}"))
            fail(escape(f"nothing to export: no QA-passed asset of {selection} can be exported"))
        result = _write(plan, folder, data_dir)
        print_summary(result.manifest, folder)
        _report_run(result)
        problem = record_export(catalog, result)
    if problem is not None:
        fail(
            escape(
                f"the export in {folder} is complete, but the catalog was not told ({problem}); "
                "run the same command again to tell it (nothing will be rewritten)"
            )
        )
    console.print(f"recorded as {result.manifest.export_id}")
