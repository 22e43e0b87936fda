"""A lease lock in Redis, so two schedulers started by mistake do not double the work.

The lock is the key ``sync-worker:lock:{name}`` holding a random token, set with ``SET NX PX``
(https://redis.io/docs/latest/commands/set/). It is a lease: it expires after ``ttl`` seconds unless
its holder renews it, so a crashed holder frees it on its own. Renewal and release run as Lua
scripts that compare the token first (https://redis.io/docs/latest/develop/use/patterns/distributed-locks/),
so a holder whose lease ran out can never extend or delete the lock another process has taken since.

This is a single-instance Redis lock: good enough to keep one scheduler running, not a fencing
guarantee for data writes (those are made idempotent elsewhere).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

import redis

from sync_worker.errors import ConfigError, TransientError

__all__ = ["LOCK_PREFIX", "RedisLock"]

LOCK_PREFIX = "sync-worker:lock"

_log = logging.getLogger(__name__)

# KEYS: lock. ARGV: token, ttl ms. 1 when the lease was extended, 0 when it is not ours.
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lock. ARGV: token. 1 when deleted, 0 when it is not ours (nothing happens then).
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLock:
    """A named lease lock held by at most one owner at a time.

    ``ttl`` is the lease in seconds; call :meth:`renew` well within it (every ``ttl / 3``, say).
    Used as a context manager it acquires without waiting (raising :class:`TransientError` when
    another process holds it) and releases on exit. Redis failures become :class:`TransientError`.
    The token is random and never logged; ``repr`` shows only the name.
    """

    def __init__(
        self,
        redis: redis.Redis,
        name: str,
        *,
        ttl: float = 30.0,
        poll_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not name:
            raise ConfigError("lock name must not be empty")
        if ttl <= 0:
            raise ConfigError(f"lock ttl must be > 0 seconds, got {ttl}")
        self._redis = redis
        self.name = name
        self.key = f"{LOCK_PREFIX}:{name}"
        self._ttl_ms = max(1, round(ttl * 1000))
        self._poll = poll_interval
        self._clock = clock
        self._sleep = sleep
        self._token = secrets.token_hex(16)
        self._held = False
        self._renew_script = redis.register_script(_RENEW_LUA)
        self._release_script = redis.register_script(_RELEASE_LUA)

    def __repr__(self) -> str:
        return f"RedisLock({self.name!r}, held={self._held})"

    @property
    def held(self) -> bool:
        """Whether this object believes it holds the lease (it may have expired since)."""
        return self._held

    def acquire(self, blocking: bool = False, timeout: float | None = None) -> bool:
        """Take the lock; True when taken. Blocking waits up to ``timeout`` seconds (None: forever)."""
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            try:
                taken = self._redis.set(self.key, self._token, nx=True, px=self._ttl_ms)
            except redis.RedisError as exc:
                raise TransientError(f"lock {self.name!r}: Redis failed ({type(exc).__name__})") from exc
            if taken:
                self._held = True
                return True
            if not blocking:
                return False
            if deadline is not None:
                left = deadline - self._clock()
                if left <= 0:
                    return False
                self._sleep(min(self._poll, left))
            else:
                self._sleep(self._poll)

    def renew(self) -> None:
        """Extend the lease to a full ``ttl`` from now.

        Raises :class:`TransientError` when the lease is no longer ours (it expired and maybe
        another process took it): the caller must stop doing the locked work.
        """
        try:
            extended = self._renew_script(keys=[self.key], args=[self._token, self._ttl_ms])
        except redis.RedisError as exc:
            raise TransientError(f"lock {self.name!r}: Redis failed ({type(exc).__name__})") from exc
        if int(extended) != 1:
            self._held = False
            raise TransientError(f"lock {self.name!r}: lease lost")

    @contextmanager
    def renewing(self, every: float | None = None) -> Iterator[threading.Event]:
        """While inside, a daemon thread renews the held lease every ``every`` seconds (``ttl / 3``).

        So the lease can be short (a killed holder frees it within ``ttl``) while the work inside
        takes as long as it takes. Yields an event set when a renewal failed (the lease expired and
        may be someone else's, or Redis did not answer): work that can stop early should check it.
        """
        interval = every if every is not None else self._ttl_ms / 3000
        stop, lost = threading.Event(), threading.Event()

        def renew_until_stopped() -> None:
            while not stop.wait(interval):
                try:
                    self.renew()
                except TransientError as exc:
                    lost.set()
                    _log.warning("%s; the work under it goes on unguarded", exc)
                    return

        thread = threading.Thread(target=renew_until_stopped, name=f"renew-{self.name}", daemon=True)
        thread.start()
        try:
            yield lost
        finally:
            stop.set()
            thread.join()

    def release(self) -> bool:
        """Delete the lock if it is still ours; True when deleted. Someone else's lock is untouched."""
        try:
            deleted = self._release_script(keys=[self.key], args=[self._token])
        except redis.RedisError as exc:
            raise TransientError(f"lock {self.name!r}: Redis failed ({type(exc).__name__})") from exc
        self._held = False
        return int(deleted) == 1

    def __enter__(self) -> RedisLock:
        if not self.acquire(blocking=False):
            raise TransientError(f"lock {self.name!r} is held by another process")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
