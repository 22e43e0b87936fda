"""The shared rate limiter: pure sliding-window logic, header learning, and real Redis across processes.

Redis tests use the server at 127.0.0.1:6379, database 14, and delete the keys they create. They are
skipped when Redis does not answer, unless SYNC_TEST_REQUIRE_SERVICES is set (then they fail).
"""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from connectors.hubspot.limits import read_limits
from connectors.hubspot.settings import HubSpotSettings
from connectors.lagrowthmachine.settings import LaGrowthMachineSettings
from connectors.pipedrive.settings import PipedriveSettings
from sync_worker.errors import ConfigError, TransientError
from sync_worker.http import ApiClient, RateLimiter
from sync_worker.ratelimit import (
    KEY_PREFIX,
    Limit,
    LocalRateLimiter,
    Observation,
    RedisRateLimiter,
    account_key,
    limiter_for,
    read_headers,
)
from sync_worker.settings import Settings
from tests.conftest import REDIS_SERVER

REDIS_URL = f"{REDIS_SERVER}/14"
CLOSED_REDIS_URL = "redis://127.0.0.1:1/14"
NOW_EPOCH = 1_700_000_000.0


class FakeClock:
    """A clock whose sleep advances it; records every sleep."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def max_in_window(stamps: list[float], width: float) -> int:
    """The most stamps in any half-open interval (t - width, t]."""
    ordered = sorted(stamps)
    best, start = 0, 0
    for end, stamp in enumerate(ordered):
        while ordered[start] <= stamp - width:
            start += 1
        best = max(best, end - start + 1)
    return best


def _delete_account(client: redis.Redis, account: str) -> None:
    keys = list(client.scan_iter(match=f"{KEY_PREFIX}:{account}:*"))
    if keys:
        client.delete(*keys)


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
def account(rds: redis.Redis) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    _delete_account(rds, name)


# -- pure logic: LocalRateLimiter ---------------------------------------------------------------------


def test_local_grants_the_budget_then_waits_for_the_oldest_grant_to_age_out() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter({"default": Limit(3, 1.0)}, clock=clock, sleep=clock.sleep, safety=1.0)

    assert [limiter.try_acquire("default") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.try_acquire("default") == pytest.approx(1.0)
    clock.now += 0.4
    assert limiter.try_acquire("default") == pytest.approx(0.6)

    limiter.acquire("default")

    assert clock.sleeps == [pytest.approx(0.6)]
    assert clock.now == pytest.approx(1001.0)


def test_safety_factor_keeps_a_margin_under_the_documented_limit() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter({"default": Limit(100, 10.0)}, clock=clock, sleep=clock.sleep)

    granted = 0
    while limiter.try_acquire("default") == 0.0:
        granted += 1

    assert granted == 90


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.7), min_size=1, max_size=60),
    limit=st.integers(min_value=1, max_value=6),
)
def test_no_interval_of_one_window_ever_holds_more_than_the_limit(gaps: list[float], limit: int) -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter({"default": Limit(limit, 1.0)}, clock=clock, sleep=clock.sleep, safety=1.0)
    grants: list[float] = []
    for gap in gaps:
        clock.now += gap
        arrival = clock.now
        in_window = sum(1 for g in grants if g > arrival - 1.0)
        limiter.acquire("default")
        grants.append(clock.now)
        if in_window < limit:
            assert clock.now == arrival  # a free slot is granted at once, never delayed

    assert max_in_window(grants, 1.0) <= limit


def test_unknown_bucket_shares_the_default_budget() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter({"default": Limit(2, 1.0)}, clock=clock, sleep=clock.sleep, safety=1.0)

    assert limiter.try_acquire("lagrowthmachine") == 0.0
    assert limiter.try_acquire("default") == 0.0
    assert limiter.try_acquire("anything") > 0


def test_a_bucket_with_its_own_limit_is_separate() -> None:
    clock = FakeClock()
    limits = {"default": Limit(1, 10.0), "search": Limit(1, 1.0)}
    limiter = LocalRateLimiter(limits, clock=clock, sleep=clock.sleep, safety=1.0)

    assert limiter.try_acquire("default") == 0.0
    assert limiter.try_acquire("search") == 0.0
    assert limiter.try_acquire("search") == pytest.approx(1.0)
    assert limiter.try_acquire("default") == pytest.approx(10.0)


def test_bucket_without_limit_or_default_is_a_config_error() -> None:
    limiter = LocalRateLimiter({"search": Limit(5, 1.0)})
    with pytest.raises(ConfigError, match="default"):
        limiter.acquire("other")


@pytest.mark.parametrize(
    ("requests", "window", "safety"), [(0, 1.0, 0.9), (5, 0.0, 0.9), (5, 1.0, 0.0), (5, 1.0, 1.5)]
)
def test_bad_limits_are_config_errors(requests: int, window: float, safety: float) -> None:
    with pytest.raises(ConfigError):
        LocalRateLimiter({"default": Limit(requests, window)}, safety=safety)


def test_wait_longer_than_max_wait_goes_back_to_the_queue() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(
        {"default": Limit(5, 2.0)}, clock=clock, sleep=clock.sleep, safety=1.0, max_wait=30.0
    )
    limiter.observe("default", httpx.Headers({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "3600"}))

    with pytest.raises(TransientError) as info:
        limiter.acquire("default")

    assert info.value.retry_after == pytest.approx(3600)
    assert clock.sleeps == []


def test_local_observe_blocks_until_reset_and_adopts_a_lower_max() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter({"default": Limit(80, 2.0)}, clock=clock, sleep=clock.sleep, safety=1.0)

    limiter.observe(
        "default",
        httpx.Headers({"x-ratelimit-limit": "3", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1.5"}),
    )
    limiter.acquire("default")

    assert clock.sleeps == [pytest.approx(1.5)]
    assert [limiter.try_acquire("default") for _ in range(3)] == [0.0, 0.0, pytest.approx(2.0)]


def test_api_client_feeds_a_429_into_the_limiter_and_waits_before_the_retry() -> None:
    # Given an ApiClient whose first call is answered 429 with Pipedrive's headers
    clock = FakeClock()
    limiter: RateLimiter = LocalRateLimiter(
        {"default": Limit(80, 2.0)}, clock=clock, sleep=clock.sleep, safety=1.0
    )
    answers = iter(
        [
            httpx.Response(
                429,
                headers={"x-ratelimit-limit": "80", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "2"},
                json={"success": False, "error": "Request over limit"},
            ),
            httpx.Response(200, json={"success": True, "data": []}),
        ]
    )
    sent_at: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent_at.append(clock.now)
        return next(answers)

    api = ApiClient(
        "pipedrive",
        "https://api.example.test",
        limiter=limiter,
        transport=httpx.MockTransport(handler),
        sleep=lambda _: None,
    )
    try:
        # When the call is retried
        response = api.request("GET", "/api/v2/deals")
    finally:
        api.close()
    # Then the retry went only after the announced reset
    assert response.status == 200
    assert sent_at[1] - sent_at[0] >= 2.0


# -- header reading --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "window", "expected"),
    [
        pytest.param(
            {
                "X-HubSpot-RateLimit-Max": "100",
                "X-HubSpot-RateLimit-Remaining": "97",
                "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            },
            10.0,
            Observation(100, None),
            id="hubspot-ok",
        ),
        pytest.param(
            {
                "X-HubSpot-RateLimit-Max": "100",
                "X-HubSpot-RateLimit-Remaining": "0",
                "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            },
            10.0,
            Observation(100, 10.0),
            id="hubspot-exhausted-waits-the-interval",
        ),
        pytest.param(
            {
                "X-HubSpot-RateLimit-Max": "190",
                "X-HubSpot-RateLimit-Remaining": "50",
                "X-HubSpot-RateLimit-Interval-Milliseconds": "20000",
            },
            10.0,
            Observation(95, None),
            id="hubspot-longer-interval-is-scaled-safely",
        ),
        pytest.param(
            {"X-HubSpot-RateLimit-Max": "10", "X-HubSpot-RateLimit-Interval-Milliseconds": "1000"},
            10.0,
            Observation(None, None),
            id="hubspot-shorter-interval-is-ignored",
        ),
        pytest.param(
            {"X-HubSpot-RateLimit-Secondly": "10", "X-HubSpot-RateLimit-Secondly-Remaining": "0"},
            10.0,
            Observation(None, 1.0),
            id="hubspot-secondly-exhausted",
        ),
        pytest.param(
            {"x-ratelimit-limit": "40", "x-ratelimit-remaining": "12", "x-ratelimit-reset": "1"},
            2.0,
            Observation(40, None),
            id="pipedrive-ok",
        ),
        pytest.param(
            {"x-ratelimit-limit": "40", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "2"},
            2.0,
            Observation(40, 2.0),
            id="pipedrive-exhausted",
        ),
        pytest.param(
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW_EPOCH) + 7)},
            2.0,
            Observation(None, 7.0),
            id="reset-as-unix-time",
        ),
        pytest.param({"Retry-After": "12"}, 10.0, Observation(None, 12.0), id="429-retry-after"),
        pytest.param(
            {"x-ratelimit-limit": "soon", "x-ratelimit-remaining": "-1", "retry-after": "nan"},
            2.0,
            Observation(None, None),
            id="garbage-ignored",
        ),
        pytest.param({}, 2.0, Observation(None, None), id="no-headers"),
    ],
)
def test_read_headers(headers: dict[str, str], window: float, expected: Observation) -> None:
    # HubSpot's reader (its spec's read_limits) reads its own headers on top of the generic ones.
    assert read_limits(httpx.Headers(headers), window, NOW_EPOCH) == expected
    if not any(name.lower().startswith("x-hubspot") for name in headers):
        assert read_headers(httpx.Headers(headers), window, now_epoch=NOW_EPOCH) == expected


def test_the_generic_reader_leaves_provider_headers_to_their_connector() -> None:
    headers = httpx.Headers({"X-HubSpot-RateLimit-Max": "100", "X-HubSpot-RateLimit-Remaining": "0"})
    assert read_headers(headers, 10.0, now_epoch=NOW_EPOCH) == Observation(None, None)


# -- Redis: one process ------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=0.6),
            st.sampled_from(["take", "take", "take", "block", "lower"]),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_redis_script_decides_exactly_like_the_local_limiter(
    rds: redis.Redis, steps: list[tuple[float, str]]
) -> None:
    clock = FakeClock(NOW_EPOCH)
    limits = {"default": Limit(4, 1.0)}
    name = f"test-{uuid.uuid4().hex[:12]}"
    local = LocalRateLimiter(limits, clock=clock, sleep=clock.sleep, safety=1.0)
    shared = RedisRateLimiter(rds, name, limits, clock=clock, sleep=clock.sleep, safety=1.0)
    try:
        for gap, action in steps:
            clock.now += gap
            if action == "block":
                headers = httpx.Headers({"retry-after": "0.5"})
            elif action == "lower":
                headers = httpx.Headers({"x-ratelimit-limit": "2"})
            else:
                assert shared.try_acquire("default") == pytest.approx(local.try_acquire("default"), abs=1e-5)
                continue
            local.observe("default", headers)
            shared.observe("default", headers)
    finally:
        _delete_account(rds, name)


def test_every_key_has_a_ttl(rds: redis.Redis, account: str) -> None:
    limiter: RateLimiter = RedisRateLimiter(rds, account, {"default": Limit(5, 2.0)})

    limiter.acquire("default")
    limiter.observe(
        "default",
        httpx.Headers({"x-ratelimit-limit": "4", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1"}),
    )

    keys = sorted(k.decode() for k in rds.scan_iter(match=f"{KEY_PREFIX}:{account}:*"))
    base = f"{KEY_PREFIX}:{account}:default"
    assert keys == [base, f"{base}:blocked", f"{base}:max"]
    for key in keys:
        assert 0 < rds.pttl(key) <= 3600 * 1000


def test_header_correction_lowers_the_limit_for_every_limiter(rds: redis.Redis, account: str) -> None:
    # Given two workers' limiters for one account, configured for 10 per 10 s
    clock = FakeClock(NOW_EPOCH)
    limits = {"default": Limit(10, 10.0)}
    first = RedisRateLimiter(rds, account, limits, clock=clock, safety=1.0)
    second = RedisRateLimiter(rds, account, limits, clock=clock, safety=1.0)
    # When the first sees the provider report a maximum of 4
    first.observe("default", httpx.Headers({"x-ratelimit-limit": "4", "x-ratelimit-remaining": "3"}))
    # Then the second grants only 4 in the window
    results = [second.try_acquire("default") for _ in range(5)]
    assert results[:4] == [0.0] * 4
    assert results[4] == pytest.approx(10.0, abs=1e-5)
    # And a higher maximum later does not lift the budget above what is configured
    first.observe("default", httpx.Headers({"x-ratelimit-limit": "500"}))
    more = [second.try_acquire("default") for _ in range(7)]
    assert more[:6] == [0.0] * 6
    assert more[6] > 0


def test_redis_unreachable_is_transient() -> None:
    client = redis.Redis.from_url(CLOSED_REDIS_URL, socket_connect_timeout=0.5)
    try:
        limiter = RedisRateLimiter(client, "acct", {"default": Limit(5, 1.0)})
        with pytest.raises(TransientError, match="Redis failed"):
            limiter.acquire("default")
    finally:
        client.close()


def test_account_must_be_a_plain_token(rds: redis.Redis) -> None:
    with pytest.raises(ConfigError):
        RedisRateLimiter(rds, "a:b", {"default": Limit(5, 1.0)})


# -- limiter_for ------------------------------------------------------------------------------------------


def _settings(**kwargs: Any) -> Settings:
    return Settings(_env_file=None, **kwargs)


@pytest.fixture
def no_sync_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings must come from the test alone, not from SYNC_* variables of the shell."""
    for name in list(os.environ):
        if name.startswith("SYNC_") and name != "SYNC_TEST_REQUIRE_SERVICES":
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("no_sync_env")
def test_limiter_for_builds_the_documented_limits_per_account(rds: redis.Redis) -> None:
    settings = _settings(
        hubspot=HubSpotSettings(token=SecretStr("pat-na1-secret-one")),
        pipedrive=PipedriveSettings(api_token=SecretStr("pd-secret-token")),
        lagrowthmachine=LaGrowthMachineSettings(api_key=SecretStr("lgm-secret-key")),
    )
    hubspot = limiter_for("hubspot", settings, rds)
    pipedrive = limiter_for("pipedrive", settings, rds)
    lgm = limiter_for("lagrowthmachine", settings, rds)

    assert hubspot._limits == {"default": Limit(100, 10.0), "search": Limit(5, 1.0)}
    assert pipedrive._limits == {"default": Limit(80, 2.0)}
    assert lgm._limits == {"default": Limit(50, 10.0)}
    assert lgm.key("lagrowthmachine") == lgm.key("default")
    assert hubspot.key("search") != hubspot.key("default")
    for limiter, secret in ((hubspot, "pat-na1"), (pipedrive, "pd-secret"), (lgm, "lgm-secret")):
        assert secret not in limiter.account
        assert secret not in repr(limiter)
        assert secret not in limiter.key("default")


@pytest.mark.usefixtures("no_sync_env")
def test_two_accounts_do_not_share_a_budget(rds: redis.Redis) -> None:
    one = _settings(hubspot=HubSpotSettings(token=SecretStr("token-one")))
    two = _settings(hubspot=HubSpotSettings(token=SecretStr("token-two")))
    sandbox = _settings(
        hubspot=HubSpotSettings(token=SecretStr("token-one"), base_url="http://127.0.0.1:8765")
    )

    keys = {limiter_for("hubspot", s, rds).key("default") for s in (one, two, sandbox)}

    assert len(keys) == 3
    assert limiter_for("hubspot", one, rds).account == limiter_for("hubspot", one, rds).account
    assert account_key("hubspot", "https://x", SecretStr("t")).startswith("hubspot-")


@pytest.mark.parametrize(
    ("system", "message"),
    [
        ("hubspot", "SYNC_HUBSPOT__TOKEN"),
        ("pipedrive", "SYNC_PIPEDRIVE__API_TOKEN"),
        ("nosuchcrm", "no connector named"),
    ],
)
@pytest.mark.usefixtures("no_sync_env")
def test_limiter_for_refuses_missing_credentials(rds: redis.Redis, system: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        limiter_for(system, _settings(), rds)


# -- Redis: several processes ------------------------------------------------------------------------------


def _hammer(
    redis_url: str, account: str, mode: str, duration: float, barrier: Any, out: Any
) -> None:  # pragma: no cover - runs in a spawned process
    client = redis.Redis.from_url(redis_url)
    last = [0.0]

    def recording_clock() -> float:
        last[0] = time.time()
        return last[0]

    clock = recording_clock if mode == "client" else None
    limiter = RedisRateLimiter(client, account, {"default": Limit(20, 1.0)}, clock=clock, safety=1.0)
    barrier.wait()
    deadline = time.time() + duration
    grants: list[tuple[float, bool]] = []
    while time.time() < deadline:
        limiter.acquire("default")
        now = time.time()
        grants.append((last[0] if mode == "client" else now, now < deadline))
    client.close()
    out.put(grants)


def _blocked_acquire(redis_url: str, account: str, ready: Any, go: Any, out: Any) -> None:  # pragma: no cover
    client = redis.Redis.from_url(redis_url)
    limiter = RedisRateLimiter(client, account, {"default": Limit(20, 1.0)}, safety=1.0)
    ready.set()
    go.wait(30)
    started = time.monotonic()
    limiter.acquire("default")
    out.put(time.monotonic() - started)
    client.close()


@pytest.mark.redis
@pytest.mark.parametrize(
    ("mode", "tolerance"),
    [
        pytest.param("client", 0.0, id="client-clock-exact-stamps"),
        pytest.param("server", 0.1, id="redis-clock-stamps-seen-after-return"),
    ],
)
def test_four_processes_together_never_exceed_the_limit(
    rds: redis.Redis, account: str, mode: str, tolerance: float
) -> None:
    # Given four spawned processes sharing one limiter of 20 requests per second
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_hammer, args=(REDIS_URL, account, mode, 3.0, barrier, out)) for _ in range(4)
    ]
    for proc in procs:
        proc.start()
    # When each asks for as many requests as it can for 3 s
    per_process = [out.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    out.close()
    out.join_thread()

    stamps = [stamp for grants in per_process for stamp, _ in grants]
    in_time = sum(1 for grants in per_process for _, early in grants if early)
    # Then no 1-second window across all processes holds more than 20 grants (with the Redis clock the
    # stamps are read after acquire returns, a few ms late, hence a slightly narrower window)
    assert max_in_window(stamps, 1.0 - tolerance) <= 20
    # And together they were not starved: close to 20/s for 3 s
    assert in_time >= 48, in_time
    assert all(grants for grants in per_process)


@pytest.mark.redis
def test_observe_with_nothing_left_blocks_other_processes_until_reset(rds: redis.Redis, account: str) -> None:
    # Given another process ready to make a request on the same account
    ctx = multiprocessing.get_context("spawn")
    ready, go, out = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_blocked_acquire, args=(REDIS_URL, account, ready, go, out))
    proc.start()
    assert ready.wait(60)
    # When this process sees the provider say nothing is left until a reset in 1.5 s
    here = RedisRateLimiter(rds, account, {"default": Limit(20, 1.0)}, safety=1.0)
    here.observe("default", httpx.Headers({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1.5"}))
    go.set()
    # Then the other process waits for the reset before its request goes
    waited = out.get(timeout=60)
    proc.join(timeout=30)
    out.close()
    out.join_thread()
    assert proc.exitcode == 0
    assert 1.2 <= waited <= 3.0


# -- what status shows: budgets used and what the provider says is left --------------------------


@pytest.mark.usefixtures("no_sync_env")
def test_status_shows_zoho_credits_used_and_what_zoho_said_is_left(rds: redis.Redis) -> None:
    from connectors.zoho.api import CreditedLimiter
    from connectors.zoho.settings import ZohoSettings
    from sync_worker.status import MappingsState, ServiceStatus, render_status, source_budgets

    settings = _settings(zoho=ZohoSettings(refresh_token=SecretStr(f"zr-{uuid.uuid4().hex}")))
    shared = limiter_for("zoho", settings, rds)
    try:
        # Given three Zoho calls through the connector's limiter, the last one answered with
        # X-API-CREDITS-REMAINING (Zoho sends it once half the day's credits are used)
        zoho = CreditedLimiter(shared)
        for _ in range(3):
            zoho.acquire("default")
        zoho.observe("default", httpx.Headers({"X-API-CREDITS-REMAINING": "24990"}))
        # When status asks the shared limiter
        budgets, error = source_budgets(settings, rds)
        # Then the credits bucket shows the 3 calls of its day and Zoho's own figure
        assert error is None
        by_bucket = {b.bucket: b for b in budgets["zoho"]}
        credits = by_bucket["credits"]
        assert credits.used == 3 and credits.window_seconds == 86_400.0
        assert credits.reported_remaining == 24990 and credits.left == credits.limit - 3
        # And the concurrency bucket counts the same calls but carries no credits figure
        assert by_bucket["default"].used == 3 and by_bucket["default"].reported_remaining is None
        status = ServiceStatus(
            generated_at=datetime.now(UTC),
            streams=(),
            targets=(),
            dead_letters=0,
            open_flags={},
            last_scan=None,
            paused=(),
            mappings=MappingsState(directory="mappings", valid=True, loaded=None),
            budgets=budgets,
        )
        text = render_status(status)
        assert f"zoho credits: 3 of {credits.limit:,} per 24 h" in text
        assert "zoho reported 24,990 left" in text
    finally:
        _delete_account(rds, shared.account)


def test_status_reports_redis_down_instead_of_failing() -> None:
    from connectors.zoho.settings import ZohoSettings
    from sync_worker.status import source_budgets

    settings = _settings(zoho=ZohoSettings(refresh_token=SecretStr("zr-down")))
    client = redis.Redis.from_url(CLOSED_REDIS_URL, socket_connect_timeout=0.5)
    budgets, error = source_budgets(settings, client)
    assert budgets == {} and error is not None and "request budgets unavailable" in error
    assert "zr-down" not in error


def test_salesforce_and_zoho_readers_say_what_is_left_for_the_day_bucket_only() -> None:
    from connectors.salesforce.wire import read_limits as salesforce
    from connectors.zoho.spec import read_limits as zoho

    day, second = 86_400.0, 1.0
    used = httpx.Headers({"Sforce-Limit-Info": "api-usage=120/15000"})
    assert salesforce(used, day, NOW_EPOCH).remaining == 14880
    assert salesforce(used, second, NOW_EPOCH).remaining is None
    credits = httpx.Headers({"X-API-CREDITS-REMAINING": "0"})
    assert zoho(credits, day, NOW_EPOCH).remaining == 0
    assert zoho(credits, second, NOW_EPOCH).remaining is None
    assert zoho(credits, second, NOW_EPOCH).block_seconds is not None
    assert zoho(httpx.Headers({"X-API-CREDITS-REMAINING": "n/a"}), day, NOW_EPOCH).remaining is None
