"""The pipeline report: open leak flags, the funnel per canonical stage, and the weighted forecast.

:func:`build_report` queries the store (definitions in :mod:`sync_worker.report.data`); the
renderers turn the result into a terminal table, CSV or JSON (:mod:`sync_worker.report.render_text`)
or one self-contained HTML page with inline SVG charts (:mod:`sync_worker.report.render_html`).
``sync-worker leaks`` and the receiver's ``GET /report`` are the two callers.
"""

from __future__ import annotations

from sync_worker.report.data import ForecastRow, FunnelRow, OpenFlagRow, PipelineReport, build_report
from sync_worker.report.render_html import render_html, render_report_html
from sync_worker.report.render_text import (
    render_csv,
    render_csv_table,
    render_csv_tables,
    render_json,
    render_table,
    report_to_dict,
)

__all__ = [
    "ForecastRow",
    "FunnelRow",
    "OpenFlagRow",
    "PipelineReport",
    "build_report",
    "render_csv",
    "render_csv_table",
    "render_csv_tables",
    "render_html",
    "render_json",
    "render_report_html",
    "render_table",
    "report_to_dict",
]
