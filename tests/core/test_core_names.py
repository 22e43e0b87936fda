"""The core names no system: every system is a plug-in (sync_worker.plugins).

Outside ``sync_worker/sandbox/`` and ``sync_worker/demo.py`` (which run the built-in sandboxes), no
string constant in ``sync_worker/`` is a system's name or starts with one followed by a non-letter
(``"hubspot:"``, ``"pipedrive_"``), docstrings aside; and no core module imports a connector.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from sync_worker.plugins import registry

CORE = Path(__file__).resolve().parents[2] / "sync_worker"
KNOWN = {"hubspot", "pipedrive", "lagrowthmachine", "zoho", "salesforce", "odoo", "trello", "clinchpad"}


def _system_name() -> re.Pattern[str]:
    names = "|".join(map(re.escape, sorted(KNOWN | set(registry()))))
    return re.compile(rf"^({names})($|[^a-z])", re.IGNORECASE)


def _core_modules() -> list[Path]:
    return [
        path
        for path in sorted(CORE.rglob("*.py"))
        if "sandbox" not in path.relative_to(CORE).parts and path.name != "demo.py"
    ]


def _docstrings(tree: ast.AST) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def test_no_string_constant_in_the_core_names_a_system() -> None:
    pattern = _system_name()
    hits = []
    for path in _core_modules():
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                if pattern.match(node.value.strip()):
                    hits.append(f"{path.relative_to(CORE.parent)}:{node.lineno}: {node.value[:40]!r}")
    assert hits == []


def test_no_core_module_imports_a_connector() -> None:
    hits = []
    for path in _core_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            modules = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            hits += [
                f"{path.relative_to(CORE.parent)}: {m}" for m in modules if m.split(".")[0] == "connectors"
            ]
    assert hits == []


def test_the_check_sees_a_system_name_when_one_is_written() -> None:
    pattern = _system_name()
    assert pattern.match("hubspot:")
    assert pattern.match("Pipedrive")
    assert not pattern.match("hubspotter")
