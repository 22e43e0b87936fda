"""Fixtures for the end-to-end tests: the three sandboxes started in-process on free ports.

``sandbox`` (session scope) runs :func:`~sync_worker.sandbox.runner.start_sandbox` with a fixed seed;
its webhooks go to ``webhook_sink``, a tiny ASGI app that records every request it receives.
``settings`` is built from :meth:`RunningSandbox.env`, the same variables the service reads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sync_worker.connector import WebhookRequest
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.sandbox.common import ServerHandle, serve_in_thread
from sync_worker.sandbox.runner import RunningSandbox, start_sandbox
from sync_worker.settings import Settings

SEED = 11
DEALS = 120
REPO = Path(__file__).resolve().parents[2]


@dataclass
class WebhookSink:
    """Records every POST it receives as a :class:`WebhookRequest` (what the receiver would build)."""

    handle: ServerHandle
    received: list[tuple[str, WebhookRequest]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return self.handle.url

    def requests_for(self, source: str) -> list[WebhookRequest]:
        with self.lock:
            return [req for path, req in self.received if path == f"/webhooks/{source}"]

    def wait_for(
        self, source: str, predicate: Callable[[WebhookRequest], bool], timeout: float = 10.0
    ) -> WebhookRequest:
        """The first request to ``/webhooks/{source}`` matching ``predicate``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for request in self.requests_for(source):
                if predicate(request):
                    return request
            time.sleep(0.02)
        raise AssertionError(f"no matching {source} webhook within {timeout}s")


@pytest.fixture(scope="session")
def webhook_sink() -> Iterator[WebhookSink]:
    holder: dict[str, WebhookSink] = {}

    async def record(request: Request) -> Response:
        body = await request.body()
        received = WebhookRequest(
            method=request.method,
            url=str(request.url),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            query=dict(request.query_params),
        )
        sink = holder["sink"]
        with sink.lock:
            sink.received.append((request.url.path, received))
        return Response(status_code=200)

    handle = serve_in_thread(Starlette(routes=[Route("/{path:path}", record, methods=["POST"])]))
    holder["sink"] = WebhookSink(handle)
    try:
        yield holder["sink"]
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def sandbox(webhook_sink: WebhookSink) -> Iterator[RunningSandbox]:
    running = start_sandbox(seed=SEED, deals=DEALS, time_scale=0.001, webhook_base_url=webhook_sink.url)
    try:
        yield running
    finally:
        running.stop()


def settings_from_env(env: dict[str, str], **extra: Any) -> Settings:
    """``Settings`` from ``SYNC_*`` variables (nested on ``__``), without reading the process env."""
    values: dict[str, Any] = {}
    for name, value in env.items():
        path = name.removeprefix("SYNC_").lower().split("__")
        node = values
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    for section, overrides in extra.items():
        values.setdefault(section, {}).update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session")
def settings(sandbox: RunningSandbox) -> Settings:
    return settings_from_env(sandbox.env())


@pytest.fixture(scope="session")
def mappings() -> Mappings:
    return load_mappings(REPO / "mappings")


@dataclass
class CrmService:
    """The HubSpot and Pipedrive connectors of a sandbox and the service between them."""

    hubspot: Any
    pipedrive: Any
    service: Any

    def close(self) -> None:
        self.hubspot.close()
        self.pipedrive.close()


def crm_service(box: RunningSandbox, store: Any, mappings: Any) -> CrmService:
    """The real HubSpot and Pipedrive connectors against ``box`` and a :class:`SyncService` that
    pushes at once and knows the sandboxes' own-write markers. ``mappings``: a
    :class:`Mappings`, or a :class:`~sync_worker.mappings.MappingsHolder` (read on each call)."""
    import connectors.hubspot as hubspot
    import connectors.pipedrive as pipedrive
    from sync_worker.engine import EngineConfig, SyncService

    current = mappings if isinstance(mappings, Mappings) else (lambda: mappings.current)
    settings = settings_from_env(box.env())
    hs = hubspot.from_settings(settings, current)
    pd = pipedrive.from_settings(settings, current)
    hs_marker = ":".join(str(part) for part in box.hubspot.api_source())
    markers = {"hubspot": frozenset({hs_marker}), "pipedrive": frozenset({f"api:{box.pipedrive.user_id}"})}
    config = EngineConfig(coalesce_window=timedelta(0), own_change_sources=markers)
    return CrmService(hs, pd, SyncService(store, mappings, {"hubspot": hs, "pipedrive": pd}, config=config))
