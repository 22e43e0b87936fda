"""The HTML report: one self-contained, escaped, accessible file whose charts carry the numbers."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from decimal import Decimal
from html.parser import HTMLParser

import pytest

from sync_worker.canonical import StageModel
from sync_worker.report import PipelineReport, build_report, render_html, render_report_html
from sync_worker.report.render_html import SystemSync
from sync_worker.report.svg import CHART_WIDTH, REACHED_COLOR
from sync_worker.store import SyncStore

from .conftest import NOW

SVG = "{http://www.w3.org/2000/svg}"


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Collector()
    parser.feed(html)
    return parser.tags


def _svgs(html: str) -> dict[str, ET.Element]:
    return {el.get("id", ""): el for el in map(ET.fromstring, re.findall(r"<svg\b.*?</svg>", html, re.S))}


@pytest.fixture
def report(sqlite_report_db: str, model: StageModel) -> PipelineReport:
    store = SyncStore(sqlite_report_db)
    try:
        return build_report(store, model, NOW)
    finally:
        store.close()


def test_the_page_is_self_contained(report: PipelineReport, model: StageModel) -> None:
    html = render_html(report, model)
    tags = _tags(html)
    names = {tag for tag, _ in tags}
    assert not names & {"script", "link", "img", "iframe", "object", "embed", "image", "use", "foreignobject"}
    for tag, attrs in tags:
        for name in ("src", "href", "xlink:href", "srcset", "action", "data", "poster"):
            value = attrs.get(name)
            assert value is None or not re.match(r"\s*(https?:|//)", value), (tag, name, value)
    assert "<script" not in html.lower()
    style = re.search(r"<style>(.*?)</style>", html, re.S)
    assert style is not None and "url(" not in style.group(1) and "@import" not in style.group(1)
    csp = [a for t, a in tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in (csp[0]["content"] or "")
    viewport = [a for t, a in tags if t == "meta" and a.get("name") == "viewport"]
    assert viewport and "width=device-width" in (viewport[0]["content"] or "")


def test_render_report_html_is_the_rendered_report(sqlite_report_db: str, model: StageModel) -> None:
    store = SyncStore(sqlite_report_db)
    try:
        assert render_report_html(store, model, NOW) == render_html(build_report(store, model, NOW), model)
    finally:
        store.close()


def test_text_from_crms_is_escaped(report: PipelineReport, model: StageModel) -> None:
    flag = replace(
        report.flags[0], title='<script>alert("x")</script>', reason="<img src=x onerror=alert(1)>"
    )
    html = render_html(replace(report, flags=(flag,)), model)
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "Deal D4 &lt;b&gt;&amp;" in render_html(report, model)


def test_charts_are_labelled_and_have_table_fallbacks(report: PipelineReport, model: StageModel) -> None:
    html = render_html(report, model)
    svgs = _svgs(html)
    assert set(svgs) == {"reach-chart", "age-chart"}
    for ident, svg in svgs.items():
        assert svg.get("role") == "img"
        labelled = (svg.get("aria-labelledby") or "").split()
        assert labelled == [f"{ident}-title", f"{ident}-desc"]
        title, desc = svg.find(f"{SVG}title"), svg.find(f"{SVG}desc")
        assert title is not None and title.get("id") == labelled[0] and title.text
        assert desc is not None and desc.get("id") == labelled[1] and desc.text
    assert "Contacted: 5 reached · 80% to next" in (svgs["reach-chart"].findtext(f"{SVG}desc") or "")
    # each figure is followed by the table holding its numbers
    assert re.search(r"</figure>\s*<table class=\"stack\" id=\"funnel-table\">", html)
    assert re.search(r"</figure>\s*<table class=\"stack\" id=\"age-table\">", html)
    assert all(attrs.get("scope") == "col" for tag, attrs in _tags(html) if tag == "th")


def test_funnel_bars_are_proportional_to_the_numbers(report: PipelineReport, model: StageModel) -> None:
    svg = _svgs(render_html(report, model))["reach-chart"]
    bars = {
        rect.get("data-stage", ""): rect
        for rect in svg.iter(f"{SVG}rect")
        if rect.get("data-series") == "reached"
    }
    # reached, by hand: prospect 6 (every deal), contacted 5, qualified 4, meeting 4, proposal 3,
    # negotiation 1 and won 1 (D1 won, so it reached every rung before); lost and nurture are no rungs
    expected = {
        "prospect": 6,
        "contacted": 5,
        "qualified": 4,
        "meeting": 4,
        "proposal": 3,
        "negotiation": 1,
        "won": 1,
    }
    assert {key: int(rect.get("data-count", "-1")) for key, rect in bars.items()} == expected
    for key, count in expected.items():
        assert float(bars[key].get("width", "")) == pytest.approx(CHART_WIDTH * count / 6, abs=0.01)
        assert bars[key].get("fill") == REACHED_COLOR


def test_flags_show_stage_labels_amounts_with_currency_and_collapse_after_twenty(
    report: PipelineReport, model: StageModel
) -> None:
    many = tuple(
        replace(report.flags[0], flag_id=100 + n, amount=Decimal(n), currency=None if n == 3 else "USD")
        for n in range(25)
    )
    html = render_html(replace(report, flags=many), model)
    top = html.split('id="flags-table"', 1)[1].split("</table>", 1)[0]
    rest = html.split('id="more-flags"', 1)[1].split("</details>", 1)[0]
    assert top.count("<tr>") == 21 and rest.count("<tr>") == 6  # header row + 20, header + 5
    assert ">24.00\u00a0USD<" in top and ">4.00\u00a0USD<" not in top and ">4.00\u00a0USD<" in rest
    assert ">3.00\u00a0(no currency)<" in rest
    assert ">Meeting / demo<" in html or ">Prospect<" in html
    assert ">meeting<" not in top and ">prospect<" not in top
    assert "overflow-wrap:anywhere" not in html


def test_summary_sync_table_unmapped_and_last_scan(report: PipelineReport, model: StageModel) -> None:
    html = render_html(
        replace(report, unmapped_deals=2, held_deals=3, last_scan_at=NOW),
        model,
        sync_summary=[SystemSync("crm-a", "12 deals", webhooks=4, writes=3, api_calls=40, rate_limited=1)],
        dead_letters=0,
    )
    assert "Unmapped deals<strong>2</strong>" in html
    assert "Held stages<strong>3</strong>" in html
    assert "Last leak scan<strong>2024-05-01 12:00 UTC</strong>" in html
    sync = html.split('id="sync-table"', 1)[1].split("</table>", 1)[0]
    assert "crm-a" in sync and "12 deals" in sync and ">40<" in sync
    assert "Dead letters: 0" in html
    # weighted pipeline per currency, never added across currencies
    assert "Weighted pipeline<strong>2,000.00\u00a0EUR, 325.00\u00a0USD</strong>" in html
    # a past-due close month is marked
    assert 'class="past-due"' not in html  # May and June 2024 are not past at May 1
