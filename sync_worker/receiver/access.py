"""A structured access log that never prints a query string.

uvicorn's own access log prints the request line with its query, which for LaGrowthMachine carries
the webhook secret (``?token=...``); the receiver runs uvicorn with ``access_log=False`` and logs
here instead: method, path (no query), status, duration, client. No header is logged.
https://www.uvicorn.org/settings/#logging and https://asgi.readthedocs.io/en/latest/specs/www.html
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ACCESS_LOGGER", "AccessLogMiddleware"]

ACCESS_LOGGER = "sync_worker.access"


class AccessLogMiddleware:
    """Pure ASGI middleware: one INFO line per HTTP request, after the response started."""

    def __init__(self, app: ASGIApp, *, logger: logging.Logger | None = None) -> None:
        self.app = app
        self.log = logger or logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            client = scope.get("client")
            method = str(scope.get("method", "-"))
            path = str(scope.get("path", "-"))
            millis = (time.perf_counter() - started) * 1000.0
            self.log.info(
                '%s "%s %s" %d %.1fms',
                f"{client[0]}:{client[1]}" if client else "-",
                method,
                path,
                status,
                millis,
                extra={
                    "http_method": method,
                    "http_path": path,
                    "http_status": status,
                    "duration_ms": round(millis, 2),
                },
            )
