"""One transaction per page and per delivery: a unit of work commits all of it or none of it.

Each test runs on SQLite and PostgreSQL (``db_url``). The "kill" is an injected failure of one
store statement (``mock.patch``, house rule 12), a ``BaseException`` like a SIGKILL'd worker's end.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from sync_worker.canonical import PullPage, StageKey
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.store import SyncStore, upgrade_database
from tests.engine.fakes import T0
from tests.engine.fakes import FakeClock as EngineClock
from tests.engine.world import World, deal, hs_event

MAPPINGS_DIR = Path(__file__).resolve().parents[2] / "mappings"


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs in this process."""


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(MAPPINGS_DIR)


@pytest.fixture
def world(db_url: str, mappings: Mappings) -> Iterator[World]:
    upgrade_database(db_url)
    clock = EngineClock()
    store = SyncStore(db_url, clock=clock)
    try:
        yield World(store, mappings, clock)
    finally:
        store.close()


def _count_records(store: SyncStore, source: str) -> int:
    return sum(1 for n in range(1, 20) if store.get_record(source, "deal", str(n)) is not None)


def test_a_unit_commits_every_write_together_or_none(world: World) -> None:
    store = world.store
    with store.unit():
        store.set_cursor("pipedrive", "deals", "c1")
        store.claim_key("k1")
        assert store.in_unit
        assert store.get_cursor("pipedrive", "deals") == "c1"  # a read inside sees the unit's writes
    assert not store.in_unit
    assert store.get_cursor("pipedrive", "deals") == "c1" and not store.claim_key("k1")

    with pytest.raises(_Killed), store.unit():
        store.set_cursor("pipedrive", "deals", "c2")
        with store.unit():  # a nested unit joins the outer one
            store.claim_key("k2")
        raise _Killed
    assert store.get_cursor("pipedrive", "deals") == "c1"
    assert store.claim_key("k2")  # rolled back with the rest


def test_a_failure_inside_a_page_leaves_none_of_it_and_the_next_pull_redoes_it(world: World) -> None:
    store = world.store
    world.linked_pair(StageKey.CONTACTED)
    later = T0 + timedelta(minutes=5)
    world.pipedrive.pages = [
        PullPage("deals", (deal("pipedrive", "1", StageKey.CONTACTED, later),), cursor="c1", done=False),
        PullPage(
            "deals",
            (
                deal("pipedrive", "2", StageKey.CONTACTED, later),
                deal("pipedrive", "7", StageKey.MEETING, later),
            ),
            cursor="c2",
            done=True,
        ),
    ]
    real_set_cursor = SyncStore.set_cursor

    def dies_on_the_second_page(self: SyncStore, source: str, stream: str, cursor: str) -> None:
        if cursor == "c2":
            raise _Killed  # after page 2's records, links and outbox rows were written
        real_set_cursor(self, source, stream, cursor)

    with mock.patch.object(SyncStore, "set_cursor", dies_on_the_second_page), pytest.raises(_Killed):
        world.service.poll("pipedrive", "deals")

    assert store.get_cursor("pipedrive", "deals") == "c1"
    assert store.get_record("pipedrive", "deal", "1") is not None
    assert store.get_record("pipedrive", "deal", "2") is None
    moved = store.get_record("pipedrive", "deal", "7")
    assert moved is not None and moved.stage is StageKey.CONTACTED
    assert world.due("hubspot") == []

    stats = world.service.poll("pipedrive", "deals")

    assert stats.cursor == "c2" == store.get_cursor("pipedrive", "deals")
    assert _count_records(store, "pipedrive") == 3
    moved = store.get_record("pipedrive", "deal", "7")
    assert moved is not None and moved.stage is StageKey.MEETING
    due = world.due("hubspot")
    assert [item.payload["fields"]["stage"]["v"] for item in due] == [StageKey.MEETING.value]


def test_a_delivery_is_processed_whole_or_not_at_all(world: World) -> None:
    store = world.store
    world.linked_pair(StageKey.CONTACTED)
    world.hubspot.records["15"] = deal("hubspot", "15", StageKey.MEETING, T0)
    world.hubspot.records["16"] = deal("hubspot", "16", StageKey.CONTACTED, T0)
    ids = list(store.accept_events("hubspot", [hs_event(1, "15"), hs_event(2, "16")]).new_ids)
    real_mark = SyncStore.mark_processed
    calls = {"n": 0}

    def dies_on_the_second_event(self: SyncStore, inbox_id: int, **kwargs: Any) -> bool:
        calls["n"] += 1
        if calls["n"] == 2:
            raise _Killed
        return real_mark(self, inbox_id, **kwargs)

    with mock.patch.object(SyncStore, "mark_processed", dies_on_the_second_event), pytest.raises(_Killed):
        world.service.handle_inbox_events(ids)

    assert [_processed(store, i) for i in ids] == [False, False]
    assert world.due("pipedrive") == [] and store.get_record("hubspot", "deal", "16") is None

    world.service.handle_inbox_events(ids)  # the redelivered message
    world.service.handle_inbox_events(ids)  # and once more: nothing is written twice

    assert [_processed(store, i) for i in ids] == [True, True]
    due = world.due("pipedrive")
    assert [item.payload["fields"]["stage"]["v"] for item in due] == [StageKey.MEETING.value]


def _processed(store: SyncStore, inbox_id: int) -> bool:
    event = store.get_inbox_event(inbox_id)
    assert event is not None
    return event.processed_at is not None


def test_a_unit_reads_the_paused_routes_once_and_sees_its_own_pauses(world: World) -> None:
    from sqlalchemy import event

    store = world.store
    asked: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.startswith("SELECT pauses.name"):
            asked.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        with store.unit():
            assert store.paused_routes() == frozenset()
            assert store.paused_routes() == frozenset()
            assert len(asked) == 1  # one read for the whole unit
            store.pause("route", "pipedrive-to-hubspot", reason="maintenance")
            assert store.paused_routes() == {"pipedrive-to-hubspot"}  # its own write, seen at once
            store.resume("route", "pipedrive-to-hubspot")
            assert store.paused_routes() == frozenset()
        store.pause("route", "hubspot-to-pipedrive")
        # outside a unit every call reads
        assert store.paused_routes() == {"hubspot-to-pipedrive"}
        assert store.paused_routes() == {"hubspot-to-pipedrive"}
        assert len(asked) == 5
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
