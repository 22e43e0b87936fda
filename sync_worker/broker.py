"""The Dramatiq broker: Redis or RabbitMQ in production, Dramatiq's :class:`StubBroker` in tests.

:func:`build_broker` reads ``Settings.broker_url`` (``SYNC_BROKER_URL``; unset: ``SYNC_REDIS_URL``).
``redis://`` gives a :class:`~dramatiq.brokers.redis.RedisBroker` with short socket timeouts, so a
Redis outage costs a webhook request milliseconds rather than the client's default reconnect
back-off (the events are already durable in the store; the sweeper enqueues them later).
``amqp://`` gives Dramatiq's own :class:`~dramatiq.brokers.rabbitmq.RabbitmqBroker`: durable queues
and persistent messages (a RabbitMQ restart keeps what was queued), publisher confirms (an enqueue
returns only once RabbitMQ has taken the message; a refusal raises, so the event stays unqueued in
the store and the sweeper sends it again) and the same short connect timeouts unless the URL's
query sets pika's own. Rate limits, locks and leases stay on Redis (``SYNC_REDIS_URL``) whichever
broker carries the messages. :func:`build_stub_broker` gives the same middleware on the in-memory
stub.

Actors are declared at import time against :data:`UNBOUND_BROKER`, a stub that refuses to enqueue,
so importing :mod:`sync_worker.actors` opens no connection and creates no default broker.
:func:`install_broker` makes a broker the global one and binds every project actor to it.

Retries (house style rule 5): :class:`TransientRetries` is Dramatiq's ``Retries`` with exponential
back-off that also honours :attr:`~sync_worker.errors.TransientError.retry_after` (the wait the other
side asked for, never shorter). Errors in :data:`NOT_RETRYABLE` (``PermanentError``, ``ConfigError``,
``MappingError``) are the actors' ``throws``: not retried. A message that failed for good (not
retryable, or out of retries) is written to the store's dead letters by
:class:`DeadLetterMiddleware`; the store, not Dramatiq's own ``.XQ`` queue, is what ``sync-worker
dlq`` lists and replays.

Redelivery after a crash: a Redis-broker worker holds fetched messages in an ack set and refreshes a
heartbeat on every broker command (each consumer polls at least once a second when idle). A worker
whose heartbeat is older than ``heartbeat_timeout`` is dead; the next *maintenance* pass run by a
live worker on that queue puts its unacknowledged messages back. Dramatiq's defaults (60 s timeout,
maintenance on 1 in 1,000 commands) can take minutes; we use :data:`HEARTBEAT_TIMEOUT_MS` = 15 s
and :data:`MAINTENANCE_CHANCE` = every fetch, so the first fetch a live worker makes on a queue
after the timeout puts a killed worker's messages back (15-20 s in the reliability suite). A
chance of one fetch in five was not enough: a busy consumer fetches only when its prefetch buffer
runs dry, and under load a redelivery once took over a minute. Maintenance with no dead worker is
two range reads on small sorted sets.

A busy consumer still fetches only when its prefetch buffer runs dry: with every worker thread of
the live workers on long messages, no fetch runs for a while and the dead worker's messages wait
(once over a minute in CI). :class:`RedeliveryWatch` closes that gap: in each Redis worker process
a thread runs a zero-message fetch on every declared queue (and delay queue) every
:data:`REDELIVERY_WATCH_S` = 5 s. A fetch of none takes no message but runs the maintenance pass,
so a killed worker's messages are back within ``heartbeat_timeout`` plus 5 s however busy the
consumers are. The same call refreshes the process's heartbeat, so a live worker whose threads are
all on long messages is never taken for dead (its messages are not run twice); only a process
that stops (killed, frozen) times out. Dramatiq's dead-message queue keeps failed messages for
:data:`DEAD_MESSAGE_TTL_MS` (3 days) since the store holds the real copy.

On RabbitMQ a killed worker's unacknowledged messages go back to their queue as soon as its
connection drops (AMQP 0-9-1 redelivery, https://www.rabbitmq.com/docs/confirms#automatic-requeueing);
no heartbeat or maintenance pass is involved.

Dramatiq references: brokers and middleware https://dramatiq.io/reference.html, the Redis broker
https://dramatiq.io/reference.html#dramatiq.brokers.redis.RedisBroker (``heartbeat_timeout``,
``dead_message_ttl``, ``maintenance_chance``), retries and ``throws``
https://dramatiq.io/guide.html#message-retries, middleware hooks
https://dramatiq.io/reference.html#dramatiq.Middleware, testing with the stub broker
https://dramatiq.io/cookbook.html#unit-testing. redis-py timeouts and retries:
https://redis.readthedocs.io/en/stable/connections.html and
https://redis.readthedocs.io/en/stable/retry.html. RabbitMQ: the broker
https://dramatiq.io/reference.html#dramatiq.brokers.rabbitmq.RabbitmqBroker (``confirm_delivery``),
publisher confirms https://www.rabbitmq.com/docs/confirms#publisher-confirms, durability
https://www.rabbitmq.com/docs/queues#durability, pika's URL parameters
https://pika.readthedocs.io/en/stable/modules/parameters.html#urlparameters
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, urlsplit

import dramatiq
import pika
import pika.exceptions
import redis
from dramatiq import Actor, Broker, Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import compute_backoff
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from sync_worker.errors import (
    ConfigError,
    MappingError,
    PermanentError,
    StoreUnavailableError,
    SyncWorkerError,
    TransientError,
)
from sync_worker.settings import Settings

__all__ = [
    "BROKER_NAMESPACE",
    "DEAD_MESSAGE_TTL_MS",
    "HEARTBEAT_TIMEOUT_MS",
    "MAINTENANCE_CHANCE",
    "NOT_RETRYABLE",
    "QUEUE_MARKER_KEY",
    "REDELIVERY_WATCH_S",
    "UNBOUND_BROKER",
    "DeadLetterMiddleware",
    "DeadLetterSink",
    "QueueLossWatch",
    "RedeliveryWatch",
    "TransientRetries",
    "broker_middleware",
    "broker_url",
    "build_broker",
    "build_stub_broker",
    "check_broker",
    "count_dead_letter",
    "describe_failure",
    "enqueue_errors",
    "install_broker",
    "queue_loss_watch",
]

_log = logging.getLogger(__name__)

BROKER_NAMESPACE: Final = "sync-worker"
HEARTBEAT_TIMEOUT_MS: Final = 15_000
MAINTENANCE_CHANCE: Final = 1_000_000  # out of Dramatiq's MAINTENANCE_SCALE of a million
DEAD_MESSAGE_TTL_MS: Final = 3 * 24 * 3600 * 1000
REDELIVERY_WATCH_S: Final = HEARTBEAT_TIMEOUT_MS / 3000

NOT_RETRYABLE: Final[tuple[type[BaseException], ...]] = (PermanentError, ConfigError, MappingError)
"""Errors retrying cannot fix; the actors declare them as ``throws`` so they go straight to dead letters."""

# Whole-message retries (Dramatiq's layer; short HTTP blips are retried inside the HTTP client).
_MAX_RETRIES: Final = 8
_MIN_BACKOFF_MS: Final = 5_000
_MAX_BACKOFF_MS: Final = 15 * 60 * 1000
_TIME_LIMIT_MS: Final = 10 * 60 * 1000
_MAX_AGE_MS: Final = 7 * 24 * 3600 * 1000
_REASON_MAX: Final = 1000
_INBOX_QUEUE: Final = "inbox"  # sync_worker.actors.INBOX_QUEUE (imported there, not here: no cycle)


class DeadLetterSink(Protocol):
    """The part of :class:`~sync_worker.store.SyncStore` that keeps dead letters."""

    def add_dead_letter(
        self,
        *,
        queue: str,
        actor: str,
        message_id: str,
        payload: Mapping[str, Any],
        reason: str,
        error_class: str | None = None,
        inbox_id: int | None = None,
    ) -> int: ...


class TransientRetries(Retries):
    """Dramatiq's retries, waiting at least the ``retry_after`` a :class:`TransientError` carries.

    ``throws`` (the actors set :data:`NOT_RETRYABLE`) and ``max_retries`` behave as upstream.
    """

    def after_process_message(
        self,
        broker: Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if isinstance(exception, TransientError) and exception.retry_after:
            actor = broker.get_actor(message.actor_name)
            retries = message.options.get("retries", 0)
            min_backoff = message.options.get(
                "min_backoff", actor.options.get("min_backoff", self.min_backoff)
            )
            max_backoff = message.options.get(
                "max_backoff", actor.options.get("max_backoff", self.max_backoff)
            )
            _, backoff = compute_backoff(retries, factor=min_backoff, max_backoff=max_backoff)
            delay = max(int(exception.retry_after * 1000), int(backoff))
            wrapped: BaseException = dramatiq.Retry(str(exception), delay=delay)
            exception = wrapped
        # Retries.after_process_message is unannotated upstream.
        super().after_process_message(  # type: ignore[no-untyped-call]
            broker, message, result=result, exception=exception
        )


def describe_failure(exception: BaseException) -> str:
    """A dead letter's reason: the error class and its message (the project's errors carry no secrets)."""
    if isinstance(exception, SyncWorkerError):
        text = f"{type(exception).__name__}: {exception}"
    else:
        # A foreign message may quote anything; keep it short.
        detail = str(exception)[:200]
        text = f"{type(exception).__name__}: {detail}" if detail else type(exception).__name__
    return text[:_REASON_MAX]


class DeadLetterMiddleware(dramatiq.Middleware):
    """Writes each message that failed for good to the store's dead letters, with its arguments.

    ``sink`` returns the store of this process (None before the runtime is built: then the message
    stays only in Dramatiq's ``.XQ`` and an error is logged). Placed *before* the retries
    middleware in the list, because Dramatiq runs ``after_*`` hooks in reverse order and the
    retries middleware is the one that decides a message has failed.
    """

    def __init__(self, sink: Callable[[], DeadLetterSink | None]) -> None:
        self._sink = sink

    def after_process_message(
        self,
        broker: Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None or not getattr(message, "failed", False):
            return
        not_retryable = isinstance(exception, NOT_RETRYABLE)
        retries = int(message.options.get("retries", 0))
        prefix = "not retryable" if not_retryable else f"gave up after {retries} attempt(s)"
        self._write(message, f"{prefix}: {describe_failure(exception)}", type(exception).__name__)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        if getattr(message, "failed", False):
            self._write(message, "skipped: message too old (age limit)", None)

    def _write(self, message: Any, reason: str, error_class: str | None) -> None:
        sink = self._sink()
        if sink is None:
            _log.error("dead letter not stored (no store configured): message %s", message.message_id)
            return
        payload = {
            "args": list(message.args),
            "kwargs": dict(message.kwargs),
            "retries": int(message.options.get("retries", 0)),
        }
        try:
            dead_id = sink.add_dead_letter(
                queue=_canonical_queue(message.queue_name),
                actor=message.actor_name,
                message_id=message.message_id,
                payload=payload,
                reason=reason,
                error_class=error_class,
                inbox_id=_inbox_id(message),
            )
        except StoreUnavailableError as exc:
            _log.error("dead letter not stored (%s): message %s", exc, message.message_id)
            return
        count_dead_letter(_canonical_queue(message.queue_name), message.args)
        _log.warning(
            "message dead-lettered",
            extra={"dead_letter_id": dead_id, "actor": message.actor_name, "message_id": message.message_id},
        )


class RedeliveryWatch(dramatiq.Middleware):
    """Run the Redis broker's maintenance pass on every queue every ``interval`` seconds in a worker.

    See the module docstring: a zero-message ``fetch`` takes nothing and runs the pass that puts
    dead workers' unacknowledged messages back, and refreshes this process's heartbeat. The
    thread starts after the worker boots and stops before it shuts down; a Redis error is logged
    once per outage and the next tick tries again. Brokers other than Redis are left alone.
    """

    def __init__(self, interval: float = REDELIVERY_WATCH_S) -> None:
        if interval <= 0:
            raise ConfigError(f"redelivery watch interval must be > 0 seconds, got {interval}")
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        if not isinstance(broker, RedisBroker):
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(broker,), name="redelivery-watch", daemon=True
        )
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
            self._thread = None

    def _run(self, broker: RedisBroker) -> None:
        failing = False
        while not self._stop.wait(self.interval):
            queues = sorted(broker.get_declared_queues() | broker.get_declared_delay_queues())
            try:
                for queue in queues:
                    broker.do_fetch(queue, 0)  # Dramatiq dispatches do_<command> dynamically
            except redis.RedisError as exc:
                if not failing:
                    _log.warning("redelivery watch: Redis did not answer (%s); retrying", type(exc).__name__)
                failing = True
                continue
            failing = False


def count_dead_letter(queue: str, args: Iterable[object]) -> None:
    """Count one dead letter in :data:`~sync_worker.metrics.DEAD_LETTERS`; a poll's or push's first
    argument names its system."""
    from sync_worker.metrics import DEAD_LETTERS

    first = next(iter(args), None)
    DEAD_LETTERS.labels(queue=queue, system=first[:64] if isinstance(first, str) else "").inc()


def _inbox_id(message: Any) -> int | None:
    """The inbox row an inbox message stands for (its one argument), so the row stops counting as pending."""
    args = list(message.args)
    if _canonical_queue(message.queue_name) != _INBOX_QUEUE or len(args) != 1:
        return None
    return args[0] if isinstance(args[0], int) and not isinstance(args[0], bool) else None


def _canonical_queue(name: str) -> str:
    return name[:-3] if name.endswith(".DQ") else name


def _configured_sink() -> DeadLetterSink | None:
    from sync_worker.actors import configured_store

    return configured_store()


def broker_middleware(
    *,
    max_retries: int = _MAX_RETRIES,
    min_backoff_ms: int = _MIN_BACKOFF_MS,
    max_backoff_ms: int = _MAX_BACKOFF_MS,
    dead_letters: Callable[[], DeadLetterSink | None] | None = None,
    extra: Iterable[dramatiq.Middleware] = (),
) -> list[dramatiq.Middleware]:
    """Dramatiq's defaults with the project's retry policy (exponential back-off, bounded) and dead letters.

    ``dead_letters`` returns the store to write dead letters to; by default the store the actors
    were configured with (:func:`sync_worker.actors.configure_actors`). ``extra`` middleware goes
    first in the list (so its ``after_*`` hooks run last).
    """
    return [
        *extra,
        AgeLimit(max_age=_MAX_AGE_MS),
        TimeLimit(time_limit=_TIME_LIMIT_MS),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        DeadLetterMiddleware(dead_letters if dead_letters is not None else _configured_sink),
        TransientRetries(max_retries=max_retries, min_backoff=min_backoff_ms, max_backoff=max_backoff_ms),
    ]


def broker_url(settings: Settings) -> str:
    """The URL of the broker: ``SYNC_BROKER_URL``, else ``SYNC_REDIS_URL``."""
    return settings.broker_url.get_secret_value() if settings.broker_url else settings.redis_url


def build_broker(
    settings: Settings,
    *,
    middleware: Iterable[dramatiq.Middleware] | None = None,
    connect_timeout: float = 1.0,
    socket_timeout: float = 5.0,
    heartbeat_timeout_ms: int = HEARTBEAT_TIMEOUT_MS,
    maintenance_chance: int = MAINTENANCE_CHANCE,
    namespace: str = BROKER_NAMESPACE,
    redelivery_watch_s: float | None = REDELIVERY_WATCH_S,
) -> Broker:
    """The broker :func:`broker_url` names; connects lazily (no I/O here).

    ``heartbeat_timeout_ms`` and ``maintenance_chance`` set how fast a killed worker's messages
    are redelivered by the Redis broker, ``redelivery_watch_s`` how often each worker process runs
    its maintenance pass regardless of its consumers (None: only on fetches; see the module
    docstring). ``namespace`` prefixes every
    Redis key, so a demo or a test never shares queues with a running service; on RabbitMQ the
    URL's virtual host is what keeps two deployments apart.
    """
    chosen = list(middleware) if middleware is not None else broker_middleware()
    url = broker_url(settings)
    if url.startswith(("amqp://", "amqps://")):
        return _rabbitmq_broker(url, chosen, connect_timeout=connect_timeout, socket_timeout=socket_timeout)
    variable = "SYNC_BROKER_URL" if settings.broker_url else "SYNC_REDIS_URL"
    try:
        pool = redis.ConnectionPool.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
            health_check_interval=30,
        )
    except ValueError as exc:
        raise ConfigError(f"{variable}: not a usable Redis URL ({type(exc).__name__})") from exc
    if redelivery_watch_s is not None:
        chosen.append(RedeliveryWatch(redelivery_watch_s))
    # RedisBroker's __init__ is unannotated upstream.
    return RedisBroker(  # type: ignore[no-untyped-call]
        connection_pool=pool,
        middleware=chosen,
        namespace=namespace,
        heartbeat_timeout=heartbeat_timeout_ms,
        maintenance_chance=maintenance_chance,
        dead_message_ttl=DEAD_MESSAGE_TTL_MS,
    )


def _rabbitmq_broker(
    url: str, middleware: list[dramatiq.Middleware], *, connect_timeout: float, socket_timeout: float
) -> RabbitmqBroker:
    """Dramatiq's RabbitMQ broker with publisher confirms; pika's timeouts short unless the URL sets them."""
    try:
        broker = RabbitmqBroker(url=url, middleware=middleware, confirm_delivery=True)
    except ValueError as exc:
        raise ConfigError(f"SYNC_BROKER_URL: not a usable AMQP URL ({type(exc).__name__})") from exc
    params = broker.parameters if isinstance(broker.parameters, list) else [broker.parameters]
    for one, part in zip(params, url.split(";"), strict=True):
        given = parse_qs(urlsplit(part).query)
        defaults = {
            "socket_timeout": connect_timeout,
            "stack_timeout": connect_timeout + socket_timeout,
            "blocked_connection_timeout": socket_timeout * 6,
        }
        for name, value in defaults.items():
            if name not in given:
                setattr(one, name, value)
    return broker


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
    return (redis.RedisError, OSError, _BROKER_CONNECTION_ERROR, pika.exceptions.AMQPError)


QUEUE_MARKER_KEY: Final = "sync-worker:queue-marker"
"""A key the scheduler keeps in the broker's Redis, next to the queues (:class:`QueueLossWatch`)."""

_LOSS_MARGIN: Final = timedelta(seconds=2)


class QueueLossWatch:
    """Notices, within one check, that the Redis broker lost the messages it held.

    A marker key lives in the broker's Redis database, beside Dramatiq's queues; whatever takes the
    queues away (a restart without persistence, ``FLUSHALL``, a fail-over to an empty replica)
    takes the marker too, and whatever keeps them (AOF or RDB persistence) keeps it. The scheduler
    checks it every few seconds (:func:`sync_worker.scheduler.queue_loss_job`): while it is there,
    nothing was lost; when it is gone, :meth:`lost_before` says from when on the queue can be
    trusted again and the sweeper re-sends at once every unprocessed event enqueued before that,
    instead of waiting for :data:`~sync_worker.intake.STALE_AFTER`. Then :meth:`mark` sets the
    marker again. The instant is when Redis started (``INFO server`` ``uptime_in_seconds``, less a
    small margin for clocks): messages sent after that are on the new queue. When this watch saw
    the marker since that start (the data vanished while Redis kept running) it is now.
    https://redis.io/docs/latest/commands/info/ and https://redis.io/docs/latest/operate/oss_and_stack/management/persistence/
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        key: str = QUEUE_MARKER_KEY,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._key = key
        self._clock = clock
        self._monotonic = monotonic
        self._seen_at: float | None = None  # monotonic time this watch last saw the marker

    def __repr__(self) -> str:
        return f"QueueLossWatch(key={self._key!r})"

    def lost_before(self) -> datetime | None:
        """None while the marker is there; otherwise the instant before which every enqueued event
        may have lost its message. Raises a Redis error when Redis does not answer."""
        if self._client.exists(self._key):
            self._seen_at = self._monotonic()
            return None
        now = self._clock()
        uptime = float(self._client.info("server").get("uptime_in_seconds", 0))
        if self._seen_at is not None and self._monotonic() - self._seen_at < uptime:
            return now  # the data vanished while Redis kept running
        return now - timedelta(seconds=uptime) + _LOSS_MARGIN

    def mark(self) -> None:
        """Set the marker (after the re-send it calls for was sent)."""
        self._client.set(self._key, self._clock().isoformat())
        self._seen_at = self._monotonic()


def queue_loss_watch(broker: Broker) -> QueueLossWatch | None:
    """The :class:`QueueLossWatch` of a Redis broker; None for RabbitMQ (durable queues) and stubs."""
    client = getattr(broker, "client", None)
    if not isinstance(broker, RedisBroker) or client is None:
        return None
    return QueueLossWatch(client)


def check_broker(broker: Broker) -> None:
    """Raise :class:`TransientError` unless the broker answers; stubs always answer.

    Redis: ``PING``. RabbitMQ: a connection of its own opened and closed (the broker's connections
    belong to the threads that made them).
    """
    if isinstance(broker, RabbitmqBroker):
        try:
            pika.BlockingConnection(broker.parameters).close()
        except enqueue_errors() as exc:
            raise TransientError(f"broker unreachable: {type(exc).__name__}") from exc
        return
    client = getattr(broker, "client", None)
    if not isinstance(broker, RedisBroker) or client is None:
        return
    try:
        client.ping()
    except enqueue_errors() as exc:
        raise TransientError(f"broker unreachable: {type(exc).__name__}") from exc
