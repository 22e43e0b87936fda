"""Shared fixtures for the sandbox tests: a tiny receiver that records webhook posts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sync_worker.sandbox.common import ServerHandle, serve_in_thread


@dataclass
class ReceivedRequest:
    path: str
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook target. ``statuses`` are answered in order, then ``default_status``."""

    handle: ServerHandle
    received: list[ReceivedRequest] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    default_status: int = 200
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return self.handle.url + path


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    async def hook(request: Request) -> Response:
        rec = state["receiver"]
        body = await request.body()
        with rec.lock:
            rec.received.append(
                ReceivedRequest(request.url.path, str(request.url), dict(request.headers), body)
            )
            status = rec.statuses.pop(0) if rec.statuses else rec.default_status
        return Response(status_code=status)

    app = Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])
    handle = serve_in_thread(app)
    state["receiver"] = Receiver(handle=handle)
    try:
        yield state["receiver"]
    finally:
        handle.stop()
