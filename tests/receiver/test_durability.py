"""Durability: store before 2xx, Redis outages, the sweeper, store outages, processing once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta

import dramatiq
import pytest
import redis
from dramatiq.brokers.stub import StubBroker

from sync_worker.actors import broker_enqueue, clear_actors, configure_actors, process_inbox_event
from sync_worker.broker import UNBOUND_BROKER, build_broker, check_broker, install_broker
from sync_worker.errors import ConfigError, TransientError
from sync_worker.intake import handle_inbox_event, sweep_inbox
from sync_worker.store import SyncStore
from tests.receiver.conftest import CLOSED_REDIS_URL, REDIS_TEST_URL, Harness, make_settings
from tests.receiver.test_webhooks import HUBSPOT_BODY, hubspot_headers

HS_URL = "http://testserver/webhooks/hubspot"
QUEUE_KEY = "sync-worker:inbox"


def post_hubspot(harness: Harness, body: bytes = HUBSPOT_BODY) -> dict[str, int]:
    response = harness.client.post(HS_URL, content=body, headers=hubspot_headers(HS_URL, body))
    assert response.status_code == 200, response.text
    answer: dict[str, int] = response.json()
    return answer


@pytest.mark.redis
def test_redis_down_still_2xx_then_the_sweeper_enqueues_once_redis_is_back(
    make_harness: Callable[..., Harness], store: SyncStore, redis_client: redis.Redis
) -> None:
    # Given a receiver whose broker points at a closed port
    down = build_broker(make_settings(redis_url=CLOSED_REDIS_URL))
    harness = make_harness(broker=down)
    with pytest.raises(TransientError):
        check_broker(down)
    # When webhooks arrive
    started = time.perf_counter()
    answer = post_hubspot(harness)
    elapsed = time.perf_counter() - started
    # Then they are answered 2xx, stored, and left un-enqueued for the sweeper
    assert answer["accepted"] >= 1
    assert answer["queued"] == 0
    assert elapsed < 5.0
    pending = store.pending_enqueue(timedelta(0), 100)
    assert [event.id for event in pending] == sorted(event.id for event in pending)
    assert len(pending) == answer["accepted"]
    assert harness.metrics.value(
        "sync_worker_webhook_events_total", {"source": "hubspot", "outcome": "enqueue_failed"}
    ) == float(answer["accepted"])
    # And a sweep against the dead broker changes nothing
    failed = sweep_inbox(store, broker_enqueue(down), older_than=timedelta(0))
    assert (failed.enqueued, failed.broker_failed) == (0, True)
    assert len(store.pending_enqueue(timedelta(0), 100)) == answer["accepted"]
    # When the sweeper is given a working broker (real Redis, db 15)
    working = build_broker(make_settings(redis_url=REDIS_TEST_URL))
    check_broker(working)
    swept = sweep_inbox(store, broker_enqueue(working), older_than=timedelta(0))
    # Then every stored event is on the Redis queue exactly once and marked enqueued
    assert (swept.enqueued, swept.broker_failed) == (answer["accepted"], False)
    assert redis_client.hlen(f"{QUEUE_KEY}.msgs") == answer["accepted"]
    assert store.pending_enqueue(timedelta(0), 100) == []
    assert sweep_inbox(store, broker_enqueue(working), older_than=timedelta(0)).enqueued == 0
    # And a Dramatiq worker on that Redis applies each event once
    install_broker(working)
    configure_actors(store)
    worker = dramatiq.Worker(working, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while store.inbox_depth() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
        working.close()
        down.close()
    assert store.inbox_depth() == 0


@pytest.mark.redis
def test_with_redis_up_the_request_enqueues_directly(
    make_harness: Callable[..., Harness], store: SyncStore, redis_client: redis.Redis
) -> None:
    working = build_broker(make_settings(redis_url=REDIS_TEST_URL))
    harness = make_harness(broker=working)
    answer = post_hubspot(harness)
    assert answer["queued"] == answer["accepted"] > 1
    # One message on Redis for the whole delivery, carrying every inbox id
    (raw,) = redis_client.hvals(f"{QUEUE_KEY}.msgs")
    message = dramatiq.Message.decode(raw)
    assert message.actor_name == "process_inbox_delivery"
    stored = store.pending_enqueue(timedelta(0), 100, stale_after=timedelta(0))
    assert message.args == ([event.id for event in stored],) and len(stored) == answer["accepted"]
    assert store.pending_enqueue(timedelta(0), 100) == []
    ready = harness.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    working.close()


def test_sweeper_leaves_recent_events_to_their_request(
    store: SyncStore, make_harness: Callable[..., Harness]
) -> None:
    down = build_broker(make_settings(redis_url=CLOSED_REDIS_URL))
    harness = make_harness(broker=down)
    answer = post_hubspot(harness)
    stub = StubBroker()
    result = sweep_inbox(store, broker_enqueue(stub), older_than=timedelta(minutes=5))
    assert result.enqueued == 0
    assert len(store.pending_enqueue(timedelta(0), 100)) == answer["accepted"]
    down.close()


class FlakyEnqueue:
    """An enqueue that fails like Redis does while ``down`` is set."""

    def __init__(self) -> None:
        self.down = True
        self.sent: list[int] = []

    def __call__(self, inbox_id: int) -> None:
        if self.down:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
        self.sent.append(inbox_id)


def test_background_sweeper_in_the_app_lifespan(
    make_harness: Callable[..., Harness], store: SyncStore
) -> None:
    flaky = FlakyEnqueue()
    harness = make_harness(enqueue=flaky, sweep_interval=0.05, sweep_older_than=timedelta(0))
    answer = post_hubspot(harness)
    assert answer["queued"] == 0

    async def run_lifespan() -> None:
        # Given the app running (its lifespan started the sweeper)
        async with harness.app.router.lifespan_context(harness.app):
            await asyncio.sleep(0.2)
            assert flaky.sent == []  # broker still down: nothing sent, nothing lost
            # When the broker comes back
            flaky.down = False
            deadline = time.monotonic() + 10
            while len(flaky.sent) < answer["accepted"] and time.monotonic() < deadline:
                await asyncio.sleep(0.05)

    asyncio.run(run_lifespan())
    # Then the sweeper enqueued every stored event once
    assert sorted(flaky.sent) == sorted(set(flaky.sent))
    assert len(flaky.sent) == answer["accepted"]
    assert store.pending_enqueue(timedelta(0), 100) == []
    assert harness.metrics.value("sync_worker_inbox_depth") == float(answer["accepted"])


def test_store_unavailable_is_503_and_nothing_is_queued(make_harness: Callable[..., Harness]) -> None:
    dead_store = SyncStore("postgresql://postgres@127.0.0.1:1/test")
    harness = make_harness(the_store=dead_store)
    response = harness.client.post(
        HS_URL, content=HUBSPOT_BODY, headers=hubspot_headers(HS_URL, HUBSPOT_BODY)
    )
    assert response.status_code == 503
    assert response.json()["error"] == "store_unavailable"
    assert response.headers["retry-after"] == "30"
    assert "postgres" not in response.text
    assert harness.broker.queues["inbox"].qsize() == 0
    ready = harness.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["failed"] == ["store"]
    metrics = harness.client.get("/metrics")
    assert metrics.status_code == 200
    assert "sync_worker_inbox_depth NaN" in metrics.text
    dead_store.close()


def test_stub_broker_worker_processes_each_event_once(
    make_harness: Callable[..., Harness], store: SyncStore, stub_broker: StubBroker
) -> None:
    # Given events accepted and queued on Dramatiq's stub broker, one message sent twice
    harness = make_harness()
    answer = post_hubspot(harness)
    first_id = store.get_inbox_event(1)
    assert first_id is not None
    stub_broker.enqueue(process_inbox_event.message(first_id.id))
    install_broker(stub_broker)
    configure_actors(store)
    # When a worker drains the queue
    worker = dramatiq.Worker(stub_broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        stub_broker.join(process_inbox_event.queue_name, fail_fast=True)
        worker.join()
    finally:
        worker.stop()
    # Then every event is processed, the duplicate message was a no-op
    assert store.inbox_depth() == 0
    processed = [store.get_inbox_event(i) for i in range(1, answer["accepted"] + 1)]
    assert all(event is not None and event.processed_at is not None for event in processed)
    assert all(event is not None and event.attempts == 1 for event in processed)


def test_handle_inbox_event_normalises_and_is_idempotent(
    store: SyncStore, make_harness: Callable[..., Harness]
) -> None:
    post_hubspot(make_harness())
    seen: list[str] = []

    def normalise(event: object) -> None:
        seen.append(type(event).__name__)
        return None

    first = handle_inbox_event(store, 1, normalisers={"hubspot": normalise})
    again = handle_inbox_event(store, 1, normalisers={"hubspot": normalise})
    missing = handle_inbox_event(store, 999)
    assert (first.outcome, again.outcome, missing.outcome) == ("processed", "already_processed", "missing")
    assert seen == ["WebhookEvent"]


def test_unbound_actor_refuses_to_send_and_unconfigured_actor_refuses_to_run() -> None:
    probe = dramatiq.Actor(
        process_inbox_event.fn,
        broker=UNBOUND_BROKER,
        actor_name="unbound_probe",
        queue_name="probe",
        priority=0,
        options={},
    )
    with pytest.raises(ConfigError, match="install_broker"):
        probe.send(1)
    UNBOUND_BROKER.actors.pop("unbound_probe")
    clear_actors()
    with pytest.raises(ConfigError, match="configure_actors"):
        process_inbox_event.fn(1)
