"""The receiver: a Starlette app that durably accepts webhooks and answers health probes.

Routes (the architecture's HTTP contract):

- ``POST /webhooks/{source}``: 2xx only once the events are committed to the store's inbox; 401 bad
  or missing signature/credentials; 400 malformed body; 413 body over ``webhook_max_bytes``; 408
  (connection closed) body not received within ``body_timeout``; 404 unknown source; 503 store
  unavailable (the sender retries). A broker outage does not fail the
  request: the events are durable and the sweeper enqueues them later.
- ``GET /healthz``: the process is up. ``GET /readyz``: store, schema (migrated to the package's
  head revision), broker and mappings, each named.
- ``GET /metrics``: Prometheus text, with the leak gauges (open flags, amount at risk and weighted
  amount at risk by rule and stage) read from the store at scrape time; a down store never fails
  the scrape (the inbox depth and the leak series read NaN).
- ``GET /report``: the pipeline report page (:func:`sync_worker.report.render_report_html`),
  ``text/html``; 503 while the store is down. It shows deal names and amounts and carries no
  authentication of its own: expose it only behind the proxy's access control.
- ``GET /status``: ``sync-worker status --json`` (:mod:`sync_worker.status`), behind the same
  ``SYNC_REPORT_TOKEN`` as the report.

The blocking work (verification, parsing, the store transaction, the Redis push) runs in the thread
pool. Starlette: https://www.starlette.io/applications/ and https://www.starlette.io/lifespan/
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from dramatiq import Broker
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from sync_worker.actors import broker_enqueue
from sync_worker.broker import check_broker
from sync_worker.errors import (
    PayloadError,
    PayloadTooLargeError,
    SignatureError,
    StoreUnavailableError,
    TransientError,
)
from sync_worker.intake import Enqueue, InboxStore, WebhookSource, accept_webhook, sweep_inbox
from sync_worker.leaks.scan import leak_gauges
from sync_worker.mappings import Mappings
from sync_worker.metrics import CONTENT_TYPE, ReceiverMetrics, RequestOutcome
from sync_worker.plugins import deal_links, registry
from sync_worker.receiver.access import AccessLogMiddleware
from sync_worker.receiver.wire import BodyTimeoutError, error_response, read_body, webhook_request
from sync_worker.report import render_report_html
from sync_worker.settings import Settings
from sync_worker.store import SyncStore, head_revision

__all__ = ["MappingsSource", "create_app"]

_log = logging.getLogger(__name__)

_RETRY_AFTER = {"Retry-After": "30"}
_CLOSE = {"Connection": "close"}


def _utc_now() -> datetime:
    return datetime.now(UTC)


class MappingsSource(Protocol):
    """What readiness needs of :class:`~sync_worker.mappings.MappingsHolder`."""

    @property
    def current(self) -> Mappings: ...


def _token_matches(request: Request, expected: str) -> bool:
    """The report's secret from ``?token=``, ``X-Sync-Token`` or a bearer header (constant-time)."""
    bearer = request.headers.get("authorization", "")
    given = (
        request.query_params.get("token")
        or request.headers.get("x-sync-token")
        or (bearer[7:] if bearer.lower().startswith("bearer ") else "")
    )
    return hmac.compare_digest(given.encode(), expected.encode())


def _outcome_for(exc: Exception) -> tuple[RequestOutcome, Response]:
    if isinstance(exc, BodyTimeoutError):
        return "bad_request", error_response(408, "request_timeout", str(exc), headers=_CLOSE)
    if isinstance(exc, SignatureError):
        return "unauthorized", error_response(401, "unauthorized", str(exc))
    if isinstance(exc, PayloadTooLargeError):
        return "too_large", error_response(413, "payload_too_large", str(exc))
    if isinstance(exc, PayloadError):
        return "bad_request", error_response(400, "bad_request", str(exc))
    return "unavailable", error_response(
        503, "store_unavailable", "the event store is unavailable; retry later", headers=_RETRY_AFTER
    )


def _schema_state(store: SyncStore) -> str:
    """ "ok" when the store is migrated to the package's head revision, else what to do about it."""
    try:
        revision = store.schema_revision()
    except StoreUnavailableError as exc:
        return f"unavailable: {exc}"
    head = head_revision()
    if revision == head:
        return "ok"
    return f"at revision {revision or 'none'}, not {head}: run `sync-worker db upgrade`"


class _Receiver:
    """The handlers and the background sweeper, sharing the injected collaborators."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: InboxStore,
        broker: Broker,
        mappings_holder: MappingsSource | None,
        connectors: Mapping[str, WebhookSource],
        metrics: ReceiverMetrics,
        enqueue: Enqueue,
        sweep_interval: float | None,
        sweep_older_than: timedelta,
        timer: Callable[[], float],
        on_close: Sequence[Callable[[], None]],
        report_store: SyncStore | None,
        clock: Callable[[], datetime],
        body_timeout: float | None,
    ) -> None:
        self.settings = settings
        self.body_timeout = body_timeout
        self.store = store
        self.broker = broker
        self.mappings_holder = mappings_holder
        self.connectors = dict(connectors)
        self.metrics = metrics
        self.enqueue = enqueue
        self.sweep_interval = sweep_interval
        self.sweep_older_than = sweep_older_than
        self.timer = timer
        self.on_close = tuple(on_close)
        self.report_store = report_store
        self.clock = clock

    def _unknown(self, source: str) -> Response:
        self.metrics.count_request("unknown", "unknown_source")
        if source in registry():
            message = f"webhook source {source[:64]!r} is not enabled (its credentials are not set)"
        else:
            message = f"no webhook source named {source[:64]!r}"
        return error_response(404, "unknown_source", message)

    async def webhook_head(self, request: Request) -> Response:
        """Answer a provider's check of the callback URL (Trello's HEAD) where its spec asks for it."""
        source = str(request.path_params["source"])
        spec = registry().get(source)
        if source not in self.connectors or spec is None or not spec.answers_head:
            return Response(status_code=404)
        return Response(status_code=200)

    async def webhook(self, request: Request) -> Response:
        source = str(request.path_params["source"])
        connector = self.connectors.get(source)
        if connector is None:
            return self._unknown(source)
        spec = registry().get(source)
        started = self.timer()
        try:
            body = await read_body(request, self.settings.webhook_max_bytes, self.body_timeout)
            hook = webhook_request(request, body, self.settings.public_url)
            result = await run_in_threadpool(
                accept_webhook,
                source,
                hook,
                connector=connector,
                store=self.store,
                enqueue=self.enqueue,
                metrics=self.metrics,
            )
        except (
            SignatureError,
            PayloadError,
            PayloadTooLargeError,
            StoreUnavailableError,
            BodyTimeoutError,
        ) as exc:
            outcome, response = _outcome_for(exc)
            _log.warning(
                "webhook refused: %s: %s",
                outcome,
                exc,
                extra={"source": source, "status": response.status_code, "reason": str(exc)},
            )
            self.metrics.count_request(source, outcome)
            self.metrics.observe_latency(source, self.timer() - started)
            if spec is not None and spec.webhook_fault is not None:
                media, fault = spec.webhook_fault(response.status_code, str(exc))
                kept = {k: v for k, v in response.headers.items() if k.lower() == "retry-after"}
                return Response(fault, status_code=response.status_code, media_type=media, headers=kept)
            return response
        self.metrics.count_request(source, "accepted")
        self.metrics.observe_latency(source, self.timer() - started)
        if spec is not None and spec.webhook_ack is not None:
            media, ack = spec.webhook_ack(len(result.stored) + result.duplicates + result.unhandled)
            return Response(ack, status_code=200, media_type=media)
        return JSONResponse(
            {
                "accepted": len(result.stored),
                "duplicates": result.duplicates,
                "unhandled": result.unhandled,
                "queued": result.enqueued,
            },
            status_code=200,
        )

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def _checks(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            self.store.ping()
            checks["store"] = "ok"
        except StoreUnavailableError as exc:
            checks["store"] = f"unavailable: {exc}"
        try:
            check_broker(self.broker)
            checks["broker"] = "ok"
        except TransientError as exc:
            checks["broker"] = f"unavailable: {exc}"
        if self.report_store is not None and checks["store"] == "ok":
            checks["schema"] = _schema_state(self.report_store)
        if self.mappings_holder is None:
            checks["mappings"] = "not loaded"
        else:
            _ = self.mappings_holder.current
            checks["mappings"] = "ok"
        return checks

    async def readyz(self, request: Request) -> Response:
        checks = await run_in_threadpool(self._checks)
        failed = sorted(name for name, state in checks.items() if state != "ok")
        body = {"status": "ok" if not failed else "unavailable", "checks": checks, "failed": failed}
        return JSONResponse(body, status_code=200 if not failed else 503)

    def _refresh_depth(self) -> None:
        try:
            self.metrics.set_inbox_depth(float(self.store.inbox_depth()))
        except StoreUnavailableError:
            self.metrics.set_inbox_depth(math.nan)

    def _refresh_leaks(self) -> None:
        if self.report_store is None:
            return
        try:
            self.metrics.set_leak_samples(leak_gauges(self.report_store))
        except StoreUnavailableError:
            self.metrics.mark_leaks_unknown()

    def _refresh_gauges(self) -> None:
        self._refresh_depth()
        self._refresh_leaks()

    async def metrics_endpoint(self, request: Request) -> Response:
        await run_in_threadpool(self._refresh_gauges)
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    def _refused(self, request: Request, what: str) -> Response | None:
        """The answer when ``what`` may not be served (no store, no token set, wrong token); else None."""
        if self.report_store is None:
            return error_response(404, "not_found", "this receiver has no report store")
        expected = self.settings.report_token
        if expected is None:
            return error_response(404, "report_disabled", f"set SYNC_REPORT_TOKEN to serve the {what}")
        if not _token_matches(request, expected.get_secret_value()):
            return error_response(401, "unauthorized", f"the {what} needs ?token= or an X-Sync-Token header")
        return None

    async def status(self, request: Request) -> Response:
        refused = self._refused(request, "status")
        if refused is not None:
            return refused
        assert self.report_store is not None
        from sync_worker.status import build_status

        try:
            status = await run_in_threadpool(
                functools.partial(build_status, mappings_loaded=self.mappings_holder is not None),
                self.settings,
                self.report_store,
                now=self.clock(),
            )
        except StoreUnavailableError:
            return error_response(
                503, "store_unavailable", "the state store is unavailable; retry later", headers=_RETRY_AFTER
            )
        return JSONResponse(status.to_dict(), headers={"Cache-Control": "no-store"})

    async def report(self, request: Request) -> Response:
        refused = self._refused(request, "report")
        if refused is not None:
            return refused
        if self.mappings_holder is None:
            return error_response(
                503, "mappings_unavailable", "the stage mappings are not loaded", headers=_RETRY_AFTER
            )
        model = self.mappings_holder.current.model
        try:
            page = await run_in_threadpool(
                functools.partial(render_report_html, deal_links=deal_links(self.settings)),
                self.report_store,
                model,
                self.clock(),
            )
        except StoreUnavailableError:
            _log.warning("report refused: store unavailable")
            return error_response(
                503, "store_unavailable", "the state store is unavailable; retry later", headers=_RETRY_AFTER
            )
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    def sweep_once(self) -> None:
        """One sweep plus a depth refresh; a down store or broker is logged, never raised."""
        try:
            sweep_inbox(self.store, self.enqueue, older_than=self.sweep_older_than, metrics=self.metrics)
        except StoreUnavailableError:
            _log.warning("sweeper: store unavailable; will retry")
        self._refresh_depth()

    async def sweeper(self) -> None:
        assert self.sweep_interval is not None
        while True:
            await asyncio.sleep(self.sweep_interval)
            await run_in_threadpool(self.sweep_once)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(self.sweeper()) if self.sweep_interval else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for close in self.on_close:
                close()


def create_app(
    settings: Settings,
    *,
    store: InboxStore,
    broker: Broker,
    mappings_holder: MappingsSource | None,
    connectors: Mapping[str, WebhookSource],
    metrics: ReceiverMetrics | None = None,
    enqueue: Enqueue | None = None,
    sweep_interval: float | None = 30.0,
    sweep_older_than: timedelta = timedelta(seconds=30),
    timer: Callable[[], float] = time.perf_counter,
    access_log: bool = True,
    on_close: Sequence[Callable[[], None]] = (),
    report_store: SyncStore | None = None,
    clock: Callable[[], datetime] = _utc_now,
    body_timeout: float | None = 15.0,
) -> Starlette:
    """The receiver app, wired to the collaborators given (nothing is built from the environment).

    ``connectors`` maps a source name (the URL segment) to its webhook verifier/parser; a source
    not in it answers 404. ``enqueue`` defaults to sending each delivery as one inbox message on ``broker``.
    ``sweep_interval`` (seconds; None disables) runs :func:`~sync_worker.intake.sweep_inbox` in the
    background while the app is up. ``timer`` is the monotonic clock for latency. The connectors
    carry their own wall clock (HubSpot's signature timestamp check). ``app.state.receiver`` exposes
    ``metrics`` and ``sweep_once`` for the CLI and tests. ``on_close`` callables run at shutdown.
    ``report_store`` is the store ``GET /report`` and the leak gauges read (default: ``store`` when
    it is a :class:`~sync_worker.store.SyncStore`; None: no report, no leak gauges); ``clock``
    gives the report's "now" (timezone-aware UTC). ``body_timeout`` (seconds; None: no deadline)
    bounds how long a webhook body may take to arrive.
    """
    if report_store is None and isinstance(store, SyncStore):
        report_store = store
    receiver = _Receiver(
        settings,
        store=store,
        broker=broker,
        mappings_holder=mappings_holder,
        connectors=connectors,
        metrics=metrics if metrics is not None else ReceiverMetrics(),
        enqueue=enqueue if enqueue is not None else broker_enqueue(broker),
        sweep_interval=sweep_interval,
        sweep_older_than=sweep_older_than,
        timer=timer,
        on_close=on_close,
        report_store=report_store,
        clock=clock,
        body_timeout=body_timeout,
    )
    routes = [
        Route("/webhooks/{source}", receiver.webhook, methods=["POST"]),
        Route("/webhooks/{source}", receiver.webhook_head, methods=["HEAD"]),
        Route("/healthz", receiver.healthz, methods=["GET"]),
        Route("/readyz", receiver.readyz, methods=["GET"]),
        Route("/metrics", receiver.metrics_endpoint, methods=["GET"]),
        Route("/report", receiver.report, methods=["GET"]),
        Route("/status", receiver.status, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=receiver.lifespan)
    if access_log:
        app.add_middleware(AccessLogMiddleware)
    app.state.receiver = receiver
    return app
