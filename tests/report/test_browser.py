"""The HTML report in headless Chromium: no console errors, no sideways scroll at 375 px, funnel drawn.

Driven over the DevTools protocol (:mod:`tests.report.cdp`): headless ``--window-size`` cannot go
below 500 px, so the phone width is emulated. Needs Debian's ``chromium``
(``apt-get install -y chromium``): skipped with that hint when it is missing, failed in CI
(``SYNC_TEST_REQUIRE_SERVICES=1``). Each check is first proven on a control page that does have the
fault, so a check that silently sees nothing cannot pass.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync_worker.canonical import StageModel
from sync_worker.report import render_report_html
from sync_worker.report.svg import CONVERTED_COLOR, ENTERED_COLOR, LEAKED_COLOR
from sync_worker.store import SyncStore
from tests.conftest import service_unavailable

from .cdp import Browser
from .conftest import NOW
from .png import Image, read_png


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        service_unavailable("chromium is not installed (Debian: apt-get install -y chromium)")
    return found


@pytest.fixture(scope="module")
def report_page(sqlite_report_db: str, model: StageModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = SyncStore(sqlite_report_db)
    try:
        html = render_report_html(store, model, NOW)
    finally:
        store.close()
    page = tmp_path_factory.mktemp("html") / "report.html"
    page.write_text(html, encoding="utf-8")
    return page


@pytest.fixture(scope="module")
def browser(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with Browser(chromium, tmp_path_factory.mktemp("chromium-profile")) as running:
        yield running


def _variant(page: Path, name: str, old: str, new: str) -> Path:
    html = page.read_text(encoding="utf-8")
    assert old in html
    path = page.with_name(name)
    path.write_text(html.replace(old, new, 1), encoding="utf-8")
    return path


def test_the_report_renders_without_console_errors(browser: Browser, report_page: Path) -> None:
    # Control: an external image the CSP blocks, and a console error, are both reported.
    bad = _variant(report_page, "bad.html", "</main>", '<img src="https://example.invalid/x.png"></main>')
    browser.open(bad, width=900, height=1100)
    assert browser.problems()
    browser.open(report_page, width=900, height=1100)
    assert browser.evaluate("document.querySelector('h1').textContent") == "Pipeline report"
    assert browser.evaluate("document.querySelectorAll('svg[role=img]').length") == 2
    assert browser.problems() == []


def test_no_horizontal_scroll_at_375_px(browser: Browser, report_page: Path) -> None:
    widths = "[innerWidth, document.documentElement.scrollWidth]"
    wide = _variant(report_page, "wide.html", "<main>", '<main><div style="width:600px">wide</div>')
    browser.open(wide, width=375, height=800)
    assert max(browser.evaluate(widths)) > 375  # control: the measurement does see overflow
    browser.open(report_page, width=375, height=800)
    assert browser.evaluate(widths) == [375, 375]
    # and the funnel chart is drawn across the phone's width
    image = read_png(browser.screenshot())
    assert image.width == 375
    blue = [b for b in _bands(image, _hex(CONVERTED_COLOR)) if b[3] > 40]
    assert len(blue) == 3


def _hex(color: str) -> tuple[int, int, int]:
    return (int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16))


def _bands(image: Image, color: tuple[int, int, int]) -> list[tuple[int, int, int, int]]:
    """Horizontal bands of rows holding ``color``: ``(top, bottom, x_start, longest run)`` per band."""
    runs: list[tuple[int, int, int] | None] = []
    for y in range(image.height):
        best: tuple[int, int, int] | None = None
        x = 0
        while x < image.width:
            if image.rgb(x, y) == color:
                start = x
                while x < image.width and image.rgb(x, y) == color:
                    x += 1
                if best is None or x - start > best[2]:
                    best = (y, start, x - start)
            else:
                x += 1
        runs.append(best)
    bands: list[tuple[int, int, int, int]] = []
    y = 0
    while y < image.height:
        if runs[y] is None:
            y += 1
            continue
        top = y
        longest, start = 0, 0
        while y < image.height and (run := runs[y]) is not None:
            if run[2] > longest:
                longest, start = run[2], run[1]
            y += 1
        bands.append((top, y - 1, start, longest))
    return bands


def test_screenshot_shows_the_funnel_bars(browser: Browser, report_page: Path, tmp_path: Path) -> None:
    browser.open(report_page, width=900, height=1100)
    png = browser.screenshot()
    (tmp_path / "report.png").write_bytes(png)
    image = read_png(png)
    assert (image.width, image.height) == (900, 1100)
    # Bars are wide bands; legend swatches are narrow and drop out.
    blue = [b for b in _bands(image, _hex(CONVERTED_COLOR)) if b[3] > 40]
    red = [b for b in _bands(image, _hex(LEAKED_COLOR)) if b[3] > 40]
    # Converted: prospect, contacted, qualified (2 of 3 entered each); leaked: 1, 2, 1, 1 of 3.
    assert len(blue) == 3 and len(red) == 4
    top, bottom, x0, run = blue[0]
    mid = (top + bottom) // 2
    assert bottom - top >= 12  # a bar, not a hairline
    grey = 0
    while image.rgb(x0 + run + 2 + grey, mid) == _hex(ENTERED_COLOR):
        grey += 1
    full = run + grey + 2  # prospect's entered bar spans the chart (3 = the largest stage)
    assert full > 300
    for _t, _b, start, width in blue:
        assert start == pytest.approx(x0, abs=2)
        assert width == pytest.approx(full * 2 / 3, abs=3)
    assert [width for *_, width in red] == [
        pytest.approx(full * share, abs=3) for share in (1 / 3, 2 / 3, 1 / 3, 1 / 3)
    ]
    # Every red bar sits under a stage row, below the first blue bar, in the chart's left column.
    assert all(t > top and abs(start - x0) <= 2 for t, _b, start, _w in red)
