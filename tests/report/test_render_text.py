"""Table, CSV and JSON outputs parse, agree with each other and with the report."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from sync_worker.canonical import StageModel
from sync_worker.report import PipelineReport, build_report, render_csv, render_json, render_table
from sync_worker.report.data import OpenFlagRow
from sync_worker.store import SyncStore

from .conftest import NOW


@pytest.fixture
def report(report_store: SyncStore, model: StageModel) -> PipelineReport:
    return build_report(report_store, model, NOW)


def _csv_sections(text: str) -> dict[str, list[dict[str, str]]]:
    sections: dict[str, list[dict[str, str]]] = {}
    header: list[str] = []
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        if row[0] == "section":
            header = row[1:]
            continue
        sections.setdefault(row[0], []).append(dict(zip(header, row[1:], strict=True)))
    return sections


def _table_sections(text: str) -> dict[str, list[dict[str, str]]]:
    """Blocks separated by blank lines: title, header, rule, rows."""
    sections: dict[str, list[dict[str, str]]] = {}
    for block in text.strip().split("\n\n")[1:]:
        title, header, _rule, *rows = block.split("\n")
        names = [cell.strip() for cell in header.split(" | ")]
        sections[title] = [
            dict(zip(names, (cell.strip() for cell in row.split(" | ")), strict=False))
            for row in rows
            if row != "(none)"
        ]
    return sections


def test_csv_and_json_agree_with_the_report(report: PipelineReport) -> None:
    sections = _csv_sections(render_csv(report))
    data = json.loads(render_json(report))
    assert set(sections) == {"open_flags", "funnel", "forecast_by_stage", "forecast_by_month"}
    assert data["generated_at"] == "2024-05-01T12:00:00Z"
    # Funnel: CSV cells are the JSON values as text ("" for null), row for row.
    assert len(sections["funnel"]) == len(data["funnel"]) == len(report.funnel)
    for csv_row, json_row in zip(sections["funnel"], data["funnel"], strict=True):
        assert csv_row == {k: "" if v is None else str(v) for k, v in json_row.items()}
    contacted = data["funnel"][1]
    assert contacted == {
        "stage": "contacted",
        "label": "Contacted",
        "entered": 3,
        "converted": 2,
        "leaked": 2,
        "conversion_rate": 0.6667,
        "leak_rate": 0.6667,
        "median_days": 12.0,
        "in_stage_now": 1,
    }
    # Money: exact decimal strings in both
    assert [row["weighted"] for row in data["forecast"]["by_stage"]] == ["25.00", "300.00", "2000.00"]
    assert [row["weighted"] for row in sections["forecast_by_stage"]] == ["25.00", "300.00", "2000.00"]
    assert [row["bucket"] for row in data["forecast"]["by_month"]] == ["2024-05", "2024-06", None]
    assert [row["bucket"] for row in sections["forecast_by_month"]] == ["2024-05", "2024-06", ""]
    assert [(f["external_id"], f["rule"]) for f in data["open_flags"]] == [
        ("D3", "regressed"),
        ("D4", "stalled"),
        ("L1", "unanswered"),
    ]
    assert [(f["external_id"], f["rule"]) for f in sections["open_flags"]] == [
        ("D3", "regressed"),
        ("D4", "stalled"),
        ("L1", "unanswered"),
    ]
    assert data["open_flags"][0]["weighted_amount"] == "300.00"


def test_table_agrees_with_csv(report: PipelineReport) -> None:
    table = _table_sections(render_table(report))
    sections = _csv_sections(render_csv(report))
    assert list(table) == [
        "Open leak flags (3)",
        "Funnel by canonical stage",
        "Weighted pipeline by stage",
        "Weighted pipeline by expected close month",
    ]
    funnel = table["Funnel by canonical stage"]
    assert [r["stage"] for r in funnel] == [r["stage"] for r in sections["funnel"]]
    for shown, raw in zip(funnel, sections["funnel"], strict=True):
        for column in ("entered", "converted", "leaked", "median_days", "in_stage_now"):
            assert shown[column] == (raw[column] or "-")
        rate = raw["conversion_rate"]
        assert shown["conversion_rate"] == (f"{float(rate) * 100:.1f}%" if rate else "-")
    assert funnel[0]["conversion_rate"] == "66.7%" and funnel[3]["leak_rate"] == "100.0%"
    money = table["Weighted pipeline by stage"]
    assert [(r["bucket"], r["currency"], r["weighted"]) for r in money] == [
        (r["bucket"], r["currency"], r["weighted"]) for r in sections["forecast_by_stage"]
    ]
    assert [r["external_id"] for r in table["Open leak flags (3)"]] == ["D3", "D4", "L1"]


def _hostile(report: PipelineReport) -> PipelineReport:
    flag = OpenFlagRow(
        flag_id=99,
        record_id=1,
        source="hubspot",
        kind="deal",
        external_id="X|1",
        title='=HYPERLINK("http://evil")\x1b[31m|fake col',
        rule="stalled",
        stage=None,
        days_in_stage=None,
        reason="-2+3\nsecond line",
        amount=Decimal("-5.00"),
        weighted_amount=None,
        currency=None,
        raised_at=datetime(2024, 5, 1, tzinfo=UTC),
    )
    return replace(report, flags=(flag,))


def test_text_from_crms_cannot_forge_columns_or_formulas(report: PipelineReport) -> None:
    hostile = _hostile(report)
    table = render_table(hostile)
    assert "\x1b" not in table
    flags = _table_sections(table)["Open leak flags (1)"]
    assert flags[0]["external_id"] == "X/1" and flags[0]["rule"] == "stalled"
    (row,) = _csv_sections(render_csv(hostile))["open_flags"]
    assert row["title"].startswith("'=HYPERLINK")
    assert row["reason"] == "'-2+3\nsecond line"
    assert row["amount"] == "-5.00"  # numbers are not text: no quote prefix
    assert json.loads(render_json(hostile))["open_flags"][0]["title"].startswith("=HYPERLINK")
