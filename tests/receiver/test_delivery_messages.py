"""One message per webhook delivery, on a real Redis broker with a real Dramatiq worker.

The worker handles the delivery's events together (one batch read, one transaction); a delivery
that fails is split into one message per event, so one bad event is dead-lettered alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dramatiq
import pytest
import redis

from sync_worker.actors import broker_enqueue, clear_actors, configure_actors
from sync_worker.broker import UNBOUND_BROKER, build_broker, install_broker
from sync_worker.canonical import CanonicalRecord, StageKey
from sync_worker.errors import PermanentError
from sync_worker.mappings import load_mappings
from sync_worker.store import SyncStore
from tests.engine.fakes import T0, FakeClock, FakeHubSpot
from tests.engine.world import World, deal, hs_event
from tests.receiver.conftest import REDIS_TEST_URL, make_settings

MAPPINGS_DIR = Path(__file__).resolve().parents[2] / "mappings"


@dataclass
class PickyHubSpot(FakeHubSpot):
    """A HubSpot whose batch read refuses one deal id (say, a deal it answers 400 for)."""

    refused: set[str] = field(default_factory=set)

    def read_deals(self, ids: Sequence[str]) -> list[CanonicalRecord]:
        if self.refused & set(ids):
            self.reads.append(list(ids))
            raise PermanentError(f"hubspot: 400 for deal(s) {sorted(self.refused & set(ids))}")
        return super().read_deals(ids)


@pytest.fixture
def world(store: SyncStore) -> World:
    built = World(store, load_mappings(MAPPINGS_DIR), FakeClock())
    picky = PickyHubSpot("hubspot")
    built.hubspot = picky
    built.service._connectors["hubspot"] = picky  # the service reads through the picky one
    return built


@pytest.fixture
def broker(redis_client: redis.Redis) -> Iterator[dramatiq.Broker]:
    real = build_broker(make_settings(redis_url=REDIS_TEST_URL))
    install_broker(real)
    try:
        yield real
    finally:
        clear_actors()
        install_broker(UNBOUND_BROKER)
        real.close()


def _run_worker(broker: dramatiq.Broker, store: SyncStore, ids: Sequence[int]) -> None:
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(_settled(store, i) for i in ids):
            time.sleep(0.05)
    finally:
        worker.stop()


def _settled(store: SyncStore, inbox_id: int) -> bool:
    event = store.get_inbox_event(inbox_id)
    dead = {letter.inbox_id for letter in store.list_dead_letters()}
    return event is not None and (event.processed_at is not None or inbox_id in dead)


@pytest.mark.redis
def test_a_delivery_is_one_message_read_in_one_batch(
    world: World, store: SyncStore, broker: dramatiq.Broker, redis_client: redis.Redis
) -> None:
    for deal_id in ("15", "16", "17"):
        world.hubspot.records[deal_id] = deal("hubspot", deal_id, StageKey.MEETING, T0)
    ids = list(store.accept_events("hubspot", [hs_event(n, str(14 + n)) for n in (1, 2, 3)]).new_ids)
    configure_actors(store, service=world.service)

    broker_enqueue(broker).many(ids)
    assert redis_client.hlen("sync-worker:inbox.msgs") == 1
    _run_worker(broker, store, ids)

    assert world.hubspot.reads == [["15", "16", "17"]]  # one batch read for the delivery
    assert all(_processed(store, i) for i in ids) and store.list_dead_letters() == []


@pytest.mark.redis
def test_a_failing_delivery_goes_on_event_by_event_and_only_the_bad_one_is_dead(
    world: World, store: SyncStore, broker: dramatiq.Broker
) -> None:
    assert isinstance(world.hubspot, PickyHubSpot)
    for deal_id in ("15", "16", "17"):
        world.hubspot.records[deal_id] = deal("hubspot", deal_id, StageKey.MEETING, T0)
    world.hubspot.refused = {"16"}
    ids = list(store.accept_events("hubspot", [hs_event(n, str(14 + n)) for n in (1, 2, 3)]).new_ids)
    configure_actors(store, service=world.service)

    broker_enqueue(broker).many(ids)
    _run_worker(broker, store, ids)

    assert [_processed(store, i) for i in ids] == [True, False, True]
    (letter,) = store.list_dead_letters()
    assert letter.inbox_id == ids[1] and letter.actor == "process_inbox_event"
    assert "400 for deal(s) ['16']" in letter.reason
    assert store.get_record("hubspot", "deal", "15") is not None
    assert store.get_record("hubspot", "deal", "16") is None


def _processed(store: SyncStore, inbox_id: int) -> bool:
    event = store.get_inbox_event(inbox_id)
    assert event is not None
    return event.processed_at is not None
