from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

DEFAULTS = Path(__file__).resolve().parents[2] / "mappings"


@pytest.fixture
def defaults_dir() -> Path:
    """The shipped default mappings (read only)."""
    return DEFAULTS


@pytest.fixture
def mappings_dir(tmp_path: Path) -> Path:
    """A writable copy of the shipped defaults."""
    target = tmp_path / "mappings"
    shutil.copytree(DEFAULTS, target)
    return target


@pytest.fixture
def edit(mappings_dir: Path) -> Callable[[str, str, str], Path]:
    """Replace one exact snippet in one file of the copy; fails loudly if the snippet is absent."""

    def _edit(name: str, old: str, new: str) -> Path:
        path = mappings_dir / name
        text = path.read_text(encoding="utf-8")
        assert text.count(old) == 1, f"{old!r} must occur exactly once in {name}"
        path.write_text(text.replace(old, new), encoding="utf-8")
        return path

    return _edit


def line_of(path: Path, snippet: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line containing ``snippet`` (comment lines do not count)."""
    lines = enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
    hits = [i for i, line in lines if snippet in line and not line.lstrip().startswith("#")]
    return hits[occurrence - 1]


@pytest.fixture
def find_line() -> Callable[..., int]:
    return line_of
