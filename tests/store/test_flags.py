"""Leak flags (one open per record and rule, enforced by the database) and write memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from sync_worker.canonical import CanonicalRecord, StageKey
from sync_worker.store import SyncStore, value_hash
from sync_worker.store.schema import leak_flags

from .fakes import FakeClock


def _record_id(store: SyncStore, external_id: str = "42") -> int:
    record = CanonicalRecord(
        source="hubspot",
        kind="deal",
        external_id=external_id,
        updated_at=datetime(2024, 4, 1, tzinfo=UTC),
        stage=StageKey.PROPOSAL,
        amount=Decimal("1000"),
    )
    return store.upsert_record(record, origin="hubspot", written_by_worker=False).record.id


def test_one_open_flag_per_record_and_rule(store: SyncStore, clock: FakeClock) -> None:
    record_id = _record_id(store)
    since = clock.now - timedelta(days=40)
    flag_id = store.raise_flag(
        record_id,
        "stalled",
        reason="40 days in Proposal (limit 30)",
        stage=StageKey.PROPOSAL,
        since=since,
        days_in_stage=40,
        amount=Decimal("1000"),
        weighted_amount=Decimal("500.00"),
    )
    assert flag_id is not None
    # A second raise of the same rule is a no-op; another rule is its own flag
    assert store.raise_flag(record_id, "stalled") is None
    dropped = store.raise_flag(record_id, "dropped")
    assert dropped is not None
    (stalled, _) = store.open_flags(record_id=record_id)
    assert stalled.id == flag_id and stalled.stage is StageKey.PROPOSAL and stalled.since == since
    assert stalled.weighted_amount == Decimal("500.00") and stalled.days_in_stage == 40
    assert [f.id for f in store.open_flags(rule="dropped")] == [dropped]
    # Once cleared, the rule can be raised again; the old flag stays as history
    clock.advance(timedelta(hours=1))
    cleared = store.clear_flags(record_id, ["stalled"])
    assert [f.id for f in cleared] == [flag_id] and cleared[0].cleared_at == clock.now
    again = store.raise_flag(record_id, "stalled")
    assert again is not None and again != flag_id
    assert {f.id for f in store.open_flags()} == {again, dropped}
    assert len(store.clear_flags(record_id)) == 2
    assert store.open_flags() == []
    old = store.get_flag(flag_id)
    assert old is not None and old.cleared_at is not None


def test_the_database_itself_refuses_a_second_open_flag(store: SyncStore, clock: FakeClock) -> None:
    record_id = _record_id(store)
    assert store.raise_flag(record_id, "regressed") is not None
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(insert(leak_flags).values(record_id=record_id, rule="regressed", raised_at=clock.now))


def test_flag_write_back_and_alert_stamps(store: SyncStore, clock: FakeClock) -> None:
    flag_id = store.raise_flag(_record_id(store), "unanswered")
    assert flag_id is not None
    clock.advance(timedelta(minutes=2))
    store.mark_flag_written(flag_id)
    store.mark_flag_alerted(flag_id, at=clock.now + timedelta(minutes=1))
    flag = store.get_flag(flag_id)
    assert flag is not None
    assert flag.written_to_crm_at == clock.now
    assert flag.alerted_at == clock.now + timedelta(minutes=1)


@pytest.mark.parametrize(
    ("left", "right", "same"),
    [
        (100, Decimal("100.00"), True),
        (1.5, "1.50", True),
        ("  7 ", 7, True),
        (StageKey.WON, "won", True),
        (True, "True", False),
        (True, 1, False),
        ("closedwon", "closedlost", False),
        (None, "", False),
        ("NaN", "nan", False),
    ],
)
def test_value_hash_normalises_numbers_only(left: object, right: object, same: bool) -> None:
    assert (value_hash(left) == value_hash(right)) is same


def test_write_memory_recognises_our_own_echo(store: SyncStore, clock: FakeClock) -> None:
    store.remember_write("hubspot", "42", "dealstage", "closedwon")
    store.remember_write("hubspot", "42", "amount", Decimal("100.00"))
    window = timedelta(minutes=10)
    assert store.was_written("hubspot", "42", "dealstage", "closedwon", window)
    assert not store.was_written("hubspot", "42", "dealstage", "closedlost", window)
    assert not store.was_written("hubspot", "43", "dealstage", "closedwon", window)
    assert not store.was_written("pipedrive", "42", "dealstage", "closedwon", window)
    # numbers compare by value, whatever their type: webhooks report them as strings
    assert store.was_written("hubspot", "42", "amount", 100, window)
    assert store.was_written("hubspot", "42", "amount", "100.0", window)
    assert not store.was_written("hubspot", "42", "amount", Decimal("100.01"), window)
    # outside the window it is a real change again
    clock.advance(timedelta(minutes=11))
    assert not store.was_written("hubspot", "42", "dealstage", "closedwon", window)
    assert store.prune_write_memory(timedelta(minutes=5)) == 2
    assert not store.was_written("hubspot", "42", "dealstage", "closedwon", timedelta(days=1))


def test_recent_writes_answers_a_whole_delivery_like_was_written(store: SyncStore, clock: FakeClock) -> None:
    store.remember_write("hubspot", "42", "dealstage", "closedwon")
    store.remember_write("hubspot", "43", "amount", Decimal("100.00"))
    store.remember_write("pipedrive", "42", "dealstage", "closedwon")
    clock.advance(timedelta(minutes=6))
    store.remember_write("hubspot", "44", "dealstage", "closedlost")
    window = timedelta(minutes=10)
    ids = [str(n) for n in range(40, 700)]  # more than one chunk of ids
    written = store.recent_writes("hubspot", ids, window)
    assert written == {
        ("42", "dealstage", value_hash("closedwon")),
        ("43", "amount", value_hash("100")),
        ("44", "dealstage", value_hash("closedlost")),
    }
    # the same answers as one was_written per (record, field, value)
    for external_id, field, value in [("42", "dealstage", "closedwon"), ("43", "amount", "100.0")]:
        assert store.was_written("hubspot", external_id, field, value, window)
        assert (external_id, field, value_hash(value)) in written
    assert store.recent_writes("hubspot", ["44"], timedelta(minutes=5)) == {
        ("44", "dealstage", value_hash("closedlost"))
    }
    clock.advance(timedelta(minutes=5))
    assert store.recent_writes("hubspot", ids, window) == {("44", "dealstage", value_hash("closedlost"))}
    assert store.recent_writes("hubspot", [], window) == frozenset()


def test_forget_overwritten_drops_only_the_values_a_record_no_longer_holds(store: SyncStore) -> None:
    store.remember_write("hubspot", "42", "dealstage", "appointmentscheduled")
    store.remember_write("hubspot", "42", "dealstage", "contractsent")
    store.remember_write("hubspot", "42", "amount", Decimal("100.00"))
    store.remember_write("hubspot", "43", "dealstage", "appointmentscheduled")
    window = timedelta(minutes=10)
    # HubSpot 42 now holds contractsent (a person moved it there again): the other stage we wrote is
    # overwritten, the amount and the other record are untouched
    store.forget_overwritten("hubspot", "42", {"dealstage": "contractsent"})
    assert not store.was_written("hubspot", "42", "dealstage", "appointmentscheduled", window)
    assert store.was_written("hubspot", "42", "dealstage", "contractsent", window)
    assert store.was_written("hubspot", "42", "amount", "100", window)
    assert store.was_written("hubspot", "43", "dealstage", "appointmentscheduled", window)
    store.forget_overwritten("hubspot", "42", {})  # nothing to forget: no statement, no error
