"""``sync-worker leaks``: every format exits 0 and writes its file; bad setups exit 2 with a fix."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sync_worker.cli import main

from .conftest import MAPPINGS_DIR


@pytest.fixture
def sqlite_db(sqlite_report_db: str) -> str:
    return sqlite_report_db


def _run(
    args: list[str], database_url: str, cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)  # no stray .env or ./mappings from the checkout
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["leaks", *args],
        env={"SYNC_DATABASE_URL": database_url, "SYNC_MAPPINGS_DIR": str(MAPPINGS_DIR)},
        catch_exceptions=False,
    )
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("fmt", ["table", "csv", "json", "html"])
def test_each_format_exits_0_and_writes_the_file(
    fmt: str, sqlite_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / f"report.{fmt}"
    table = ["--table", "funnel"] if fmt == "csv" else []
    code, stdout, stderr = _run(
        ["--format", fmt, *table, "--output", str(out)], sqlite_db, tmp_path, monkeypatch
    )
    assert code == 0, stderr
    assert stdout == "" and str(out) in stderr
    text = out.read_text(encoding="utf-8")
    if fmt == "json":
        assert [row["entered"] for row in json.loads(text)["funnel"]][:5] == [3, 3, 2, 1, 2]
    elif fmt == "csv":
        header, *rows = list(csv.reader(io.StringIO(text)))
        assert [row[header.index("entered")] for row in rows][:5] == ["3", "3", "2", "1", "2"]
    elif fmt == "html":
        assert text.startswith("<!DOCTYPE html>") and "<svg" in text
    else:
        assert "Funnel by canonical stage" in text and "Open leak flags (3)" in text


def test_csv_is_one_table_per_file_or_the_table_asked_for(
    sqlite_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Four tables with different headers never share one file: without --table or a folder, exit 2
    code, stdout, stderr = _run(["--format", "csv"], sqlite_db, tmp_path, monkeypatch)
    assert code == 2 and "--table" in stderr and stdout == ""
    # --output FOLDER gets one file per table, each with one header row and only its own rows
    folder = tmp_path / "csv"
    folder.mkdir()
    code, _, stderr = _run(["--format", "csv", "--output", str(folder)], sqlite_db, tmp_path, monkeypatch)
    assert code == 0, stderr
    names = sorted(path.name for path in folder.iterdir())
    assert names == ["forecast_by_month.csv", "forecast_by_stage.csv", "funnel.csv", "open_flags.csv"]
    for path in folder.iterdir():
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
        assert all(len(row) == len(rows[0]) for row in rows), path.name
        assert "section" not in rows[0] and rows[0].count(rows[0][0]) == 1
    flags = list(csv.reader(io.StringIO((folder / "open_flags.csv").read_text(encoding="utf-8"))))
    assert len(flags) == 1 + 3  # header and the three open flags
    # --table NAME prints that table alone
    code, stdout, _ = _run(["--format", "csv", "--table", "open_flags"], sqlite_db, tmp_path, monkeypatch)
    assert code == 0 and list(csv.reader(io.StringIO(stdout))) == flags


def test_default_is_a_table_on_stdout(
    sqlite_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, stdout, _ = _run([], sqlite_db, tmp_path, monkeypatch)
    assert code == 0
    assert stdout.startswith("Pipeline report at ") and "Weighted pipeline by stage" in stdout


def test_an_unmigrated_database_exits_2_saying_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, stderr = _run(["--format", "json"], f"sqlite:///{tmp_path / 'new.db'}", tmp_path, monkeypatch)
    assert code == 2
    assert "sync-worker db upgrade" in stderr


def test_an_unknown_format_is_bad_usage(
    sqlite_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, stderr = _run(["--format", "pdf"], sqlite_db, tmp_path, monkeypatch)
    assert code == 2 and "pdf" in stderr


def test_an_unwritable_output_exits_2(
    sqlite_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "missing-dir" / "report.html"
    code, _, stderr = _run(["--format", "html", "--output", str(target)], sqlite_db, tmp_path, monkeypatch)
    assert code == 2 and "cannot write" in stderr
    assert not target.exists()
