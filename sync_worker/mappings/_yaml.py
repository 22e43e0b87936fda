"""YAML to plain data, keeping the line of every key path and refusing duplicate keys.

PyYAML's composer gives nodes with start marks; we build the Python values ourselves from those
nodes so that every key path (``("pipelines", 0, "stages", 2, "id")``) keeps its 1-based line, and
so that a key repeated in one mapping is reported instead of silently overwritten.

The composer keeps an alias as a second reference to its anchor's node, so a "billion laughs"
document is small as nodes and huge only once built. Building counts every value it makes, alias
expansions included, and stops at :data:`MAX_VALUES` with an issue at the top-level key whose value
passed the limit: the expansion is refused, never built. Nesting deeper than the parser's own recursion is
refused too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from sync_worker.errors import MappingIssue

__all__ = ["MAX_VALUES", "KeyPath", "ParsedYaml", "format_path", "parse_yaml"]

KeyPath = tuple[str | int, ...]

_MAX_DEPTH = 40
MAX_VALUES = 100_000
"""Values one file may build, aliases expanded (the shipped files build a few hundred)."""


class _TooManyValues(Exception):
    """Raised by the builder to stop at :data:`MAX_VALUES`; carries where it stopped."""

    def __init__(self, node: Node, path: KeyPath, aliases: int) -> None:
        super().__init__(path)
        self.node = node
        self.path = path
        self.aliases = aliases


def format_path(path: KeyPath) -> str:
    """``("pipelines", 0, "id")`` -> ``pipelines[0].id``; the empty path is ``(root)``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(root)"


@dataclass
class ParsedYaml:
    """The data of one file (None when unreadable), its key-path lines and the issues found."""

    file: str
    data: Any = None
    lines: dict[KeyPath, int] = field(default_factory=dict)
    issues: list[MappingIssue] = field(default_factory=list)

    def line_of(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None

    def issue(self, path: KeyPath, message: str) -> MappingIssue:
        return MappingIssue(self.file, self.line_of(path), format_path(path), message)


def parse_yaml(text: str, file: str) -> ParsedYaml:
    """Parse one YAML document; syntax errors and duplicate keys land in ``issues``."""
    parsed = ParsedYaml(file)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            parsed.issues.append(MappingIssue(file, 1, "(root)", "the file is empty"))
            return parsed
        parsed.data = _Builder(parsed).build(node, ())
    except _TooManyValues as exc:
        # An expanded alias carries its anchor's marks; the top-level key's line is where it is used.
        line = parsed.lines.get(exc.path[:1], exc.node.start_mark.line + 1)
        parsed.issues.append(
            MappingIssue(
                file,
                line,
                format_path(exc.path[:1] or exc.path),
                f"the document expands to more than {MAX_VALUES} values ({exc.aliases} alias "
                "expansion(s) so far); refused without building it (an alias bomb?)",
            )
        )
        parsed.data = None
    except RecursionError:
        parsed.issues.append(MappingIssue(file, None, "(syntax)", "YAML error: nested too deeply"))
        parsed.data = None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        parsed.issues.append(MappingIssue(file, line, "(syntax)", f"YAML syntax error: {problem}"))
        parsed.data = None
    except yaml.YAMLError as exc:
        parsed.issues.append(MappingIssue(file, None, "(syntax)", f"YAML error: {exc}"))
        parsed.data = None
    finally:
        loader.dispose()
    return parsed


class _Builder:
    def __init__(self, parsed: ParsedYaml) -> None:
        self._parsed = parsed
        self._constructor = SafeConstructor()
        self._built = 0
        self._seen: set[int] = set()
        self._aliases = 0

    def _count(self, node: Node, path: KeyPath) -> None:
        if id(node) in self._seen:
            self._aliases += 1  # the same node again: an alias being expanded
        else:
            self._seen.add(id(node))
        self._built += 1
        if self._built > MAX_VALUES:
            raise _TooManyValues(node, path, self._aliases)

    def build(self, node: Node, path: KeyPath) -> Any:
        self._count(node, path)
        self._parsed.lines.setdefault(path, node.start_mark.line + 1)
        if len(path) > _MAX_DEPTH:
            self._parsed.issues.append(self._parsed.issue(path, "nested too deeply"))
            return None
        if isinstance(node, MappingNode):
            return self._build_mapping(node, path)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        if isinstance(node, ScalarNode):
            return self._constructor.construct_object(node, deep=True)
        raise yaml.constructor.ConstructorError(
            None, None, f"unsupported YAML node {type(node).__name__}", node.start_mark
        )

    def _build_mapping(self, node: MappingNode, path: KeyPath) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                self._parsed.issues.append(
                    self._parsed.issue(path, f"line {line}: a mapping key must be a plain value")
                )
                continue
            self._count(key_node, path)
            key = self._constructor.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | bool | float) and key is not None:
                key = str(key)
            child: KeyPath = (*path, str(key))
            if key in first_line:
                self._parsed.issues.append(
                    MappingIssue(
                        self._parsed.file,
                        line,
                        format_path(child),
                        f"duplicate key {key!r} (first at line {first_line[key]})",
                    )
                )
                continue
            first_line[key] = line
            self._parsed.lines[child] = line
            out[key] = self.build(value_node, child)
        return out
