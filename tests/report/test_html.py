"""The HTML report: one self-contained, escaped, accessible file whose charts carry the numbers."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from html.parser import HTMLParser

import pytest

from sync_worker.canonical import StageModel
from sync_worker.report import PipelineReport, build_report, render_html, render_report_html
from sync_worker.report.svg import CONVERTED_COLOR, ENTERED_COLOR, LEAKED_COLOR
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
    assert set(svgs) == {"funnel-chart", "age-chart"}
    for ident, svg in svgs.items():
        assert svg.get("role") == "img"
        labelled = (svg.get("aria-labelledby") or "").split()
        assert labelled == [f"{ident}-title", f"{ident}-desc"]
        title, desc = svg.find(f"{SVG}title"), svg.find(f"{SVG}desc")
        assert title is not None and title.get("id") == labelled[0] and title.text
        assert desc is not None and desc.get("id") == labelled[1] and desc.text
    assert "Contacted: 3 entered, 2 converted, 2 leaked (67%)" in (
        svgs["funnel-chart"].findtext(f"{SVG}desc") or ""
    )
    # each figure is followed by the table holding its numbers
    assert re.search(r"</figure>\s*<table class=\"stack\" id=\"funnel-table\">", html)
    assert re.search(r"</figure>\s*<table class=\"stack\" id=\"age-table\">", html)
    assert all(attrs.get("scope") == "col" for tag, attrs in _tags(html) if tag == "th")


def test_funnel_bars_are_proportional_to_the_numbers(report: PipelineReport, model: StageModel) -> None:
    svg = _svgs(render_html(report, model))["funnel-chart"]
    bars: dict[tuple[str, str], ET.Element] = {
        (rect.get("data-stage", ""), rect.get("data-series", "")): rect
        for rect in svg.iter(f"{SVG}rect")
        if rect.get("data-stage")
    }
    full = float(bars[("prospect", "track")].get("width", "0"))
    top = max(row.entered for row in report.funnel)
    for row in report.funnel:
        key = row.stage.value
        if row.stage.value == "lost":
            assert (key, "entered") not in bars
            continue
        assert float(bars[(key, "entered")].get("width", "")) == pytest.approx(
            full * row.entered / top, abs=0.01
        )
        assert bars[(key, "entered")].get("fill") == ENTERED_COLOR
        for series, value, color in (
            ("converted", row.converted, CONVERTED_COLOR),
            ("leaked", row.leaked, LEAKED_COLOR),
        ):
            if value:
                assert float(bars[(key, series)].get("width", "")) == pytest.approx(
                    full * value / top, abs=0.01
                )
                assert bars[(key, series)].get("fill") == color
            else:
                assert (key, series) not in bars
