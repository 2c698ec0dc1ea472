"""What every command-line module shares: consoles, exit codes, finding a service, reporting its errors.

Exit codes: 0 success, 1 the work ran and something failed (or a service cannot be reached), 2 bad
usage or bad input (the message names the field and the rule).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NoReturn

import httpx
import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from worldmill.runtime.client import (
    RequestFailedError,
    ServiceClient,
    ServiceUnavailableError,
    error_detail,
    list_manifest_prompt_ids,
    submit_manifest,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

console = Console()
err_console = Console(stderr=True)


def progress_bar() -> Progress:
    """The commands' progress bar: what, a bar, done/total, time so far (gone when finished)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def fail_usage(message: str) -> NoReturn:
    """Print a usage/input error (naming the field and the rule) and exit 2."""
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(EXIT_USAGE)


def fail(message: str) -> NoReturn:
    """Print a failure and exit 1."""
    err_console.print(f"[bold red]failed:[/] {message}")
    raise typer.Exit(EXIT_FAILED)


def service_client(name: str, data_dir: Path) -> ServiceClient:
    """The named service's client, or exit 1 saying how to start it."""
    try:
        return ServiceClient.locate(name, data_dir)
    except ServiceUnavailableError as exc:
        fail(escape(str(exc)))


def fail_response(resp: httpx.Response) -> NoReturn:
    """Print a service's error answer; exit 2 for what the caller got wrong (404, 409, 422), else 1."""
    code = EXIT_USAGE if resp.status_code in (404, 409, 422) else EXIT_FAILED
    err_console.print(f"[bold red]error:[/] {escape(error_detail(resp))}")
    raise typer.Exit(code)


def post_once_specs_are_known(
    client: ServiceClient, path: str, body: dict[str, Any], *, wait_s: float = 10.0
) -> httpx.Response:
    """POST, repeating while the only problem is prompt ids the service has not heard of yet.

    Specs just created reach other services through events a moment later; a caller that has just
    submitted a manifest should not fail on that. Any other answer (or the deadline) is returned.
    """
    deadline = time.monotonic() + wait_s
    while True:
        resp = client.request("POST", path, json=body)
        unknown = resp.status_code == 422 and all(d.get("type") == "unknown prompt" for d in resp.json()["detail"])
        if not unknown or time.monotonic() > deadline:
            return resp
        time.sleep(0.25)


#: Suffixes that make a ``--manifest`` value a file (a manifest's name is lower-case letters, digits, dashes).
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def is_manifest_file(arg: str) -> bool:
    """Whether ``--manifest ARG`` names a file (it exists, or looks like one) rather than a manifest's name."""
    return Path(arg).is_file() or arg.lower().endswith(MANIFEST_SUFFIXES) or "/" in arg


def manifest_name(arg: str, option: str = "--manifest") -> str:
    """A manifest's name: ``arg`` itself, or the ``name`` inside the manifest file ``arg`` (exit 2 if none)."""
    if not is_manifest_file(arg):
        if not arg.strip():
            fail_usage(f"{option}: the manifest name is empty")
        return arg
    path = Path(arg)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        fail_usage(f"{option}: {escape(arg)} cannot be read as a manifest file ({escape(reason)})")
    name = doc.get("name") if isinstance(doc, dict) else None
    if not isinstance(name, str) or not name:
        fail_usage(f"{option}: {escape(arg)} has no 'name' (a manifest file must name its dataset)")
    return name


def prompt_ids_or_manifest(prompt_ids: list[str] | None, manifest: str | None, data_dir: Path) -> list[str]:
    """The ids given, plus every spec of ``--manifest`` (a name or a file alike).

    A file is submitted first (unchanged specs stay as they are); a name lists the specs the prompt
    service holds for it. Exit 2 when neither is given, the file cannot be read or is refused, or no
    manifest of that name is known.
    """
    if not prompt_ids and manifest is None:
        fail_usage("give PROMPT_IDS or --manifest NAME|FILE")
    ids = list(prompt_ids or [])
    if manifest is not None:
        with service_client("prompt", data_dir) as prompts:
            ids += manifest_prompt_ids(prompts, manifest)
    return ids


def manifest_prompt_ids(prompts: ServiceClient, manifest: str) -> list[str]:
    """Every prompt id of ``manifest`` (a file: submitted first; a name: as stored); exit 2 if there is none."""
    try:
        if is_manifest_file(manifest):
            try:
                content = Path(manifest).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                fail_usage(f"--manifest: cannot read {escape(manifest)}: {exc}")
            _, ids = submit_manifest(prompts, content)
            return ids
        ids = list_manifest_prompt_ids(prompts, manifest)
    except RequestFailedError as exc:
        fail_response(exc.response)
    if not ids:
        fail_usage(
            f"--manifest: no manifest named {escape(manifest)!r} is known to the prompt service "
            "(submit its file with `worldmill manifest submit FILE`, or pass the file)"
        )
    return ids
