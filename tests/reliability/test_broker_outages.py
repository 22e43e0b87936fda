"""Broker restarts and database outages, on each broker (Redis and RabbitMQ, both real).

Every scenario feeds signed HubSpot webhooks through the real receiver into the store and the broker
``SYNC_BROKER_URL`` names, then drains them with a real Dramatiq worker whose middleware counts each
``process_inbox_event`` run by inbox id. Done means: every acknowledged event processed (0 lost),
none run successfully twice (0 written twice), and no dead letter.

* A broker restarted while messages wait: RabbitMQ's durable queues keep every one (the sweeper has
  nothing to re-send); Redis without persistence loses them and the sweeper re-sends each once.
* A broker down while webhooks arrive: every webhook still gets its 2xx (stored, not queued),
  ``/readyz`` says 503; once the broker is back the sweeper queues what the outage left behind.
* The PostgreSQL database unreachable while messages wait (connections refused and cut with
  ``ALLOW_CONNECTIONS false`` + ``pg_terminate_backend``,
  https://www.postgresql.org/docs/current/sql-alterdatabase.html): the worker's runs fail, are
  retried by Dramatiq, and succeed once the database is back.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dramatiq
import psycopg
import pytest

from sync_worker.actors import INBOX_QUEUE, broker_enqueue, clear_actors, configure_actors
from sync_worker.broker import (
    UNBOUND_BROKER,
    broker_middleware,
    build_broker,
    install_broker,
    queue_loss_watch,
)
from sync_worker.intake import sweep_inbox
from sync_worker.mappings import MappingsHolder
from sync_worker.scheduler import QUEUE_WATCH_SECONDS, Scheduler, queue_loss_job
from sync_worker.settings import default_mappings_dir
from sync_worker.store import SyncStore, upgrade_database
from tests.conftest import service_unavailable
from tests.receiver.conftest import Harness, make_connectors, make_settings
from tests.store.conftest import PG_ADMIN_DSN

from .brokers import BrokerUnderTest, RestartableBroker, RestartableRedis
from .conftest import FIGURES, RedisServer
from .test_intake_outages import post

pytestmark = [pytest.mark.slow, pytest.mark.redis]


BATCHES = 6  # four events each
# What a restart does to the messages waiting on each broker (the module docstring).
KEEPS_QUEUE_ON_RESTART = {"redis": False, "rabbitmq": True}


class RunCounter(dramatiq.Middleware):
    """Counts each run of an inbox id (alone or in a delivery message): successes and failures apart."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: Counter[int] = Counter()
        self.failed: Counter[int] = Counter()

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        if message.actor_name not in ("process_inbox_event", "process_inbox_delivery"):
            return
        first = message.args[0]
        ids = [int(i) for i in first] if isinstance(first, list) else [int(first)]
        with self.lock:
            for inbox_id in ids:
                (self.done if exception is None else self.failed)[inbox_id] += 1


class Service:
    """Receiver, broker and (once started) one in-process worker on ``broker_url``."""

    def __init__(self, store: SyncStore, broker_url: str) -> None:
        self.store = store
        self.counter = RunCounter()
        self.settings = make_settings(broker_url=broker_url)
        middleware = broker_middleware(
            max_retries=200, min_backoff_ms=100, max_backoff_ms=1_000, extra=[self.counter]
        )
        self.broker = build_broker(self.settings, middleware=middleware)
        self.holder = MappingsHolder(default_mappings_dir(), interval=60.0)
        self.harness = Harness(
            self.settings,
            store,
            self.broker,
            make_connectors(self.settings, self.holder.current),
            self.holder,
        )
        self.worker: dramatiq.Worker | None = None
        self.acknowledged = 0

    def webhooks(self, batches: range) -> list[dict[str, int]]:
        answers = []
        for batch in batches:
            status, answer, _ = post(self.harness, batch)
            assert status == 200, answer
            self.acknowledged += answer["accepted"]
            answers.append(answer)
        return answers

    def start_worker(self) -> None:
        install_broker(self.broker)
        configure_actors(self.store)
        self.worker = dramatiq.Worker(self.broker, worker_threads=2, worker_timeout=100)
        self.worker.start()

    def drained(self, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.store.inbox_depth() == 0:
                return True
            time.sleep(0.1)
        return False

    def idle(self, broker: BrokerUnderTest, timeout: float = 60.0) -> bool:
        """True once ``broker`` holds no inbox message, ready or unacknowledged."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if broker.ready(INBOX_QUEUE) == 0 and broker.unacked(INBOX_QUEUE) == 0:
                return True
            time.sleep(0.2)
        return False

    def sweep(self) -> int:
        """The sweeper's pass, treating every queued-but-unprocessed event as overdue."""
        result = sweep_inbox(
            self.store, broker_enqueue(self.broker), older_than=timedelta(0), stale_after=timedelta(0)
        )
        assert not result.broker_failed
        return result.enqueued

    def assert_each_applied_once(self) -> None:
        ids = range(1, self.acknowledged + 1)
        assert self.store.inbox_depth() == 0
        assert self.store.get_inbox_event(self.acknowledged + 1) is None
        assert all((e := self.store.get_inbox_event(i)) is not None and e.processed_at for i in ids)
        assert set(self.counter.done) == set(ids)  # 0 lost
        assert [i for i, runs in self.counter.done.items() if runs > 1] == []  # 0 run twice
        assert self.store.list_dead_letters() == []

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        clear_actors()
        install_broker(UNBOUND_BROKER)
        self.harness.close()
        self.broker.close()
        self.holder.stop()


@pytest.fixture
def service_factory() -> Iterator[Any]:
    made: list[Service] = []

    def make(store: SyncStore, broker_url: str) -> Service:
        made.append(Service(store, broker_url))
        return made[-1]

    yield make
    for service in made:
        service.close()


def test_broker_restarted_with_messages_waiting_loses_nothing(
    restartable_broker: RestartableBroker, store: SyncStore, service_factory: Any
) -> None:
    service = service_factory(store, restartable_broker.url)
    # Given acknowledged webhooks whose messages wait on the broker, no worker running
    answers = service.webhooks(range(BATCHES))
    assert all(a["queued"] == a["accepted"] > 0 for a in answers)
    messages = len(answers)  # one message per delivery, whatever its number of events
    assert restartable_broker.ready(INBOX_QUEUE) == messages
    # When the broker restarts
    restartable_broker.restart()
    kept = restartable_broker.ready(INBOX_QUEUE)
    # Then RabbitMQ still holds every message; Redis without persistence holds none
    keeps = KEEPS_QUEUE_ON_RESTART[restartable_broker.kind]
    assert kept == (messages if keeps else 0)
    # And a worker runs until the broker has nothing left for it
    service.start_worker()
    assert service.idle(restartable_broker)
    # Then what is still unprocessed is what the restart lost: nothing on RabbitMQ, all on Redis
    lost = store.inbox_depth()
    assert lost == (0 if keeps else service.acknowledged)
    # And the sweeper re-sends exactly that, and every event is applied once
    swept = service.sweep()
    assert swept == lost
    assert service.drained(), service.store.inbox_depth()
    service.assert_each_applied_once()
    FIGURES[f"broker restart with messages waiting ({restartable_broker.kind})"] = {
        "acknowledged": service.acknowledged,
        "kept_by_broker": kept,
        "lost_by_broker": lost,
        "resent_by_sweeper": swept,
        "lost": 0,
        "run_twice": 0,
    }


def test_redis_losing_its_queue_is_noticed_and_recovered_in_seconds_by_the_scheduler(
    tmp_path: Path, store: SyncStore, service_factory: Any
) -> None:
    # Given a Redis broker without persistence and the scheduler's queue watch already running
    server = RedisServer(tmp_path)
    server.start()
    try:
        redis_broker = RestartableRedis(server)
        service = service_factory(store, redis_broker.url)
        install_broker(service.broker)
        watch = queue_loss_watch(service.broker)
        assert watch is not None
        stop = threading.Event()
        scheduler = Scheduler([queue_loss_job(watch)], tick=0.2)
        thread = threading.Thread(target=scheduler.run, args=(stop,), daemon=True)
        thread.start()
        try:
            # And acknowledged webhooks whose messages wait on it, no worker running yet
            answers = service.webhooks(range(BATCHES))
            assert redis_broker.ready(INBOX_QUEUE) == len(answers)
            # When Redis restarts empty, and a worker starts
            redis_broker.restart()
            restarted = time.monotonic()
            assert redis_broker.ready(INBOX_QUEUE) == 0
            service.start_worker()
            # Then the scheduler notices the loss and every event is applied once, within seconds,
            # with no sweep of stale rows (that one waits STALE_AFTER, ten minutes)
            assert service.drained(timeout=60.0), service.store.inbox_depth()
            recovered = time.monotonic() - restarted
        finally:
            stop.set()
            thread.join(10)
        service.assert_each_applied_once()
        assert recovered < QUEUE_WATCH_SECONDS + 30.0
    finally:
        server.stop()
    FIGURES["redis lost its queue, scheduler watching (redis)"] = {
        "acknowledged": service.acknowledged,
        "lost": 0,
        "run_twice": 0,
        "recovered_s": round(recovered, 1),
    }


def test_broker_down_during_intake_every_acknowledged_event_is_applied_once(
    restartable_broker: RestartableBroker, store: SyncStore, service_factory: Any
) -> None:
    service = service_factory(store, restartable_broker.url)
    service.webhooks(range(2))
    service.start_worker()
    assert service.drained()
    # When the broker goes down while webhooks arrive
    restartable_broker.stop()
    started = time.monotonic()
    answers = service.webhooks(range(2, 2 + BATCHES))
    slowest = (time.monotonic() - started) / BATCHES
    # Then each is answered 2xx, stored but not queued, and the receiver is not ready
    assert all(a["queued"] == 0 and a["accepted"] > 0 for a in answers)
    assert service.harness.client.get("/readyz").status_code == 503
    # When it is back and the sweeper runs
    restartable_broker.start()
    assert service.harness.client.get("/readyz").status_code == 200
    assert service.sweep() == sum(a["accepted"] for a in answers)
    # Then the worker (reconnected on its own) applies every acknowledged event once
    assert service.drained(), service.store.inbox_depth()
    service.assert_each_applied_once()
    FIGURES[f"broker down during intake ({restartable_broker.kind})"] = {
        "acknowledged": service.acknowledged,
        "lost": 0,
        "run_twice": 0,
        "mean_2xx_during_outage_s": round(slowest, 3),
    }


@pytest.fixture
def pg_store() -> Iterator[tuple[SyncStore, str]]:
    """A migrated PostgreSQL database of its own, with its store; dropped afterwards."""
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        service_unavailable(f"PostgreSQL at 127.0.0.1:5432 (database test) does not answer: {exc}")
    name = f"sync_outage_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}?connect_timeout=2"
    upgrade_database(url)
    store = SyncStore(url)
    try:
        yield store, name
    finally:
        store.close()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _database_reachable(name: str, reachable: bool) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(reachable).lower()}')
        if not reachable:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )


@pytest.mark.postgres
def test_database_outage_while_messages_wait_loses_nothing_and_applies_nothing_twice(
    broker_under_test: BrokerUnderTest, pg_store: tuple[SyncStore, str], service_factory: Any
) -> None:
    store, name = pg_store
    service = service_factory(store, broker_under_test.url)
    # Given acknowledged webhooks queued on the broker
    answers = service.webhooks(range(BATCHES))
    assert all(a["queued"] == a["accepted"] > 0 for a in answers)
    # When the database stops taking connections and a worker starts on the queue
    _database_reachable(name, False)
    try:
        service.start_worker()
        deadline = time.monotonic() + 30
        while sum(service.counter.failed.values()) < service.acknowledged and time.monotonic() < deadline:
            time.sleep(0.1)
        failed_runs = sum(service.counter.failed.values())
        assert failed_runs >= service.acknowledged  # every message hit the outage at least once
        assert sum(service.counter.done.values()) == 0
    finally:
        # And the database comes back
        _database_reachable(name, True)
    # Then the retried messages apply every event, each once
    assert service.drained(), store.inbox_depth()
    service.assert_each_applied_once()
    FIGURES[f"database outage with messages waiting ({broker_under_test.kind})"] = {
        "acknowledged": service.acknowledged,
        "failed_runs_during_outage": failed_runs,
        "lost": 0,
        "run_twice": 0,
    }
