"""One push per target at a time, so two workers never send the same outbox items twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from sync_worker.actors import LocalPushLock, PushLock
from sync_worker.errors import TransientError
from sync_worker.runtime import redis_push_lock
from tests.conftest import service_unavailable

from .conftest import REDIS_URL


def _hold_in_thread(
    lock_for: PushLock, target: str, held: threading.Event, release: threading.Event
) -> threading.Thread:
    def run() -> None:
        with lock_for(target):
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
    lock = LocalPushLock(wait=0.2)
    held, release = threading.Event(), threading.Event()
    thread = _hold_in_thread(lock, "hubspot", held, release)
    with lock("pipedrive"):
        pass  # another target is not blocked
    started = time.monotonic()
    with pytest.raises(TransientError, match="hubspot"), lock("hubspot"):
        pass
    assert time.monotonic() - started >= 0.2
    release.set()
    thread.join()
    with lock("hubspot"):
        pass  # free again once released


def test_redis_lock_is_shared_by_every_worker(shared_redis: redis.Redis) -> None:
    # Two "workers" with their own clients and locks
    first = redis_push_lock(redis.Redis.from_url(REDIS_URL), wait=0.3)
    second = redis_push_lock(redis.Redis.from_url(REDIS_URL), wait=0.3)
    held, release = threading.Event(), threading.Event()
    thread = _hold_in_thread(first, "hubspot", held, release)
    with pytest.raises(TransientError, match="hubspot"), second("hubspot"):
        pass
    with second("pipedrive"):
        pass
    release.set()
    thread.join()
    with second("hubspot"):
        assert shared_redis.exists("sync-worker:lock:push:hubspot")
    assert not shared_redis.exists("sync-worker:lock:push:hubspot")
