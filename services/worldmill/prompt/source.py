"""Load a manifest document safely, keeping where every value came from.

YAML (JSON is valid YAML, so both go through here) is parsed with PyYAML's safe loader into its
node tree first. From the tree we record the line and column of every value by path, refuse
duplicate keys (PyYAML would silently keep the last), and measure the document's size with
aliases expanded, so a "billion laughs" document is refused before anything walks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

MAX_BYTES = 1024 * 1024
MAX_NODES = 200_000

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Mark:
    """1-based line and column."""

    line: int
    column: int


@dataclass(frozen=True)
class SourceProblem:
    """A problem found while loading, before the content is looked at."""

    rule: str
    message: str
    path: Path = ()
    mark: Mark | None = None


@dataclass
class Source:
    """The loaded document and the position of each value, by path."""

    data: Any
    marks: dict[Path, Mark] = field(default_factory=dict)

    def mark_for(self, path: Path) -> Mark | None:
        """The position of ``path``, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            mark = self.marks.get(path[:end])
            if mark is not None:
                return mark
        return None


class SourceError(Exception):
    """The document cannot be loaded; ``problems`` says why and where."""

    def __init__(self, problems: list[SourceProblem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


def _expanded_size(root: yaml.Node) -> int:
    """Nodes the document would have with every alias expanded (memoised, so it is cheap)."""
    memo: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in memo:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        if done or not children:
            memo[id(node)] = 1 + sum(memo.get(id(c), 0) for c in children)
            if memo[id(node)] > MAX_NODES:
                return memo[id(node)]
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in memo)
    return memo[id(root)]


def _same_key(key: Any) -> Any:
    """Keys that load as the same value are the same key (``5`` and ``5.0`` are one number)."""
    try:
        return float(key)
    except (TypeError, ValueError):
        return key


def _walk(node: yaml.Node, path: Path, marks: dict[Path, Mark], problems: list[SourceProblem]) -> None:
    marks.setdefault(path, _mark(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, Mark] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            same = _same_key(key)
            if same in seen:
                first = seen[same]
                problems.append(
                    SourceProblem(
                        "duplicate key",
                        f"key {key!r} appears twice (first at line {first.line})",
                        (*path, key),
                        _mark(key_node),
                    )
                )
                continue
            seen[same] = _mark(key_node)
            _walk(value_node, (*path, key), marks, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), marks, problems)


def load(text: str | bytes) -> Source:
    """Parse a YAML or JSON document; raise :class:`SourceError` with every loading problem."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_BYTES:
        raise SourceError(
            [SourceProblem("file size", f"the document is {len(raw)} bytes, over the {MAX_BYTES}-byte limit")]
        )
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError([SourceProblem("encoding", f"the document is not UTF-8: {exc}")]) from exc
    try:
        root = yaml.compose(decoded, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = Mark(mark.line + 1, mark.column + 1) if mark else None
        raise SourceError([SourceProblem("syntax", f"not valid YAML/JSON: {exc.problem}", (), where)]) from exc
    except yaml.YAMLError as exc:
        raise SourceError([SourceProblem("syntax", f"not valid YAML/JSON: {exc}")]) from exc
    except RecursionError as exc:
        raise SourceError([SourceProblem("nesting", "the document is nested too deeply")]) from exc
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag.endswith(":null")):
        raise SourceError([SourceProblem("empty", "the document is empty")])
    size = _expanded_size(root)
    if size > MAX_NODES:
        raise SourceError(
            [
                SourceProblem(
                    "size with aliases expanded",
                    f"the document expands to more than {MAX_NODES} values through YAML aliases (a 'YAML bomb'?)",
                )
            ]
        )
    marks: dict[Path, Mark] = {}
    problems: list[SourceProblem] = []
    _walk(root, (), marks, problems)
    if problems:
        raise SourceError(problems)
    try:
        data = yaml.SafeLoader(decoded).get_single_data()
    except yaml.YAMLError as exc:
        raise SourceError([SourceProblem("syntax", f"cannot build the document: {exc}")]) from exc
    return Source(data=data, marks=marks)
