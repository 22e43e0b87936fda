"""Intake under outages: Redis stopped and restarted, the database unreachable.

Redis: a private ``redis-server`` (never the shared one) is killed while signed HubSpot webhooks
arrive, then restarted empty on the same port. The receiver keeps answering 2xx (the events are
durable in the store), the sweeper enqueues what the outage left behind, and a real Dramatiq worker
applies every acknowledged event once.

Database: the receiver's store points at a PostgreSQL port nothing listens on, or at a SQLite file
made read-only; webhooks are answered 503 with ``Retry-After`` (so the sender retries) and nothing is
acknowledged. When the database is back, the sender's retry is stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker

from sync_worker.actors import broker_enqueue, clear_actors, configure_actors
from sync_worker.broker import UNBOUND_BROKER, build_broker, install_broker
from sync_worker.intake import sweep_inbox
from sync_worker.mappings import MappingsHolder
from sync_worker.settings import default_mappings_dir
from sync_worker.store import SyncStore
from tests.receiver.conftest import Harness, fixture_bytes, make_connectors, make_settings
from tests.receiver.test_webhooks import hubspot_headers

from .conftest import FIGURES, RedisServer, free_port

pytestmark = [pytest.mark.slow, pytest.mark.redis]

HS_URL = "http://testserver/webhooks/hubspot"
# The documented delivery's shape (tests/connectors/fixtures/hubspot/webhook_events.json), as deal events.
_TEMPLATE = [
    {
        **event,
        "subscriptionType": "deal.propertyChange",
        "propertyName": "dealstage",
        "propertyValue": "closedwon",
    }
    for event in json.loads(fixture_bytes("hubspot", "webhook_events.json"))[:4]
]


def hubspot_body(batch: int) -> bytes:
    """Four HubSpot deal events with ids unique to ``batch``."""
    events = [
        {**event, "eventId": batch * 1000 + n, "objectId": batch * 1000 + n}
        for n, event in enumerate(_TEMPLATE)
    ]
    return json.dumps(events).encode()


def post(harness: Harness, batch: int) -> tuple[int, dict[str, int], float]:
    body = hubspot_body(batch)
    started = time.perf_counter()
    response = harness.client.post(HS_URL, content=body, headers=hubspot_headers(HS_URL, body))
    return response.status_code, response.json(), time.perf_counter() - started


@pytest.fixture
def holder() -> MappingsHolder:
    return MappingsHolder(default_mappings_dir(), interval=60.0)


@pytest.fixture
def worker_cleanup() -> Iterator[list[dramatiq.Worker]]:
    workers: list[dramatiq.Worker] = []
    yield workers
    for worker in workers:
        worker.stop()
    clear_actors()
    install_broker(UNBOUND_BROKER)


def _drain(
    store: SyncStore, broker: RedisBroker, workers: list[dramatiq.Worker], timeout: float = 30.0
) -> None:
    install_broker(broker)
    configure_actors(store)
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    workers.append(worker)
    worker.start()
    deadline = time.monotonic() + timeout
    while store.inbox_depth() and time.monotonic() < deadline:
        time.sleep(0.05)


def _processed(store: SyncStore, ids: range) -> int:
    return sum(1 for i in ids if (event := store.get_inbox_event(i)) is not None and event.processed_at)


def test_redis_restarted_during_intake_nothing_acknowledged_is_lost(
    private_redis: RedisServer,
    store: SyncStore,
    holder: MappingsHolder,
    worker_cleanup: list[dramatiq.Worker],
) -> None:
    settings = make_settings(redis_url=private_redis.url)
    broker = build_broker(settings)
    harness = Harness(settings, store, broker, make_connectors(settings, holder.current), holder)
    acknowledged = 0
    try:
        # Given webhooks accepted and applied while Redis is up
        for batch in range(3):
            status, answer, _ = post(harness, batch)
            assert status == 200 and answer["queued"] == answer["accepted"] > 0
            acknowledged += answer["accepted"]
        _drain(store, broker, worker_cleanup)
        assert store.inbox_depth() == 0
        worker_cleanup.pop().stop()
        # When Redis dies while more webhooks arrive
        private_redis.stop()
        slowest = 0.0
        for batch in range(3, 8):
            status, answer, elapsed = post(harness, batch)
            # Then each is still answered 2xx quickly, stored but not queued
            assert status == 200, answer
            assert answer["queued"] == 0 and answer["accepted"] > 0
            acknowledged += answer["accepted"]
            slowest = max(slowest, elapsed)
        assert slowest < 5.0
        assert harness.client.get("/readyz").status_code == 503
        # When Redis comes back (empty: no persistence) and the sweeper runs
        private_redis.start()
        swept = sweep_inbox(store, broker_enqueue(broker), older_than=timedelta(0))
        assert (swept.enqueued, swept.broker_failed) == (5 * len(_TEMPLATE), False)
        status, answer, _ = post(harness, 8)
        assert status == 200 and answer["queued"] == answer["accepted"]
        acknowledged += answer["accepted"]
        # Then a worker applies every acknowledged event exactly once
        _drain(store, broker, worker_cleanup)
        assert store.inbox_depth() == 0
        assert store.get_inbox_event(acknowledged + 1) is None  # nothing stored beyond what was acknowledged
        assert _processed(store, range(1, acknowledged + 1)) == acknowledged
        assert harness.client.get("/readyz").status_code == 200
    finally:
        harness.close()
        broker.close()
    FIGURES["redis restarted during intake"] = {
        "acknowledged": acknowledged,
        "processed": acknowledged,
        "lost": 0,
        "slowest_2xx_during_outage_s": round(slowest, 3),
    }


def test_events_queued_when_redis_loses_its_data_are_swept_again(
    private_redis: RedisServer,
    store: SyncStore,
    holder: MappingsHolder,
    worker_cleanup: list[dramatiq.Worker],
) -> None:
    settings = make_settings(redis_url=private_redis.url)
    broker = build_broker(settings)
    harness = Harness(settings, store, broker, make_connectors(settings, holder.current), holder)
    try:
        # Given events accepted and queued, but no worker ran yet
        status, answer, _ = post(harness, 1)
        assert status == 200 and answer["queued"] == answer["accepted"] > 0
        # When Redis restarts empty and the sweeper runs once their messages are overdue
        private_redis.stop()
        private_redis.start()
        sweep_inbox(store, broker_enqueue(broker), older_than=timedelta(0), stale_after=timedelta(0))
        _drain(store, broker, worker_cleanup, timeout=5.0)
        # Then the acknowledged events are applied anyway, and a later sweep sends nothing more
        assert store.inbox_depth() == 0
        assert sweep_inbox(store, broker_enqueue(broker), stale_after=timedelta(0)).enqueued == 0
    finally:
        harness.close()
        broker.close()


@pytest.mark.parametrize("outage", ["postgres-closed-port", "sqlite-missing-directory"])
def test_database_unavailable_answers_503_and_acknowledges_nothing(
    outage: str, db_path: Path, holder: MappingsHolder
) -> None:
    from dramatiq.brokers.stub import StubBroker

    if outage == "postgres-closed-port":
        url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test?connect_timeout=1"
    else:
        url = f"sqlite:///{db_path.parent / 'unmounted' / 'store.db'}"  # the volume is not there
    down = SyncStore(url)
    settings = make_settings()
    broker = StubBroker()
    harness = Harness(settings, down, broker, make_connectors(settings, holder.current), holder)
    try:
        # When a webhook arrives while the database cannot take it
        body = hubspot_body(1)
        response = harness.client.post(HS_URL, content=body, headers=hubspot_headers(HS_URL, body))
        # Then the answer is 503 with Retry-After: the sender keeps the event and retries
        assert response.status_code == 503, response.text
        assert response.headers.get("retry-after")
        assert "error" in response.json()
        assert harness.client.get("/readyz").status_code == 503
        assert broker.queues.get("inbox") is None or broker.queues["inbox"].qsize() == 0
    finally:
        harness.close()
        down.close()
    # When the database is back, the sender's retry is stored once
    up = SyncStore(f"sqlite:///{db_path}")
    if True:
        again = Harness(settings, up, broker, make_connectors(settings, holder.current), holder)
        try:
            response = again.client.post(HS_URL, content=body, headers=hubspot_headers(HS_URL, body))
            assert response.status_code == 200
            assert up.inbox_depth() == len(_TEMPLATE)
        finally:
            again.close()
            up.close()
