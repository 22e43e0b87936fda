"""Pieces shared by the sandbox servers: fault injection, rate limiting, webhook delivery, serving.

- :class:`FaultConfig` / :class:`Faults`: seeded, repeatable fault decisions (5xx, 429, latency,
  hangs, dropped or duplicated webhooks). ``Faults.config`` can be replaced at runtime.
- :class:`WindowRateLimiter`: a fixed-window counter per key (per token) with an injectable clock.
- :class:`WebhookDeliverer`: posts webhook bodies in a background thread with a retry schedule
  (``retry_delays`` seconds, multiplied by ``time_scale`` so tests run in milliseconds); every attempt
  is recorded as a :class:`Delivery`. It never blocks the request that caused the change.
- :class:`CallCounter`: API calls counted per path and per status, for benchmarks.
- :func:`serve_in_thread`: runs an ASGI app under uvicorn in a daemon thread on a free port.

Nothing here reads the environment; secrets passed in (signing keys) are never logged or put in reprs.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Literal

import httpx
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

__all__ = [
    "CallCounter",
    "Delivery",
    "FaultConfig",
    "FaultOutcome",
    "Faults",
    "Handler",
    "RateDecision",
    "SandboxApiError",
    "ServerHandle",
    "WebhookDeliverer",
    "WindowRateLimiter",
    "admin_routes",
    "counted_route",
    "serve_in_thread",
]

FaultOutcome = Literal["error", "429"]


@dataclass(frozen=True)
class FaultConfig:
    """Knobs for injected faults. Rates are fractions in [0, 1]; durations as named."""

    error_rate: float = 0.0
    """Fraction of API requests answered 500/502/503 with the provider's documented error body."""
    burst_429_rate: float = 0.0
    """Fraction of requests answered 429 as if the rate limit was hit."""
    latency_ms: float = 0.0
    """Latency added to every API request, in milliseconds."""
    timeout_rate: float = 0.0
    """Fraction of requests that hang for ``hang_seconds`` before answering."""
    hang_seconds: float = 30.0
    drop_webhook_rate: float = 0.0
    """Fraction of webhook deliveries silently not sent."""
    duplicate_webhook_rate: float = 0.0
    """Fraction of webhook deliveries sent twice."""
    seed: int | None = None
    """Seed for every random decision; the same seed and the same calls give the same faults."""

    def __post_init__(self) -> None:
        rates = (
            "error_rate",
            "burst_429_rate",
            "timeout_rate",
            "drop_webhook_rate",
            "duplicate_webhook_rate",
        )
        for name in rates:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.latency_ms < 0 or self.hang_seconds < 0:
            raise ValueError("latency_ms and hang_seconds must not be negative")


class Faults:
    """Seeded fault decisions shared by one sandbox server.

    Every call to :meth:`roll` consumes exactly one draw, whatever the rate, so a run with a given
    seed makes the same decisions for the same sequence of calls. Assigning :attr:`config` re-seeds.
    """

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = config if config is not None else FaultConfig()
        self._random = random.Random(self._config.seed)

    @property
    def config(self) -> FaultConfig:
        return self._config

    @config.setter
    def config(self, config: FaultConfig) -> None:
        with self._lock:
            self._config = config
            self._random = random.Random(config.seed)

    def roll(self, rate: float) -> bool:
        """True with probability ``rate`` (a fraction), from the seeded generator."""
        with self._lock:
            draw = self._random.random()
        return draw < rate

    async def apply(self, request: Request | None = None) -> FaultOutcome | None:
        """Inject latency and hangs for one API request; say whether to answer it with a fault.

        Returns ``"error"`` (answer 5xx), ``"429"`` (answer as rate-limited) or ``None`` (serve it).
        Draw order is fixed (timeout, error, 429) so seeded runs repeat.
        """
        config = self._config
        if config.latency_ms > 0:
            await asyncio.sleep(config.latency_ms / 1000.0)
        hang = self.roll(config.timeout_rate)
        error = self.roll(config.error_rate)
        burst = self.roll(config.burst_429_rate)
        if hang:
            await asyncio.sleep(config.hang_seconds)
        if error:
            return "error"
        if burst:
            return "429"
        return None

    def pick(self, choices: Sequence[int]) -> int:
        """A seeded choice, e.g. which 5xx status to answer with."""
        with self._lock:
            return self._random.choice(list(choices))


@dataclass(frozen=True)
class RateDecision:
    """Outcome of one hit on a limiter. ``reset_seconds`` is the time until the window resets."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: float


class WindowRateLimiter:
    """Fixed-window limiter per key, with an injectable clock.

    A key's window opens at its first hit and lasts ``window_seconds``; up to ``limit`` hits are allowed
    in it. Refused hits do not count against the next window. Thread-safe.
    """

    def __init__(
        self, limit: int, window_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit <= 0 or window_seconds <= 0:
            raise ValueError("limit and window_seconds must be positive")
        self.limit = limit
        self.window_seconds = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}

    def hit(self, key: str) -> RateDecision:
        """Count one request for ``key`` and say whether it is within the limit."""
        with self._lock:
            now = self._clock()
            start, used = self._windows.get(key, (now, 0))
            if now - start >= self.window_seconds:
                start, used = now, 0
            reset = max(0.0, start + self.window_seconds - now)
            if used >= self.limit:
                self._windows[key] = (start, used)
                return RateDecision(allowed=False, limit=self.limit, remaining=0, reset_seconds=reset)
            used += 1
            self._windows[key] = (start, used)
            return RateDecision(
                allowed=True, limit=self.limit, remaining=self.limit - used, reset_seconds=reset
            )

    def reset(self) -> None:
        """Forget every window (tests)."""
        with self._lock:
            self._windows.clear()


@dataclass
class Delivery:
    """One attempt of one webhook delivery, recorded for tests.

    ``attempt`` is 1 for the first try. ``status`` is the receiver's HTTP status, or ``None`` when
    the request failed (``error`` names the failure, e.g. ``"ConnectError"``). ``at`` is
    :func:`time.monotonic` when the attempt was sent. ``headers`` are the headers sent (they may
    carry signatures, never the signing secret itself).
    """

    url: str
    body: bytes
    headers: dict[str, str]
    attempt: int
    status: int | None
    error: str | None
    at: float
    delivery_id: int = 0


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    url: str = field(compare=False)
    body: bytes = field(compare=False, repr=False)
    headers: dict[str, str] = field(compare=False, repr=False)
    attempt: int = field(compare=False)
    delivery_id: int = field(compare=False)
    body_for_attempt: Callable[[int], bytes] | None = field(compare=False, repr=False, default=None)


class WebhookDeliverer:
    """Posts webhook bodies to a URL in the background with a retry schedule, scaled by ``time_scale``.

    A delivery is tried once, then after each of ``retry_delays`` (seconds, times ``time_scale``) until
    the receiver answers 2xx; so at most ``1 + len(retry_delays)`` attempts. ``sign(url, body, attempt)``
    returns extra headers computed at send time (HubSpot signs every attempt with the current
    timestamp). ``faults`` may drop or duplicate deliveries (decided once per submitted delivery).

    :meth:`submit` is thread-safe and never blocks on the network.
    """

    def __init__(
        self,
        *,
        retry_delays: Sequence[float],
        time_scale: float = 1.0,
        faults: Faults | None = None,
        sign: Callable[[str, bytes, int], dict[str, str]] | None = None,
        request_timeout: float = 5.0,
        max_workers: int = 4,
    ) -> None:
        if time_scale < 0:
            raise ValueError("time_scale must not be negative")
        self.retry_delays: tuple[float, ...] = tuple(retry_delays)
        self.time_scale = time_scale
        self.faults = faults
        self.deliveries: list[Delivery] = []
        self.dropped = 0
        self._sign = sign
        self._client = httpx.Client(timeout=request_timeout)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="webhook-send")
        self._cond = threading.Condition()
        self._queue: list[_Job] = []
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self._pending = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="webhook-deliverer", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"WebhookDeliverer(retry_delays={self.retry_delays!r}, time_scale={self.time_scale!r})"

    def submit(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        body_for_attempt: Callable[[int], bytes] | None = None,
    ) -> None:
        """Queue one delivery. ``body_for_attempt(attempt)``, when given, rebuilds the body per attempt
        (HubSpot's ``attemptNumber`` lives in the body); otherwise ``body`` is sent every time."""
        copies = 1
        if self.faults is not None:
            config = self.faults.config
            drop = self.faults.roll(config.drop_webhook_rate)
            duplicate = self.faults.roll(config.duplicate_webhook_rate)
            if drop:
                with self._cond:
                    self.dropped += 1
                return
            if duplicate:
                copies = 2
        with self._cond:
            if self._closed:
                raise RuntimeError("deliverer is closed")
            now = time.monotonic()
            for _ in range(copies):
                job = _Job(
                    due=now,
                    seq=next(self._seq),
                    url=url,
                    body=body,
                    headers=dict(headers),
                    attempt=1,
                    delivery_id=next(self._ids),
                    body_for_attempt=body_for_attempt,
                )
                heapq.heappush(self._queue, job)
                self._pending += 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Block until every submitted delivery succeeded or gave up; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self) -> None:
        """Stop delivering; queued retries are abandoned."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()
        with self._cond:
            self._pending = 0
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._queue or self._queue[0].due > time.monotonic()):
                    wait = self._queue[0].due - time.monotonic() if self._queue else None
                    self._cond.wait(wait)
                if self._closed:
                    return
                job = heapq.heappop(self._queue)
            try:
                self._pool.submit(self._send, job)
            except RuntimeError:
                return  # pool shut down by close()

    def _send(self, job: _Job) -> None:
        body = job.body_for_attempt(job.attempt) if job.body_for_attempt is not None else job.body
        headers = dict(job.headers)
        if self._sign is not None:
            headers.update(self._sign(job.url, body, job.attempt))
        status: int | None = None
        error: str | None = None
        sent_at = time.monotonic()
        try:
            response = self._client.post(job.url, content=body, headers=headers)
            status = response.status_code
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        record = Delivery(
            url=job.url,
            body=body,
            headers=headers,
            attempt=job.attempt,
            status=status,
            error=error,
            at=sent_at,
            delivery_id=job.delivery_id,
        )
        ok = status is not None and 200 <= status < 300
        with self._cond:
            self.deliveries.append(record)
            if not ok and not self._closed and job.attempt <= len(self.retry_delays):
                delay = self.retry_delays[job.attempt - 1] * self.time_scale
                job.due = time.monotonic() + delay
                job.seq = next(self._seq)
                job.attempt += 1
                heapq.heappush(self._queue, job)
            else:
                self._pending -= 1
            self._cond.notify_all()


class CallCounter:
    """API calls counted per path and per status. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_path: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.by_path_status: Counter[tuple[str, int]] = Counter()

    def record(self, path: str, status: int) -> None:
        with self._lock:
            self.by_path[path] += 1
            self.by_status[status] += 1
            self.by_path_status[(path, status)] += 1

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.by_status.values())

    def reset(self) -> None:
        with self._lock:
            self.by_path.clear()
            self.by_status.clear()
            self.by_path_status.clear()


class ServerHandle:
    """A running uvicorn server; :attr:`url` is its base URL, :meth:`stop` shuts it down."""

    def __init__(
        self, server: uvicorn.Server, thread: threading.Thread, sock: socket.socket, url: str
    ) -> None:
        self._server = server
        self._thread = thread
        self._sock = sock
        self.url = url

    def __repr__(self) -> str:
        return f"ServerHandle(url={self.url!r})"

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)
        self._sock.close()


def serve_in_thread(
    app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *, startup_timeout: float = 10.0
) -> ServerHandle:
    """Run ``app`` under uvicorn in a daemon thread; return once it accepts connections.

    ``port=0`` picks a free port; the chosen one is in the returned handle's ``url``.
    """
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP,
    # and without it every keep-alive response waits ~40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound_host, bound_port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"sandbox-{bound_port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"sandbox server on {bound_host}:{bound_port} did not start")
        time.sleep(0.01)
    return ServerHandle(server, thread, sock, f"http://{bound_host}:{bound_port}")


class SandboxApiError(Exception):
    """An API request a sandbox refuses with ``status`` and a provider-style message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def admin_routes(calls: CallCounter, faults: Faults) -> list[Route]:
    """The admin routes every sandbox has: ``GET /_sandbox/calls`` and ``POST /_sandbox/faults``."""

    async def show_calls(request: Request) -> Response:
        return JSONResponse(
            {
                "total": calls.total,
                "by_path": dict(calls.by_path),
                "by_status": {str(status): n for status, n in calls.by_status.items()},
            }
        )

    async def set_faults(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except json.JSONDecodeError:
            return JSONResponse({"error": "body is not valid JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        unknown = sorted(set(body) - {f.name for f in fields(FaultConfig)})
        if unknown:
            return JSONResponse({"error": f"unknown fault knobs: {unknown}"}, status_code=400)
        try:
            faults.config = FaultConfig(**body)
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"ok": True})

    return [
        Route("/_sandbox/calls", show_calls, methods=["GET"]),
        Route("/_sandbox/faults", set_faults, methods=["POST"]),
    ]


Handler = Callable[[Request], Awaitable[Response]]
"""An API endpoint of a sandbox, run behind its auth, rate-limit and fault checks."""


def counted_route(
    calls: CallCounter,
    path: str,
    serve: Callable[[Request, Handler], Awaitable[Response]],
    handler: Handler,
    methods: list[str] | None = None,
) -> Route:
    """A route that runs ``handler`` through ``serve`` and counts each answer in ``calls`` by route
    template (``{id:int}`` counted as ``{id}``), so benchmarks see API calls per endpoint."""
    label = path.replace(":int}", "}")

    async def endpoint(request: Request) -> Response:
        response = await serve(request, handler)
        calls.record(label, response.status_code)
        return response

    return Route(path, endpoint, methods=methods)
