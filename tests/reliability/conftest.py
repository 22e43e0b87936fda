"""Fixtures for the reliability suite: sandboxes, migrated SQLite stores, private Redis servers.

Real infrastructure behind the fakes: the sandbox servers speak the providers' wire formats, the
store is a migrated SQLite file, Redis is real. Tests that stop Redis start their OWN
``redis-server`` on a free port (never the shared one on 6379); the shared one is used only on
database 11, flushed around each test. A missing service skips locally and fails in CI
(:func:`tests.conftest.service_unavailable`).

Figures (changes, duplicates, losses, redelivery seconds) are collected with the ``figures``
fixture and printed at the end of the session (``-s`` not needed: the terminal summary shows them).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from sync_worker.mappings import Mappings, load_mappings
from sync_worker.store import SyncStore, upgrade_database
from tests.conftest import REDIS_SERVER, service_unavailable
from tests.reliability.brokers import (
    BROKER_KINDS,
    BrokerUnderTest,
    RabbitmqNode,
    RabbitmqVhost,
    RedisBrokerUnderTest,
    RestartableBroker,
    RestartableRedis,
)

REPO = Path(__file__).resolve().parents[2]
SHARED_REDIS_URL = f"{REDIS_SERVER}/11"
FIGURES: dict[str, dict[str, Any]] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private ``redis-server`` subprocess that tests may stop and restart on the same port."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            service_unavailable("redis-server is not installed")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()
        self.stop()
        service_unavailable(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def rabbitmq_vhost() -> Iterator[RabbitmqVhost]:
    """A private virtual host on the machine's RabbitMQ server, deleted afterwards."""
    vhost = RabbitmqVhost()
    vhost.create()
    try:
        yield vhost
    finally:
        vhost.delete()


@pytest.fixture(params=BROKER_KINDS)
def broker_under_test(
    request: pytest.FixtureRequest, private_redis: RedisServer
) -> Iterator[BrokerUnderTest]:
    """Each broker in turn: the private Redis, or a private vhost on the shared RabbitMQ server."""
    if request.param == "redis":
        yield RedisBrokerUnderTest(private_redis.url)
    else:
        yield request.getfixturevalue("rabbitmq_vhost")


@pytest.fixture(params=BROKER_KINDS)
def restartable_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RestartableBroker]:
    """Each broker in turn on a private server the test may restart: Redis (no persistence, as the
    default compose file's broker before AOF) or a RabbitMQ node of its own."""
    if request.param == "redis":
        server = RedisServer(tmp_path)
        server.start()
        try:
            yield RestartableRedis(server)
        finally:
            server.stop()
        return
    node = RabbitmqNode()
    try:
        node.start()
        yield node
    finally:
        node.remove()


@pytest.fixture
def shared_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        service_unavailable("Redis at 127.0.0.1:6379 is not answering")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def mappings() -> Mappings:
    return load_mappings(REPO / "mappings")


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reliability-db") / "template.db"
    upgrade_database(f"sqlite:///{path}")
    return path


@pytest.fixture
def db_path(tmp_path: Path, migrated_db: Path) -> Path:
    target = tmp_path / "store.db"
    shutil.copyfile(migrated_db, target)
    return target


@pytest.fixture
def store(db_path: Path) -> Iterator[SyncStore]:
    sync_store = SyncStore(f"sqlite:///{db_path}")
    try:
        yield sync_store
    finally:
        sync_store.close()


class RecordingTransport(httpx.BaseTransport):
    """Sends through a real transport; records (monotonic time, method, path, status, headers).

    ``read_timeout`` caps how long one response may take (the client's own timeout is 30 s), so a
    sandbox "hang" becomes the timeout a production client would see.
    """

    def __init__(self, read_timeout: float | None = None) -> None:
        self._inner = httpx.HTTPTransport()
        self._read_timeout = read_timeout
        self.calls: list[tuple[float, str, str, int | None, httpx.Headers | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._read_timeout is not None:
            timeout = dict(request.extensions.get("timeout", {}))
            timeout["read"] = self._read_timeout
            request.extensions["timeout"] = timeout
        at = time.monotonic()
        try:
            response = self._inner.handle_request(request)
        except httpx.TimeoutException:
            self.calls.append((at, request.method, request.url.path, None, None))
            raise
        self.calls.append((at, request.method, request.url.path, response.status_code, response.headers))
        return response

    def close(self) -> None:
        self._inner.close()

    def max_in_window(self, seconds: float) -> int:
        """The most requests sent in any interval of ``seconds`` (sliding)."""
        times = sorted(call[0] for call in self.calls)
        best = start = 0
        for end, at in enumerate(times):
            while at - times[start] >= seconds:
                start += 1
            best = max(best, end - start + 1)
        return best


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for name, values in sorted(FIGURES.items()):
        shown = ", ".join(f"{key}={value}" for key, value in values.items())
        terminalreporter.write_line(f"{name}: {shown}")
