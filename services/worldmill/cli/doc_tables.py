"""``worldmill docs tables``: the tables of docs/architecture.md that are rendered from the code.

A generated table sits between ``<!-- generated: MARKER -->`` and ``<!-- end generated -->``, and
the marker names its renderer (:data:`RENDERERS`): the streams of ``contracts.subjects``, every
durable consumer (``bus_commands.all_consumers()``) with the service that binds it, every message
class of ``contracts.registry`` with who publishes and who reads it, and the NATS grants
(``runtime.nats_auth.permissions_table``). The renderers are pure functions of the code, so a table
that differs from its renderer's output is stale: ``--check`` says which (tests/test_docs.py runs
the same check), ``--write`` rewrites every marked block in place.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated

import typer

from worldmill.cli.bus_commands import all_consumers
from worldmill.cli.console import EXIT_FAILED, fail_usage
from worldmill.contracts.base import Message
from worldmill.contracts.deadletter import DeadLetter
from worldmill.contracts.objects import S3Notification
from worldmill.contracts.permissions import service_grants
from worldmill.contracts.registry import MESSAGE_CLASSES
from worldmill.contracts.subjects import ALL_STREAMS, DLQ, DLQ_PREFIX, MINIO_NOTIFICATIONS, ConsumerSpec
from worldmill.runtime.nats_auth import permissions_table
from worldmill.runtime.settings import RuntimeSettings

#: The document the tables live in, relative to the repository root.
ARCHITECTURE = Path("docs/architecture.md")

START = "<!-- generated: {marker} -->\n"
END = "<!-- end generated -->"
_START_RE = re.compile(r"<!-- generated: (?P<marker>.+?) -->\n")

STREAMS_MARKER = "worldmill docs tables: streams"
CONSUMERS_MARKER = "worldmill docs tables: consumers"
MESSAGES_MARKER = "worldmill docs tables: messages"
PERMISSIONS_MARKER = "worldmill bus permissions --markdown"


# --- formatting -------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Docstring text as one Markdown table cell: reST literals as code, pipes escaped, one line."""
    return " ".join(text.replace("``", "`").replace("|", "\\|").split())


def first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph ("" when there is none)."""
    paragraph = " ".join((doc or "").strip().split("\n\n")[0].split())
    match = re.match(r"(.+?[.!?])(?=\s+[A-Z`(]|$)", paragraph)
    return match.group(1) if match else paragraph


def duration(seconds: float) -> str:
    """``90 d``, ``1 h``, ``10 min``, ``30 s``: the largest unit that divides the value."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


def size(n: int) -> str:
    """``1 MiB``, ``256 KiB`` or bytes."""
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def _codes(items: Iterable[str]) -> str:
    return ", ".join(f"`{i}`" for i in items) or "none"


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(have) > i
        if i >= len(have) or (part not in {"*", have[i]}):
            return False
    return len(want) == len(have)


def _table(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --- the renderers ----------------------------------------------------------------------------------


def owners() -> dict[tuple[str, str], str]:
    """``(stream, durable)`` → the NATS user (service) whose grant binds it."""
    return {consumer: g.user for g in service_grants() for consumer in g.consumers}


def streams_table() -> str:
    """Every stream of ``contracts.subjects.ALL_STREAMS``."""
    replicas = RuntimeSettings.model_fields["stream_replicas"].default
    return _table(
        ("stream", "subjects", "retention", "max age", "dedup window", "max message", "replicas", "purpose"),
        (
            (
                f"`{s.name}`",
                _codes(s.subjects),
                s.retention,
                duration(s.max_age_s),
                duration(s.duplicate_window_s),
                size(s.max_msg_size),
                f"`WM_STREAM_REPLICAS` (default {replicas})",
                _cell(s.description),
            )
            for s in ALL_STREAMS
        ),
    )


def _backoff(spec: ConsumerSpec) -> str:
    return f"{duration(spec.backoff_base_s)} → {duration(spec.backoff_max_s)}"


def consumers_table() -> str:
    """Every durable consumer ``worldmill bus init`` ensures, with the service that binds it, and the defaults."""
    owner = owners()
    table = _table(
        (
            "stream",
            "durable",
            "filter subject",
            "bound by",
            "ack wait",
            "max deliver",
            "max ack pending",
            "backoff",
            "purpose",
        ),
        (
            (
                f"`{c.stream}`",
                f"`{c.durable}`",
                f"`{c.filter_subject}`",
                owner.get((c.stream, c.durable), "no grant"),
                duration(c.ack_wait_s),
                str(c.max_deliver),
                str(c.max_ack_pending),
                _backoff(c),
                _cell(c.description),
            )
            for c in all_consumers()
        ),
    )
    fields = ConsumerSpec.model_fields
    defaults = (
        f"ack wait {duration(fields['ack_wait_s'].default)}, max deliver {fields['max_deliver'].default}, "
        f"max ack pending {fields['max_ack_pending'].default}, backoff {duration(fields['backoff_base_s'].default)}"
        f" → {duration(fields['backoff_max_s'].default)}"
    )
    return f"{table}\n`ConsumerSpec` defaults: {defaults}.\n"


def _published_by(cls: type[Message]) -> list[str]:
    grants = service_grants()
    if cls is DeadLetter:
        return [g.user for g in grants if g.consumers]
    if cls is S3Notification:
        return [g.user for g in grants if MINIO_NOTIFICATIONS in g.raw_subjects]
    return [g.user for g in grants if cls in g.publishes]


def _subject(cls: type[Message]) -> str:
    if cls is DeadLetter:
        return f"`{DLQ_PREFIX}.<durable>` (not `{cls.subject()}`)"
    if cls is S3Notification:
        return f"`{MINIO_NOTIFICATIONS}`, raw (never published as `{cls.subject()}`)"
    return f"`{cls.subject()}`"


def _read_by(cls: type[Message], consumers: list[ConsumerSpec]) -> list[ConsumerSpec]:
    if cls is DeadLetter:
        return [c for c in consumers if c.stream == DLQ.name]
    subject = MINIO_NOTIFICATIONS if cls is S3Notification else cls.subject()
    return [c for c in consumers if subject_matches(c.filter_subject, subject)]


def messages_table() -> str:
    """Every class of ``registry.MESSAGE_CLASSES``: type, kind, subject, publishers, durables that read it."""
    consumers = all_consumers()
    owner = owners()
    return _table(
        ("class", "type", "kind", "subject", "published by", "read by (durable: service)", "meaning"),
        (
            (
                cls.__name__,
                f"`{cls.TYPE}` v{cls.VERSION}",
                cls.KIND,
                _subject(cls),
                ", ".join(_published_by(cls)) or "nobody",
                ", ".join(f"`{c.durable}`: {owner.get((c.stream, c.durable), '?')}" for c in _read_by(cls, consumers))
                or "none",
                _cell(first_sentence(cls.__doc__)),
            )
            for cls in MESSAGE_CLASSES
        ),
    )


#: Marker → renderer of every generated block of docs/architecture.md.
RENDERERS: dict[str, Callable[[], str]] = {
    STREAMS_MARKER: streams_table,
    CONSUMERS_MARKER: consumers_table,
    MESSAGES_MARKER: messages_table,
    PERMISSIONS_MARKER: permissions_table,
}


# --- the document -----------------------------------------------------------------------------------


def _span(text: str, marker: str) -> tuple[int, int] | None:
    """Where the body of ``marker``'s block is (start, end), or None when the document lacks it."""
    head = START.format(marker=marker)
    at = text.find(head)
    if at < 0:
        return None
    start = at + len(head)
    end = text.find(END, start)
    return None if end < 0 else (start, end)


def blocks(text: str) -> dict[str, str]:
    """Marker → body of every generated block in ``text`` (renderer known or not)."""
    out: dict[str, str] = {}
    for match in _START_RE.finditer(text):
        span = _span(text, match.group("marker"))
        if span is not None:
            out[match.group("marker")] = text[span[0] : span[1]]
    return out


def stale_tables(text: str, renderers: dict[str, Callable[[], str]] | None = None) -> list[str]:
    """What is wrong with the document's generated blocks, one line each (empty when all are current)."""
    renderers = RENDERERS if renderers is None else renderers
    have = blocks(text)
    problems = [f"missing: <!-- generated: {m} --> block" for m in renderers if m not in have]
    problems += [f"unknown: <!-- generated: {m} --> (no renderer)" for m in have if m not in renderers]
    problems += [
        f"stale: <!-- generated: {m} --> differs from the code"
        for m, render in renderers.items()
        if m in have and have[m] != render()
    ]
    return problems


def rewrite(text: str, renderers: dict[str, Callable[[], str]] | None = None) -> str:
    """``text`` with every known generated block replaced by its renderer's output."""
    renderers = RENDERERS if renderers is None else renderers
    for marker, render in renderers.items():
        span = _span(text, marker)
        if span is not None:
            text = text[: span[0]] + render() + text[span[1] :]
    return text


# --- the command ------------------------------------------------------------------------------------

docs_app = typer.Typer(help="Documentation generated from the code.", no_args_is_help=True)


@docs_app.command("tables")
def tables(
    write: Annotated[bool, typer.Option("--write", help="Rewrite every generated block of the document.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 naming every stale or missing block.")] = False,
    doc: Annotated[Path, typer.Option("--doc", help="The document holding the blocks.")] = ARCHITECTURE,
) -> None:
    """Print, check (--check) or rewrite (--write) the tables of docs/architecture.md rendered from the code.

    Without an option every table is printed under its marker. Exit 0 when current (or rewritten),
    1 with --check when a block is stale or missing, 2 on bad usage or an unreadable document.
    """
    if write and check:
        fail_usage("--write and --check: give one of them")
    if not (write or check):
        for marker, render in RENDERERS.items():
            typer.echo(f"{START.format(marker=marker)}{render()}{END}\n")
        return
    try:
        text = doc.read_text(encoding="utf-8")
    except OSError as exc:
        fail_usage(f"--doc: cannot read {doc}: {exc.strerror or exc} (run from the repository root)")
    if check:
        problems = stale_tables(text)
        if problems:
            for line in problems:
                typer.echo(f"  {line}", err=True)
            typer.echo(f"{doc} is out of date: run `worldmill docs tables --write` and commit it.", err=True)
            raise typer.Exit(EXIT_FAILED)
        typer.echo(f"{doc}: {len(RENDERERS)} generated tables match the code.")
        return
    new = rewrite(text)
    missing = [m for m in RENDERERS if _span(new, m) is None]
    if new != text:
        doc.write_text(new, encoding="utf-8")
    typer.echo(f"{doc}: {'rewritten' if new != text else 'already current'}.")
    for marker in missing:
        typer.echo(f"  missing: <!-- generated: {marker} --> block (add it where the table belongs)", err=True)
    if missing:
        raise typer.Exit(EXIT_FAILED)
