"""The pipeline report as ONE self-contained HTML page (``sync-worker leaks --format html``, ``GET /report``).

Everything is inline: CSS in one ``<style>``, charts as inline SVG (:mod:`sync_worker.report.svg`);
no scripts, fonts, images or stylesheets are fetched, and a Content-Security-Policy ``<meta>``
(``default-src 'none'``) makes the browser refuse any that slip in:
https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Content-Security-Policy
Every value from a CRM (titles, reasons, ids) is HTML-escaped.

Phones: a responsive viewport ``<meta>``
(https://developer.mozilla.org/en-US/docs/Web/HTML/Viewport_meta_tag), charts that shrink with the
page, and tables that turn into one card per row under 640 px (header cells visually hidden but
kept for screen readers, each cell labelled via ``data-label``), so nothing scrolls sideways at
375 px. Accessibility: each chart is a ``<figure>`` with a caption, an SVG ``<title>``/``<desc>``
and a data table after it as the text alternative
(https://www.w3.org/WAI/tutorials/images/complex/).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from html import escape

from sync_worker.canonical import StageKind, StageModel
from sync_worker.report.data import ForecastRow, PipelineReport, build_report
from sync_worker.report.render_text import DEFINITIONS
from sync_worker.report.svg import funnel_svg, stage_age_svg
from sync_worker.store import SyncStore

__all__ = ["render_html", "render_report_html"]

_CSS = """
*,*::before,*::after{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;padding:1rem;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
  color:#111827;background:#ffffff;line-height:1.4}
main{max-width:960px;margin:0 auto}
h1{font-size:1.5rem;margin:0 0 .25rem}
h2{font-size:1.2rem;margin:2rem 0 .5rem}
p.meta{color:#4b5563;margin:0 0 1rem}
.cards{display:flex;flex-wrap:wrap;gap:.75rem;margin:0;padding:0;list-style:none}
.cards li{flex:1 1 10rem;border:1px solid #e5e7eb;border-radius:.5rem;padding:.6rem .8rem}
.cards strong{display:block;font-size:1.3rem}
figure{margin:0 0 1rem}
figcaption{color:#4b5563;font-size:.9rem;margin-top:.25rem}
svg.chart{display:block;width:100%;max-width:480px;height:auto}
table{border-collapse:collapse;width:100%;font-size:.9rem;margin:0 0 1rem}
caption{text-align:left;font-weight:600;padding:.25rem 0}
th,td{padding:.35rem .5rem;border-bottom:1px solid #e5e7eb;text-align:left;vertical-align:top;
  overflow-wrap:anywhere}
th{background:#f8fafc}
.num{text-align:right;font-variant-numeric:tabular-nums}
.none{color:#4b5563}
dl{font-size:.9rem}dt{font-weight:600}dd{margin:0 0 .5rem}
@media (max-width:640px){
  body{padding:.75rem}
  table.stack thead{position:absolute;width:1px;height:1px;margin:-1px;overflow:hidden;
    clip:rect(0 0 0 0);white-space:nowrap}
  table.stack,table.stack tbody,table.stack tr,table.stack td{display:block;width:100%}
  table.stack caption{display:block;width:100%}
  table.stack tr{border-bottom:1px solid #cbd5e1;padding:.4rem 0}
  table.stack td{display:flex;justify-content:space-between;gap:1rem;border:0;padding:.15rem 0;
    text-align:right}
  table.stack td::before{content:attr(data-label);font-weight:600;text-align:left;flex:0 0 auto}
}
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def render_report_html(store: SyncStore, model: StageModel, now: datetime) -> str:
    """Query the store and render the report page (what the receiver serves at ``GET /report``)."""
    return render_html(build_report(store, model, now), model)


def render_html(report: PipelineReport, model: StageModel) -> str:
    """The report as one self-contained HTML document."""
    generated = report.generated_at.strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        "<title>Pipeline report</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        "<h1>Pipeline report</h1>",
        f'<p class="meta">Generated <time datetime="{report.generated_at.isoformat()}">'
        f"{generated}</time></p>",
        _summary(report),
        _funnel_section(report),
        _age_section(report, model),
        _flags_section(report),
        _forecast_section(report),
        _definitions(),
        "</main>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


# -- pieces --------------------------------------------------------------------------------------


def _money(amount: Decimal | None, currency: str | None) -> str:
    if amount is None:
        return "-"
    text = f"{amount.quantize(Decimal('0.01')):,}"
    return f"{text} {currency}" if currency else text


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _opt(value: object) -> str:
    return "-" if value is None else str(value)


def _num_class(numeric: bool) -> str:
    return ' class="num"' if numeric else ""


def _table(
    caption: str,
    headers: Sequence[tuple[str, bool]],
    rows: Sequence[Sequence[str]],
    *,
    table_id: str,
) -> str:
    """A stacked-on-phones table; ``headers`` are ``(label, numeric)``; cells arrive unescaped."""
    head = "".join(f'<th scope="col"{_num_class(numeric)}>{escape(label)}</th>' for label, numeric in headers)
    lines = [f'<table class="stack" id="{table_id}">', f"<caption>{escape(caption)}</caption>"]
    lines.append(f"<thead><tr>{head}</tr></thead>")
    lines.append("<tbody>")
    if not rows:
        lines.append(f'<tr><td class="none" colspan="{len(headers)}" data-label="">None</td></tr>')
    for row in rows:
        cells = "".join(
            f'<td data-label="{escape(label)}"{_num_class(numeric)}>{escape(cell)}</td>'
            for (label, numeric), cell in zip(headers, row, strict=True)
        )
        lines.append(f"<tr>{cells}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _weighted_totals(rows: Sequence[ForecastRow]) -> dict[str | None, Decimal]:
    totals: dict[str | None, Decimal] = defaultdict(Decimal)
    for row in rows:
        totals[row.currency] += row.weighted
    return dict(totals)


def _summary(report: PipelineReport) -> str:
    totals = _weighted_totals(report.forecast_by_stage)
    weighted = (
        ", ".join(_money(amount, currency) for currency, amount in sorted(totals.items(), key=str)) or "0"
    )
    open_deals = sum(
        row.in_stage_now for row in report.funnel if row.kind in (StageKind.OPEN, StageKind.HOLD)
    )
    items = [
        ("Open leak flags", str(len(report.flags))),
        ("Open deals", str(open_deals)),
        ("Weighted pipeline", weighted),
    ]
    cards = "".join(f"<li>{escape(name)}<strong>{escape(value)}</strong></li>" for name, value in items)
    return f'<ul class="cards" aria-label="Summary">{cards}</ul>'


def _funnel_section(report: PipelineReport) -> str:
    headers = [
        ("Stage", False),
        ("Entered", True),
        ("Converted", True),
        ("Leaked", True),
        ("Conversion", True),
        ("Leak rate", True),
        ("Median days", True),
        ("In stage now", True),
    ]
    rows = [
        [
            row.label,
            str(row.entered),
            _opt(row.converted),
            _opt(row.leaked),
            _pct(row.conversion_rate),
            _pct(row.leak_rate),
            _opt(row.median_days),
            str(row.in_stage_now),
        ]
        for row in report.funnel
    ]
    return "\n".join(
        [
            '<section aria-labelledby="funnel-heading">',
            '<h2 id="funnel-heading">Funnel</h2>',
            "<figure>",
            funnel_svg(report.funnel),
            "<figcaption>Per stage: deals that entered (grey), converted to a later stage (blue) and "
            "leaked (red). The table below holds the same numbers.</figcaption>",
            "</figure>",
            _table("Funnel by stage", headers, rows, table_id="funnel-table"),
            "</section>",
        ]
    )


def _age_section(report: PipelineReport, model: StageModel) -> str:
    headers = [("Stage", False), ("Median days", True), ("Limit (days)", True), ("In stage now", True)]
    rows = [
        [row.label, _opt(row.median_days), _opt(model.get(row.stage).max_days), str(row.in_stage_now)]
        for row in report.funnel
        if row.kind in (StageKind.OPEN, StageKind.HOLD)
    ]
    return "\n".join(
        [
            '<section aria-labelledby="age-heading">',
            '<h2 id="age-heading">Time in stage</h2>',
            "<figure>",
            stage_age_svg(report.funnel, model),
            "<figcaption>Median days per stay in each stage; the dashed tick is the stage's limit "
            "(max_days), amber bars are over it.</figcaption>",
            "</figure>",
            _table("Days in stage", headers, rows, table_id="age-table"),
            "</section>",
        ]
    )


def _flags_section(report: PipelineReport) -> str:
    headers = [
        ("Deal", False),
        ("Source", False),
        ("Rule", False),
        ("Stage", False),
        ("Days", True),
        ("Weighted", True),
        ("Raised", False),
        ("Reason", False),
    ]
    rows = [
        [
            flag.title or flag.external_id,
            f"{flag.source} {flag.kind} {flag.external_id}",
            flag.rule,
            flag.stage.value if flag.stage is not None else "-",
            _opt(flag.days_in_stage),
            _money(flag.weighted_amount, flag.currency),
            flag.raised_at.strftime("%Y-%m-%d"),
            flag.reason or "-",
        ]
        for flag in report.flags
    ]
    return "\n".join(
        [
            '<section aria-labelledby="flags-heading">',
            '<h2 id="flags-heading">Open leak flags</h2>',
            _table(f"Open leak flags ({len(report.flags)})", headers, rows, table_id="flags-table"),
            "</section>",
        ]
    )


def _forecast_section(report: PipelineReport) -> str:
    headers = [("Bucket", False), ("Deals", True), ("Amount", True), ("Weighted", True)]

    def rows(items: Sequence[ForecastRow]) -> list[list[str]]:
        return [
            [row.label, str(row.deals), _money(row.amount, row.currency), _money(row.weighted, row.currency)]
            for row in items
        ]

    return "\n".join(
        [
            '<section aria-labelledby="forecast-heading">',
            '<h2 id="forecast-heading">Weighted pipeline</h2>',
            _table("By stage", headers, rows(report.forecast_by_stage), table_id="forecast-stage-table"),
            _table(
                "By expected close month",
                headers,
                rows(report.forecast_by_month),
                table_id="forecast-month-table",
            ),
            "</section>",
        ]
    )


def _definitions() -> str:
    items = "".join(
        f"<dt>{escape(name.replace('_', ' '))}</dt><dd>{escape(text)}</dd>"
        for name, text in DEFINITIONS.items()
    )
    return (
        '<section aria-labelledby="defs-heading"><h2 id="defs-heading">Definitions</h2>'
        f"<dl>{items}</dl></section>"
    )
