"""Shared console output and exit codes for every command."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

#: Exit codes: 0 success, 1 the work ran and something failed, 2 bad usage or bad input.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

console = Console()
err_console = Console(stderr=True)


def fail_usage(message: str) -> NoReturn:
    """Print a usage/input error (naming the field and the rule) and exit 2."""
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(EXIT_USAGE)


def fail(message: str) -> NoReturn:
    """Print a failure and exit 1."""
    err_console.print(f"[bold red]failed:[/] {message}")
    raise typer.Exit(EXIT_FAILED)
