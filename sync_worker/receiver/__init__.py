"""The webhook receiver (ASGI, Starlette) and how to run it under uvicorn.

``create_app`` wires the app from injected collaborators (tests, benchmarks); ``serve`` builds them
from settings and runs uvicorn. See :mod:`sync_worker.receiver.app` for the HTTP contract.
"""

from __future__ import annotations

from sync_worker.receiver.access import AccessLogMiddleware
from sync_worker.receiver.app import MappingsSource, create_app
from sync_worker.receiver.serve import app_from_environment, build_app, build_webhook_sources, serve
from sync_worker.receiver.wire import signed_url

__all__ = [
    "AccessLogMiddleware",
    "MappingsSource",
    "app_from_environment",
    "build_app",
    "build_webhook_sources",
    "create_app",
    "serve",
    "signed_url",
]
