"""Held stages: one row per record on an unmapped stage, counted, replaced on a move, released."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sync_worker.canonical import CanonicalRecord, StageKey, UnmappedStage
from sync_worker.store import SyncStore

from .fakes import FakeClock

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)  # the fake clock's start

PARTNERSHIPS = UnmappedStage("pipedrive", "3", "14", pipeline_name="Partnerships", stage_name="Intro")


def _record(store: SyncStore, external_id: str) -> int:
    record = CanonicalRecord(
        source="pipedrive", kind="deal", external_id=external_id, updated_at=T0, stage=StageKey.CONTACTED
    )
    return store.upsert_record(record, origin="pipedrive", written_by_worker=False).record.id


def test_a_held_record_is_listed_with_its_raw_stage_and_counted(store: SyncStore, clock: FakeClock) -> None:
    # Given a record seen on an unmapped stage twice, a minute apart
    record_id = _record(store, "39")
    first = store.hold_stage(record_id, PARTNERSHIPS, stage_changed_at=T0)
    clock.advance(timedelta(minutes=1))
    again = store.hold_stage(record_id, PARTNERSHIPS)
    # Then it was new the first time only, and is listed once with both sightings
    assert (first, again) == (True, False)
    (held,) = store.held_stages()
    assert (held.source, held.kind, held.external_id) == ("pipedrive", "deal", "39")
    raw = (held.pipeline, held.pipeline_name, held.stage, held.stage_name)
    assert raw == ("3", "Partnerships", "14", "Intro")
    assert held.stage_changed_at == T0
    assert held.first_held_at == T0 and held.last_held_at == T0 + timedelta(minutes=1)
    assert held.held_count == 2


def test_a_move_to_another_unmapped_stage_replaces_the_row(store: SyncStore, clock: FakeClock) -> None:
    record_id = _record(store, "39")
    store.hold_stage(record_id, PARTNERSHIPS)
    clock.advance(timedelta(minutes=5))
    moved = UnmappedStage("pipedrive", "3", "15", pipeline_name="Partnerships", stage_name="Signed")
    assert store.hold_stage(record_id, moved) is True
    (held,) = store.held_stages()
    assert (held.stage, held.stage_name, held.held_count) == ("15", "Signed", 1)
    assert held.first_held_at == T0 + timedelta(minutes=5)


def test_held_groups_count_records_per_pipeline_and_stage(store: SyncStore) -> None:
    for external_id in ("39", "40"):
        store.hold_stage(_record(store, external_id), PARTNERSHIPS)
    store.hold_stage(_record(store, "41"), UnmappedStage("pipedrive", "3", "15"))
    groups = [(g.source, g.pipeline, g.stage, g.records, g.label) for g in store.held_groups()]
    assert groups == [
        ("pipedrive", "3", "14", 2, "pipeline Partnerships (3) stage Intro (14)"),
        ("pipedrive", "3", "15", 1, "pipeline 3 stage 15"),
    ]
    assert store.held_stages("hubspot") == []


def test_release_forgets_the_held_stage_once(store: SyncStore) -> None:
    record_id = _record(store, "39")
    store.hold_stage(record_id, PARTNERSHIPS)
    assert store.release_held(record_id) is True
    assert store.release_held(record_id) is False
    assert store.held_stages() == [] and store.held_groups() == []


def test_holding_inside_a_unit_rolls_back_with_it(store: SyncStore) -> None:
    record_id = _record(store, "39")

    class Boom(RuntimeError):
        pass

    try:
        with store.unit():
            store.hold_stage(record_id, PARTNERSHIPS)
            raise Boom
    except Boom:
        pass
    assert store.held_stages() == []
