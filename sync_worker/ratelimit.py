"""Request budgets shared by every worker process: a sliding-window log kept in Redis.

Each target account gets one budget per *bucket* (``default``, HubSpot's ``search``, ...), set from the
provider's documented limit and tightened by what its response headers say:

* HubSpot: private apps 100 requests per 10 s (burst), CRM search 5 requests per second per token;
  headers ``X-HubSpot-RateLimit-Max``, ``-Remaining``, ``-Interval-Milliseconds`` (plus ``-Secondly``
  and ``-Secondly-Remaining``); search responses carry none; 429 when over.
  https://developers.hubspot.com/docs/api/usage-details and
  https://developers.hubspot.com/docs/api/crm/search
* Pipedrive: a burst limit per token over a 2-second rolling window, reported as ``x-ratelimit-limit``,
  ``x-ratelimit-remaining`` and ``x-ratelimit-reset`` (seconds until the window resets); 429 when over.
  https://pipedrive.readme.io/docs/core-api-concepts-rate-limiting
* LaGrowthMachine: 50 calls per 10 s per API key, 429 with ``Retry-After`` when over.
  https://documenter.getpostman.com/view/2071164/TVCmSkH2

Algorithm (the same in :class:`LocalRateLimiter` and in the Lua script of :class:`RedisRateLimiter`):
every grant is a time stamp in a log; stamps older than ``window`` are dropped; a request is granted
when fewer than ``limit`` stamps remain, otherwise it must wait until the oldest stamp that keeps the
log full ages out. So *any* interval of ``window`` seconds holds at most ``limit`` grants, with no
double burst at window edges. ``limit`` is ``floor(requests * safety)``; a lower maximum learned from
headers wins; while a provider said "no requests left" (remaining 0, ``Retry-After``) every process
waits until the reset it announced.

Redis keys, all with TTLs: ``sync-worker:rl:{account}:{bucket}`` (the log, a sorted set),
``...:blocked`` (blocked-until time), ``...:max`` (the learned maximum, one hour) and
``...:reported`` (what the provider last said is left, for ``status``:
:meth:`RedisRateLimiter.budgets`). By default the time base is the Redis server's clock
(``TIME``), so workers on machines with skewed clocks still share one timeline. The account is a
hash of the system, base URL and credential; never the credential itself.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
import redis
from pydantic import SecretStr

from sync_worker.errors import ConfigError, TransientError
from sync_worker.settings import Settings

__all__ = [
    "KEY_PREFIX",
    "Budget",
    "HeaderReader",
    "Limit",
    "LocalRateLimiter",
    "Observation",
    "RedisRateLimiter",
    "account_key",
    "documented_limits",
    "limiter_for",
    "number_header",
    "read_headers",
    "scaled_max",
]

KEY_PREFIX = "sync-worker:rl"
LEARNED_TTL_SECONDS = 3600
_MIN_SLEEP = 0.001
_EPOCH_THRESHOLD = 1e9  # a reset header above this is a Unix time, not a number of seconds


@dataclass(frozen=True)
class Limit:
    """At most ``requests`` requests in any interval of ``window_seconds`` seconds."""

    requests: int
    window_seconds: float

    def __post_init__(self) -> None:
        if self.requests < 1 or self.window_seconds <= 0:
            raise ConfigError(f"rate limit must be >= 1 request per > 0 s, got {self}")


@dataclass(frozen=True)
class Observation:
    """What one response's headers say: a maximum per bucket window, how long to stop, and how many
    requests (or credits) the provider says are left in the bucket's window."""

    max_requests: int | None = None
    block_seconds: float | None = None
    remaining: int | None = None


@dataclass(frozen=True)
class Budget:
    """One bucket's budget as ``status`` shows it: ``used`` of ``limit`` in the last ``window_seconds``
    (counted by the service's shared log), and what the provider last said is left (when it says)."""

    bucket: str
    limit: int
    used: int
    window_seconds: float
    reported_remaining: int | None = None
    reported_at: float | None = None

    @property
    def left(self) -> int:
        """Requests the service may still send in this window by its own count."""
        return max(0, self.limit - self.used)


def number_header(headers: httpx.Headers, name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


HeaderReader = Callable[[httpx.Headers, float, float], "Observation"]
"""``(headers, window seconds, now epoch) -> Observation``: a connector's way to read its limits."""


def _default_reader(headers: httpx.Headers, window_seconds: float, now_epoch: float) -> Observation:
    return read_headers(headers, window_seconds, now_epoch=now_epoch)


def _seconds_until(value: float, now_epoch: float) -> float:
    return max(0.0, value - now_epoch) if value > _EPOCH_THRESHOLD else value


def scaled_max(value: float | None, interval: float, window_seconds: float) -> int | None:
    """A maximum of ``value`` requests per ``interval`` s as a budget per ``window_seconds`` window.

    A maximum over an interval longer than the window is scaled to a per-window budget that keeps
    the provider's interval safe; one over a shorter interval cannot be expressed (None).
    """
    if value is None or value < 1 or interval + 1e-9 < window_seconds:
        return None
    return math.floor(value / math.ceil(interval / window_seconds - 1e-9))


def read_headers(headers: httpx.Headers, window_seconds: float, *, now_epoch: float) -> Observation:
    """Read the generic rate-limit headers (``X-RateLimit-*``, ``Retry-After``) for a bucket.

    Connectors whose provider speaks other headers give their spec a ``read_limits`` of their own
    (and may combine it with this one).
    """
    max_requests = scaled_max(number_header(headers, "x-ratelimit-limit"), window_seconds, window_seconds)
    blocks: list[float] = []
    retry_after = number_header(headers, "retry-after")
    if retry_after is not None:
        blocks.append(_seconds_until(retry_after, now_epoch))
    if number_header(headers, "x-ratelimit-remaining") == 0:
        reset = number_header(headers, "x-ratelimit-reset")
        blocks.append(window_seconds if reset is None else _seconds_until(reset, now_epoch))
    positive = [b for b in blocks if b > 0]
    return Observation(max_requests, max(positive) if positive else None)


def _effective(limit: Limit, safety: float, learned: int | None) -> int:
    budget = max(1, math.floor(limit.requests * safety))
    if learned is not None:
        budget = min(budget, max(1, math.floor(learned * safety)))
    return budget


def _resolve(limits: Mapping[str, Limit], bucket: str) -> tuple[str, Limit]:
    """The bucket's own limit, else the ``default`` one (shared with it)."""
    for name in (bucket, "default"):
        if name in limits:
            return name, limits[name]
    raise ConfigError(f"rate limiter: no limit for bucket {bucket!r} and no 'default' limit")


def _check_safety(safety: float) -> float:
    if not 0 < safety <= 1:
        raise ConfigError(f"rate limiter: safety must be in (0, 1], got {safety}")
    return safety


def _wait_for_slot(
    try_acquire: Callable[[str], float], bucket: str, sleep: Callable[[float], None], max_wait: float
) -> None:
    """The blocking loop both limiters share: ask, sleep what the answer says, ask again.

    Raises :class:`TransientError` (with ``retry_after``) instead of sleeping longer than
    ``max_wait`` seconds, so a worker hands a long provider block back to the queue.
    """
    while True:
        wait = try_acquire(bucket)
        if wait <= 0:
            return
        if wait > max_wait:
            raise TransientError(
                f"rate limit for bucket {bucket!r}: next slot in {wait:.1f} s", retry_after=wait
            )
        sleep(max(wait, _MIN_SLEEP))


class LocalRateLimiter:
    """The same sliding-window budget, held in this process only (single process, tests).

    ``clock`` is monotonic seconds by default; thread-safe.
    """

    def __init__(
        self,
        limits: Mapping[str, Limit],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        safety: float = 0.9,
        max_wait: float = 60.0,
        reader: HeaderReader | None = None,
    ) -> None:
        self._limits = dict(limits)
        self._clock = clock
        self._sleep = sleep
        self._safety = _check_safety(safety)
        self._max_wait = max_wait
        self._reader: HeaderReader = reader or _default_reader
        self._logs: dict[str, deque[float]] = {}
        self._blocked: dict[str, float] = {}
        self._learned: dict[str, int] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalRateLimiter({sorted(self._limits)!r})"

    def acquire(self, bucket: str) -> None:
        """Block until a request in ``bucket`` may go.

        Raises :class:`TransientError` (with ``retry_after``) rather than wait over ``max_wait`` s.
        """
        _wait_for_slot(self.try_acquire, bucket, self._sleep, self._max_wait)

    def try_acquire(self, bucket: str) -> float:
        """Take a slot now and return 0.0, or return the seconds (> 0) to wait and take nothing."""
        name, limit = _resolve(self._limits, bucket)
        with self._lock:
            now = self._clock()
            blocked = self._blocked.get(name, 0.0)
            if blocked > now:
                return max(blocked - now, _MIN_SLEEP)
            log = self._logs.setdefault(name, deque())
            while log and log[0] <= now - limit.window_seconds:
                log.popleft()
            budget = _effective(limit, self._safety, self._learned.get(name))
            if len(log) < budget:
                log.append(now)
                return 0.0
            # Never 0.0 when refused: 0.0 means granted, and rounding can make the wait vanish.
            return max(log[len(log) - budget] + limit.window_seconds - now, _MIN_SLEEP)

    def observe(self, bucket: str, headers: httpx.Headers) -> None:
        name, limit = _resolve(self._limits, bucket)
        seen = self._reader(headers, limit.window_seconds, time.time())
        with self._lock:
            if seen.max_requests is not None:
                self._learned[name] = seen.max_requests
            if seen.block_seconds is not None:
                until = self._clock() + seen.block_seconds
                self._blocked[name] = max(self._blocked.get(name, 0.0), until)


# KEYS: log, blocked, max. ARGV: now ('' = server TIME), window, requests, safety, member.
# Returns {granted 0/1, wait seconds as text, now as text} (Lua numbers would be truncated to integers).
# Numbers go to Redis as %.17g text: Lua's own conversion keeps only 14 digits. Stamps are counted
# in (now - window, +inf) and trimmed only past two windows, so a client whose clock reads a little
# behind another's (clock=...) still counts every grant in its window.
_ACQUIRE_LUA = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
local window = tonumber(ARGV[2])
local safety = tonumber(ARGV[4])
local limit = math.max(1, math.floor(tonumber(ARGV[3]) * safety))
local learned = tonumber(redis.call('GET', KEYS[3]))
if learned then
  limit = math.min(limit, math.max(1, math.floor(learned * safety)))
end
local blocked = tonumber(redis.call('GET', KEYS[2]))
if blocked and blocked > now then
  return {0, string.format('%.17g', blocked - now), string.format('%.17g', now)}
end
local from = string.format('(%.17g', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.17g', now - 2 * window))
local count = redis.call('ZCOUNT', KEYS[1], from, '+inf')
if count < limit then
  redis.call('ZADD', KEYS[1], string.format('%.17g', now), ARGV[5])
  redis.call('PEXPIRE', KEYS[1], math.ceil(2 * window * 1000) + 1000)
  return {1, '0', string.format('%.17g', now)}
end
local entry = redis.call('ZRANGEBYSCORE', KEYS[1], from, '+inf', 'WITHSCORES', 'LIMIT', count - limit, 1)
return {0, string.format('%.17g', tonumber(entry[2]) + window - now), string.format('%.17g', now)}
"""

# KEYS: blocked. ARGV: now ('' = server TIME), seconds. Keeps the later of the two block times.
_BLOCK_LUA = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
local untl = now + tonumber(ARGV[2])
local current = tonumber(redis.call('GET', KEYS[1]))
if current == nil or current < untl then
  redis.call('SET', KEYS[1], string.format('%.17g', untl), 'PX', math.ceil((untl - now) * 1000) + 1000)
end
return string.format('%.17g', math.max(untl, current or 0))
"""


class RedisRateLimiter:
    """A budget per bucket for one target account, shared through Redis by every process.

    ``clock`` is epoch seconds; ``None`` (the default) uses the Redis server's clock so machines
    with skewed clocks agree. Redis failures become :class:`TransientError`.
    """

    def __init__(
        self,
        redis: redis.Redis,
        account: str,
        limits: Mapping[str, Limit],
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        safety: float = 0.9,
        max_wait: float = 60.0,
        reader: HeaderReader | None = None,
    ) -> None:
        if not account or any(ch in account for ch in " :{}"):
            raise ConfigError(f"rate limiter: account must be a non-empty token, got {account!r}")
        self._redis = redis
        self.account = account
        self._limits = dict(limits)
        self._clock = clock
        self._sleep = sleep
        self._safety = _check_safety(safety)
        self._max_wait = max_wait
        self._reader: HeaderReader = reader or _default_reader
        self._acquire_script = redis.register_script(_ACQUIRE_LUA)
        self._block_script = redis.register_script(_BLOCK_LUA)
        self._member_prefix = secrets.token_hex(6)
        self._counter = itertools.count()

    def __repr__(self) -> str:
        return f"RedisRateLimiter({self.account!r}, {sorted(self._limits)!r})"

    def key(self, bucket: str) -> str:
        """The sorted-set key of ``bucket`` (after falling back to ``default``)."""
        name, _ = _resolve(self._limits, bucket)
        return f"{KEY_PREFIX}:{self.account}:{name}"

    def _now_arg(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    def acquire(self, bucket: str) -> None:
        """Block until a request in ``bucket`` may go.

        Raises :class:`TransientError` (with ``retry_after``) rather than wait over ``max_wait`` s.
        """
        _wait_for_slot(self.try_acquire, bucket, self._sleep, self._max_wait)

    def try_acquire(self, bucket: str) -> float:
        """Take a slot now and return 0.0, or return the seconds (> 0) to wait and take nothing."""
        _, limit = _resolve(self._limits, bucket)
        key = self.key(bucket)
        member = f"{self._member_prefix}-{next(self._counter)}"
        args: list[str | int] = [
            self._now_arg(),
            repr(limit.window_seconds),
            limit.requests,
            repr(self._safety),
            member,
        ]
        try:
            granted, wait, _ = self._acquire_script(keys=[key, f"{key}:blocked", f"{key}:max"], args=args)
        except redis.RedisError as exc:
            raise TransientError(f"rate limiter: Redis failed ({type(exc).__name__})") from exc
        return 0.0 if int(granted) == 1 else max(float(wait), _MIN_SLEEP)

    def observe(self, bucket: str, headers: httpx.Headers) -> None:
        """Share what the provider said: a lower maximum, or a block every process honours."""
        _, limit = _resolve(self._limits, bucket)
        key = self.key(bucket)
        seen = self._reader(headers, limit.window_seconds, time.time())
        try:
            if seen.max_requests is not None:
                self._redis.set(f"{key}:max", seen.max_requests, ex=LEARNED_TTL_SECONDS)
            if seen.remaining is not None:
                ttl = math.ceil(limit.window_seconds) + 60
                self._redis.set(f"{key}:reported", f"{seen.remaining} {time.time():.3f}", ex=ttl)
            if seen.block_seconds is not None:
                self._block_script(keys=[f"{key}:blocked"], args=[self._now_arg(), repr(seen.block_seconds)])
        except redis.RedisError as exc:
            raise TransientError(f"rate limiter: Redis failed ({type(exc).__name__})") from exc

    def budgets(self) -> list[Budget]:
        """Each bucket's use in its current window and what the provider last reported left.

        Read-only (nothing is taken). Raises :class:`TransientError` when Redis fails.
        """
        out = []
        try:
            now = self._clock() if self._clock is not None else _redis_time(self._redis)
            for bucket, limit in sorted(self._limits.items()):
                key = self.key(bucket)
                used = int(self._redis.zcount(key, f"({now - limit.window_seconds!r}", "+inf"))
                learned = self._redis.get(f"{key}:max")
                reported = self._redis.get(f"{key}:reported")
                left, at = _reported(reported)
                out.append(
                    Budget(
                        bucket=bucket,
                        limit=_effective(limit, self._safety, int(learned) if learned else None),
                        used=used,
                        window_seconds=limit.window_seconds,
                        reported_remaining=left,
                        reported_at=at,
                    )
                )
        except redis.RedisError as exc:
            raise TransientError(f"rate limiter: Redis failed ({type(exc).__name__})") from exc
        return out


def _redis_time(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1_000_000


def _reported(raw: object) -> tuple[int | None, float | None]:
    """``b"<remaining> <epoch>"`` as written by :meth:`RedisRateLimiter.observe`."""
    if not isinstance(raw, bytes | str):
        return None, None
    text = raw.decode() if isinstance(raw, bytes) else raw
    left, _, at = text.partition(" ")
    try:
        return int(left), float(at)
    except ValueError:
        return None, None


def account_key(system: str, base_url: str, credential: SecretStr) -> str:
    """``<system>-<16 hex>``: a one-way hash naming the account, never the credential itself."""
    material = f"{KEY_PREFIX}\0{system}\0{base_url.rstrip('/')}\0{credential.get_secret_value()}"
    return f"{system}-{hashlib.sha256(material.encode()).hexdigest()[:16]}"


def documented_limits(system: str, settings: Settings) -> dict[str, Limit]:
    """The request budgets of ``system`` by bucket: its spec's ``limits`` over its settings section.

    Raises :class:`ConfigError` for a system no connector is registered for.
    """
    from sync_worker.plugins import spec_for

    spec = spec_for(system)
    return dict(spec.limits(settings.section(system)))


def limiter_for(
    system: str,
    settings: Settings,
    redis: redis.Redis,
    *,
    safety: float = 0.9,
    sleep: Callable[[float], None] = time.sleep,
) -> RedisRateLimiter:
    """The limiter of ``system``'s account shared through Redis by every worker.

    The account is the spec's ``account(section)``: its base URL and credential, hashed
    (:func:`account_key`). Raises :class:`ConfigError` for an unknown system or one without a
    credential.
    """
    from sync_worker.plugins import spec_for

    spec = spec_for(system)
    section = settings.section(system)
    base_url, credential = spec.account(section)
    if credential is None or not credential.get_secret_value():
        raise ConfigError(f"rate limiter: {system} has no credential; set {spec.credential_env}")
    return RedisRateLimiter(
        redis,
        account_key(system, base_url, credential),
        spec.limits(section),
        safety=safety,
        sleep=sleep,
        reader=spec.read_limits,
    )
