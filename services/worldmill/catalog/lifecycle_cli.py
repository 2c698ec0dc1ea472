"""``worldmill search|show|delete|verify``: the catalog's assets from a terminal, and keeping it honest.

* ``search 'series=R&qa=failed&q=door'``: a table of the matching assets (``--json``: the summaries);
* ``show ASSET``: the asset, its verdict and its lineage as a tree;
* ``delete ID… | --query Q`` (``asset-…`` an asset, ``run-…`` a run, anything else a spec's prompt
  id): ``--dry-run`` lists everything the lineage removes; what an export holds is refused unless
  ``--force``; the catalog deletes the objects and publishes ``asset.deleted`` / ``run.deleted``;
* ``verify [--fix]``: catalog rows against stored objects (missing, sha256/size mismatch, orphans).

Exit codes: 0 ok, 1 failed (or ``verify`` found problems it did not fix), 2 bad usage, an unknown id,
or a deletion an export blocks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from worldmill.catalog.export.cli import QueryError, list_assets, parse_query
from worldmill.contracts.catalog import AssetDetail, AssetSummary, DeletionPlan, LineageEdge, LineageNode, VerifyReport
from worldmill.runtime.cli_support import EXIT_FAILED, EXIT_USAGE, console, fail_response, fail_usage, service_client
from worldmill.runtime.client import error_detail

DataDir = Annotated[Path, typer.Option("--data-dir", envvar="WM_DATA_DIR", help="The local stack's folder.")]
#: Rows ``search`` prints unless ``--limit`` says otherwise.
DEFAULT_ROWS = 50


def _filters(query: str | None, option: str) -> list[tuple[str, str]]:
    if not query:
        return []
    try:
        return parse_query(query, option=option, any_qa_status=True)
    except QueryError as exc:
        fail_usage(escape(str(exc)))


def search(
    query: Annotated[str | None, typer.Argument(help="Filters, e.g. 'series=R&qa=failed&q=door' (none: all).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the assets as JSON.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=100000, help="At most this many assets.")] = DEFAULT_ROWS,
    data_dir: DataDir = Path(".worldmill"),
) -> None:
    """Find assets in the catalog (newest first)."""
    filters = _filters(query, "QUERY")
    with service_client("catalog", data_dir) as catalog:
        assets = list_assets(catalog, filters)[:limit]
    if json_out:
        console.print_json(json.dumps([a.model_dump(mode="json") for a in assets]))
        return
    console.print(search_table(assets, query or "all"))


def search_table(assets: list[AssetSummary], title: str) -> Table:
    """One row per asset: id, manifest, scenario, duration, variant, QA, failed checks, model."""
    table = Table(title=f"{len(assets)} asset(s): {escape(title)}")
    for column in ("asset", "manifest", "scenario", "dur", "v", "qa", "failed checks", "model"):
        table.add_column(column)
    style = {"passed": "green", "failed": "red", "pending": "yellow"}
    for a in assets:
        table.add_row(
            a.asset_id,
            a.manifest or "-",
            escape(a.scenario or "-"),
            f"{a.duration_s:g}s" if a.duration_s is not None else "-",
            str(a.variant) if a.variant is not None else "-",
            f"[{style[a.qa_status]}]{a.qa_status}[/]",
            ", ".join(a.failed_checks) or "-",
            a.model or "-",
        )
    return table


def lineage_tree(root_label: str, nodes: tuple[LineageNode, ...], edges: tuple[LineageEdge, ...]) -> Tree:
    """The lineage as a tree from its roots (nodes nothing points to) down to exports."""
    label = {
        (n.kind, n.id): f"{n.kind} {n.id}" + (f" — {n.label}" if n.label else "") + ("" if n.known else " (unknown)")
        for n in nodes
    }
    children: dict[tuple[str, str], list[tuple[str, str]]] = {}
    has_parent: set[tuple[str, str]] = set()
    for e in edges:
        parent, child = (e.parent_kind, e.parent_id), (e.child_kind, e.child_id)
        children.setdefault(parent, []).append(child)
        has_parent.add(child)
    tree = Tree(escape(root_label))
    roots = [k for k in label if k not in has_parent] or list(label)

    def add(branch: Tree, node: tuple[str, str], seen: frozenset[tuple[str, str]]) -> None:
        sub = branch.add(escape(label.get(node, f"{node[0]} {node[1]}")))
        for child in sorted(children.get(node, [])):
            if child not in seen:
                add(sub, child, seen | {child})

    for root in sorted(roots):
        add(tree, root, frozenset({root}))
    return tree


def show(
    asset_id: Annotated[str, typer.Argument(help="The asset's id.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the whole detail as JSON.")] = False,
    data_dir: DataDir = Path(".worldmill"),
) -> None:
    """An asset: what it is, its QA verdict, and its lineage tree."""
    with service_client("catalog", data_dir) as catalog:
        resp = catalog.request("GET", f"/assets/{asset_id}")
    if resp.status_code != 200:
        fail_response(resp)
    detail = AssetDetail.model_validate(resp.json())
    if json_out:
        console.print_json(detail.model_dump_json())
        return
    a = detail.asset
    console.print(f"[bold]{a.asset_id}[/] ({a.kind}) {escape(a.manifest or '-')} / {escape(a.scenario or '-')}")
    console.print(
        f"  {a.frames} frames at {a.fps:g} fps, {a.width}x{a.height}, model {a.model}" if a.frames else "  no video yet"
    )
    failed = [f for f in detail.findings if not f.passed]
    console.print(f"  QA {a.qa_status}" + (f": {', '.join(f.check for f in failed)}" if failed else ""))
    if a.prompt:
        console.print(f"  prompt: {escape(a.prompt[:200])}")
    console.print(lineage_tree("lineage", detail.lineage_nodes, detail.lineage_edges))


def _targets(ids: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"assets": [], "runs": [], "prompts": []}
    for target in ids:
        kind = "assets" if target.startswith("asset-") else "runs" if target.startswith("run-") else "prompts"
        out[kind].append(target)
    return out


def delete(
    ids: Annotated[
        list[str] | None, typer.Argument(help="asset-… (an asset), run-… (a run), or a spec's prompt id.")
    ] = None,
    *,
    query: Annotated[str | None, typer.Option("--query", help="Delete the assets these filters find.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be deleted.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Delete assets that an export holds too.")] = False,
    reason: Annotated[str, typer.Option(help="Why (kept in the deletion events).")] = "",
    data_dir: DataDir = Path(".worldmill"),
) -> None:
    """Delete assets, runs or a spec's videos with everything their lineage holds (objects included)."""
    if not ids and query is None:
        fail_usage("give IDS or --query FILTERS (e.g. --query 'qa=failed&series=R')")
    if len(reason) > 500:
        fail_usage("--reason: at most 500 characters")
    targets = _targets(ids or [])
    with service_client("catalog", data_dir) as catalog:
        if query is not None:
            found = list_assets(catalog, _filters(query, "--query"))
            if not found:
                fail_usage(f"--query: no asset matches {escape(query)!r}")
            targets["assets"] += [a.asset_id for a in found]
        body: dict[str, Any] = {**targets, "dry_run": dry_run, "force": force, "reason": reason, "requested_by": "cli"}
        resp = catalog.request("POST", "/deletions", json=body)
    if resp.status_code == 409:
        fail_usage(f"{escape(error_detail(resp))} (on the command line: --force); see --dry-run for the list")
    if resp.status_code != 200:
        fail_response(resp)
    plan = DeletionPlan.model_validate(resp.json())
    console.print(deletion_table(plan))
    if plan.unknown:
        fail_usage(f"not in the catalog: {escape(', '.join(plan.unknown))}")
    if plan.blocked:
        fail_usage(f"exports hold some of these assets ({', '.join(plan.exports)}): add --force to delete them anyway")
    if dry_run:
        objects = sum(len(a.objects) for a in plan.assets)
        console.print(
            f"dry run: would delete {len(plan.assets)} asset(s), {len(plan.runs)} run(s) and their objects "
            f"({objects} named, and what their folders hold)"
        )
        return
    console.print(
        f"[green]deleted:[/] {len(plan.assets)} asset(s), {len(plan.runs)} run(s), {plan.objects_deleted} object(s)"
    )


def deletion_table(plan: DeletionPlan) -> Table:
    """One row per asset the deletion removes: its run, spec, QA state, objects and exports."""
    table = Table(title=f"{len(plan.assets)} asset(s), {len(plan.runs)} run(s)")
    for column in ("asset", "run", "prompt", "qa", "objects", "exports"):
        table.add_column(column)
    for a in plan.assets:
        table.add_row(
            a.asset_id,
            a.run_id or "-",
            a.prompt_id or "-",
            a.qa_status,
            str(len(a.objects)),
            f"[red]{', '.join(a.exports)}[/]" if a.exports else "-",
        )
    return table


def verify(
    fix: Annotated[
        bool, typer.Option("--fix", help="Delete orphans; delete assets whose video is missing or wrong.")
    ] = False,
    min_orphan_age: Annotated[
        float,
        typer.Option("--min-orphan-age", min=0.0, max=315360000.0, help="Seconds: younger objects are never orphans."),
    ] = 3600.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    data_dir: DataDir = Path(".worldmill"),
) -> None:
    """Check that the catalog and the stored objects agree: missing objects, sha256 mismatches, orphans."""
    with service_client("catalog", data_dir) as catalog:
        body = {"fix": fix, "min_orphan_age_s": min_orphan_age, "requested_by": "cli"}
        resp = catalog.request("POST", "/verify", json=body, timeout=600.0)
    if resp.status_code != 200:
        fail_response(resp)
    report = VerifyReport.model_validate(resp.json())
    if json_out:
        console.print_json(report.model_dump_json())
    else:
        table = Table(title=f"{len(report.problems)} problem(s) in {report.assets} asset(s)")
        for column in ("kind", "object", "asset", "detail", "fixed" if fix else "fix would"):
            table.add_column(column)
        for p in report.problems:
            outcome = ("yes" if p.fixed else f"no: {p.repair or 'not repairable here'}") if fix else (p.repair or "-")
            table.add_row(p.kind, escape(p.uri), p.asset_id or "-", escape(p.detail), escape(outcome))
        console.print(table)
        console.print(
            f"{report.objects_checked} named object(s) checked, {report.objects_listed} listed; {report.fixed} fixed"
        )
    if any(not p.fixed for p in report.problems):
        raise typer.Exit(EXIT_FAILED)


__all__ = ["EXIT_USAGE", "delete", "search", "show", "verify"]
