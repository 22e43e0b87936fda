"""Process wiring: settings -> store -> mappings holder -> connectors with shared limiters -> service.

Built once per process: a Dramatiq worker process builds it in :class:`RuntimeMiddleware`'s
``after_process_boot`` hook (https://dramatiq.io/reference.html#dramatiq.Middleware), so HTTP
clients, the database pool and the Redis connections are made once and shared by the worker's
threads. ``dramatiq sync_worker.runtime:boot_worker`` is the worker entry point: each worker
process reads its settings from the environment (it is its own entry point, like uvicorn's worker
processes), configures logging with secret redaction and installs the Redis broker.

Every connector gets the rate limiter of its account shared through Redis
(:func:`sync_worker.ratelimit.limiter_for`), so N workers on M machines stay under a provider's
limit together. A connector whose credentials are unset is disabled and logged once.

Leak detection is wired here too: :meth:`Runtime.scan_leaks` passes the start of each source's last
complete full pull (:func:`sync_worker.engine.full_pull_started`) so vanished deals are flagged
"dropped", and, when ``SYNC_ALERTS__WEBHOOK_URL`` is set, the process builds one alert client and
gives the actors :meth:`Runtime.push_alerts` for ``push_target("alert")``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import dramatiq
import redis
from dramatiq import Broker

from sync_worker.actors import PushLock, configure_actors, reapply_held_job
from sync_worker.connector import Connector
from sync_worker.engine import SyncService, full_streams
from sync_worker.engine.model import EngineConfig, PushStats
from sync_worker.errors import ConfigError, StoreUnavailableError
from sync_worker.http import ApiClient
from sync_worker.leaks.scan import ScanResult
from sync_worker.locks import RedisLock
from sync_worker.mappings import Mappings, MappingsHolder, mappings_source
from sync_worker.plugins import BuildContext, ConnectorSpec, deal_links, registry
from sync_worker.ratelimit import RedisRateLimiter, limiter_for
from sync_worker.settings import Settings
from sync_worker.store import SyncStore

__all__ = [
    "PUSH_GUARD_PREFIX",
    "PUSH_LEASE_SECONDS",
    "Runtime",
    "RuntimeMiddleware",
    "boot_worker",
    "build_connectors",
    "build_runtime",
    "enabled_specs",
    "enabled_streams",
    "own_markers",
    "redis_client",
    "redis_push_guard",
    "redis_push_lock",
    "send_reapply_held",
    "worker_broker",
]

_log = logging.getLogger(__name__)

PUSH_GUARD_PREFIX: Final = "sync-worker:push-scheduled"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def enabled_specs(settings: Settings) -> dict[str, ConnectorSpec]:
    """The registered connectors whose credentials are set, by name."""
    return {name: spec for name, spec in registry().items() if spec.enabled(settings.section(name))}


def enabled_streams(settings: Settings) -> dict[str, tuple[str, ...]]:
    """The streams polled incrementally for each system whose credentials are set."""
    return {name: spec.polled_streams for name, spec in enabled_specs(settings).items()}


def own_markers(settings: Settings) -> dict[str, frozenset[str]]:
    """Per system, the ``change_source`` values of the service's own writes (its spec's echo markers)."""
    markers = {name: spec.echo_markers(settings.section(name)) for name, spec in registry().items()}
    return {name: found for name, found in markers.items() if found}


def redis_client(settings: Settings, *, socket_timeout: float = 5.0) -> redis.Redis:
    """A Redis client for ``settings.redis_url`` (rate limits, locks, push guards); connects lazily."""
    try:
        return redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=1.0, socket_timeout=socket_timeout
        )
    except ValueError as exc:
        raise ConfigError(f"SYNC_REDIS_URL: not a usable Redis URL ({type(exc).__name__})") from exc


def build_connectors(
    settings: Settings,
    mappings: Mappings | Callable[[], Mappings],
    *,
    limiter: Callable[[str], RedisRateLimiter | None],
    clock: Callable[[], datetime] = _utc_now,
) -> dict[str, Connector]:
    """The enabled connectors by system name, each with ``limiter(system)``; disabled ones logged once.

    ``mappings`` may be a callable (``lambda: holder.current``): connectors then translate with the
    mappings of the moment, so a hot reload takes effect in every process at once.
    """
    current = mappings_source(mappings)
    built: dict[str, Connector] = {}
    for name, spec in registry().items():
        section = settings.section(name)
        if not spec.enabled(section):
            _log.warning("%s disabled: no credentials set (%s)", name, spec.credential_env)
            continue
        ctx = BuildContext(
            section=section, settings=settings, mappings=current, limiter=limiter(name), clock=clock
        )
        built[name] = spec.build(ctx)
    return built


PUSH_LEASE_SECONDS = 15.0


def redis_push_lock(client: redis.Redis, *, ttl: float = PUSH_LEASE_SECONDS) -> PushLock:
    """One push per target across every worker: a lease lock ``push:<target>`` in Redis.

    The holder renews the lease every ``ttl / 3`` while it pushes (:meth:`RedisLock.renewing`), so
    a slow push keeps it and a killed holder frees it within ``ttl`` seconds; pushes meanwhile find
    it held and are re-sent a few seconds later.
    """

    @contextmanager
    def hold(target: str) -> Iterator[bool]:
        lock = RedisLock(client, f"push:{target}", ttl=ttl)
        if not lock.acquire(blocking=False):
            yield False
            return
        try:
            with lock.renewing():
                yield True
        finally:
            lock.release()

    return hold


def redis_push_guard(client: redis.Redis) -> Callable[[str, int], bool]:
    """A push guard shared by every worker: ``SET sync-worker:push-scheduled:<target> NX PX ttl``."""

    def guard(target: str, ttl_ms: int) -> bool:
        try:
            return bool(client.set(f"{PUSH_GUARD_PREFIX}:{target}", b"1", nx=True, px=max(1, ttl_ms)))
        except redis.RedisError:
            return True  # better a redundant push than a missed one

    return guard


@dataclass
class Runtime:
    """Everything one process needs, built once; :meth:`close` releases it."""

    settings: Settings
    store: SyncStore
    mappings: MappingsHolder
    connectors: Mapping[str, Connector]
    service: SyncService
    redis: redis.Redis
    clock: Callable[[], datetime] = _utc_now
    alert_client: ApiClient | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    def scan_leaks(self, *, as_of: datetime | None = None) -> ScanResult:
        """One leak scan at the current time, or as of ``as_of`` (write-backs and alerts go through
        the outbox).

        Vanished deals are judged against the last complete full pull of the deal stream of each
        enabled source whose spec has one (:attr:`~sync_worker.plugins.ConnectorSpec.full_stream`).
        """
        from sync_worker.engine import full_pull_started
        from sync_worker.leaks import scan_leaks

        streams = full_streams(self.connectors)
        return scan_leaks(
            self.store,
            self.mappings.current.model,
            now=as_of if as_of is not None else self.clock(),
            full_pull_started=full_pull_started(self.store, streams),
            alerts=self.settings.alerts.webhook_url is not None,
            diverged_grace=self.diverged_grace,
            deal_links=deal_links(self.settings),
            alert_min_amount=self.settings.alerts.min_amount,
            digest=True,
        )

    @property
    def diverged_grace(self) -> timedelta:
        """How long copies may disagree before ``diverged``: a poll interval plus the push time."""
        return diverged_grace(self.settings, self.service.config)

    def push_alerts(self, limit: int = 100) -> PushStats:
        """Send the queued leak alerts (:func:`sync_worker.leaks.push_alerts`); ConfigError if unset."""
        from sync_worker.leaks import alert_client, push_alerts

        url = self.settings.alerts.webhook_url
        if url is None:
            raise ConfigError("no alert webhook configured: set SYNC_ALERTS__WEBHOOK_URL")
        if self.alert_client is None:
            self.alert_client = alert_client()
        return push_alerts(
            self.store, url, self.alert_client, now=self.clock(), limit=limit, config=self.service.config
        )

    def prepare_targets(self) -> list[str]:
        """Let each connector create what the service writes into (custom fields for leak flags and
        link ids) when missing; idempotent. Run by the scheduler's ``prepare_targets`` job, not at
        every worker start, so N workers do not race to create them. The names created."""
        created: list[str] = []
        for name, connector in self.connectors.items():
            made = connector.prepare()
            if made:
                _log.info("%s: created %s", name, ", ".join(made))
            created.extend(made)
        return created

    def configure_actors(self) -> None:
        """Give this process's actors the store, service, leak scan and push scheduling."""
        configure_actors(
            self.store,
            service=self.service,
            leak_scan=self.scan_leaks,
            push_targets=tuple(self.connectors),
            push_window=self.service.config.coalesce_window,
            push_guard=redis_push_guard(self.redis),
            push_lock=redis_push_lock(self.redis),
            prepare=self.prepare_targets,
            alert_push=self.push_alerts if self.settings.alerts.webhook_url is not None else None,
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.mappings.stop()
        for connector in self.connectors.values():
            connector.close()
        if self.alert_client is not None:
            self.alert_client.close()
        self.store.close()
        self.redis.close()


def diverged_grace(settings: Settings, config: EngineConfig) -> timedelta:
    """How long copies may disagree before ``diverged``: a poll interval plus the push time."""
    return timedelta(seconds=settings.poll_interval_seconds) + 2 * config.coalesce_window


def build_runtime(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = _utc_now,
    watch_mappings: bool = True,
    shared_limits: bool = True,
    coalesce_window: timedelta | None = None,
) -> Runtime:
    """Build the process runtime from ``settings``.

    ``shared_limits`` False leaves each connector its in-process default limiter (the one-shot
    ``sync`` command when Redis is not reachable). Raises :class:`ConfigError` or
    :class:`~sync_worker.errors.MappingError` on bad configuration.
    """
    from sync_worker.engine import EngineConfig

    client = redis_client(settings)
    holder = MappingsHolder(settings.resolved_mappings_dir(), interval=settings.mappings_reload_seconds)
    store = SyncStore(settings.database_url)

    def limiter(system: str) -> RedisRateLimiter | None:
        return limiter_for(system, settings, client) if shared_limits else None

    connectors = build_connectors(settings, lambda: holder.current, limiter=limiter, clock=clock)
    # A create left unfinished is taken over once a poll of its target had time to bring in the
    # deal it may have made (two poll intervals), and never sooner than five minutes.
    lease = max(timedelta(minutes=5), timedelta(seconds=2 * settings.poll_interval_seconds))
    config = EngineConfig(own_change_sources=own_markers(settings), create_lease=lease)
    if coalesce_window is not None:
        config = replace(config, coalesce_window=coalesce_window)
    grace = diverged_grace(settings, config)

    def clear_moved_flags(record_ids: Sequence[int]) -> None:
        from sync_worker.leaks import clear_moved

        clear_moved(store, holder.current.model, record_ids, now=clock(), diverged_grace=grace)

    service = SyncService(store, holder, connectors, clock=clock, config=config, on_moved=clear_moved_flags)
    _start_routes(store, holder.current, clock())
    alerts = None
    if settings.alerts.webhook_url is not None:
        from sync_worker.leaks import alert_client

        alerts = alert_client()
    if watch_mappings:
        holder.start()
    return Runtime(
        settings=settings,
        store=store,
        mappings=holder,
        connectors=connectors,
        service=service,
        redis=client,
        clock=clock,
        alert_client=alerts,
    )


def _start_routes(store: SyncStore, mappings: Mappings, now: datetime) -> None:
    """Record when the service first ran each route: reply routes act only on newer replies."""
    try:
        store.start_routes((route.name for route in mappings.routes), at=now)
    except StoreUnavailableError as exc:
        _log.warning("route starts not recorded (%s): the next start records them", exc)


class RuntimeMiddleware(dramatiq.Middleware):
    """Builds the :class:`Runtime` once per worker process at boot and closes it at shutdown."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.runtime: Runtime | None = None

    def after_process_boot(self, broker: Broker) -> None:
        self.runtime = build_runtime(self._settings)
        self.runtime.configure_actors()
        # Held stages a mapping covers now (edited while no worker ran) or after a reload get applied.
        self.runtime.mappings.on_reload(send_reapply_held)
        send_reapply_held(self.runtime.mappings.current)
        _log.info("worker runtime ready: %s", ", ".join(sorted(self.runtime.connectors)) or "no connectors")

    def after_worker_shutdown(self, broker: Broker, worker: dramatiq.Worker) -> None:
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None


def send_reapply_held(mappings: Mappings) -> None:
    """Ask a worker to re-apply the held stages ``mappings`` may now cover (``reapply_held_job``).

    When the broker cannot take the message the error is logged: the next reload or worker start
    sends it again, and the held stages stay listed (``sync-worker held list``) meanwhile."""
    try:
        reapply_held_job.send()
    except dramatiq.errors.BrokerError as exc:
        _log.error("held stages not re-applied now (%s): the next reload or worker start retries", exc)


def worker_broker(settings: Settings, **options: Any) -> Broker:
    """The Redis broker of a worker process, with the runtime middleware, installed globally."""
    from sync_worker.broker import broker_middleware, build_broker, install_broker

    middleware = broker_middleware(extra=[RuntimeMiddleware(settings)])
    return install_broker(build_broker(settings, middleware=middleware, **options))


def boot_worker() -> None:
    """Dramatiq entry point (``dramatiq sync_worker.runtime:boot_worker``): settings, logging, broker.

    Dramatiq then emits ``process_boot``, which builds the runtime (:class:`RuntimeMiddleware`).
    """
    from sync_worker.logs import configure_logging
    from sync_worker.settings import load_settings

    settings = load_settings()
    configure_logging(settings)
    worker_broker(settings)
