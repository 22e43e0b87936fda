"""Inline SVG charts for the HTML report: the funnel with its leaks, and how long deals sit in a stage.

Plain SVG 1.1 elements only (``rect``, ``line``, ``text``), no scripts, fonts or external
references, so a chart works pasted into one self-contained file. Each chart is an image for
assistive technology (``role="img"`` with ``aria-labelledby`` pointing at its ``<title>`` and
``<desc>``), following https://www.w3.org/WAI/tutorials/images/complex/ and
https://developer.mozilla.org/en-US/docs/Web/SVG/Element/title ; the HTML report puts a data
table next to each chart as the long description.

The ``viewBox`` is :data:`CHART_WIDTH` units wide and the chart scales to its container (the page
caps it at that many CSS pixels, so text stays legible on a 375 px phone). Every bar ``rect``
carries ``data-stage`` and ``data-series`` so tests can find it.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from sync_worker.canonical import StageKind, StageModel
from sync_worker.report.data import FunnelRow
from sync_worker.report.deals import StageReach

__all__ = [
    "AGE_COLOR",
    "AGE_OVER_COLOR",
    "CHART_WIDTH",
    "CONVERTED_COLOR",
    "ENTERED_COLOR",
    "LEAKED_COLOR",
    "REACHED_COLOR",
    "funnel_svg",
    "reach_svg",
    "stage_age_svg",
]

CHART_WIDTH = 350
REACHED_COLOR = "#1d4ed8"
ENTERED_COLOR = "#cbd5e1"
CONVERTED_COLOR = "#2563eb"
LEAKED_COLOR = "#dc2626"
AGE_COLOR = "#0d9488"
AGE_OVER_COLOR = "#d97706"
_TEXT_COLOR = "#111827"
_MUTED_COLOR = "#4b5563"
_FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif"'

_TOP = 8
_ROW = 58
_LEGEND = 26


def _fmt_rate(part: int | None, whole: int) -> str:
    if part is None or whole == 0:
        return "-"
    return f"{part / whole * 100:.0f}%"


def _width(value: float, top: float) -> float:
    return round(CHART_WIDTH * value / top, 2) if top > 0 else 0.0


def _bar(x: float, y: float, width: float, height: float, fill: str, stage: str, series: str) -> str:
    return (
        f'<rect x="{x}" y="{y}" width="{width}" height="{height}" fill="{fill}" '
        f'data-stage="{escape(stage)}" data-series="{series}"/>'
    )


def _text(
    x: float, y: float, body: str, *, anchor: str = "start", size: int = 13, color: str = _TEXT_COLOR
) -> str:
    return (
        f'<text x="{x}" y="{y}" font-size="{size}" fill="{color}" text-anchor="{anchor}">'
        f"{escape(body)}</text>"
    )


def _legend(y: float, items: Sequence[tuple[str, str]]) -> list[str]:
    parts: list[str] = []
    x = 0.0
    for color, name in items:
        parts.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{color}"/>')
        parts.append(_text(x + 14, y + 9.5, name, size=12, color=_MUTED_COLOR))
        x += 14 + 7.5 * len(name) + 18
    return parts


def _svg(id_prefix: str, height: float, title: str, desc: str, body: Sequence[str]) -> str:
    ident = escape(id_prefix)
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CHART_WIDTH} {height}" '
            f'width="{CHART_WIDTH}" height="{height}" role="img" '
            f'aria-labelledby="{ident}-title {ident}-desc" {_FONT} class="chart" id="{ident}">',
            f'<title id="{ident}-title">{escape(title)}</title>',
            f'<desc id="{ident}-desc">{escape(desc)}</desc>',
            *body,
            "</svg>",
        ]
    )


def funnel_svg(rows: Sequence[FunnelRow], *, id_prefix: str = "funnel-chart") -> str:
    """The funnel: per stage, deals entered (grey), converted (blue, over it) and leaked (red, below).

    Lost stages are left out (they are where leaks go). Bar lengths share one scale, the largest
    ``entered``.
    """
    shown = [row for row in rows if row.kind is not StageKind.LOST]
    top = max((row.entered for row in shown), default=0)
    body: list[str] = []
    summary: list[str] = []
    for index, row in enumerate(shown):
        y = _TOP + index * _ROW
        key = row.stage.value
        numbers = f"{row.entered} in"
        if row.converted is not None and row.entered:
            numbers += f" · {_fmt_rate(row.converted, row.entered)} conv"
        if row.leaked is not None and row.entered:
            numbers += f" · {_fmt_rate(row.leaked, row.entered)} leak"
        body.append(_text(0, y + 13, row.label))
        body.append(_text(CHART_WIDTH, y + 13, numbers, anchor="end", size=12, color=_MUTED_COLOR))
        body.append(_bar(0, y + 19, CHART_WIDTH, 18, "#f1f5f9", key, "track"))
        body.append(_bar(0, y + 19, _width(row.entered, top), 18, ENTERED_COLOR, key, "entered"))
        if row.converted:
            body.append(_bar(0, y + 19, _width(row.converted, top), 18, CONVERTED_COLOR, key, "converted"))
        if row.leaked:
            body.append(_bar(0, y + 40, _width(row.leaked, top), 10, LEAKED_COLOR, key, "leaked"))
        summary.append(
            f"{row.label}: {row.entered} entered"
            + (f", {row.converted} converted" if row.converted is not None else "")
            + (
                f", {row.leaked} leaked ({_fmt_rate(row.leaked, row.entered)})"
                if row.leaked is not None
                else ""
            )
        )
    legend_y = _TOP + len(shown) * _ROW + 4
    if top == 0:
        body.append(_text(CHART_WIDTH / 2, legend_y - _ROW / 2, "No deals yet", anchor="middle"))
    body.extend(
        _legend(
            legend_y, [(ENTERED_COLOR, "entered"), (CONVERTED_COLOR, "converted"), (LEAKED_COLOR, "leaked")]
        )
    )
    return _svg(
        id_prefix,
        legend_y + _LEGEND,
        "Funnel: deals entered, converted and leaked per stage",
        "; ".join(summary) + "." if summary else "No stages.",
        body,
    )


def stage_age_svg(rows: Sequence[FunnelRow], model: StageModel, *, id_prefix: str = "age-chart") -> str:
    """Median days in stage per open or hold stage, with each stage's ``max_days`` limit as a tick.

    A bar over its stage's limit is amber, otherwise teal. Stages nobody entered show no bar.
    """
    shown = [row for row in rows if row.kind in (StageKind.OPEN, StageKind.HOLD)]
    limits = {row.stage: model.get(row.stage).max_days for row in shown}
    top = max(
        [row.median_days or 0.0 for row in shown] + [float(v or 0) for v in limits.values()], default=0.0
    )
    body: list[str] = []
    summary: list[str] = []
    for index, row in enumerate(shown):
        y = _TOP + index * _ROW
        key = row.stage.value
        limit = limits[row.stage]
        median = row.median_days
        over = median is not None and limit is not None and median > limit
        value = "no deals" if median is None else f"{median:g} d median"
        if limit is not None:
            value += f" (limit {limit} d)"
        body.append(_text(0, y + 13, row.label))
        body.append(_text(CHART_WIDTH, y + 13, value, anchor="end", size=12, color=_MUTED_COLOR))
        body.append(_bar(0, y + 19, CHART_WIDTH, 18, "#f1f5f9", key, "track"))
        if median:
            color = AGE_OVER_COLOR if over else AGE_COLOR
            body.append(_bar(0, y + 19, _width(median, top), 18, color, key, "median"))
        if limit is not None:
            x = min(_width(limit, top), CHART_WIDTH - 1)
            body.append(
                f'<line x1="{x}" y1="{y + 16}" x2="{x}" y2="{y + 40}" stroke="{_TEXT_COLOR}" '
                f'stroke-width="2" stroke-dasharray="3 2" data-stage="{escape(key)}" data-series="limit"/>'
            )
        summary.append(f"{row.label}: {value}" + (", over the limit" if over else ""))
    legend_y = _TOP + len(shown) * _ROW + 4
    body.extend(_legend(legend_y, [(AGE_COLOR, "median days"), (AGE_OVER_COLOR, "over the limit")]))
    return _svg(
        id_prefix,
        legend_y + _LEGEND,
        "Median days deals spend in each stage",
        "; ".join(summary) + "." if summary else "No stages.",
        body,
    )


def reach_svg(rows: Sequence[StageReach], *, id_prefix: str = "reach-chart") -> str:
    """The cumulative funnel: per rung, deals that reached it or a later stage, and the step's conversion.

    Bars share one scale (the first rung), so they never grow downwards; each rect carries
    ``data-series="reached"`` and ``data-count``.
    """
    top = max((row.reached for row in rows), default=0)
    body: list[str] = []
    summary: list[str] = []
    for index, row in enumerate(rows):
        y = _TOP + index * _ROW
        key = row.stage.value
        numbers = f"{row.reached} reached"
        if row.next_conversion is not None:
            numbers += f" · {row.next_conversion * 100:.0f}% to next"
        body.append(_text(0, y + 13, row.label))
        body.append(_text(CHART_WIDTH, y + 13, numbers, anchor="end", size=12, color=_MUTED_COLOR))
        body.append(_bar(0, y + 19, CHART_WIDTH, 18, "#f1f5f9", key, "track"))
        width = _width(row.reached, top)
        body.append(
            f'<rect x="0" y="{y + 19}" width="{width}" height="18" fill="{REACHED_COLOR}" '
            f'data-stage="{escape(key)}" data-series="reached" data-count="{row.reached}"/>'
        )
        summary.append(f"{row.label}: {numbers}")
    height = _TOP + len(rows) * _ROW + 4
    if top == 0:
        body.append(_text(CHART_WIDTH / 2, max(height - _ROW / 2, 20), "No deals yet", anchor="middle"))
    return _svg(
        id_prefix,
        max(height, 40),
        "Funnel: deals that reached each stage or a later one",
        "; ".join(summary) + "." if summary else "No stages.",
        body,
    )
