"""Docs that cannot drift: the generated tables of docs/architecture.md, module lists, links, sections.

Like ``test_compose``, every check is a function that returns problems; the real files must give
none, and a deliberately broken copy (a table cell changed, a module left out, a dead anchor, a
section out of order) proves each check can fail.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from worldmill.cli import doc_tables
from worldmill.cli.bus_commands import all_consumers
from worldmill.cli.doc_tables import (
    CONSUMERS_MARKER,
    MESSAGES_MARKER,
    PERMISSIONS_MARKER,
    RENDERERS,
    STREAMS_MARKER,
    blocks,
    docs_app,
    first_sentence,
    rewrite,
    stale_tables,
    subject_matches,
)
from worldmill.contracts.registry import MESSAGE_CLASSES
from worldmill.contracts.subjects import ALL_STREAMS, GPU_JOBS

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
BACKGROUND = ROOT / "docs" / "background.md"
#: Markdown files whose links and section references are checked.
DOCUMENTS = (*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md")
#: Packages whose docstring lists their modules (a ``Modules:`` section).
LISTED_PACKAGES = (
    ROOT / "contracts" / "worldmill" / "contracts",
    ROOT / "services" / "worldmill" / "runtime",
    ROOT / "services" / "worldmill" / "prompt",
    ROOT / "services" / "worldmill" / "generate",
    ROOT / "services" / "worldmill" / "upsample",
    ROOT / "gpu-runner" / "worldmill" / "gpu_runner",
)


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(docs_app, name="docs")
    return app


def _tables(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(_cli(), ["docs", "tables", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def _edit_one_cell(text: str, marker: str) -> str:
    """``text`` with the last cell of the first data row of ``marker``'s table changed."""
    body = blocks(text)[marker]
    row = body.splitlines()[2]
    assert row.startswith("| ") and row.endswith(" |")
    edited = row[: -len(" |")] + " (edited by hand) |"
    return text.replace(body, body.replace(row, edited, 1), 1)


# --- the generated tables ---------------------------------------------------------------------------


def test_every_generated_table_of_the_architecture_document_is_what_the_code_renders() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    assert set(blocks(text)) == set(RENDERERS), "a generated block is missing from docs/architecture.md"
    for marker, render in RENDERERS.items():
        assert blocks(text)[marker] == render(), (
            f"docs/architecture.md: the table <!-- generated: {marker} --> is stale: run `worldmill docs tables --write`"
        )
    assert stale_tables(text) == []


@pytest.mark.parametrize("marker", list(RENDERERS))
def test_a_deliberately_edited_table_is_reported_stale(marker: str) -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    edited = _edit_one_cell(text, marker)
    assert edited != text
    assert stale_tables(edited) == [f"stale: <!-- generated: {marker} --> differs from the code"]
    assert rewrite(edited) == text


def test_missing_and_unknown_blocks_are_reported() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    without = text.replace(f"<!-- generated: {STREAMS_MARKER} -->", "<!-- generated: worldmill nothing -->")
    assert stale_tables(without) == [
        f"missing: <!-- generated: {STREAMS_MARKER} --> block",
        "unknown: <!-- generated: worldmill nothing --> (no renderer)",
    ]


def test_the_tables_hold_every_stream_consumer_and_message_with_the_codes_numbers() -> None:
    streams = RENDERERS[STREAMS_MARKER]().splitlines()[2:]
    assert [row.split(" | ")[0] for row in streams] == [f"| `{s.name}`" for s in ALL_STREAMS]
    assert "| `WM_JOBS` | `wm.job.>` | workqueue | 14 d | 1 h | 1 MiB |" in RENDERERS[STREAMS_MARKER]()

    consumers = [r for r in RENDERERS[CONSUMERS_MARKER]().splitlines()[2:] if r.startswith("| `")]
    assert len(consumers) == len(all_consumers())
    gpu = next(r for r in consumers if f"| `{GPU_JOBS.durable}` |" in r)
    cells = [c.strip() for c in gpu.strip("|").split("|")]
    assert cells[3:7] == ["gpu-runner", "1 min", str(GPU_JOBS.max_deliver), str(GPU_JOBS.max_ack_pending)]
    assert all(" | no grant | " not in r for r in consumers), "a durable no NATS grant binds"

    messages = RENDERERS[MESSAGES_MARKER]().splitlines()[2:]
    assert [r.split(" | ")[0] for r in messages] == [f"| {cls.__name__}" for cls in MESSAGE_CLASSES]
    qa = next(r for r in messages if r.startswith("| QaPassed |"))
    assert "`wm.evt.qa.passed`" in qa and "| qa |" in qa and "`qa-videos`" not in qa and "`catalog`: catalog" in qa
    assert "`wm.dlq.<durable>`" in next(r for r in messages if r.startswith("| DeadLetter |"))


def test_helpers() -> None:
    assert subject_matches("wm.evt.>", "wm.evt.qa.passed")
    assert subject_matches("wm.evt.qa.*", "wm.evt.qa.passed")
    assert not subject_matches("wm.evt.qa.*", "wm.evt.qa.passed.x")
    assert not subject_matches("wm.evt.>", "wm.evt")
    assert not subject_matches("wm.job.gpu", "wm.job.upsample")
    assert first_sentence("Job: run one plan. Its ``job_id`` is its id.") == "Job: run one plan."
    assert first_sentence("A notification (e.g. one event), normalised.\n\nMore.") == (
        "A notification (e.g. one event), normalised."
    )
    assert doc_tables.duration(600) == "10 min" and doc_tables.duration(0.5) == "0.5 s"
    assert doc_tables.duration(90 * 86400) == "90 d"


# --- the command ------------------------------------------------------------------------------------


def test_check_names_the_stale_table_and_write_repairs_it(tmp_path: Path) -> None:
    doc = tmp_path / "architecture.md"
    original = ARCHITECTURE.read_text(encoding="utf-8")
    doc.write_text(_edit_one_cell(original, CONSUMERS_MARKER), encoding="utf-8")

    code, output = _tables("--check", "--doc", str(doc))
    assert code == 1
    assert CONSUMERS_MARKER in output and MESSAGES_MARKER not in output and PERMISSIONS_MARKER not in output

    code, output = _tables("--write", "--doc", str(doc))
    assert code == 0, output
    assert doc.read_text(encoding="utf-8") == original
    assert _tables("--check", "--doc", str(doc))[0] == 0
    assert "already current" in _tables("--write", "--doc", str(doc))[1]


def test_exit_codes(tmp_path: Path) -> None:
    assert _tables("--check", "--doc", str(ARCHITECTURE))[0] == 0
    assert _tables("--check", "--write", "--doc", str(ARCHITECTURE))[0] == 2
    assert _tables("--check", "--doc", str(tmp_path / "absent.md"))[0] == 2
    bare = tmp_path / "bare.md"
    bare.write_text("# nothing generated here\n", encoding="utf-8")
    code, output = _tables("--write", "--doc", str(bare))
    assert code == 1 and all(m in output for m in RENDERERS)
    code, output = _tables()
    assert code == 0 and all(f"<!-- generated: {m} -->" in output for m in RENDERERS)


def test_the_worldmill_command_has_docs_tables() -> None:
    from worldmill.cli.main import app  # noqa: PLC0415

    result = CliRunner().invoke(app, ["docs", "tables", "--check", "--doc", str(ARCHITECTURE)])
    assert result.exit_code == 0, result.output


# --- package docstrings: the module lists -----------------------------------------------------------


def listed_modules(doc: str) -> list[str] | None:
    """The names in a docstring's ``Modules:`` section (None when it has none)."""
    lines = doc.splitlines()
    if "Modules:" not in lines:
        return None
    names = []
    for line in lines[lines.index("Modules:") + 1 :]:
        if not line.strip():
            break
        names.append(line.split()[0])
    return names


def module_list_problems(package: Path, doc: str | None = None) -> list[str]:
    """What a package docstring's module list gets wrong: modules left out, names of no module."""
    if doc is None:
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8"))) or ""
    listed = listed_modules(doc)
    if listed is None:
        return [f"{package.name}: the docstring has no Modules: section"]
    have = {p.stem for p in package.glob("*.py") if p.stem not in {"__init__", "__main__"}}
    have |= {p.parent.name for p in package.glob("*/__init__.py")}
    problems = [f"{package.name}: module {m} is not listed" for m in sorted(have - set(listed))]
    problems += [f"{package.name}: {m} is listed but is no module" for m in listed if m not in have]
    problems += [f"{package.name}: {m} is listed twice" for m in sorted({m for m in listed if listed.count(m) > 1})]
    return problems


@pytest.mark.parametrize("package", LISTED_PACKAGES, ids=lambda p: p.name)
def test_package_docstrings_list_every_module(package: Path) -> None:
    assert module_list_problems(package) == []


def test_module_list_check_can_fail(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    for name in ("__init__.py", "alpha.py", "beta.py", "sub/__init__.py"):
        (package / name).write_text("")
    doc = "A package.\n\nModules:\n    alpha   a\n    gamma   g\n    alpha   again\n\nMore text.\n"
    assert module_list_problems(package, doc) == [
        "pkg: module beta is not listed",
        "pkg: module sub is not listed",
        "pkg: gamma is listed but is no module",
        "pkg: alpha is listed twice",
    ]
    assert module_list_problems(package, "No list.") == ["pkg: the docstring has no Modules: section"]


# --- links, citations and section numbers -----------------------------------------------------------


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings."""
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", markdown, flags=re.MULTILINE):
        out.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return out


def link_problems(name: str, text: str, background: str) -> list[str]:
    """Citations of documents outside the repository, and links to background.md's missing anchors."""
    problems = [f"{name}: cites {m}: not in the repository" for m in re.findall(r"seeds/0\d\d|/work/shared\S*", text)]
    have = anchors(background)
    for anchor in re.findall(r"background\.md#([\w\-]+)", text):
        if anchor not in have:
            problems.append(f"{name}: background.md has no heading #{anchor}")
    return problems


def test_docs_link_to_the_background_not_to_documents_outside_the_repository() -> None:
    background = BACKGROUND.read_text(encoding="utf-8")
    problems = [p for doc in DOCUMENTS for p in link_problems(doc.name, doc.read_text(encoding="utf-8"), background)]
    assert problems == []
    linked = {a for doc in DOCUMENTS for a in re.findall(r"background\.md#([\w\-]+)", doc.read_text(encoding="utf-8"))}
    assert "security-cameras" in linked


def test_link_check_can_fail() -> None:
    background = "# B\n\n## Security cameras\n"
    text = "see seeds/003 and [x](background.md#security-cameras) and [y](background.md#no-such-team)"
    assert link_problems("x.md", text, background) == [
        "x.md: cites seeds/003: not in the repository",
        "x.md: background.md has no heading #no-such-team",
    ]


def section_problems(architecture: str, others: dict[str, str]) -> list[str]:
    """Sections numbered 1, 2, … in order, and every ``§N`` naming one that exists."""
    numbers = [int(n) for n in re.findall(r"^## (\d+)\. ", architecture, flags=re.MULTILINE)]
    problems = [] if numbers == list(range(1, len(numbers) + 1)) else [f"architecture.md: sections in order {numbers}"]
    for name, text in {"architecture.md": architecture, **others}.items():
        problems += [f"{name}: §{n} does not exist" for n in re.findall(r"§(\d+)", text) if int(n) not in numbers]
    return problems


def test_sections_are_in_order_and_every_reference_names_one() -> None:
    others = {d.name: d.read_text(encoding="utf-8") for d in DOCUMENTS if d != ARCHITECTURE}
    assert section_problems(ARCHITECTURE.read_text(encoding="utf-8"), others) == []


def test_section_check_can_fail() -> None:
    doc = "## 1. A\n\n## 3. C\n\n## 2. B\n\nsee §2 and §4\n"
    assert section_problems(doc, {"README.md": "§9"}) == [
        "architecture.md: sections in order [1, 3, 2]",
        "architecture.md: §4 does not exist",
        "README.md: §9 does not exist",
    ]
