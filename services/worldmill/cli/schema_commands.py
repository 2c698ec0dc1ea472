"""``worldmill schemas export|check``: the contracts' JSON Schemas, kept in the repository."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from worldmill.cli.console import EXIT_FAILED, console, err_console
from worldmill.contracts.registry import all_schemas

DEFAULT_DIR = Path("contracts/schemas")

schemas_app = typer.Typer(help="Export or check the contracts' JSON Schemas.", no_args_is_help=True)
SchemaDir = Annotated[Path, typer.Option("--dir", help="Folder holding the exported schemas.")]


def render() -> dict[str, str]:
    """File name → exact file text of every schema (stable key order, trailing newline)."""
    return {
        f"{name}.json": json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for name, schema in sorted(all_schemas().items())
    }


def differences(folder: Path) -> list[str]:
    """What differs between the exported files and the contracts (empty when in sync)."""
    wanted = render()
    have = {p.name: p.read_text() for p in folder.glob("*.json")} if folder.exists() else {}
    out = [f"missing {n}" for n in sorted(wanted.keys() - have.keys())]
    out += [f"stale {n} (no such contract any more)" for n in sorted(have.keys() - wanted.keys())]
    out += [f"changed {n}" for n in sorted(wanted.keys() & have.keys()) if wanted[n] != have[n]]
    return out


@schemas_app.command("export")
def export(folder: SchemaDir = DEFAULT_DIR) -> None:
    """Write every schema; remove files of contracts that no longer exist."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = render()
    for stale in {p.name for p in folder.glob("*.json")} - wanted.keys():
        (folder / stale).unlink()
    for name, text in wanted.items():
        (folder / name).write_text(text)
    console.print(f"Exported {len(wanted)} schemas to {folder}")


@schemas_app.command("check")
def check(folder: SchemaDir = DEFAULT_DIR) -> None:
    """Exit 1 when a contract changed without re-exporting its schema."""
    diff = differences(folder)
    if diff:
        for line in diff:
            err_console.print(f"  {line}")
        err_console.print("[red]Schemas are out of date:[/] run `worldmill schemas export` and commit the result.")
        raise typer.Exit(EXIT_FAILED)
    console.print(f"{len(render())} schemas match the contracts.")
