"""One push per target at a time, so two workers never send the same outbox items twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis
from dramatiq.brokers.stub import StubBroker

from sync_worker.actors import PUSH_BUSY_RETRY_MS, LocalPushLock, PushLock, configure_actors, push_target
from sync_worker.engine.model import PullStats, PushStats
from sync_worker.locks import RedisLock
from sync_worker.runtime import redis_push_lock
from sync_worker.store import SyncStore
from tests.conftest import service_unavailable

from .conftest import REDIS_URL, EnqueueLog


def _hold_in_thread(
    lock_for: PushLock, target: str, held: threading.Event, release: threading.Event
) -> threading.Thread:
    def run() -> None:
        with lock_for(target) as mine:
            assert mine
            held.set()
            release.wait(5)

    thread = threading.Thread(target=run)
    thread.start()
    assert held.wait(5)
    return thread


@pytest.fixture
def shared_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_unavailable(f"Redis at {REDIS_URL} does not answer: {exc}")
    client.delete("sync-worker:lock:push:hubspot", "sync-worker:lock:push:pipedrive")
    yield client
    client.delete("sync-worker:lock:push:hubspot", "sync-worker:lock:push:pipedrive")
    client.close()


def test_local_lock_serialises_one_target_and_leaves_others_free() -> None:
    lock = LocalPushLock()
    held, release = threading.Event(), threading.Event()
    thread = _hold_in_thread(lock, "hubspot", held, release)
    with lock("pipedrive") as other:
        assert other  # another target is not blocked
    started = time.monotonic()
    with lock("hubspot") as busy:
        assert not busy  # held elsewhere: told at once, never waits
    assert time.monotonic() - started < 0.1
    release.set()
    thread.join()
    with lock("hubspot") as free:
        assert free  # free again once released


def test_redis_lock_is_shared_by_every_worker(shared_redis: redis.Redis) -> None:
    # Two "workers" with their own clients and locks
    first = redis_push_lock(redis.Redis.from_url(REDIS_URL))
    second = redis_push_lock(redis.Redis.from_url(REDIS_URL))
    held, release = threading.Event(), threading.Event()
    thread = _hold_in_thread(first, "hubspot", held, release)
    with second("hubspot") as busy:
        assert not busy
    with second("pipedrive") as other:
        assert other
    release.set()
    thread.join()
    with second("hubspot") as mine:
        assert mine and shared_redis.exists("sync-worker:lock:push:hubspot")
    assert not shared_redis.exists("sync-worker:lock:push:hubspot")


def test_a_push_longer_than_the_lease_keeps_it_and_a_killed_holder_frees_it_within_the_lease(
    shared_redis: redis.Redis,
) -> None:
    # Given a push lock with a 1 s lease (renewed every third of it; shorter leases lose to a
    # starved renewal thread on a loaded 2-core machine)
    lock_for = redis_push_lock(redis.Redis.from_url(REDIS_URL), ttl=1.0)
    other = redis_push_lock(redis.Redis.from_url(REDIS_URL), ttl=1.0)
    # When a push holds it for three leases
    with lock_for("hubspot") as mine:
        assert mine
        time.sleep(3.0)
        # Then the holder's renewals kept it: nobody else got it meanwhile
        with other("hubspot") as busy:
            assert not busy
    assert not shared_redis.exists("sync-worker:lock:push:hubspot")
    # And a holder that dies without releasing (a SIGKILLed worker: the lease stays, nobody renews it)
    dead = RedisLock(redis.Redis.from_url(REDIS_URL), "push:hubspot", ttl=1.0)
    assert dead.acquire()
    with other("hubspot") as busy:
        assert not busy
    time.sleep(1.2)
    # frees the target within one lease
    with other("hubspot") as mine:
        assert mine


def test_a_busy_target_is_pushed_again_shortly_instead_of_blocking_a_worker(
    stub_broker: StubBroker, enqueue_log: EnqueueLog, store: SyncStore
) -> None:
    lock = LocalPushLock()
    configure_actors(store, service=_NeverCalled(), push_lock=lock, push_targets=("hubspot",))
    held, release = threading.Event(), threading.Event()
    thread = _hold_in_thread(lock, "hubspot", held, release)
    try:
        push_target.fn("hubspot")  # the actor body, as a worker thread runs it
    finally:
        release.set()
        thread.join()
    assert enqueue_log.named("push_target") == [("push_target", ("hubspot",), PUSH_BUSY_RETRY_MS)]


class _NeverCalled:
    def handle_inbox_event(self, inbox_id: int) -> None:
        raise AssertionError("not expected")

    def poll(self, source: str, stream: str, *, full: bool = False, progress: object = None) -> PullStats:
        raise AssertionError("not expected")

    def push(self, target: str, *, limit: int = 500) -> PushStats:
        raise AssertionError("a busy target must not be pushed")
