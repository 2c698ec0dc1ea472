"""Prompt templates with named variables: ``"A {camera} view of {subject} at {time}."``.

Only plain names are allowed in braces (no attribute access, indexing, conversions or format
specs); ``{{`` and ``}}`` are literal braces. A variable the template uses but the scenario does
not give, or one the scenario gives but the template does not use, is an error.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from worldmill.prompt.manifest import Scalar

_FORMATTER = string.Formatter()


@dataclass(frozen=True)
class TemplateProblem:
    """What is wrong: ``field`` is a variable name or ``""`` for the template itself."""

    field: str
    rule: str
    message: str


def variables(template: str) -> tuple[list[str], list[TemplateProblem]]:
    """The variable names a template uses, in order, and any problem with its syntax."""
    names: list[str] = []
    problems: list[TemplateProblem] = []
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        return [], [TemplateProblem("", "template syntax", f"template is not valid: {exc}")]
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            problems.append(
                TemplateProblem(
                    "",
                    "template syntax",
                    f"'{{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}' is not a plain "
                    "variable; use {name} (and {{ }} for literal braces)",
                )
            )
            continue
        if name not in names:
            names.append(name)
    return names, problems


def render(template: str, values: dict[str, Scalar]) -> tuple[str | None, list[TemplateProblem]]:
    """Fill a template; on any missing or unused variable return ``None`` and every problem."""
    names, problems = variables(template)
    if problems:
        return None, problems
    for name in names:
        if name not in values:
            problems.append(
                TemplateProblem(
                    name,
                    "missing template variable",
                    f"template uses {{{name}}} but no value is given for it",
                )
            )
    for name in values:
        if name not in names:
            problems.append(
                TemplateProblem(name, "unused template variable", f"{name!r} is given but the template does not use it")
            )
    if problems:
        return None, problems
    text = _FORMATTER.vformat(template, (), {k: "" if v is None else v for k, v in values.items()})
    return text, []
