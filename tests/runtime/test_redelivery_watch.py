"""A killed worker's messages come back on Redis even while every live consumer is busy.

Dramatiq's Redis broker puts a dead worker's unacknowledged messages back during a maintenance
pass, which runs only inside a fetch; a consumer whose prefetch buffer is full does not fetch.
:class:`~sync_worker.broker.RedeliveryWatch` runs a zero-message fetch on every queue on a clock.
Real Redis (db 13), a real Dramatiq worker thread, a private key namespace per test.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import dramatiq
import pytest
import redis
from dramatiq import Worker

from sync_worker.broker import RedeliveryWatch, build_broker
from sync_worker.errors import ConfigError
from sync_worker.settings import Settings

from .conftest import REDIS_URL

pytestmark = pytest.mark.redis

HEARTBEAT_MS = 1_000
QUEUE = "watched"


@pytest.fixture
def namespace(redis_client: redis.Redis) -> Iterator[str]:
    name = f"watch-test-{uuid.uuid4().hex[:8]}"
    yield name
    keys = list(redis_client.scan_iter(f"{name}:*"))
    if keys:
        redis_client.delete(*keys)


def _broker(namespace: str, *, watch: float | None) -> dramatiq.Broker:
    return build_broker(
        Settings(redis_url=REDIS_URL),
        middleware=[],
        heartbeat_timeout_ms=HEARTBEAT_MS,
        namespace=namespace,
        redelivery_watch_s=watch,
    )


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _held_by_dead_worker(
    namespace: str, watch: float | None, redis_client: redis.Redis
) -> tuple[bool, list[str]]:
    """Run the scenario; return (dead worker's ack set still there after 4 heartbeats, messages done)."""
    live = _broker(namespace, watch=watch)
    done: list[str] = []
    release = threading.Event()
    started = threading.Event()

    @dramatiq.actor(broker=live, queue_name=QUEUE, actor_name=f"job_{namespace.replace('-', '_')}")
    def job(name: str) -> None:
        if name.startswith("blocker"):
            started.set()
            release.wait(30)
        done.append(name)

    # Given a message fetched by a worker that then died (its ack set stays, its heartbeat ages)
    dead = _broker(namespace, watch=None)
    dead.declare_queue(QUEUE)
    dead.enqueue(job.message("orphan"))
    assert dead.do_fetch(QUEUE, 1)  # type: ignore[attr-defined]
    dead_acks = f"{namespace}:__acks__.{dead.broker_id}.{QUEUE}"  # type: ignore[attr-defined]
    assert redis_client.scard(dead_acks) == 1
    # And a live worker (one thread, prefetch two) whose consumer is full: two long messages
    live.enqueue(job.message("blocker-1"))
    live.enqueue(job.message("blocker-2"))
    worker = Worker(live, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        assert started.wait(10)
        # When four heartbeat timeouts pass with the live consumer too busy to fetch
        time.sleep(4 * HEARTBEAT_MS / 1000)
        still_held = bool(redis_client.exists(dead_acks))
        release.set()
        _wait(lambda: len(done) == 3, 10)
    finally:
        release.set()
        worker.stop()
        live.close()
        dead.close()
    return still_held, sorted(done)


def test_a_dead_workers_message_is_put_back_while_every_consumer_is_busy(
    namespace: str, redis_client: redis.Redis
) -> None:
    still_held, done = _held_by_dead_worker(namespace, 0.2, redis_client)
    # Then the watch put the orphan back though no consumer fetched, and it ran once
    assert not still_held
    assert done == ["blocker-1", "blocker-2", "orphan"]


def test_without_the_watch_the_message_waits_for_a_consumer_to_fetch(
    namespace: str, redis_client: redis.Redis
) -> None:
    # The counterpart: Dramatiq alone leaves the orphan held while the consumer is full
    still_held, _ = _held_by_dead_worker(namespace, None, redis_client)
    assert still_held


def test_the_watch_refuses_a_non_positive_interval() -> None:
    with pytest.raises(ConfigError, match="interval"):
        RedeliveryWatch(0)
