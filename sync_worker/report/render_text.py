"""The pipeline report as a plain-text table, CSV or JSON (``sync-worker leaks --format ...``).

All three are built from the same :func:`report_sections`, so they always agree:

- **table**: one block per section (title line, header, ``-+-`` rule, rows), cells separated by
  `` | ``; rates as percentages, missing values as ``-``. Control characters and ``|`` in text
  from the CRMs are replaced so a deal title cannot forge columns or send terminal escapes.
- **CSV** (RFC 4180, https://www.rfc-editor.org/rfc/rfc4180): one table per file
  (:func:`render_csv_tables`, :func:`render_csv_table`: one header row, then the rows), which is what
  a spreadsheet or ``pandas.read_csv`` expects; ``leaks --format csv`` writes ``--table NAME`` or
  every table into ``--output DIR`` as ``NAME.csv``. :func:`render_csv` keeps the older combined
  layout: sections separated by an empty line, every row starting with its section name. Rates
  are fractions (``0.6667``), money is plain decimal, missing values are empty. Text cells that a
  spreadsheet would run as a formula (starting with ``= + - @``, tab or CR) are prefixed with
  ``'``, after OWASP's CSV injection advice:
  https://owasp.org/www-community/attacks/CSV_Injection
- **JSON**: ``{"generated_at", "definitions", "open_flags", "funnel", "forecast": {"by_stage",
  "by_month"}}``; money as decimal strings (exact), rates as numbers rounded to 4 places.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sync_worker.report.data import ForecastRow, FunnelRow, OpenFlagRow, PipelineReport

__all__ = [
    "DEFINITIONS",
    "RATE_COLUMNS",
    "Cell",
    "Section",
    "render_csv",
    "render_csv_table",
    "render_csv_tables",
    "render_json",
    "render_table",
    "report_sections",
    "report_to_dict",
]

Cell = str | int | float | Decimal | None

RATE_COLUMNS = frozenset({"conversion_rate", "leak_rate"})

DEFINITIONS = {
    "entered": "distinct deals that ever moved into the stage or were first seen in it",
    "converted": "of those, deals that later reached a later open stage or won",
    "leaked": "of those, deals flagged from the stage, or that went lost or were deleted from it",
    "conversion_rate": "converted / entered",
    "leak_rate": "leaked / entered",
    "median_days": "median length of a stay in the stage, in days (the current stay runs until now)",
    "in_stage_now": "open deals in the stage now",
    "weighted": "amount x the stage's probability in canonical.yaml, open deals only",
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Section:
    """One table of the report: a machine name, a human title, column names and raw cells."""

    name: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]


_FLAG_COLUMNS = (
    "flag_id",
    "source",
    "kind",
    "external_id",
    "title",
    "rule",
    "stage",
    "days_in_stage",
    "amount",
    "weighted_amount",
    "currency",
    "raised_at",
    "reason",
)
_FUNNEL_COLUMNS = (
    "stage",
    "label",
    "entered",
    "converted",
    "leaked",
    "conversion_rate",
    "leak_rate",
    "median_days",
    "in_stage_now",
)
_FORECAST_COLUMNS = ("bucket", "label", "currency", "deals", "amount", "weighted")


def report_sections(report: PipelineReport) -> tuple[Section, ...]:
    """The report's four tables, in display order."""
    return (
        Section(
            "open_flags",
            f"Open leak flags ({len(report.flags)})",
            _FLAG_COLUMNS,
            tuple(_flag_cells(flag) for flag in report.flags),
        ),
        Section(
            "funnel", "Funnel by canonical stage", _FUNNEL_COLUMNS, tuple(map(_funnel_cells, report.funnel))
        ),
        Section(
            "forecast_by_stage",
            "Weighted pipeline by stage",
            _FORECAST_COLUMNS,
            tuple(map(_forecast_cells, report.forecast_by_stage)),
        ),
        Section(
            "forecast_by_month",
            "Weighted pipeline by expected close month",
            _FORECAST_COLUMNS,
            tuple(map(_forecast_cells, report.forecast_by_month)),
        ),
    )


def _flag_cells(flag: OpenFlagRow) -> tuple[Cell, ...]:
    return (
        flag.flag_id,
        flag.source,
        flag.kind,
        flag.external_id,
        flag.title,
        flag.rule,
        flag.stage.value if flag.stage is not None else None,
        flag.days_in_stage,
        flag.amount,
        flag.weighted_amount,
        flag.currency,
        _iso(flag.raised_at),
        flag.reason,
    )


def _funnel_cells(row: FunnelRow) -> tuple[Cell, ...]:
    return (
        row.stage.value,
        row.label,
        row.entered,
        row.converted,
        row.leaked,
        _round_rate(row.conversion_rate),
        _round_rate(row.leak_rate),
        row.median_days,
        row.in_stage_now,
    )


def _forecast_cells(row: ForecastRow) -> tuple[Cell, ...]:
    return (row.bucket, row.label, row.currency, row.deals, row.amount, row.weighted)


def _round_rate(rate: float | None) -> float | None:
    return None if rate is None else round(rate, 4)


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


# -- table ---------------------------------------------------------------------------------------


def render_table(report: PipelineReport) -> str:
    """A plain-text report for a terminal (see the module docstring for the layout)."""
    blocks = [f"Pipeline report at {_iso(report.generated_at)}"]
    for section in report_sections(report):
        blocks.append(_table_block(section))
    return "\n\n".join(blocks) + "\n"


def _table_block(section: Section) -> str:
    header = list(section.columns)
    body = [
        [_table_cell(name, cell) for name, cell in zip(section.columns, row, strict=True)]
        for row in section.rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [section.title, _table_line(header, widths), "-+-".join("-" * width for width in widths)]
    lines.extend(_table_line(line, widths) for line in body)
    if not body:
        lines.append("(none)")
    return "\n".join(lines)


def _table_line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def _table_cell(column: str, cell: Cell) -> str:
    if cell is None:
        return "-"
    if column in RATE_COLUMNS and isinstance(cell, float):
        return f"{cell * 100:.1f}%"
    return _CONTROL.sub(" ", str(cell)).replace("|", "/")


# -- CSV -----------------------------------------------------------------------------------------


def render_csv(report: PipelineReport) -> str:
    """Every section in one CSV document (see the module docstring for the layout)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for index, section in enumerate(report_sections(report)):
        if index:
            writer.writerow([])
        writer.writerow(["section", *section.columns])
        for row in section.rows:
            writer.writerow([section.name, *(_csv_cell(cell) for cell in row)])
    return out.getvalue()


def _one_csv(section: Section) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(section.columns)
    writer.writerows([_csv_cell(cell) for cell in row] for row in section.rows)
    return out.getvalue()


def render_csv_tables(report: PipelineReport) -> dict[str, str]:
    """Each table of the report as its own CSV document, by name (``open_flags``, ``funnel``, ...)."""
    return {section.name: _one_csv(section) for section in report_sections(report)}


def render_csv_table(report: PipelineReport, name: str) -> str:
    """One table of the report as a CSV document; ``KeyError`` for a name that is not a table."""
    return render_csv_tables(report)[name]


def _csv_cell(cell: Cell) -> str:
    if cell is None:
        return ""
    if isinstance(cell, str):
        return "'" + cell if cell.startswith(_FORMULA_START) else cell
    return str(cell)


# -- JSON ----------------------------------------------------------------------------------------


def report_to_dict(report: PipelineReport) -> dict[str, Any]:
    """The report as JSON-ready data (money as decimal strings)."""
    sections = {section.name: section for section in report_sections(report)}

    def rows(name: str) -> list[dict[str, Any]]:
        section = sections[name]
        return [
            {column: _json_cell(cell) for column, cell in zip(section.columns, row, strict=True)}
            for row in section.rows
        ]

    return {
        "generated_at": _iso(report.generated_at),
        "definitions": dict(DEFINITIONS),
        "open_flags": rows("open_flags"),
        "funnel": rows("funnel"),
        "forecast": {"by_stage": rows("forecast_by_stage"), "by_month": rows("forecast_by_month")},
    }


def _json_cell(cell: Cell) -> Any:
    return str(cell) if isinstance(cell, Decimal) else cell


def render_json(report: PipelineReport) -> str:
    """The report as an indented JSON document."""
    return json.dumps(report_to_dict(report), indent=2, ensure_ascii=False) + "\n"
