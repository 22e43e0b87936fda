"""The deal is the unit: linked copies of one deal give one flag, written back to every copy, one alert.

A constructed history on SQLite and PostgreSQL: one opportunity held in two CRMs ("crm-a" and
"crm-b", linked as the engine links mirrored deals), judged by its newest copy.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal

from sync_worker.canonical import CanonicalRecord, RecordStatus, StageKey, StageModel
from sync_worker.leaks import deserialise_update, leak_gauges, scan_leaks
from sync_worker.leaks.scan import last_scan_at
from sync_worker.store import SyncStore
from sync_worker.store.schema import outbox
from tests.store.fakes import FakeClock

DAY = timedelta(days=1)
GRACE = timedelta(minutes=15)


def _copy(
    store: SyncStore,
    source: str,
    external_id: str,
    stage: StageKey,
    *,
    entered: datetime,
    updated: datetime | None = None,
    status: RecordStatus = "open",
    amount: str = "4500",
    currency: str | None = "EUR",
    owner: str | None = None,
) -> int:
    record = CanonicalRecord(
        source=source,
        kind="deal",
        external_id=external_id,
        updated_at=updated or entered,
        stage=stage,
        status=status,
        title="Wonka - Renewal",
        amount=Decimal(amount),
        currency=currency,
        owner_id=owner,
        stage_changed_at=entered,
    )
    seen = updated or entered
    return store.upsert_record(record, origin=source, written_by_worker=False, seen_at=seen).record.id


def _outbox(store: SyncStore) -> list[tuple[str, str, dict[str, object]]]:
    with store.engine.connect() as conn:
        rows = conn.execute(outbox.select().order_by(outbox.c.id)).all()
    return [(r.target, r.idempotency_key, json.loads(r.payload)) for r in rows]


def _links(source: str) -> object:
    return lambda external_id: f"https://{source}.example/deals/{external_id}"


def test_two_copies_of_one_stalled_deal_give_one_flag_two_writes_and_one_alert(
    store: SyncStore, clock: FakeClock, model: StageModel
) -> None:
    now = clock.now
    # Given one deal held in two CRMs, both stalled in proposal (limit 21 days) for 50 days;
    # crm-b's copy was written later (it is the newest state)
    a = _copy(store, "crm-a", "15000000022", StageKey.PROPOSAL, entered=now - 50 * DAY, owner="77")
    b = _copy(
        store, "crm-b", "22", StageKey.PROPOSAL, entered=now - 49 * DAY, updated=now - 2 * DAY, owner="9001"
    )
    store.link_records([a, b])
    links = {"crm-a": _links("crm-a"), "crm-b": _links("crm-b")}
    # When the scan runs (twice)
    first = scan_leaks(store, model, now=now, deal_links=links)  # type: ignore[arg-type]
    again = scan_leaks(store, model, now=now + timedelta(hours=1), deal_links=links)  # type: ignore[arg-type]
    # Then the deal has one stalled flag, on its newest copy, dated from the first copy's entry
    assert [(f.record_id, f.rule) for f in first.raised] == [(b, "stalled")]
    assert again.raised == ()
    flag = first.raised[0]
    assert flag.days_in_stage == 50 and flag.since == now - 50 * DAY
    # written back to both copies once, and alerted once
    items = _outbox(store)
    raises = sorted(
        (target, deserialise_update(p).external_id) for target, key, p in items if ":raise:" in key
    )
    assert raises == [("crm-a", "15000000022"), ("crm-b", "22")]
    alerts = [p for target, _key, p in items if target == "alert"]
    assert len(alerts) == 1
    body = json.dumps(alerts[0])
    assert "4,500.00 EUR" in body
    assert "https://crm-a.example/deals/15000000022" in body and "https://crm-b.example/deals/22" in body
    assert "77" in body and "9001" in body
    # and /metrics counts one deal, in its currency
    counts = [(labels, value) for name, labels, value in leak_gauges(store) if name.endswith("flags_open")]
    assert counts == [({"rule": "stalled", "stage": "proposal", "currency": "EUR"}, 1.0)]
    assert last_scan_at(store) == now + timedelta(hours=1)

    # When crm-a's copy moves on and the move is mirrored into crm-b
    later = now + 2 * DAY
    _copy(store, "crm-a", "15000000022", StageKey.NEGOTIATION, entered=later)
    _copy(store, "crm-b", "22", StageKey.NEGOTIATION, entered=later + timedelta(seconds=5))
    moved = scan_leaks(store, model, now=later + timedelta(minutes=1), deal_links=links)  # type: ignore[arg-type]
    # Then the one flag clears, on both copies
    assert [f.id for f in moved.cleared] == [flag.id] and moved.raised == ()
    clears = sorted(
        (target, deserialise_update(p).flag) for target, key, p in _outbox(store) if ":clear:" in key
    )
    assert [target for target, _ in clears] == ["crm-a", "crm-b"]
    assert all(f is not None and f.rule is None for _, f in clears)


def test_a_head_switch_keeps_the_deal_flag_and_alerts_nothing_new(
    store: SyncStore, clock: FakeClock, model: StageModel
) -> None:
    now = clock.now
    a = _copy(store, "crm-a", "1", StageKey.PROPOSAL, entered=now - 40 * DAY)
    b = _copy(store, "crm-b", "1", StageKey.PROPOSAL, entered=now - 40 * DAY, updated=now - DAY)
    store.link_records([a, b])
    assert len(scan_leaks(store, model, now=now).raised) == 1
    # When the older copy gets an edit (an amount change) and becomes the newest state
    _copy(store, "crm-a", "1", StageKey.PROPOSAL, entered=now - 40 * DAY, updated=now, amount="5000")
    result = scan_leaks(store, model, now=now + timedelta(hours=1))
    # Then the deal keeps its one flag: nothing cleared, raised or alerted again
    assert result.raised == () and result.cleared == ()
    assert len(store.open_flags()) == 1
    assert len([key for _t, key, _p in _outbox(store) if key.endswith(":alert")]) == 1


def test_copies_in_different_stages_past_the_grace_period_give_one_diverged_flag(
    store: SyncStore, clock: FakeClock, model: StageModel
) -> None:
    now = clock.now
    # Given a deal qualified in both CRMs, then moved to proposal in crm-b only
    a = _copy(store, "crm-a", "7", StageKey.QUALIFIED, entered=now - 3 * DAY, amount="49900")
    b = _copy(store, "crm-b", "7", StageKey.QUALIFIED, entered=now - 3 * DAY, amount="49900")
    store.link_records([a, b])
    moved_at = now - timedelta(minutes=10)
    _copy(store, "crm-b", "7", StageKey.PROPOSAL, entered=moved_at, amount="49900")
    # When the scan runs within the grace period, nothing has diverged yet
    assert scan_leaks(store, model, now=now, diverged_grace=GRACE).raised == ()
    # When it runs after the grace period
    late = moved_at + GRACE + timedelta(minutes=1)
    result = scan_leaks(store, model, now=late, diverged_grace=GRACE)
    again = scan_leaks(store, model, now=late + timedelta(minutes=5), diverged_grace=GRACE)
    # Then one diverged flag names both values and both systems
    assert [(f.record_id, f.rule) for f in result.raised] == [(b, "diverged")]
    assert again.raised == ()
    reason = result.raised[0].reason
    assert "crm-b: Proposal (open)" in reason and "crm-a: Qualified (open)" in reason
    assert result.raised[0].since == moved_at
    assert len([key for _t, key, _p in _outbox(store) if key.endswith(":alert")]) == 1
    # When the copies agree again (the move is mirrored into crm-a), the flag clears on both
    _copy(store, "crm-a", "7", StageKey.PROPOSAL, entered=late + timedelta(minutes=6), amount="49900")
    cleared = scan_leaks(store, model, now=late + timedelta(minutes=7), diverged_grace=GRACE)
    assert [f.rule for f in cleared.cleared] == ["diverged"]
    assert store.open_flags() == []
    assert sorted(t for t, key, _p in _outbox(store) if ":clear:" in key) == ["crm-a", "crm-b"]


def test_a_deleted_copy_does_not_diverge_and_a_lone_deal_never_does(
    store: SyncStore, clock: FakeClock, model: StageModel
) -> None:
    now = clock.now
    a = _copy(store, "crm-a", "8", StageKey.MEETING, entered=now - 3 * DAY)
    b = _copy(store, "crm-b", "8", StageKey.NEGOTIATION, entered=now - 2 * DAY)
    store.link_records([a, b])
    _copy(
        store, "crm-a", "8", StageKey.MEETING, entered=now - 3 * DAY, updated=now - 2 * DAY, status="deleted"
    )
    _copy(store, "crm-c", "9", StageKey.PROPOSAL, entered=now - 2 * DAY)
    assert [f.rule for f in scan_leaks(store, model, now=now, diverged_grace=GRACE).raised] == []
