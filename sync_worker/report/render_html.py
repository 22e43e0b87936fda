"""The pipeline report as ONE self-contained HTML page (``sync-worker leaks --format html``, ``GET /report``).

Everything is inline: CSS in one ``<style>``, charts as inline SVG (:mod:`sync_worker.report.svg`);
no scripts, fonts, images or stylesheets are fetched, and a Content-Security-Policy ``<meta>``
(``default-src 'none'``) makes the browser refuse any that slip in:
https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Content-Security-Policy
Every value from a CRM (titles, reasons, ids) is HTML-escaped.

The deal is the unit: counts are of deals, each flag lists its deal's copies with links to them in
their CRMs and their owners; money is shown per currency (an amount without one says so). The
flag list shows the top :data:`FLAG_LIMIT` by amount, the rest folded in a ``<details>`` element.
Words are never broken inside table cells (no ``overflow-wrap: anywhere``).

Phones: a responsive viewport ``<meta>``
(https://developer.mozilla.org/en-US/docs/Web/HTML/Viewport_meta_tag), charts that shrink with the
page, and tables that turn into one card per row under 640 px (header cells visually hidden but
kept for screen readers, each cell labelled via ``data-label``), so nothing scrolls sideways at
375 px. Accessibility: each chart is a ``<figure>`` with a caption, an SVG ``<title>``/``<desc>``
and a data table after it as the text alternative
(https://www.w3.org/WAI/tutorials/images/complex/).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from html import escape

from sync_worker.canonical import StageKind, StageModel
from sync_worker.report.data import ForecastRow, OpenFlagRow, PipelineReport, build_report
from sync_worker.report.deals import DealLinks, MoneyTotal
from sync_worker.report.render_text import DEFINITIONS
from sync_worker.report.svg import reach_svg, stage_age_svg
from sync_worker.store import SyncStore

__all__ = ["FLAG_LIMIT", "SystemSync", "render_html", "render_report_html"]

FLAG_LIMIT = 20


@dataclass(frozen=True)
class SystemSync:
    """One system's line of the sync summary the demo prints, handed to the report as data."""

    system: str
    records: str = "0"
    webhooks: int = 0
    writes: int = 0
    failed_writes: int = 0
    api_calls: int = 0
    rate_limited: int = 0


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
  overflow-wrap:normal;word-break:normal;hyphens:manual}
.past-due{color:#b91c1c;font-weight:600}
details summary{cursor:pointer;margin:.5rem 0}
td a{color:#1d4ed8}
.copies{margin:0;padding:0;list-style:none}
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
  table.stack td>*{min-width:0}
}
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def render_report_html(
    store: SyncStore,
    model: StageModel,
    now: datetime,
    *,
    since: datetime | None = None,
    deal_links: DealLinks | None = None,
    sync_summary: Sequence[SystemSync] = (),
    dead_letters: int | None = None,
) -> str:
    """Query the store and render the report page (what the receiver serves at ``GET /report``)."""
    report = build_report(store, model, now, since=since, deal_links=deal_links)
    return render_html(report, model, sync_summary=sync_summary, dead_letters=dead_letters)


def render_html(
    report: PipelineReport,
    model: StageModel,
    *,
    sync_summary: Sequence[SystemSync] = (),
    dead_letters: int | None = None,
    flag_limit: int = FLAG_LIMIT,
) -> str:
    """The report as one self-contained HTML document.

    ``sync_summary`` (per system: records, webhooks, writes, API calls, 429s) and ``dead_letters``
    come from the caller (the demo counts them); without them that section is left out.
    """
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
        _sync_section(sync_summary, dead_letters),
        _funnel_section(report),
        _age_section(report, model),
        _flags_section(report, model, flag_limit),
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
    # A no-break space keeps an amount and its currency on one line.
    return f"{text}\u00a0{currency}" if currency else f"{text}\u00a0(no currency)"


def _totals(totals: Sequence[MoneyTotal]) -> str:
    return ", ".join(_money(total.amount, total.currency) for total in totals) or "0"


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _opt(value: object) -> str:
    return "-" if value is None else str(value)


def _num_class(numeric: bool) -> str:
    return ' class="num"' if numeric else ""


def _table(
    caption: str,
    headers: Sequence[tuple[str, bool]],
    rows: Sequence[Sequence[str | _Html]],
    *,
    table_id: str,
) -> str:
    """A stacked-on-phones table; ``headers`` are ``(label, numeric)``; text cells arrive unescaped."""
    head = "".join(f'<th scope="col"{_num_class(numeric)}>{escape(label)}</th>' for label, numeric in headers)
    lines = [f'<table class="stack" id="{table_id}">', f"<caption>{escape(caption)}</caption>"]
    lines.append(f"<thead><tr>{head}</tr></thead>")
    lines.append("<tbody>")
    if not rows:
        lines.append(f'<tr><td class="none" colspan="{len(headers)}" data-label="">None</td></tr>')
    for row in rows:
        cells = "".join(
            f'<td data-label="{escape(label)}"{_num_class(numeric)}>{_cell(cell)}</td>'
            for (label, numeric), cell in zip(headers, row, strict=True)
        )
        lines.append(f"<tr>{cells}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


@dataclass(frozen=True)
class _Html:
    """A cell already rendered as safe HTML (built from escaped parts)."""

    markup: str


def _cell(cell: str | _Html) -> str:
    return cell.markup if isinstance(cell, _Html) else escape(cell)


def _summary(report: PipelineReport) -> str:
    open_deals = sum(
        row.in_stage_now for row in report.funnel if row.kind in (StageKind.OPEN, StageKind.HOLD)
    )
    scanned = report.last_scan_at.strftime("%Y-%m-%d %H:%M UTC") if report.last_scan_at else "never"
    items = [
        ("Deals with an open leak flag", str(len({flag.record_id for flag in report.flags}))),
        ("Open deals", str(open_deals)),
        ("Weighted pipeline", _totals(report.weighted_totals)),
        ("Won / lost", f"{report.outcomes.won} / {report.outcomes.lost}"),
        ("Unmapped deals", str(report.unmapped_deals)),
        ("Held stages", str(report.held_deals)),
        ("Last leak scan", scanned),
    ]
    cards = "".join(f"<li>{escape(name)}<strong>{escape(value)}</strong></li>" for name, value in items)
    return f'<ul class="cards" aria-label="Summary">{cards}</ul>'


def _sync_section(summary: Sequence[SystemSync], dead_letters: int | None) -> str:
    if not summary:
        return ""
    headers = [
        ("System", False),
        ("Records", False),
        ("Webhooks", True),
        ("Writes", True),
        ("Failed writes", True),
        ("API calls", True),
        ("429s", True),
    ]
    rows = [
        [
            line.system,
            line.records,
            str(line.webhooks),
            str(line.writes),
            str(line.failed_writes),
            str(line.api_calls),
            str(line.rate_limited),
        ]
        for line in summary
    ]
    tail = f'<p class="meta">Dead letters: {dead_letters}</p>' if dead_letters is not None else ""
    return "\n".join(
        [
            '<section aria-labelledby="sync-heading">',
            '<h2 id="sync-heading">Sync</h2>',
            _table("Per system", headers, rows, table_id="sync-table"),
            tail,
            "</section>",
        ]
    )


def _funnel_section(report: PipelineReport) -> str:
    leaked = {row.stage: row for row in report.funnel}
    headers = [
        ("Stage", False),
        ("Reached", True),
        ("To next", True),
        ("Leaked from", True),
        ("Median days", True),
        ("In stage now", True),
    ]
    rows = [
        [
            row.label,
            str(row.reached),
            _pct(row.next_conversion),
            _opt(leaked[row.stage].leaked) if row.stage in leaked else "-",
            _opt(leaked[row.stage].median_days) if row.stage in leaked else "-",
            str(leaked[row.stage].in_stage_now) if row.stage in leaked else "-",
        ]
        for row in report.reach
    ]
    out = report.outcomes
    split = [
        ["Won", str(out.won), _totals(out.won_amounts)],
        ["Lost", str(out.lost), _totals(out.lost_amounts)],
        ["Open", str(out.open), "-"],
    ]
    period = f" since {report.since.strftime('%Y-%m-%d')}" if report.since is not None else ""
    return "\n".join(
        [
            '<section aria-labelledby="funnel-heading">',
            f'<h2 id="funnel-heading">Funnel{escape(period)}</h2>',
            "<figure>",
            reach_svg(report.reach),
            "<figcaption>Deals that reached each stage or a later one, and the share that went on to "
            "the next stage. The table below holds the same numbers.</figcaption>",
            "</figure>",
            _table("Funnel by stage (deals)", headers, rows, table_id="funnel-table"),
            _table(
                "Won and lost (deals)",
                [("Outcome", False), ("Deals", True), ("Amount", True)],
                split,
                table_id="outcome-table",
            ),
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


def _deal_cell(flag: OpenFlagRow) -> _Html:
    name = escape(flag.title or flag.external_id)
    links = [
        f'<li><a href="{escape(url)}">{escape(copy.source)} {escape(copy.external_id)}</a></li>'
        if url
        else f"<li>{escape(copy.source)} {escape(copy.external_id)}</li>"
        for copy, url in flag.copies
    ] or [f"<li>{escape(flag.source)} {escape(flag.external_id)}</li>"]
    return _Html(f'{name}<ul class="copies">{"".join(links)}</ul>')


def _flag_rows(flags: Sequence[OpenFlagRow], model: StageModel) -> list[list[str | _Html]]:
    return [
        [
            _deal_cell(flag),
            flag.rule,
            model.label(flag.stage),
            _opt(flag.days_in_stage),
            _money(flag.amount, flag.currency),
            ", ".join(flag.owners) or "-",
            flag.reason or "-",
        ]
        for flag in flags
    ]


def _flags_section(report: PipelineReport, model: StageModel, limit: int) -> str:
    headers = [
        ("Deal", False),
        ("Rule", False),
        ("Stage", False),
        ("Days", True),
        ("Amount", True),
        ("Owner", False),
        ("Reason", False),
    ]
    ranked = sorted(report.flags, key=lambda f: (f.amount is None, -(f.amount or 0), f.flag_id))
    top, rest = ranked[:limit], ranked[limit:]
    parts = [
        '<section aria-labelledby="flags-heading">',
        '<h2 id="flags-heading">Open leak flags</h2>',
        _table(
            f"Open leak flags ({len(report.flags)}), largest first",
            headers,
            _flag_rows(top, model),
            table_id="flags-table",
        ),
    ]
    if rest:
        parts += [
            f'<details id="more-flags"><summary>{len(rest)} more flags</summary>',
            _table("More open leak flags", headers, _flag_rows(rest, model), table_id="more-flags-table"),
            "</details>",
        ]
    parts.append("</section>")
    return "\n".join(parts)


def _forecast_section(report: PipelineReport) -> str:
    headers = [("Bucket", False), ("Deals", True), ("Amount", True), ("Weighted", True)]

    def rows(items: Sequence[ForecastRow]) -> list[list[str | _Html]]:
        return [
            [
                _Html(f'<span class="past-due">{escape(row.label)}</span>') if row.past_due else row.label,
                str(row.deals),
                _money(row.amount, row.currency),
                _money(row.weighted, row.currency),
            ]
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
