"""The scheduler's lease lock against the real Redis at 127.0.0.1:6379, database 14.

Skipped when Redis does not answer, unless SYNC_TEST_REQUIRE_SERVICES is set (then it fails).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from sync_worker.errors import ConfigError, TransientError
from sync_worker.locks import LOCK_PREFIX, RedisLock
from tests.conftest import REDIS_SERVER

REDIS_URL = f"{REDIS_SERVER}/14"

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def rds() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        if os.environ.get("SYNC_TEST_REQUIRE_SERVICES"):
            pytest.fail(f"Redis at {REDIS_URL} does not answer ({exc}) and SYNC_TEST_REQUIRE_SERVICES is set")
        pytest.skip(f"Redis at {REDIS_URL} does not answer ({exc}); SYNC_TEST_REQUIRE_SERVICES is not set")
    yield client
    client.close()


@pytest.fixture
def name(rds: redis.Redis) -> Iterator[str]:
    lock_name = f"test-scheduler-{uuid.uuid4().hex[:12]}"
    yield lock_name
    rds.delete(f"{LOCK_PREFIX}:{lock_name}")


def test_a_second_holder_is_refused(rds: redis.Redis, name: str) -> None:
    first = RedisLock(rds, name, ttl=10)
    second = RedisLock(rds, name, ttl=10)

    assert first.acquire() is True
    assert second.acquire() is False
    assert first.held and not second.held
    assert 0 < rds.pttl(first.key) <= 10_000


def test_expiry_lets_another_take_over_and_the_old_holder_cannot_renew(rds: redis.Redis, name: str) -> None:
    # Given a holder whose lease runs out without renewal
    old = RedisLock(rds, name, ttl=0.2)
    new = RedisLock(rds, name, ttl=10)
    assert old.acquire()
    time.sleep(0.3)
    # When another process takes the lock
    assert new.acquire()
    # Then the old holder learns it lost the lease, and cannot delete the new holder's lock
    with pytest.raises(TransientError, match="lease lost"):
        old.renew()
    assert not old.held
    assert old.release() is False
    assert rds.exists(new.key) == 1
    assert new.release() is True
    assert rds.exists(new.key) == 0


def test_release_by_a_non_owner_does_nothing(rds: redis.Redis, name: str) -> None:
    owner = RedisLock(rds, name, ttl=10)
    other = RedisLock(rds, name, ttl=10)
    assert owner.acquire()

    assert other.release() is False

    assert rds.exists(owner.key) == 1
    assert other.acquire() is False


def test_renew_extends_the_lease(rds: redis.Redis, name: str) -> None:
    lock = RedisLock(rds, name, ttl=0.4)
    assert lock.acquire()
    for _ in range(3):
        time.sleep(0.2)
        lock.renew()

    assert RedisLock(rds, name).acquire() is False
    assert rds.pttl(lock.key) > 200


def test_context_manager_holds_then_releases(rds: redis.Redis, name: str) -> None:
    with RedisLock(rds, name, ttl=10) as lock:
        assert lock.held
        with pytest.raises(TransientError, match="held by another process"), RedisLock(rds, name):
            pytest.fail("a second scheduler must not enter")
    assert rds.exists(f"{LOCK_PREFIX}:{name}") == 0
    assert RedisLock(rds, name).acquire() is True


def test_blocking_acquire_waits_for_release_or_times_out(rds: redis.Redis, name: str) -> None:
    holder = RedisLock(rds, name, ttl=10)
    waiter = RedisLock(rds, name, ttl=10, poll_interval=0.02)
    assert holder.acquire()

    started = time.monotonic()
    assert waiter.acquire(blocking=True, timeout=0.15) is False
    assert time.monotonic() - started >= 0.15

    timer = threading.Timer(0.1, holder.release)
    timer.start()
    try:
        assert waiter.acquire(blocking=True, timeout=5) is True
    finally:
        timer.join()
    assert waiter.held


def test_token_is_not_in_repr_and_bad_arguments_are_config_errors(rds: redis.Redis) -> None:
    lock = RedisLock(rds, "scheduler")
    assert lock._token not in repr(lock)
    with pytest.raises(ConfigError):
        RedisLock(rds, "")
    with pytest.raises(ConfigError):
        RedisLock(rds, "x", ttl=0)


def test_redis_unreachable_is_transient() -> None:
    client = redis.Redis.from_url("redis://127.0.0.1:1/14", socket_connect_timeout=0.5)
    try:
        with pytest.raises(TransientError, match="Redis failed"):
            RedisLock(client, "scheduler").acquire()
    finally:
        client.close()


def test_renewing_keeps_the_lease_and_says_when_it_was_lost(rds: redis.Redis, name: str) -> None:
    lock = RedisLock(rds, name, ttl=0.3)
    assert lock.acquire()
    with lock.renewing() as lost:
        time.sleep(0.9)  # three leases: renewals every 0.1 s kept it
        assert rds.get(f"{LOCK_PREFIX}:{name}") is not None and not lost.is_set()
        # When the lease is taken away (it expired and another process took the name)
        rds.set(f"{LOCK_PREFIX}:{name}", b"someone-else")
        # Then the next renewal fails, says so, and leaves the other holder's lock alone
        assert lost.wait(1.0)
    assert rds.get(f"{LOCK_PREFIX}:{name}") == b"someone-else"
