"""The report's numbers against a funnel computed by hand from the fixture (see conftest.py)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from sync_worker.canonical import CanonicalRecord, StageKey, StageModel, UnmappedStage
from sync_worker.errors import StoreUnavailableError
from sync_worker.report import build_report
from sync_worker.store import SyncStore, upgrade_database

from .conftest import NOW

# Computed by hand from the conftest history, now = 2024-05-01 12:00 UTC.
#   entered: prospect D1 D2 D4; contacted D1 D2 D3; qualified D1 D5; meeting D3; proposal D5 D6;
#            won D1; lost D2.
#   converted: prospect D1 D2 (-> contacted); contacted D1 (-> qualified), D3 (-> meeting), not D2
#            (-> lost); qualified D1 (-> won), D5 (-> proposal); meeting D3 went BACK: 0;
#            proposal: D5 deleted, D6 still there: 0.
#   leaked: prospect D4 (stalled flag); contacted D1 (cleared stalled flag) and D2 (-> lost);
#           meeting D3 (regressed flag); proposal D5 (deleted while in proposal).
#   stays (days): prospect D1 10, D2 5, D4 30 (until now) -> median 10;
#                 contacted D1 10, D2 14, D3 10, D3 41 (Mar 21 -> May 1) -> median (10+14)/2 = 12;
#                 qualified D1 20, D5 10 -> 15; meeting D3 10 -> 10;
#                 proposal D5 60 (Feb 11 -> deleted Apr 11, leap year), D6 10 -> 35.
#   in stage now (open, not deleted): prospect D4, contacted D3, proposal D6.
# (stage, entered, converted, leaked, conversion rate, leak rate, median days, in stage now)
EXPECTED_FUNNEL = [
    ("prospect", 3, 2, 1, 2 / 3, 1 / 3, 10.0, 1),
    ("contacted", 3, 2, 2, 2 / 3, 2 / 3, 12.0, 1),
    ("qualified", 2, 2, 0, 1.0, 0.0, 15.0, 0),
    ("meeting", 1, 0, 1, 0.0, 1.0, 10.0, 0),
    ("proposal", 2, 0, 1, 0.0, 0.5, 35.0, 1),
    ("negotiation", 0, 0, 0, None, None, None, 0),
    ("won", 1, None, None, None, None, None, 0),
    ("lost", 1, None, None, None, None, None, 0),
    ("nurture", 0, 0, 0, None, None, None, 0),
]

# Open deals with an amount: D4 500 USD prospect (x0.05), D3 3000 USD contacted (x0.10),
# D6 4000 EUR proposal (x0.50). D5 is deleted, D1/D2 closed.
EXPECTED_BY_STAGE = [
    ("prospect", "USD", 1, Decimal("500.00"), Decimal("25.00")),
    ("contacted", "USD", 1, Decimal("3000.00"), Decimal("300.00")),
    ("proposal", "EUR", 1, Decimal("4000.00"), Decimal("2000.00")),
]
EXPECTED_BY_MONTH = [
    ("2024-05", "USD", 1, Decimal("500.00"), Decimal("25.00")),
    ("2024-06", "USD", 1, Decimal("3000.00"), Decimal("300.00")),
    (None, "EUR", 1, Decimal("4000.00"), Decimal("2000.00")),
]


def test_funnel_matches_the_hand_computed_table(report_store: SyncStore, model: StageModel) -> None:
    report = build_report(report_store, model, NOW)
    got = [
        (
            row.stage.value,
            row.entered,
            row.converted,
            row.leaked,
            row.conversion_rate,
            row.leak_rate,
            row.median_days,
            row.in_stage_now,
        )
        for row in report.funnel
    ]
    assert got == [
        (
            stage,
            entered,
            conv,
            leaked,
            pytest.approx(cr) if cr is not None else None,
            pytest.approx(lr) if lr is not None else None,
            median,
            now,
        )
        for stage, entered, conv, leaked, cr, lr, median, now in EXPECTED_FUNNEL
    ]


def test_forecast_by_stage_and_month(report_store: SyncStore, model: StageModel) -> None:
    report = build_report(report_store, model, NOW)
    assert [(r.bucket, r.currency, r.deals, r.amount, r.weighted) for r in report.forecast_by_stage] == (
        EXPECTED_BY_STAGE
    )
    assert [(r.bucket, r.currency, r.deals, r.amount, r.weighted) for r in report.forecast_by_month] == (
        EXPECTED_BY_MONTH
    )
    assert report.forecast_by_month[-1].label == "no close date"


def test_open_flags_only_and_in_raise_order(report_store: SyncStore, model: StageModel) -> None:
    report = build_report(report_store, model, NOW)
    # D1's stalled flag was cleared: history for the funnel, but not an open flag.
    assert [(f.external_id, f.kind, f.rule, f.stage) for f in report.flags] == [
        ("D3", "deal", "regressed", StageKey.MEETING),
        ("D4", "deal", "stalled", StageKey.PROSPECT),
        ("L1", "lead", "unanswered", StageKey.CONTACTED),
    ]
    assert report.flags[1].weighted_amount == Decimal("25.00") and report.flags[1].days_in_stage == 30


def test_the_current_stay_runs_until_now(report_store: SyncStore, model: StageModel) -> None:
    later = build_report(report_store, model, NOW + timedelta(days=40))
    by_stage = {row.stage: row for row in later.funnel}
    # prospect stays: 10, 5 and D4's 30 + 40 = 70 -> median still 10; proposal: 60 and D6 10 + 40 -> 55
    assert by_stage[StageKey.PROSPECT].median_days == 10.0
    assert by_stage[StageKey.PROPOSAL].median_days == 55.0


def test_an_empty_store_gives_zeros_not_errors(tmp_path: Path, model: StageModel) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    upgrade_database(url)
    store = SyncStore(url)
    try:
        report = build_report(store, model, NOW)
    finally:
        store.close()
    assert report.flags == () and report.forecast_by_stage == () and report.forecast_by_month == ()
    assert all(row.entered == 0 and row.conversion_rate is None for row in report.funnel)
    assert [row.stage for row in report.funnel] == [stage.key for stage in model.ordered()]


def test_an_unreachable_store_raises_store_unavailable(model: StageModel) -> None:
    store = SyncStore("postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=2")
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            build_report(store, model, NOW)
    finally:
        store.close()
    assert "127.0.0.1" not in str(caught.value)


def test_held_deals_count_live_deals_held_on_an_unmapped_stage_once(
    tmp_path: Path, model: StageModel
) -> None:
    url = f"sqlite:///{tmp_path / 'held.db'}"
    upgrade_database(url)
    store = SyncStore(url, clock=lambda: NOW)
    try:
        # Given deal 39 held on an unmapped stage in both of its linked copies, and a deleted deal 40 held
        intro = UnmappedStage("pipedrive", "3", "14")
        ids = {}
        for source, external_id, deleted in (
            ("pipedrive", "39", False),
            ("hubspot", "9", False),
            ("pipedrive", "40", True),
        ):
            record = CanonicalRecord(
                source=source,
                kind="deal",
                external_id=external_id,
                updated_at=NOW,
                stage=StageKey.CONTACTED,
                status="deleted" if deleted else "open",
            )
            ids[external_id] = store.upsert_record(record, origin=source, written_by_worker=False).record.id
            store.hold_stage(ids[external_id], intro)
        store.link_records([ids["39"], ids["9"]])
        report = build_report(store, model, NOW)
    finally:
        store.close()
    # Then the report counts one held deal
    assert report.held_deals == 1
