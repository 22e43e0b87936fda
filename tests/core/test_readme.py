"""The READMEs and the help say what the installed service does: every command and every setting."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
from pydantic import BaseModel

from sync_worker.cli import main
from sync_worker.plugins import registry
from sync_worker.plugins_doc import replace_between_markers, settings_tables
from sync_worker.settings import Settings
from tests.core.test_cli import _run

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
CONNECTORS_README = (REPO / "connectors" / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def _commands(group: click.Group, prefix: str = "sync-worker") -> list[str]:
    found = []
    for name, command in sorted(group.commands.items()):
        found.append(f"{prefix} {name}")
        if isinstance(command, click.Group) and name in ("leaks", "mappings"):
            found += _commands(command, f"{prefix} {name}")
    return found


def test_the_command_table_documents_every_command() -> None:
    table = _section("Commands")
    documented = set(re.findall(r"`(sync-worker [a-z]+(?: [a-z]+)?)", table))
    documented |= {
        f"sync-worker {m}" for m in re.findall(r"/ `?(?:sync-worker )?([a-z]+(?: [a-z]+)?)[ `]", table)
    }
    missing = [
        c
        for c in _commands(main)
        if c not in documented and not any(d.startswith(c + " ") for d in documented)
    ]
    assert missing == []


def _env_names(model: type[BaseModel], prefix: str) -> list[str]:
    names = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += _env_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def test_the_configuration_table_documents_every_setting() -> None:
    """The core's settings are in the README; each connector's are documented by the connector."""
    table = _section("Configuration")
    named = ["SYNC_BROKER_URL", "SYNC_ALERTS__MIN_AMOUNT"]
    wanted = [*_env_names(Settings, "SYNC_"), *named]
    compact = table.replace("` / `__", "` `SYNC_")
    assert [name for name in wanted if name not in table and name not in compact] == []
    assert "connectors/README.md" in table and "sync-worker config --describe" in table
    assert [spec.env_prefix for spec in registry().values() if f"`{spec.env_prefix}" in table] == []


def test_the_connectors_readme_documents_every_connector_setting() -> None:
    start = CONNECTORS_README.index("## Settings of each connector\n")
    end = CONNECTORS_README.find("\n## ", start + 1)
    section = CONNECTORS_README[start : end if end != -1 else None]
    named = ["SYNC_HUBSPOT__ACCEPT_SIGNATURE_V1", "SYNC_PIPEDRIVE__OAUTH_TOKEN"]
    wanted = [
        *(name for spec in registry().values() for name in _env_names(spec.settings_model, spec.env_prefix)),
        *named,
    ]
    assert [name for name in wanted if f"| `{name}` |" not in section] == []


def test_the_connector_settings_tables_are_generated_from_the_models() -> None:
    """``python -m sync_worker.plugins_doc --write connectors/README.md`` after changing a model."""
    generated = settings_tables(registry().values())
    assert replace_between_markers(CONNECTORS_README, generated) == CONNECTORS_README
    assert "(secret)" in generated and "(undocumented)" not in generated


def test_the_readme_points_only_inside_the_repository_and_the_first_command_needs_no_dev_extras() -> None:
    assert "../" not in README
    first = re.search(r"```bash\n(.*?)\n```", README, re.S)
    assert first is not None and "[dev]" not in first.group(1) and "sync-worker demo" in first.group(1)
    assert "sync-worker-demo/" in (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()


def test_demo_help_says_how_long_and_where_its_store_is(tmp_path: Path) -> None:
    result = _run("demo", "--help", cwd=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "about a minute" not in text and "about ten seconds" in text
    assert "demo.db" in text


_BLOCK_DEV = """
import importlib.abc, sys
DEV = {"pytest", "respx", "hypothesis", "jsonschema", "mypy", "ruff", "_pytest"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in DEV:
            raise ImportError(f"{name} is a [dev] extra")
        return None
sys.meta_path.insert(0, Block())
import sync_worker.demo, sync_worker.sandbox.runner
from sync_worker.plugins import registry
assert all(spec.sandbox is not None for spec in registry().values())
from sync_worker.cli import main
main(["demo", "--help"])
"""


def test_the_demo_imports_without_the_dev_extras(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _BLOCK_DEV],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: " in result.stdout and "demo" in result.stdout
