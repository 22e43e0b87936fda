"""Running the receiver under uvicorn, wired from :class:`~sync_worker.settings.Settings`.

``log_config=None`` leaves logging to the root handler that :func:`sync_worker.logs.configure_logging`
installed (with secret redaction), and ``access_log=False`` replaces uvicorn's access log, whose
request line includes the query string (``?token=``), with
:class:`~sync_worker.receiver.access.AccessLogMiddleware`.
With ``workers > 1`` uvicorn starts processes that import :func:`app_from_environment` by name; each
is its own entry point and builds its settings once. https://www.uvicorn.org/settings/ and
https://www.uvicorn.org/deployment/#running-programmatically
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import uvicorn
from starlette.applications import Starlette

from sync_worker.broker import build_broker
from sync_worker.errors import ConfigError
from sync_worker.intake import WebhookSource
from sync_worker.mappings import Mappings, MappingsHolder
from sync_worker.metrics import ReceiverMetrics
from sync_worker.receiver.app import create_app
from sync_worker.receiver.limits import GuardedH11Protocol, connection_cap
from sync_worker.settings import Settings, load_settings
from sync_worker.store.store import SyncStore

__all__ = [
    "APP_FACTORY",
    "HEAD_TIMEOUT",
    "app_from_environment",
    "build_app",
    "build_webhook_sources",
    "serve",
]

APP_FACTORY = "sync_worker.receiver.serve:app_from_environment"
HEAD_TIMEOUT = 5
"""Seconds a connection has to send a complete request head (and an idle keep-alive to live)."""

_log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def build_webhook_sources(
    settings: Settings,
    mappings: Mappings | Callable[[], Mappings],
    *,
    clock: Callable[[], datetime] = _utcnow,
) -> dict[str, WebhookSource]:
    """The connectors that take webhooks and whose credentials are set, by source name; each
    disabled one is logged once (:func:`sync_worker.runtime.build_connectors`)."""
    from sync_worker.plugins import registry
    from sync_worker.runtime import build_connectors

    takes_webhooks = {name for name, spec in registry().items() if spec.webhooks}
    built = build_connectors(settings, mappings, limiter=lambda _name: None, clock=clock)
    return {name: connector for name, connector in built.items() if name in takes_webhooks}


def build_app(
    settings: Settings, *, clock: Callable[[], datetime] = _utcnow, worker_metrics_dir: str | None = None
) -> Starlette:
    """The receiver with a real store, Redis broker, hot-reloaded mappings and configured connectors.

    ``worker_metrics_dir``: the workers' multiprocess metrics folder (``run``), added to ``/metrics``.
    """
    holder = MappingsHolder(settings.resolved_mappings_dir(), interval=settings.mappings_reload_seconds)
    store = SyncStore(settings.database_url)
    broker = build_broker(settings)
    connectors = build_webhook_sources(settings, lambda: holder.current, clock=clock)
    holder.start()
    if threading.current_thread() is threading.main_thread():
        holder.install_sighup()  # `kill -HUP` reloads the mappings now (workers: dramatiq restarts on HUP)
    metrics = ReceiverMetrics()
    if worker_metrics_dir is not None:
        metrics.add_worker_dir(worker_metrics_dir)
    return create_app(
        settings,
        metrics=metrics,
        store=store,
        broker=broker,
        mappings_holder=holder,
        connectors=connectors,
        on_close=(holder.stop, store.close),
        report_store=store,
        clock=clock,
    )


def app_from_environment() -> Starlette:
    """uvicorn factory for worker processes: settings and logging from the environment, then the app."""
    from sync_worker.logs import configure_logging

    settings = load_settings()
    configure_logging(settings)
    return build_app(settings)


def serve(
    settings: Settings, host: str, port: int, workers: int = 1, *, worker_metrics_dir: str | None = None
) -> None:
    """Run the receiver until interrupted (blocks). ``workers > 1`` starts that many processes.

    Slow clients are bounded (:mod:`sync_worker.receiver.limits`): the request head must arrive
    within :data:`HEAD_TIMEOUT` seconds, and each process holds at most
    :func:`~sync_worker.receiver.limits.connection_cap` connections, below its file limit.
    """
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    app = None if workers > 1 else build_app(settings, worker_metrics_dir=worker_metrics_dir)
    target: str | Starlette = APP_FACTORY if app is None else app
    cap = connection_cap()
    _log.info("receiver: at most %d connections per process, request heads within %d s", cap, HEAD_TIMEOUT)
    uvicorn.run(
        target,
        host=host,
        port=port,
        factory=workers > 1,
        workers=workers if workers > 1 else None,
        log_config=None,
        access_log=False,
        server_header=False,
        log_level=settings.log_level.lower(),
        http=GuardedH11Protocol,
        timeout_keep_alive=HEAD_TIMEOUT,
        limit_concurrency=cap,
    )
