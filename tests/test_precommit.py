"""The pre-commit hooks run what `make lint` runs (CI calls `make lint`), so a commit is checked alike."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def lint_tools(makefile: str) -> set[str]:
    """The tools the `lint` target runs (`ruff check`, `mypy`, `worldmill schemas check`, ...)."""
    body = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    tools = set()
    for line in body.splitlines()[1:]:
        words = re.sub(r"\$\(BIN\)/|PYTHONPATH=\S+ ", "", line.strip()).split()
        tools.add(" ".join(words[:2] if words[0] in {"ruff", "worldmill"} else words[:1]))
    return tools


def hook_tools(config: dict[str, object]) -> set[str]:
    entries = [h["entry"] for r in config["repos"] for h in r["hooks"]]  # type: ignore[index,union-attr]
    out = set()
    for entry in entries:
        words = re.sub(r"^env PYTHONPATH=\S+ ", "", entry).replace(".venv/bin/", "").split()
        out.add(" ".join(words[:2] if words[0] in {"ruff", "worldmill"} else words[:1]))
    return out


def test_every_lint_step_is_a_pre_commit_hook() -> None:
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    tools = lint_tools((REPO / "Makefile").read_text())
    assert {"ruff check", "ruff format", "mypy", "lint-imports", "worldmill schemas", "worldmill docs"} <= tools
    assert tools <= hook_tools(config), tools - hook_tools(config)


def test_a_lint_step_without_a_hook_is_caught() -> None:
    makefile = (
        (REPO / "Makefile").read_text().replace("lint: $(STAMP)\n", "lint: $(STAMP)\n\t$(BIN)/bandit -r services\n")
    )
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    assert "bandit" in lint_tools(makefile) - hook_tools(config)
