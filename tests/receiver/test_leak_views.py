"""GET /report and the leak gauges on GET /metrics: served from the store, 503 / NaN when it is down."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal

import pytest

from sync_worker.canonical import CanonicalRecord, StageKey, UnmappedStage
from sync_worker.leaks import scan_leaks
from sync_worker.mappings import Mappings
from sync_worker.store import SyncStore
from tests.receiver.conftest import NOW, Harness, make_settings

REPORT_TOKEN = "report-token-for-tests"

DAY = timedelta(days=1)
DOWN_URL = "postgresql://postgres@127.0.0.1:1/nothing"


def _deal(store: SyncStore, external_id: str, stage: StageKey, *, age_days: int, amount: str) -> None:
    at = NOW - age_days * DAY
    record = CanonicalRecord(
        source="pipedrive",
        kind="deal",
        external_id=external_id,
        updated_at=at,
        stage=stage,
        status="open",
        title=f"Deal <{external_id}>",
        amount=Decimal(amount),
        stage_changed_at=at,
    )
    store.upsert_record(record, origin="pipedrive", written_by_worker=False, seen_at=at)


@pytest.fixture
def leaking(store: SyncStore, mappings: Mappings) -> SyncStore:
    """Two stalled proposals (1000 and 250.50) and one stalled negotiation (400), flagged."""
    _deal(store, "p1", StageKey.PROPOSAL, age_days=30, amount="1000")
    _deal(store, "p2", StageKey.PROPOSAL, age_days=40, amount="250.50")
    _deal(store, "n1", StageKey.NEGOTIATION, age_days=45, amount="400")
    _deal(store, "fresh", StageKey.PROPOSAL, age_days=2, amount="999")
    assert len(scan_leaks(store, mappings.model, now=NOW).raised) == 3
    return store


@pytest.fixture
def down_store() -> Iterator[SyncStore]:
    store = SyncStore(DOWN_URL)
    yield store
    store.close()


def _samples(text: str, metric: str) -> dict[tuple[str, str], float]:
    """Samples by (rule, stage), summed over the ``currency`` label."""
    pattern = re.compile(
        rf'^{metric}\{{currency="[^"]*",rule="([^"]*)",stage="([^"]*)"\}} (\S+)$', re.MULTILINE
    )
    found: dict[tuple[str, str], float] = {}
    for rule, stage, value in pattern.findall(text):
        found[(rule, stage)] = found.get((rule, stage), 0.0) + float(value)
    return found


def test_report_serves_the_html_page_from_the_store(
    make_harness: Callable[..., Harness], leaking: SyncStore
) -> None:
    harness = make_harness(clock=lambda: NOW, settings=make_settings(report_token=REPORT_TOKEN))
    response = harness.client.get("/report", headers={"X-Sync-Token": REPORT_TOKEN})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    page = response.text
    assert page.startswith("<!DOCTYPE html>")
    # the flagged deals are listed, their CRM text escaped; the fresh one is not flagged
    assert "Deal &lt;p1&gt;" in page and "Deal &lt;n1&gt;" in page
    assert "Deal <p1>" not in page
    assert "2024-06-01 12:00 UTC" in page  # the report's "now" is the app's clock


def test_report_is_503_while_the_store_is_down(
    make_harness: Callable[..., Harness], down_store: SyncStore
) -> None:
    harness = make_harness(the_store=down_store, settings=make_settings(report_token=REPORT_TOKEN))
    response = harness.client.get("/report", params={"token": REPORT_TOKEN})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "30"
    assert response.json()["error"] == "store_unavailable"
    assert "127.0.0.1" not in response.text and "postgres" not in response.text


def test_report_needs_the_mappings(make_harness: Callable[..., Harness], leaking: SyncStore) -> None:
    harness = make_harness(mappings_holder=None, settings=make_settings(report_token=REPORT_TOKEN))
    response = harness.client.get("/report", headers={"Authorization": f"Bearer {REPORT_TOKEN}"})
    assert response.status_code == 503
    assert response.json()["error"] == "mappings_unavailable"


def test_report_is_off_without_a_token_and_refuses_a_wrong_one(
    make_harness: Callable[..., Harness], leaking: SyncStore
) -> None:
    off = make_harness().client.get("/report")
    assert off.status_code == 404 and off.json()["error"] == "report_disabled"
    assert "SYNC_REPORT_TOKEN" in off.json()["detail"]
    guarded = make_harness(settings=make_settings(report_token=REPORT_TOKEN)).client
    for attempt in (guarded.get("/report"), guarded.get("/report", params={"token": "wrong"})):
        assert attempt.status_code == 401
        assert "Deal" not in attempt.text


def test_metrics_export_open_flags_and_amounts_at_risk_by_rule_and_stage(
    harness: Harness, leaking: SyncStore, mappings: Mappings
) -> None:
    text = harness.client.get("/metrics").text
    assert _samples(text, "sync_worker_leak_flags_open") == {
        ("stalled", "proposal"): 2.0,
        ("stalled", "negotiation"): 1.0,
    }
    assert _samples(text, "sync_worker_leak_amount_at_risk") == {
        ("stalled", "proposal"): 1250.5,
        ("stalled", "negotiation"): 400.0,
    }
    # weighted by the shipped probabilities: proposal 0.50, negotiation 0.75
    assert _samples(text, "sync_worker_leak_weighted_amount_at_risk") == {
        ("stalled", "proposal"): 625.25,
        ("stalled", "negotiation"): 300.0,
    }
    assert "# TYPE sync_worker_leak_flags_open gauge" in text

    # When the negotiation deal is won, the next scrape after a scan drops its series
    won = CanonicalRecord(
        source="pipedrive",
        kind="deal",
        external_id="n1",
        updated_at=NOW,
        stage=StageKey.WON,
        status="won",
        title="Deal <n1>",
        amount=Decimal("400"),
        stage_changed_at=NOW,
    )
    leaking.upsert_record(won, origin="pipedrive", written_by_worker=False, seen_at=NOW)
    scan_leaks(leaking, mappings.model, now=NOW + timedelta(minutes=1))
    after = harness.client.get("/metrics").text
    assert _samples(after, "sync_worker_leak_flags_open") == {("stalled", "proposal"): 2.0}


def test_a_down_store_never_fails_the_scrape(
    harness: Harness, leaking: SyncStore, down_store: SyncStore
) -> None:
    assert _samples(harness.client.get("/metrics").text, "sync_worker_leak_flags_open")
    # Inject the fault: the receiver's store goes away between two scrapes
    harness.app.state.receiver.report_store = down_store
    response = harness.client.get("/metrics")
    assert response.status_code == 200
    flags = _samples(response.text, "sync_worker_leak_flags_open")
    assert set(flags) == {("stalled", "proposal"), ("stalled", "negotiation")}
    assert all(math.isnan(value) for value in flags.values())


def test_a_store_down_from_the_start_exports_no_leak_series(
    make_harness: Callable[..., Harness], down_store: SyncStore
) -> None:
    response = make_harness(the_store=down_store).client.get("/metrics")
    assert response.status_code == 200
    assert "# TYPE sync_worker_leak_flags_open gauge" in response.text
    assert _samples(response.text, "sync_worker_leak_flags_open") == {}
    assert "sync_worker_inbox_depth NaN" in response.text


def test_status_is_served_behind_the_report_token(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(clock=lambda: NOW, settings=make_settings(report_token=REPORT_TOKEN))
    # Given a poll the workers recorded, a pause and a dead letter
    harness.store.record_activity("poll", "pipedrive/deals", count=12)
    harness.store.pause("source", "lagrowthmachine")
    harness.store.add_dead_letter(queue="poll", actor="poll_source", message_id="m", payload={}, reason="x")
    gap = UnmappedStage("pipedrive", "2", "11")
    partnership = CanonicalRecord(
        source="pipedrive",
        kind="deal",
        external_id="9",
        updated_at=NOW,
        stage=None,
        unmapped=gap,
        status="open",
    )
    stored = harness.store.upsert_record(
        partnership, origin="pipedrive", written_by_worker=False, seen_at=NOW
    )
    harness.store.hold_stage(stored.record.id, gap, at=NOW)
    # Then /status needs the token, and answers what `sync-worker status --json` prints
    assert harness.client.get("/status").status_code == 401
    response = harness.client.get("/status", headers={"X-Sync-Token": REPORT_TOKEN})
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    status = response.json()
    deals = next(s for s in status["streams"] if (s["source"], s["stream"]) == ("pipedrive", "deals"))
    assert deals["records_last"] == 12 and deals["paused"] is False
    lgm = [s["paused"] for s in status["streams"] if s["source"] == "lagrowthmachine"]
    assert lgm and all(lgm)
    assert status["paused"] == ["source lagrowthmachine"] and status["dead_letters"] == 1
    assert status["mappings"]["valid"] is True and status["mappings"]["loaded"] is True
    assert status["unmapped_deals"] == {"pipedrive": 1}
    assert status["held_stages"] == [
        {
            "source": "pipedrive",
            "pipeline": "2",
            "stage": "11",
            "records": 1,
            "pipeline_name": None,
            "stage_name": None,
        }
    ]
