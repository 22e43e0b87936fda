"""Connection limits for slow and hostile clients, below what the ASGI app can see.

uvicorn (0.55, h11) bounds neither how long a client may take to send its request head (a client
sending one byte a second holds a connection forever) nor how many connections are open (past
the file limit ``accept()`` fails with ``EMFILE`` and every client, health probes included, is
locked out). :class:`GuardedH11Protocol` is uvicorn's h11 protocol with both:

- a **head deadline**: a connection has ``timeout_keep_alive`` seconds to send a complete request
  line and headers, when it opens and again between keep-alive requests (uvicorn's own timer only
  covers an idle connection until its first byte); past it the connection is closed;
- a **connection cap**, ``limit_concurrency`` (see :func:`connection_cap`): a connection that
  would pass it closes the oldest connection still sending its head, so a flood of slow clients
  sheds itself and a prompt request (``GET /healthz``) is still served. Only when every open
  connection is busy with a request is the newcomer closed at once. uvicorn's own use of
  ``limit_concurrency`` (a 503 for every request once the cap is reached, health included) is
  replaced by this.

The request body has its own deadline in the app (:func:`sync_worker.receiver.wire.read_body`).
https://www.uvicorn.org/settings/#timeouts and https://h11.readthedocs.io/en/latest/api.html#the-state-machine
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["GuardedH11Protocol", "connection_cap"]

_log = logging.getLogger(__name__)

_RESERVED_FILES = 64
"""Descriptors kept for everything but client sockets: the store, Redis, logs, mapping files."""


def connection_cap(soft_limit: int | None = None) -> int:
    """Client connections allowed at once: the soft ``RLIMIT_NOFILE`` less a reserve of
    :data:`_RESERVED_FILES` or an eighth of it, whichever is more; at least 8."""
    if soft_limit is None:
        soft_limit, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft_limit == resource.RLIM_INFINITY or soft_limit <= 0:
        soft_limit = 65536
    return max(8, soft_limit - max(_RESERVED_FILES, soft_limit // 8))


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a head deadline and a connection cap (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_connections: int | None = self.limit_concurrency
        self.limit_concurrency = None  # enforced at accept time instead (health keeps answering)
        self._head_timeout = float(self.timeout_keep_alive)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._opened_at = time.monotonic()

    @property
    def sending_head(self) -> bool:
        """True while the client has not finished a request head (a slow client, or an idle one)."""
        return self._head_deadline is not None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._max_connections is not None and len(self.connections) > self._max_connections:
            self._shed()
        self._arm_head_deadline()

    def _shed(self) -> None:
        slow = [c for c in self.connections if isinstance(c, GuardedH11Protocol) and c.sending_head]
        slow = [c for c in slow if c is not self]
        cap = self._max_connections
        if slow:
            oldest = min(slow, key=lambda c: c._opened_at)
            _log.warning("connection cap of %d reached: closing the oldest slow client", cap)
            oldest._close()
        else:
            _log.warning("connection cap of %d reached: refusing a connection", cap)
            self._close()

    def _close(self) -> None:
        self._cancel_head_deadline()
        if not self.transport.is_closing():
            self.transport.close()

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is None and not self.transport.is_closing():
            self._head_deadline = self.loop.call_later(self._head_timeout, self._head_too_slow)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is h11.IDLE:
            self._close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_state()

    def _follow_state(self) -> None:
        if self.transport.is_closing():
            self._cancel_head_deadline()
        elif self.conn.their_state is h11.IDLE:
            self._arm_head_deadline()  # waiting for a head: the deadline runs (not reset by bytes)
        else:
            self._cancel_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)
