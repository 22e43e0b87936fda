"""Broken HTTP framing over a real socket: the receiver under uvicorn with the guarded protocol
answers every malformed request with a 4xx (or closes it) within seconds, never a 5xx or a hang.

These are the requests an HTTP client library will not send (a lying ``Content-Length``, broken
chunks, both framings at once, control bytes in headers, a head that never ends), sent as raw
bytes to :class:`~sync_worker.receiver.limits.GuardedH11Protocol` with short deadlines.
"""

from __future__ import annotations

import base64
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from dramatiq.brokers.stub import StubBroker

from sync_worker.mappings import MappingsHolder
from sync_worker.receiver import build_webhook_sources, create_app
from sync_worker.receiver.limits import GuardedH11Protocol
from sync_worker.store import SyncStore
from tests.reliability.conftest import REPO
from tests.reliability.test_webhook_fuzz import HANG_SECONDS, NOW, PD_PASSWORD, PD_USER, fuzz_settings

DEADLINE = 2  # head and body deadlines of the server under test (seconds)
_AUTH = b"Authorization: Basic " + base64.b64encode(f"{PD_USER}:{PD_PASSWORD}".encode()) + b"\r\n"
_POST = b"POST /webhooks/pipedrive HTTP/1.1\r\nHost: t\r\n" + _AUTH


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory, migrated_db: Path) -> Iterator[tuple[str, int]]:
    path = tmp_path_factory.mktemp("framing") / "store.db"
    shutil.copyfile(migrated_db, path)
    store = SyncStore(f"sqlite:///{path}")
    settings_ = fuzz_settings()
    holder = MappingsHolder(REPO / "mappings", interval=60.0)
    connectors = build_webhook_sources(settings_, lambda: holder.current, clock=lambda: NOW)
    app = create_app(
        settings_,
        store=store,
        broker=StubBroker(),
        mappings_holder=holder,
        connectors=connectors,
        enqueue=lambda inbox_id: None,
        sweep_interval=None,
        access_log=False,
        body_timeout=DEADLINE,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="critical",
        access_log=False,
        http=GuardedH11Protocol,
        timeout_keep_alive=DEADLINE,
        limit_concurrency=64,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield sock.getsockname()[:2]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        for connector in connectors.values():
            connector.close()  # type: ignore[attr-defined]
        store.close()


def exchange(address: tuple[str, int], data: bytes) -> tuple[bytes, float]:
    """Send ``data`` (then nothing more) and read until the server closes; (answer, seconds)."""
    started = time.monotonic()
    with socket.create_connection(address, timeout=HANG_SECONDS) as conn:
        conn.sendall(data)
        answer = b""
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail(f"no answer and no close within {HANG_SECONDS} s: {answer[:200]!r}")
    return answer, time.monotonic() - started


_CASES = {
    "lying-content-length": _POST + b'Content-Length: 100\r\n\r\n{"meta":',
    "expect-continue-no-body": _POST + b"Content-Length: 50\r\nExpect: 100-continue\r\n\r\n",
    "chunked-never-ends": _POST + b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n',
    "chunked-bad-size": _POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "both-framings": _POST + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "negative-length": _POST + b"Content-Length: -1\r\n\r\n{}",
    "huge-length": _POST + b"Content-Length: 99999999999999999999999999\r\n\r\n{}",
    "two-lengths": _POST + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "nul-in-header": _POST + b"X-Odd: a\x00b\r\nContent-Length: 2\r\n\r\n{}",
    "huge-header": _POST + b"X-Big: " + b"a" * 200_000 + b"\r\nContent-Length: 2\r\n\r\n{}",
    "garbage-request-line": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n",
    "head-never-ends": _POST + b"Content-Type: application/jso",
    "no-host-http10": b"POST /webhooks/pipedrive HTTP/1.0\r\n" + _AUTH + b"Content-Length: 2\r\n\r\n{}",
    "latin1-header": _POST + b"X-Name: caf\xe9\r\nContent-Length: 2\r\n\r\n{}",
}


@pytest.mark.parametrize("name", sorted(_CASES))
def test_broken_framing_gets_a_4xx_or_a_close_within_the_deadline(
    address: tuple[str, int], name: str
) -> None:
    answer, seconds = exchange(address, _CASES[name])
    assert seconds < DEADLINE + 5, (seconds, answer[:200])
    statuses = [line.split()[1] for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.")]
    assert all(not status.startswith(b"5") for status in statuses), answer[:300]
    final = [status for status in statuses if status != b"100"]
    assert final == [] or final[-1].startswith(b"4"), answer[:300]
