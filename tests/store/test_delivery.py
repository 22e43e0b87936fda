"""Idempotency keys (also under concurrency), the outbox lifecycle and dead letters."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from sync_worker.store import SyncStore

from .fakes import FakeClock


def test_claim_key_is_true_once(store: SyncStore) -> None:
    assert store.claim_key("push:hubspot:1") is True
    assert store.claim_key("push:hubspot:1") is False
    assert store.key_result("push:hubspot:1") is None
    store.record_result("push:hubspot:1", {"ok": True, "external_id": "99"})
    assert store.key_result("push:hubspot:1") == {"ok": True, "external_id": "99"}
    with pytest.raises(KeyError):
        store.record_result("never-claimed", {"ok": False})
    store.release_key("push:hubspot:1")
    assert store.claim_key("push:hubspot:1") is True


def test_a_claim_left_without_result_is_taken_over_once_after_its_lease(
    store: SyncStore, clock: FakeClock
) -> None:
    start = clock.now
    assert store.claim_key("create:hubspot:lead:1", at=start)
    # A fresh claim is not taken over
    assert store.take_over_claim("create:hubspot:lead:1", claimed_before=start) is False
    # An old one is, by one caller, who now holds it from its own time
    later = start + timedelta(minutes=10)
    cutoff = later - timedelta(minutes=5)
    assert store.take_over_claim("create:hubspot:lead:1", claimed_before=cutoff, at=later) is True
    assert store.take_over_claim("create:hubspot:lead:1", claimed_before=cutoff, at=later) is False
    # A claim with a result is never taken over, however old
    store.record_result("create:hubspot:lead:1", {"external_id": "9"})
    assert store.take_over_claim("create:hubspot:lead:1", claimed_before=later + timedelta(days=1)) is False
    assert store.take_over_claim("never-claimed", claimed_before=later) is False


@pytest.mark.parametrize("threads", [8])
def test_claim_key_under_concurrency_has_one_winner(store: SyncStore, threads: int) -> None:
    # Given many workers racing for the same keys at the same instant
    keys = [f"k{n}" for n in range(5)]
    barrier = threading.Barrier(threads)

    def race(key: str) -> bool:
        barrier.wait(timeout=30)
        return store.claim_key(key)

    for key in keys:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(race, [key] * threads))
        # Then exactly one of them wins each key
        assert results.count(True) == 1, (key, results)


def test_outbox_lifecycle(store: SyncStore, clock: FakeClock) -> None:
    # Given two queued pushes (the second key repeated)
    first = store.enqueue_outbox("hubspot", "idem-1", {"deal": "1", "stage": "won"})
    second = store.enqueue_outbox("hubspot", "idem-2", {"deal": "2"})
    assert first is not None and second is not None
    assert store.enqueue_outbox("hubspot", "idem-1", {"deal": "1"}) is None
    assert [item.id for item in store.due_outbox(clock.now)] == [first, second]
    assert store.due_outbox(clock.now, target="pipedrive") == []
    # When the first fails with a retryable error
    retry_at = clock.now + timedelta(minutes=5)
    store.mark_outbox_failed(first, "429 rate limited", retry_at)
    # Then it waits until its next attempt
    assert [item.id for item in store.due_outbox(clock.now)] == [second]
    failed = store.get_outbox(first)
    assert failed is not None and failed.status == "failed" and failed.attempts == 1
    assert failed.last_error == "429 rate limited" and failed.next_attempt_at == retry_at
    assert failed.payload == {"deal": "1", "stage": "won"}
    assert [item.id for item in store.due_outbox(retry_at)] == [second, first]
    # When the second is sent it is never due again
    store.mark_outbox_sent(second)
    sent = store.get_outbox(second)
    assert sent is not None and sent.status == "sent" and sent.sent_at == clock.now and sent.attempts == 1
    # When the first fails for good it is dead
    store.mark_outbox_failed(first, "400 invalid stage", retry_at, dead=True)
    assert store.due_outbox(retry_at + timedelta(days=1)) == []
    dead = store.get_outbox(first)
    assert dead is not None and dead.status == "dead" and dead.attempts == 2
    assert store.due_outbox(retry_at, limit=0) == []


def test_outbox_respects_not_before(store: SyncStore, clock: FakeClock) -> None:
    later = clock.now + timedelta(hours=1)
    item = store.enqueue_outbox("pipedrive", "idem-x", {"a": 1}, not_before=later)
    assert store.due_outbox(clock.now) == []
    assert [i.id for i in store.due_outbox(later)] == [item]


def test_dead_letters(store: SyncStore, clock: FakeClock) -> None:
    first = store.add_dead_letter(
        queue="push",
        actor="push_updates",
        message_id="m-1",
        payload={"args": [1, 2]},
        reason="PermanentError: 400 from target",
        error_class="PermanentError",
    )
    clock.advance(timedelta(minutes=1))
    second = store.add_dead_letter(
        queue="pull", actor="pull_page", message_id="m-2", payload={}, reason="boom"
    )
    assert [d.id for d in store.list_dead_letters()] == [first, second]
    letter = store.get_dead_letter(first)
    assert (
        letter is not None and letter.payload == {"args": [1, 2]} and letter.error_class == "PermanentError"
    )
    assert store.get_dead_letter(9999) is None
    # Replayed letters leave the default list, and replay is recorded once
    assert store.mark_replayed(first) is True
    assert store.mark_replayed(first) is False
    assert [d.id for d in store.list_dead_letters()] == [second]
    assert [d.id for d in store.list_dead_letters(include_replayed=True)] == [first, second]
    replayed = store.get_dead_letter(first)
    assert replayed is not None and replayed.replayed_at == clock.now
    # Purging replayed ones keeps the rest; purging all empties it
    assert store.purge_dead_letters(replayed_only=True) == 1
    assert [d.id for d in store.list_dead_letters(include_replayed=True)] == [second]
    assert store.purge_dead_letters() == 1
    assert store.list_dead_letters(include_replayed=True) == []
