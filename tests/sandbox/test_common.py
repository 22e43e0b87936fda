from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sync_worker.sandbox.common import (
    CallCounter,
    FaultConfig,
    Faults,
    WebhookDeliverer,
    WindowRateLimiter,
    serve_in_thread,
)
from tests.sandbox.conftest import Receiver


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _outcomes(faults: Faults, n: int) -> list[str | None]:
    async def run() -> list[str | None]:
        return [await faults.apply(None) for _ in range(n)]

    return asyncio.run(run())


def test_faults_with_the_same_seed_repeat() -> None:
    config = FaultConfig(error_rate=0.3, burst_429_rate=0.3, seed=42)
    first = _outcomes(Faults(config), 50)
    second = _outcomes(Faults(config), 50)
    assert first == second
    assert {"error", "429", None} <= set(first)
    other = _outcomes(Faults(FaultConfig(error_rate=0.3, burst_429_rate=0.3, seed=7)), 50)
    assert other != first


def test_replacing_the_config_reseeds() -> None:
    faults = Faults(FaultConfig(error_rate=0.5, seed=1))
    first = _outcomes(faults, 20)
    faults.config = FaultConfig(error_rate=0.5, seed=1)
    assert _outcomes(faults, 20) == first
    faults.config = FaultConfig(seed=1)
    assert _outcomes(faults, 20) == [None] * 20


def test_fault_rates_are_validated() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        FaultConfig(error_rate=1.5)


def test_latency_is_added() -> None:
    faults = Faults(FaultConfig(latency_ms=50))

    async def run() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await faults.apply(None)
        return loop.time() - start

    assert asyncio.run(run()) >= 0.045


def test_timeouts_hang_for_the_configured_time() -> None:
    faults = Faults(FaultConfig(timeout_rate=1.0, hang_seconds=0.05))

    async def run() -> tuple[float, str | None]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        outcome = await faults.apply(None)
        return loop.time() - start, outcome

    elapsed, outcome = asyncio.run(run())
    assert elapsed >= 0.045 and outcome is None


def test_window_rate_limiter_counts_per_key_and_resets() -> None:
    clock = FakeClock()
    limiter = WindowRateLimiter(3, 10.0, clock=clock)
    decisions = [limiter.hit("a") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[0].limit == 3
    assert limiter.hit("b").allowed  # another key has its own window
    clock.now += 4
    refused = limiter.hit("a")
    assert not refused.allowed
    assert refused.reset_seconds == pytest.approx(6.0)
    clock.now += 6
    again = limiter.hit("a")
    assert again.allowed and again.remaining == 2


def test_call_counter() -> None:
    counter = CallCounter()
    counter.record("/x", 200)
    counter.record("/x", 429)
    counter.record("/y", 200)
    assert counter.by_path["/x"] == 2
    assert counter.by_status[200] == 2
    assert counter.by_path_status[("/x", 429)] == 1
    assert counter.total == 3


def test_serve_in_thread_serves_and_stops() -> None:
    async def ping(request: Request) -> JSONResponse:
        return JSONResponse({"pong": True})

    handle = serve_in_thread(Starlette(routes=[Route("/ping", ping)]))
    try:
        assert handle.url.startswith("http://127.0.0.1:")
        assert httpx.get(handle.url + "/ping").json() == {"pong": True}
    finally:
        handle.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(handle.url + "/ping", timeout=1)


def test_deliverer_retries_on_schedule_until_2xx(receiver: Receiver) -> None:
    # Given a receiver failing twice (500, then 503) before answering 204
    receiver.statuses = [500, 503, 204]
    signed: list[int] = []

    def sign(url: str, body: bytes, attempt: int) -> dict[str, str]:
        signed.append(attempt)
        return {"X-Attempt-Sig": f"{attempt}:{len(body)}"}

    deliverer = WebhookDeliverer(retry_delays=[10.0, 20.0, 40.0], time_scale=0.01, sign=sign)
    try:
        # When one delivery is submitted
        deliverer.submit(receiver.url(), b'{"x":1}', {"Content-Type": "application/json"})
        assert deliverer.wait_idle(5)
    finally:
        deliverer.close()
    # Then it was tried three times, at the scaled delays, and then stopped
    attempts = deliverer.deliveries
    assert [d.attempt for d in attempts] == [1, 2, 3]
    assert [d.status for d in attempts] == [500, 503, 204]
    assert signed == [1, 2, 3]
    assert attempts[1].at - attempts[0].at >= 0.1 * 0.95
    assert attempts[2].at - attempts[1].at >= 0.2 * 0.95
    assert [r.headers["x-attempt-sig"] for r in receiver.received] == ["1:7", "2:7", "3:7"]
    assert receiver.received[0].headers["content-type"] == "application/json"


def test_deliverer_gives_up_after_the_schedule(receiver: Receiver) -> None:
    receiver.default_status = 500
    deliverer = WebhookDeliverer(retry_delays=[1.0, 1.0], time_scale=0.01)
    try:
        deliverer.submit(receiver.url(), b"{}", {}, body_for_attempt=lambda attempt: str(attempt).encode())
        assert deliverer.wait_idle(5)
    finally:
        deliverer.close()
    assert [d.attempt for d in deliverer.deliveries] == [1, 2, 3]
    assert [r.body for r in receiver.received] == [b"1", b"2", b"3"]


def test_deliverer_records_connection_errors() -> None:
    deliverer = WebhookDeliverer(retry_delays=[1.0], time_scale=0.01)
    try:
        deliverer.submit("http://127.0.0.1:9/nowhere", b"{}", {})
        assert deliverer.wait_idle(10)
    finally:
        deliverer.close()
    assert len(deliverer.deliveries) == 2
    assert all(d.status is None and d.error == "ConnectError" for d in deliverer.deliveries)


def test_deliverer_drops_and_duplicates_repeatably(receiver: Receiver) -> None:
    def run() -> tuple[int, int]:
        faults = Faults(FaultConfig(drop_webhook_rate=0.3, duplicate_webhook_rate=0.3, seed=5))
        deliverer = WebhookDeliverer(retry_delays=[], faults=faults)
        try:
            for i in range(20):
                deliverer.submit(receiver.url(), str(i).encode(), {})
            assert deliverer.wait_idle(10)
        finally:
            deliverer.close()
        return deliverer.dropped, len(deliverer.deliveries)

    dropped, sent = run()
    assert 0 < dropped < 20
    assert sent > 20 - dropped  # some were duplicated
    assert run() == (dropped, sent)
