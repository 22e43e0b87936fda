"""Fixtures for the runtime suite: a migrated SQLite store, Dramatiq's stub broker, real Redis (db 13).

Redis-backed tests use the server at 127.0.0.1:6379, database 13, flushed around each test; they
skip locally (and fail in CI) when it does not answer.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.stub import StubBroker

from sync_worker.actors import clear_actors
from sync_worker.broker import broker_middleware, install_broker
from sync_worker.store import SyncStore, upgrade_database
from tests.conftest import REDIS_SERVER, service_unavailable

REDIS_DB = 13
REDIS_URL = f"{REDIS_SERVER}/{REDIS_DB}"


class EnqueueLog(dramatiq.Middleware):
    """Records every enqueue: (actor name, args, delay in ms or None)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[Any, ...], int | None]] = []

    def after_enqueue(self, broker: dramatiq.Broker, message: Any, delay: int | None) -> None:
        self.sent.append((message.actor_name, tuple(message.args), delay))

    def named(self, actor: str) -> list[tuple[str, tuple[Any, ...], int | None]]:
        return [entry for entry in self.sent if entry[0] == actor]


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("runtime-template") / "template.db"
    upgrade_database(f"sqlite:///{path}")
    return path


@pytest.fixture
def store_path(tmp_path: Path, migrated_template: Path) -> Path:
    path = tmp_path / "store.db"
    shutil.copyfile(migrated_template, path)
    return path


@pytest.fixture
def store(store_path: Path) -> Iterator[SyncStore]:
    sync_store = SyncStore(f"sqlite:///{store_path}")
    yield sync_store
    sync_store.close()


@pytest.fixture
def enqueue_log() -> EnqueueLog:
    return EnqueueLog()


@pytest.fixture
def stub_broker(enqueue_log: EnqueueLog) -> Iterator[StubBroker]:
    """The production middleware with millisecond back-offs, bound to the project's actors."""
    broker = StubBroker(
        middleware=broker_middleware(max_retries=3, min_backoff_ms=10, max_backoff_ms=40, extra=[enqueue_log])
    )
    install_broker(broker)
    yield broker
    clear_actors()
    broker.close()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1.0)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_unavailable(f"Redis at {REDIS_URL} does not answer ({type(exc).__name__})")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
