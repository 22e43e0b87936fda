"""The leak scan on SQLite and PostgreSQL: each rule, clearing, once-only raising, outbox items."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from sync_worker.canonical import CanonicalRecord, LeakFlag, RecordStatus, StageKey, StageModel
from sync_worker.leaks import clear_moved, deserialise_update, leak_gauges, scan_leaks
from sync_worker.store import SyncStore
from sync_worker.store.schema import outbox
from tests.store.fakes import FakeClock

DAY = timedelta(days=1)


def _put(
    store: SyncStore,
    clock: FakeClock,
    external_id: str,
    stage: StageKey | None,
    *,
    at: datetime,
    status: RecordStatus = "open",
    source: str = "pipedrive",
    kind: str = "deal",
    amount: str | None = "1000",
    replied_at: datetime | None = None,
) -> int:
    record = CanonicalRecord(
        source=source,
        kind="lead" if kind == "lead" else "deal",
        external_id=external_id,
        updated_at=at,
        stage=stage,
        status=status,
        title=f"Deal {external_id}",
        amount=Decimal(amount) if amount is not None else None,
        stage_changed_at=at,
        replied_at=replied_at,
    )
    return store.upsert_record(record, origin=source, written_by_worker=False, seen_at=at).record.id


def _flags(store: SyncStore) -> dict[tuple[int, str], object]:
    return {(f.record_id, f.rule): f for f in store.open_flags()}


def _outbox(store: SyncStore) -> list[tuple[str, str, dict[str, object]]]:
    import json

    with store.engine.connect() as conn:
        rows = conn.execute(outbox.select().order_by(outbox.c.id)).all()
    return [(r.target, r.idempotency_key, json.loads(r.payload)) for r in rows]


def test_stalled_flags_only_deals_older_than_their_stage_limit(
    store: SyncStore, clock: FakeClock, model: StageModel
) -> None:
    now = clock.now
    # Given deals of various ages (proposal limit 21 days, negotiation 30)
    old = _put(store, clock, "old", StageKey.PROPOSAL, at=now - 30 * DAY)
    _put(store, clock, "young", StageKey.PROPOSAL, at=now - 10 * DAY)
    _put(store, clock, "edge", StageKey.NEGOTIATION, at=now - 29 * DAY)
    _put(store, clock, "won", StageKey.WON, at=now - 100 * DAY, status="won")
    _put(store, clock, "parked", StageKey.NURTURE, at=now - 100 * DAY)
    # When the scan runs
    result = scan_leaks(store, model, now=now)
    # Then exactly the old proposal is stalled, with its stage, age and amounts
    assert [(f.record_id, f.rule) for f in result.raised] == [(old, "stalled")]
    flag = result.raised[0]
    assert flag.stage is StageKey.PROPOSAL
    assert flag.days_in_stage == 30
    assert flag.amount == Decimal("1000.0000")
    assert flag.weighted_amount == Decimal("500.0000")
    assert flag.since == now - 30 * DAY
    assert "Proposal" in flag.reason and "21" in flag.reason
    assert result.open_by_rule == {"stalled": 1, "regressed": 0, "dropped": 0, "unanswered": 0, "diverged": 0}


def test_regressed_flags_a_move_back_and_names_the_stage_left(
    store: SyncStore, clock: FakeClock, model: StageModel
) -> None:
    now = clock.now
    back = _put(store, clock, "back", StageKey.NEGOTIATION, at=now - 12 * DAY)
    _put(store, clock, "back", StageKey.PROPOSAL, at=now - 2 * DAY)
    forward = _put(store, clock, "fwd", StageKey.QUALIFIED, at=now - 6 * DAY)
    _put(store, clock, "fwd", StageKey.MEETING, at=now - 1 * DAY)
    result = scan_leaks(store, model, now=now)
    assert [(f.record_id, f.rule) for f in result.raised] == [(back, "regressed")]
    flag = result.raised[0]
    assert flag.stage is StageKey.NEGOTIATION
    assert flag.days_in_stage == 10
    assert flag.weighted_amount == Decimal("750.0000")
    assert forward not in {f.record_id for f in store.open_flags()}


def test_dropped_flags_lost_deleted_and_vanished_deals(
    store: SyncStore, clock: FakeClock, model: StageModel
) -> None:
    now = clock.now
    pull = now - 1 * DAY
    lost = _put(store, clock, "lost", StageKey.PROPOSAL, at=now - 20 * DAY)
    _put(store, clock, "lost", StageKey.LOST, at=now - 5 * DAY, status="lost")
    _put(store, clock, "born-lost", StageKey.LOST, at=now - 5 * DAY, status="lost")
    deleted = _put(store, clock, "deleted", StageKey.MEETING, at=now - 3 * DAY)
    _put(store, clock, "deleted", StageKey.MEETING, at=now - 2 * DAY, status="deleted")
    vanished = _put(store, clock, "vanished", StageKey.QUALIFIED, at=now - 3 * DAY)
    _put(store, clock, "present", StageKey.QUALIFIED, at=now - 3 * DAY)
    _put(store, clock, "present", StageKey.QUALIFIED, at=now - 0.5 * DAY)  # seen by the pull
    _put(store, clock, "hs", StageKey.QUALIFIED, at=now - 3 * DAY, source="hubspot")  # no pull given
    result = scan_leaks(store, model, now=now, full_pull_started={"pipedrive": pull})
    got = {(f.record_id, f.rule): f for f in result.raised}
    assert set(got) == {(lost, "dropped"), (deleted, "dropped"), (vanished, "dropped")}
    assert got[lost, "dropped"].stage is StageKey.PROPOSAL
    assert got[lost, "dropped"].days_in_stage == 15
    assert got[lost, "dropped"].weighted_amount == Decimal("500.0000")
    assert "deleted" in got[deleted, "dropped"].reason
    assert got[vanished, "dropped"].stage is StageKey.QUALIFIED
    assert "full pull" in got[vanished, "dropped"].reason

    # A later scan without a full-pull time keeps the vanished flag; seeing the deal again clears it.
    assert scan_leaks(store, model, now=now + DAY).cleared == ()
    _put(store, clock, "vanished", StageKey.QUALIFIED, at=now + 2 * DAY)
    again = scan_leaks(store, model, now=now + 2 * DAY)
    assert [(f.record_id, f.rule) for f in again.cleared] == [(vanished, "dropped")]


def test_unanswered_flags_replies_no_linked_deal_followed(
    store: SyncStore, clock: FakeClock, model: StageModel
) -> None:
    now = clock.now
    replied = now - 5 * DAY
    waiting = _put(
        store,
        clock,
        "l1",
        StageKey.CONTACTED,
        at=replied,
        kind="lead",
        source="lagrowthmachine",
        amount=None,
        replied_at=replied,
    )
    still = _put(store, clock, "d1", StageKey.QUALIFIED, at=now - 9 * DAY)
    store.link_records([waiting, still])
    followed = _put(
        store,
        clock,
        "l2",
        StageKey.CONTACTED,
        at=replied,
        kind="lead",
        source="lagrowthmachine",
        replied_at=replied,
    )
    moved = _put(store, clock, "d2", StageKey.QUALIFIED, at=now - 9 * DAY)
    _put(store, clock, "d2", StageKey.MEETING, at=now - 2 * DAY)
    store.link_records([followed, moved])
    alone = _put(
        store,
        clock,
        "l3",
        StageKey.CONTACTED,
        at=replied,
        kind="lead",
        source="lagrowthmachine",
        replied_at=replied,
    )
    _put(
        store,
        clock,
        "l4",
        StageKey.CONTACTED,
        at=now - DAY,
        kind="lead",
        source="lagrowthmachine",
        replied_at=now - DAY,
    )
    result = scan_leaks(store, model, now=now)
    got = {(f.record_id, f.rule): f for f in result.raised if f.rule == "unanswered"}
    assert set(got) == {(waiting, "unanswered"), (alone, "unanswered")}
    assert got[waiting, "unanswered"].since == replied
    assert got[waiting, "unanswered"].days_in_stage == 5
    # No write-back is queued to the leads: an outreach tool's lead holds no deal flag (its push
    # would only fail); the flags reach people through the alerts and the report
    queued = {(target, key.split(":")[2]) for target, key, _ in _outbox(store)}
    assert ("lagrowthmachine", "raise") not in queued and ("alert", "alert") in queued
    # When the linked deal finally moves, the flag clears
    _put(store, clock, "d1", StageKey.MEETING, at=now + DAY)
    later = scan_leaks(store, model, now=now + DAY)
    assert (waiting, "unanswered") in {(f.record_id, f.rule) for f in later.cleared}
    assert (alone, "unanswered") in _flags(store)


def test_a_deal_first_seen_or_moved_by_the_service_after_a_reply_is_no_answer(
    store: SyncStore, clock: FakeClock, model: StageModel
) -> None:
    now = clock.now
    replied = now - 5 * DAY
    lead = dict(kind="lead", source="lagrowthmachine", amount=None, replied_at=replied)
    # Given a reply whose deal the first backfill only saw yesterday (its first sighting, no move)
    seen_late = _put(store, clock, "l1", StageKey.CONTACTED, at=replied, **lead)  # type: ignore[arg-type]
    backfilled = _put(store, clock, "d1", StageKey.QUALIFIED, at=now - DAY)
    store.link_records([seen_late, backfilled])
    # And a reply whose deal the service itself created, then advanced, because of the reply
    created_for = _put(store, clock, "l2", StageKey.CONTACTED, at=replied, **lead)  # type: ignore[arg-type]
    ours = CanonicalRecord(
        source="hubspot", kind="deal", external_id="h9", updated_at=now - 4 * DAY, stage=StageKey.CONTACTED
    )
    created = store.upsert_record(ours, origin="lagrowthmachine", written_by_worker=True).record.id
    store.upsert_record(
        CanonicalRecord(
            source="hubspot",
            kind="deal",
            external_id="h9",
            updated_at=now - 3 * DAY,
            stage=StageKey.QUALIFIED,
        ),
        origin="lagrowthmachine",
        written_by_worker=True,
    )
    store.link_records([created_for, created])
    # When the leak scan runs, both replies are still unanswered: nobody acted on them
    result = scan_leaks(store, model, now=now)
    got = {f.record_id for f in result.raised if f.rule == "unanswered"}
    assert got == {seen_late, created_for}
    # And once a person moves the backfilled deal, its reply is answered
    _put(store, clock, "d1", StageKey.MEETING, at=now + DAY)
    later = scan_leaks(store, model, now=now + DAY)
    assert (seen_late, "unanswered") in {(f.record_id, f.rule) for f in later.cleared}


def test_flags_are_raised_once_and_clear_when_the_deal_moves_on(
    store: SyncStore, clock: FakeClock, model: StageModel
) -> None:
    now = clock.now
    deal = _put(store, clock, "d", StageKey.PROPOSAL, at=now - 30 * DAY)
    first = scan_leaks(store, model, now=now)
    assert len(first.raised) == 1
    items = _outbox(store)
    # A second and third scan raise and queue nothing new
    assert scan_leaks(store, model, now=now + timedelta(hours=1)).raised == ()
    assert scan_leaks(store, model, now=now + timedelta(hours=2)).raised == ()
    assert _outbox(store) == items
    # When the deal moves on, the flag clears once, and one clear goes to the CRM
    _put(store, clock, "d", StageKey.NEGOTIATION, at=now + 3 * DAY)
    moved = scan_leaks(store, model, now=now + 3 * DAY)
    assert [f.id for f in moved.cleared] == [first.raised[0].id]
    assert moved.raised == ()
    assert store.open_flags(record_id=deal) == []
    clears = [i for i in _outbox(store) if ":clear:" in i[1]]
    assert len(clears) == 1
    update = deserialise_update(clears[0][2])
    assert update.target == "pipedrive" and update.external_id == "d"
    assert update.flag == LeakFlag(rule=None)
    assert scan_leaks(store, model, now=now + 4 * DAY).cleared == ()
    assert len(_outbox(store)) == len(items) + 1


def test_a_move_clears_the_deals_flags_at_once_on_every_copy_and_keeps_what_still_holds(
    store: SyncStore, clock: FakeClock, model: StageModel
) -> None:
    now = clock.now
    # Given a deal stalled in Proposal with a second copy in HubSpot, flagged and written back,
    # and another stalled deal nobody touches
    pipedrive = _put(store, clock, "d", StageKey.PROPOSAL, at=now - 30 * DAY)
    hubspot = _put(store, clock, "h", StageKey.PROPOSAL, at=now - 30 * DAY, source="hubspot")
    store.link_records([pipedrive, hubspot])
    other = _put(store, clock, "o", StageKey.PROPOSAL, at=now - 30 * DAY)
    raised = scan_leaks(store, model, now=now).raised
    assert {f.record_id for f in raised} == {pipedrive, other} or {f.record_id for f in raised} == {
        hubspot,
        other,
    }
    # When a copy moves on and only the moved record is handed over (no scan)
    _put(store, clock, "h", StageKey.NEGOTIATION, at=now + DAY, source="hubspot")
    with store.unit():
        cleared = clear_moved(store, model, [hubspot], now=now + DAY)
    # Then the deal's flag is closed at once and its clear queued for both copies
    assert [f.rule for f in cleared] == ["stalled"]
    assert {rid for rid, _ in _flags(store)} == {other}
    clears = sorted(
        deserialise_update(p).external_id or "" for _, key, p in _outbox(store) if ":clear:" in key
    )
    assert clears == ["d", "h"]
    # And a move that leaves the leak standing (the other deal re-seen in Proposal) clears nothing
    _put(store, clock, "o", StageKey.PROPOSAL, at=now - 30 * DAY, amount="2000")
    assert clear_moved(store, model, [other], now=now + DAY) == ()
    assert {rid for rid, _ in _flags(store)} == {other}


def test_each_new_flag_queues_one_crm_write_and_one_alert(
    store: SyncStore, clock: FakeClock, model: StageModel
) -> None:
    now = clock.now
    _put(store, clock, "a", StageKey.PROPOSAL, at=now - 30 * DAY)
    _put(store, clock, "b", StageKey.MEETING, at=now - 30 * DAY, source="hubspot")
    result = scan_leaks(store, model, now=now)
    items = _outbox(store)
    by_key = {key: (target, payload) for target, key, payload in items}
    assert len(items) == 4
    for flag in result.raised:
        target, payload = by_key[f"leak:{flag.id}:raise:{flag.record_id}"]
        update = deserialise_update(payload)
        record = store.get_record_by_id(flag.record_id)
        assert record is not None
        assert target == update.target == record.source
        assert update.external_id == record.external_id
        assert update.flag == LeakFlag(
            rule="stalled", reason=flag.reason, stage=flag.stage, since=flag.since, days_in_stage=30
        )
        alert_target, alert = by_key[f"leak:{flag.id}:alert"]
        assert alert_target == "alert"
        assert set(alert) == {"text", "blocks"} and record.title in str(alert["text"])
        stored = store.get_flag(flag.id)
        assert stored is not None and stored.written_to_crm_at == now and stored.alerted_at == now


def test_alerts_off_queues_only_the_crm_write(store: SyncStore, clock: FakeClock, model: StageModel) -> None:
    _put(store, clock, "a", StageKey.PROPOSAL, at=clock.now - 30 * DAY)
    scan_leaks(store, model, now=clock.now, alerts=False)
    assert [target for target, _, _ in _outbox(store)] == ["pipedrive"]


def test_leak_gauges_sum_open_flags_by_rule_and_stage(
    store: SyncStore, clock: FakeClock, model: StageModel
) -> None:
    _put(store, clock, "a", StageKey.PROPOSAL, at=clock.now - 30 * DAY, amount="1000")
    _put(store, clock, "b", StageKey.PROPOSAL, at=clock.now - 40 * DAY, amount="250.50")
    scan_leaks(store, model, now=clock.now)
    samples = {(name, labels["rule"], labels["stage"]): value for name, labels, value in leak_gauges(store)}
    assert samples[("sync_worker_leak_flags_open", "stalled", "proposal")] == 2.0
    assert samples[("sync_worker_leak_amount_at_risk", "stalled", "proposal")] == 1250.5
    assert samples[("sync_worker_leak_weighted_amount_at_risk", "stalled", "proposal")] == 625.25
