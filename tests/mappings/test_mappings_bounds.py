"""Admin input is bounded: alias bombs, huge files, devices, FIFOs and symlink loops are refused
fast with a located error, and a hot reload of any of them keeps the last good mappings."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from sync_worker.errors import MappingError, MappingIssue
from sync_worker.mappings import MappingsHolder, load_mappings, validate_directory
from sync_worker.mappings._yaml import MAX_VALUES, parse_yaml
from sync_worker.mappings.loader import MAX_FILE_BYTES

FAST = 5.0  # seconds: "refused fast" (each case takes well under one)


def alias_bomb(levels: int) -> str:
    """The "billion laughs": each level nine aliases of the one before (9**levels strings)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def errors_of(directory: Path) -> list[MappingIssue]:
    mappings, errors, _ = validate_directory(directory)
    assert mappings is None
    return errors


def timed(call: Callable[[], object]) -> float:
    """Seconds ``call`` took; fails (instead of hanging the suite) when it takes over ``FAST``."""
    done = threading.Event()
    started = time.monotonic()

    def run() -> None:
        call()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(FAST), f"still running after {FAST} s"
    return time.monotonic() - started


@pytest.mark.parametrize("levels", [7, 9])
def test_an_alias_bomb_is_refused_at_its_line_without_being_built(levels: int) -> None:
    tracemalloc.start()
    try:
        parsed = parse_yaml(alias_bomb(levels), "bomb.yaml")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed.data is None
    [issue] = parsed.issues
    assert (issue.file, issue.line, issue.key) == ("bomb.yaml", 6, "a5")  # 9**5 passes the cap
    assert f"more than {MAX_VALUES} values" in issue.message
    assert str(issue).startswith("bomb.yaml:6: a5: ")
    assert peak < 100 * 1024 * 1024, peak  # the 9-level bomb would build a billion strings


def test_an_alias_bomb_in_a_mapping_file_fails_validation_fast(mappings_dir: Path) -> None:
    path = mappings_dir / "hubspot.yaml"
    path.write_text(path.read_text(encoding="utf-8") + alias_bomb(9).replace("a", "x"), encoding="utf-8")
    errors: list[MappingIssue] = []
    assert timed(lambda: errors.extend(errors_of(mappings_dir))) < FAST
    assert [e.file for e in errors if "values" in e.message] == [str(path)]


def test_ordinary_aliases_still_work() -> None:
    parsed = parse_yaml("base: &b {max_days: 3}\nstage: *b\nother: *b\n", "ok.yaml")
    assert parsed.issues == []
    assert parsed.data == {"base": {"max_days": 3}, "stage": {"max_days": 3}, "other": {"max_days": 3}}


@pytest.mark.parametrize(
    ("text", "message"),
    [("[" * 100_000, "nested too deeply"), ("a: &x [*x]\n", "nested too deeply")],
    ids=["deep-flow", "recursive-alias"],
)
def test_deep_and_recursive_documents_are_issues_not_crashes(text: str, message: str) -> None:
    parsed = parse_yaml(text, "deep.yaml")
    assert parsed.data is None or parsed.issues
    assert any(message in issue.message for issue in parsed.issues), parsed.issues


def test_a_file_over_the_size_limit_is_refused_unread(mappings_dir: Path) -> None:
    path = mappings_dir / "pipedrive.yaml"
    with path.open("r+b") as handle:
        handle.truncate(50 * 1024 * 1024)  # 50 MB (sparse: reading it would be the cost)
    errors: list[MappingIssue] = []
    assert timed(lambda: errors.extend(errors_of(mappings_dir))) < FAST
    [issue] = [e for e in errors if e.file == str(path)]
    assert issue.key == "(file)"
    assert f"{50 * 1024 * 1024} bytes, over the {MAX_FILE_BYTES}-byte limit" in issue.message


def _replace_with_symlink(path: Path, target: str) -> None:
    path.unlink()
    path.symlink_to(target)


def _replace_with_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        (
            "hubspot.yaml",
            lambda p: _replace_with_symlink(p, "/dev/zero"),
            "a character device, not a regular file",
        ),
        ("hubspot.yaml", _replace_with_fifo, "a FIFO, not a regular file"),
        ("hubspot.yaml", lambda p: _replace_with_symlink(p, p.name), "a symlink loop"),
        (
            "routes.yaml",
            lambda p: _replace_with_symlink(p, p.name),
            "a symlink loop",
        ),  # was silently no routes
        ("canonical.yaml", _replace_with_fifo, "a FIFO, not a regular file"),
        ("extra.yaml", lambda p: p.symlink_to(p.parent), "a directory, not a regular file"),
    ],
    ids=["dev-zero", "fifo", "file-loop", "routes-loop", "canonical-fifo", "directory"],
)
def test_only_regular_files_are_read(
    mappings_dir: Path, name: str, make: Callable[[Path], None], reason: str
) -> None:
    path = mappings_dir / name
    make(path)
    errors: list[MappingIssue] = []
    assert timed(lambda: errors.extend(errors_of(mappings_dir))) < FAST
    assert MappingIssue(str(path), None, "(file)", f"cannot read: {reason}") in errors, errors


def test_a_symlink_to_a_regular_file_is_read(mappings_dir: Path, tmp_path: Path) -> None:
    # Kubernetes mounts ConfigMap keys as symlinks; those must keep working.
    real = tmp_path / "hubspot-real.yaml"
    (mappings_dir / "hubspot.yaml").rename(real)
    (mappings_dir / "hubspot.yaml").symlink_to(real)
    assert "hubspot" in load_mappings(mappings_dir).index


def test_a_mappings_directory_that_is_a_symlink_loop_is_refused(tmp_path: Path) -> None:
    loop = tmp_path / "mappings"
    loop.symlink_to(loop)
    [issue] = errors_of(loop)
    assert (issue.key, issue.message) == ("(directory)", "not a directory: a symlink loop")


@pytest.mark.parametrize("case", ["bomb", "huge", "dev-zero", "fifo", "loop"])
def test_a_hot_reload_of_hostile_input_keeps_the_last_good_set(
    mappings_dir: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a holder serving good mappings
    holder = MappingsHolder(mappings_dir, interval=60.0, logger=logging.getLogger("test.bounds"))
    good = holder.current
    path = mappings_dir / "hubspot.yaml"
    # When an admin's edit turns a file hostile and the service reloads
    if case == "bomb":
        path.write_text(path.read_text(encoding="utf-8") + alias_bomb(9).replace("a", "x"), encoding="utf-8")
    elif case == "huge":
        with path.open("r+b") as handle:
            handle.truncate(50 * 1024 * 1024)
    elif case == "dev-zero":
        _replace_with_symlink(path, "/dev/zero")
    elif case == "fifo":
        _replace_with_fifo(path)
    else:
        _replace_with_symlink(path, path.name)
    reloaded: list[bool] = []
    with caplog.at_level(logging.ERROR, logger="test.bounds"):
        assert timed(lambda: reloaded.append(holder.reload())) < FAST
    # Then the last good set stays, and the log says which file is refused
    assert reloaded == [False]
    assert holder.current is good
    assert any(str(path) in record.getMessage() for record in caplog.records)


def test_mappings_validate_refuses_a_fifo_and_a_bomb_fast(mappings_dir: Path, tmp_path: Path) -> None:
    _replace_with_fifo(mappings_dir / "pipedrive.yaml")
    bomb = mappings_dir / "hubspot.yaml"
    bomb.write_text(bomb.read_text(encoding="utf-8") + alias_bomb(9).replace("a", "x"), encoding="utf-8")
    script = Path(sys.executable).parent / "sync-worker"
    foreign = tmp_path / "elsewhere"
    foreign.mkdir()
    started = time.monotonic()
    result = subprocess.run(
        [str(script), "mappings", "validate", str(mappings_dir)],
        cwd=foreign,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert time.monotonic() - started < 30
    assert result.returncode == 2, result.stderr
    assert "pipedrive.yaml: (file): cannot read: a FIFO, not a regular file" in result.stderr + result.stdout
    line = (
        bomb.read_text(encoding="utf-8").splitlines().index(alias_bomb(9).replace("a", "x").splitlines()[5])
        + 1
    )
    assert f"hubspot.yaml:{line}: x5: the document expands to more than" in result.stderr + result.stdout


def test_loading_refuses_with_a_mapping_error(mappings_dir: Path) -> None:
    _replace_with_symlink(mappings_dir / "hubspot.yaml", "/dev/zero")
    with pytest.raises(MappingError) as caught:
        load_mappings(mappings_dir)
    assert caught.value.key == "(file)"


def test_the_polling_reload_survives_hostile_files_and_takes_the_next_good_edit(mappings_dir: Path) -> None:
    # Given a running holder polling the directory
    holder = MappingsHolder(mappings_dir, interval=0.05, logger=logging.getLogger("test.bounds"))
    good = holder.current
    path = mappings_dir / "pipedrive.yaml"
    text = path.read_text(encoding="utf-8")
    holder.start()
    try:
        # When the file becomes a FIFO, then an alias bomb, for a few polls each
        _replace_with_fifo(path)
        time.sleep(0.5)
        path.unlink()
        path.write_text(text + alias_bomb(9).replace("a", "x"), encoding="utf-8")
        time.sleep(1.5)
        assert holder.current is good
        # Then the next good edit is still picked up
        path.write_text(text.replace("canonical: meeting", "canonical: qualified", 1), encoding="utf-8")
        deadline = time.monotonic() + 10
        while holder.current is good and time.monotonic() < deadline:
            time.sleep(0.05)
        assert holder.current is not good
    finally:
        holder.stop()
