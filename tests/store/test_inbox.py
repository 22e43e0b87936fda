"""Inbox and cursors: dedupe, atomic and durable acceptance, the enqueue sweeper's query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from sync_worker.canonical import WebhookEvent
from sync_worker.store import SyncStore

from .fakes import FakeClock

T0 = datetime(2024, 5, 1, 11, 59, tzinfo=UTC)


def _event(key: str, *, source: str = "hubspot", occurred_at: datetime = T0) -> WebhookEvent:
    return WebhookEvent(
        source=source,
        dedupe_key=key,
        object_type="deal",
        object_id=f"deal-{key}",
        action="propertyChange",
        occurred_at=occurred_at,
        raw={"eventId": key, "propertyName": "dealstage", "nested": {"n": [1, 2]}},
        property_name="dealstage",
        property_value="closedwon",
        change_source="CRM_UI",
    )


def test_accept_events_skips_duplicates_within_a_batch_and_across_calls(store: SyncStore) -> None:
    # Given a batch that repeats one delivery
    first = store.accept_events("hubspot", [_event("a"), _event("b"), _event("a")])
    assert len(first.new_ids) == 2
    assert first.duplicates == 1
    # When the sender retries the whole body plus one new event
    second = store.accept_events("hubspot", [_event("a"), _event("b"), _event("c")])
    # Then only the new one is stored
    assert second.duplicates == 2
    assert len(second.new_ids) == 1
    assert store.inbox_depth() == 3
    # And the same key from another source is not a duplicate
    other = store.accept_events("pipedrive", [_event("a", source="pipedrive")])
    assert len(other.new_ids) == 1 and other.duplicates == 0


def test_accepted_event_round_trips_and_is_durable(store: SyncStore, db_url: str) -> None:
    (inbox_id,) = store.accept_events("hubspot", [_event("a")]).new_ids
    # A second store on a fresh engine sees the committed row.
    other = SyncStore(db_url)
    try:
        stored = other.get_inbox_event(inbox_id)
    finally:
        other.close()
    assert stored is not None
    assert stored.payload == {"eventId": "a", "propertyName": "dealstage", "nested": {"n": [1, 2]}}
    assert stored.occurred_at == T0 and stored.occurred_at.tzinfo is UTC
    assert stored.received_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert stored.enqueued_at is None and stored.processed_at is None and stored.attempts == 0
    assert stored.to_webhook_event() == _event("a")
    assert store.get_inbox_event(inbox_id + 1000) is None


def test_accept_events_stores_nothing_when_the_database_fails_midway(store: SyncStore) -> None:
    # Given a database that fails on the second INSERT of a batch (an injected fault)
    inserts: list[str] = []

    def fail_second_insert(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO INBOX"):
            inserts.append(statement)
            if len(inserts) == 2:
                raise RuntimeError("injected fault")

    event.listen(store.engine, "before_cursor_execute", fail_second_insert)
    try:
        with pytest.raises(RuntimeError, match="injected fault"):
            store.accept_events("hubspot", [_event("ok"), _event("boom")])
    finally:
        event.remove(store.engine, "before_cursor_execute", fail_second_insert)
    # Then the first event was rolled back with it, and a retry stores both
    assert store.inbox_depth() == 0
    assert len(store.accept_events("hubspot", [_event("ok"), _event("boom")]).new_ids) == 2


def test_accept_events_refuses_naive_timestamps(store: SyncStore) -> None:
    naive = datetime(2024, 5, 1, 12, 0)
    with pytest.raises(ValueError, match="naive"):
        store.accept_events("hubspot", [_event("ok"), _event("bad", occurred_at=naive)])
    assert store.inbox_depth() == 0


def test_accept_events_refuses_events_of_another_source(store: SyncStore) -> None:
    with pytest.raises(ValueError, match="pipedrive"):
        store.accept_events("hubspot", [_event("a", source="pipedrive")])


def test_pending_enqueue_and_mark_enqueued(store: SyncStore, clock: FakeClock) -> None:
    # Given two events accepted now
    a, b = store.accept_events("hubspot", [_event("a"), _event("b")]).new_ids
    # Then they are not "stuck" until older than the grace period
    assert store.pending_enqueue(timedelta(seconds=30)) == []
    clock.advance(timedelta(minutes=1))
    assert [e.id for e in store.pending_enqueue(timedelta(seconds=30))] == [a, b]
    assert [e.id for e in store.pending_enqueue(timedelta(seconds=30), limit=1)] == [a]
    # When one is enqueued it leaves the sweeper's list
    assert store.mark_enqueued([a]) == 1
    assert store.mark_enqueued([a]) == 0  # the first enqueue time is kept
    assert [e.id for e in store.pending_enqueue(timedelta(seconds=30))] == [b]
    enqueued = store.get_inbox_event(a)
    assert enqueued is not None and enqueued.enqueued_at == clock.now
    assert store.mark_enqueued([]) == 0


def test_enqueued_but_unprocessed_events_come_back_once_overdue(store: SyncStore, clock: FakeClock) -> None:
    # Given two events enqueued, one of them processed since
    a, b = store.accept_events("hubspot", [_event("a"), _event("b")]).new_ids
    store.mark_enqueued([a, b])
    store.mark_processed(b)
    stale = timedelta(minutes=10)
    # Then neither is swept before its message is overdue
    clock.advance(timedelta(minutes=9))
    assert store.pending_enqueue(timedelta(seconds=30), stale_after=stale) == []
    # When the unprocessed one's message is overdue (Redis lost it), only it comes back
    clock.advance(timedelta(minutes=2))
    assert [e.id for e in store.pending_enqueue(timedelta(seconds=30), stale_after=stale)] == [a]
    assert store.pending_enqueue(timedelta(seconds=30)) == []  # without stale_after: never-enqueued only
    # And once sent again its clock starts over; a processed event is never re-marked
    assert store.mark_enqueued([a, b], requeued=True) == 1
    assert store.pending_enqueue(timedelta(seconds=30), stale_after=stale) == []
    requeued = store.get_inbox_event(a)
    assert requeued is not None and requeued.enqueued_at == clock.now


def test_mark_processed_drains_the_inbox_depth(store: SyncStore) -> None:
    a, _ = store.accept_events("hubspot", [_event("a"), _event("b")]).new_ids
    assert store.inbox_depth() == 2
    assert store.record_attempt(a) == 1
    assert store.mark_processed(a) is True
    assert store.mark_processed(a) is False
    assert store.inbox_depth() == 1
    done = store.get_inbox_event(a)
    assert done is not None and done.processed_at is not None and done.attempts == 2


def test_cursors_are_per_source_and_stream(store: SyncStore) -> None:
    assert store.get_cursor("hubspot", "deals") is None
    store.set_cursor("hubspot", "deals", "2024-05-01T00:00:00Z")
    store.set_cursor("hubspot", "contacts", "c-1")
    store.set_cursor("hubspot", "deals", "2024-05-02T00:00:00Z")
    assert store.get_cursor("hubspot", "deals") == "2024-05-02T00:00:00Z"
    assert store.get_cursor("hubspot", "contacts") == "c-1"
    assert store.get_cursor("pipedrive", "deals") is None


def test_inbox_depth_counts_only_rows_still_pending(store: SyncStore, clock: FakeClock) -> None:
    # Given three accepted and enqueued events
    ids = store.accept_events("hubspot", [_event("a"), _event("b"), _event("c")]).new_ids
    store.mark_enqueued(ids)
    assert store.inbox_depth() == 3
    # When one is processed and the message of another becomes a dead letter
    store.mark_processed(ids[0])
    dead = store.add_dead_letter(
        queue="inbox",
        actor="process_inbox_event",
        message_id="m",
        payload={"args": [ids[1]]},
        reason="not retryable",
        inbox_id=ids[1],
    )
    # Then only the third is pending, and the sweeper never resends the dead one
    assert store.inbox_depth() == 1
    clock.advance(timedelta(hours=1))
    overdue = store.pending_enqueue(timedelta(seconds=30), stale_after=timedelta(minutes=10))
    assert [event.id for event in overdue] == [ids[2]]
    # When the dead letter is replayed, its row is pending again
    store.mark_replayed(dead)
    assert store.inbox_depth() == 2


def test_sweep_is_not_starved_by_rows_processed_but_never_marked_enqueued(
    store: SyncStore, clock: FakeClock
) -> None:
    from sync_worker.intake import sweep_inbox

    # Given 30 rows a worker processed whose enqueue mark never landed, stored before 7 others
    stuck = store.accept_events("hubspot", [_event(f"s{n}") for n in range(30)]).new_ids
    for inbox_id in stuck:
        store.mark_processed(inbox_id)
    clock.advance(timedelta(seconds=1))
    waiting = store.accept_events("hubspot", [_event(f"w{n}") for n in range(7)]).new_ids
    clock.advance(timedelta(minutes=1))
    # When the sweeper runs with batches smaller than the stuck rows
    sent: list[int] = []
    result = sweep_inbox(store, sent.append, batch_size=5, max_batches=3)
    # Then only the unprocessed rows are sent, each once, oldest first, and the sweep is done
    assert sent == list(waiting)
    assert result.enqueued == 7 and not result.broker_failed
    assert store.pending_enqueue(timedelta(seconds=30)) == []


def test_pending_enqueue_pages_past_the_previous_batch(store: SyncStore, clock: FakeClock) -> None:
    ids = store.accept_events("hubspot", [_event(f"e{n}") for n in range(5)]).new_ids
    clock.advance(timedelta(minutes=1))
    first = store.pending_enqueue(timedelta(seconds=30), limit=2)
    assert [e.id for e in first] == list(ids[:2])
    # Nothing was marked, yet the next page starts after the last row of the first
    after = (first[-1].received_at, first[-1].id)
    second = store.pending_enqueue(timedelta(seconds=30), limit=2, after=after)
    assert [e.id for e in second] == list(ids[2:4])


def test_enqueued_before_resends_unprocessed_rows_at_once(store: SyncStore, clock: FakeClock) -> None:
    a, b = store.accept_events("hubspot", [_event("a"), _event("b")]).new_ids
    store.mark_enqueued([a, b])
    store.mark_processed(b)
    clock.advance(timedelta(seconds=5))
    lost_since = clock.now
    # Long before stale_after, a broker known to have lost its queue gets the unprocessed row back
    overdue = store.pending_enqueue(
        timedelta(seconds=30), stale_after=timedelta(minutes=10), enqueued_before=lost_since
    )
    assert [e.id for e in overdue] == [a]
    assert store.pending_enqueue(timedelta(seconds=30), stale_after=timedelta(minutes=10)) == []
