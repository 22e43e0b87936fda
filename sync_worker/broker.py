"""The Dramatiq broker: Redis in production, Dramatiq's :class:`StubBroker` in tests.

:func:`build_broker` makes a :class:`~dramatiq.brokers.redis.RedisBroker` from ``Settings.redis_url``
with short socket timeouts, so a Redis outage costs a webhook request milliseconds rather than the
client's default reconnect back-off (the events are already durable in the store; the sweeper enqueues
them later). :func:`build_stub_broker` gives the same middleware on the in-memory stub.

Actors are declared at import time against :data:`UNBOUND_BROKER`, a stub that refuses to enqueue,
so importing :mod:`sync_worker.actors` opens no connection and creates no default broker.
:func:`install_broker` makes a broker the global one and binds every project actor to it.

Dramatiq references: brokers and middleware https://dramatiq.io/reference.html, the Redis broker
https://dramatiq.io/reference.html#dramatiq.brokers.redis.RedisBroker, testing with the stub broker
https://dramatiq.io/cookbook.html#unit-testing. redis-py timeouts and retries:
https://redis.readthedocs.io/en/stable/connections.html and
https://redis.readthedocs.io/en/stable/retry.html
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import dramatiq
import redis
from dramatiq import Actor, Broker, Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from sync_worker.errors import ConfigError, TransientError
from sync_worker.settings import Settings

__all__ = [
    "BROKER_NAMESPACE",
    "UNBOUND_BROKER",
    "broker_middleware",
    "build_broker",
    "build_stub_broker",
    "check_broker",
    "enqueue_errors",
    "install_broker",
]

BROKER_NAMESPACE: Final = "sync-worker"

# Whole-message retries (Dramatiq's layer; short HTTP blips are retried inside the HTTP client).
_MAX_RETRIES: Final = 8
_MIN_BACKOFF_MS: Final = 5_000
_MAX_BACKOFF_MS: Final = 15 * 60 * 1000
_TIME_LIMIT_MS: Final = 10 * 60 * 1000
_MAX_AGE_MS: Final = 7 * 24 * 3600 * 1000


def broker_middleware() -> list[dramatiq.Middleware]:
    """Dramatiq's defaults with the project's retry policy (exponential back-off, bounded)."""
    return [
        AgeLimit(max_age=_MAX_AGE_MS),
        TimeLimit(time_limit=_TIME_LIMIT_MS),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=_MAX_RETRIES, min_backoff=_MIN_BACKOFF_MS, max_backoff=_MAX_BACKOFF_MS),
    ]


def build_broker(
    settings: Settings,
    *,
    middleware: Iterable[dramatiq.Middleware] | None = None,
    connect_timeout: float = 1.0,
    socket_timeout: float = 5.0,
) -> RedisBroker:
    """A Redis broker for ``settings.redis_url``; connects lazily (no I/O here)."""
    try:
        pool = redis.ConnectionPool.from_url(
            settings.redis_url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
            health_check_interval=30,
        )
    except ValueError as exc:
        raise ConfigError(f"SYNC_REDIS_URL: not a usable Redis URL ({type(exc).__name__})") from exc
    chosen = list(middleware) if middleware is not None else broker_middleware()
    # RedisBroker's __init__ is unannotated upstream.
    return RedisBroker(  # type: ignore[no-untyped-call]
        connection_pool=pool, middleware=chosen, namespace=BROKER_NAMESPACE
    )


def build_stub_broker(*, middleware: Iterable[dramatiq.Middleware] | None = None) -> StubBroker:
    """An in-memory broker with the production middleware, for tests and pure logic."""
    chosen = list(middleware) if middleware is not None else broker_middleware()
    return StubBroker(middleware=chosen)


class _UnboundBroker(StubBroker):
    """Where actors are declared at import time; refuses to enqueue until a real broker is installed."""

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        raise ConfigError(
            "no broker installed: call sync_worker.broker.install_broker() "
            f"before sending {message.actor_name}"
        )


UNBOUND_BROKER: Final[StubBroker] = _UnboundBroker(middleware=broker_middleware())


def install_broker(broker: Broker, actors: Iterable[Actor[Any, Any]] | None = None) -> Broker:
    """Make ``broker`` the global broker and bind the project's actors to it; returns ``broker``.

    ``actors`` defaults to every actor of :mod:`sync_worker.actors`.
    """
    if actors is None:
        from sync_worker.actors import ALL_ACTORS

        actors = ALL_ACTORS
    dramatiq.set_broker(broker)
    for actor in actors:
        actor.broker = broker
        broker.declare_actor(actor)
    return broker


# Renamed in Dramatiq 2 (the old name warns); ``vars`` avoids the module's deprecation hook.
_BROKER_CONNECTION_ERROR: Final[type[BaseException]] = (
    vars(dramatiq.errors).get("BrokerConnectionError") or vars(dramatiq.errors)["ConnectionError"]
)


def enqueue_errors() -> tuple[type[BaseException], ...]:
    """The exceptions an enqueue raises when the broker cannot take the message right now."""
    return (redis.RedisError, OSError, _BROKER_CONNECTION_ERROR)


def check_broker(broker: Broker) -> None:
    """Raise :class:`TransientError` unless the broker answers (Redis ``PING``); stubs always answer."""
    client = getattr(broker, "client", None)
    if not isinstance(broker, RedisBroker) or client is None:
        return
    try:
        client.ping()
    except enqueue_errors() as exc:
        raise TransientError(f"broker unreachable: {type(exc).__name__}") from exc
