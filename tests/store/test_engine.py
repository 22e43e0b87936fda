"""Engines and the error boundary: URL translation, SQLite settings, unreachable databases."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from sync_worker.canonical import WebhookEvent
from sync_worker.errors import StoreUnavailableError
from sync_worker.store import (
    SyncStore,
    create_engine_for,
    current_revision,
    normalise_url,
    redacted_url,
    upgrade_database,
)
from tests.conftest import service_unavailable


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("sqlite:///./sync-worker.db", "sqlite"),
        ("postgresql://u:p@db:5432/sync", "postgresql+psycopg"),
        ("postgres://u:p@db/sync", "postgresql+psycopg"),
        ("postgresql+psycopg://u:p@db/sync", "postgresql+psycopg"),
    ],
)
def test_normalise_url_uses_psycopg_3(given: str, driver: str) -> None:
    assert normalise_url(given).drivername == driver


def test_normalise_url_refuses_other_backends() -> None:
    with pytest.raises(ValueError, match="mysql"):
        normalise_url("mysql://u:p@db/sync")


def test_sqlite_is_configured_for_a_service(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000
    finally:
        engine.dispose()


def test_postgres_engine_pings_its_pool() -> None:
    engine = create_engine_for("postgresql://u:secret@127.0.0.1/sync")
    try:
        assert engine.pool._pre_ping  # type: ignore[attr-defined]
        assert engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()


def test_repr_and_messages_hide_the_password() -> None:
    store = SyncStore("postgresql://sync:hunter2@127.0.0.1:5432/sync")
    try:
        assert "hunter2" not in repr(store)
        assert "hunter2" not in redacted_url("postgresql://sync:hunter2@db/sync")
    finally:
        store.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=["sqlite", "postgresql"])
def unreachable_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'missing-dir' / 'store.db'}"
    else:
        yield f"postgresql://sync:hunter2@127.0.0.1:{_closed_port()}/sync"


def test_unreachable_database_raises_store_unavailable(unreachable_url: str) -> None:
    store = SyncStore(unreachable_url)
    event = WebhookEvent(
        source="hubspot",
        dedupe_key="1",
        object_type="deal",
        object_id="1",
        action="creation",
        occurred_at=datetime.now(UTC),
        raw={},
    )
    try:
        with pytest.raises(StoreUnavailableError) as ping_error:
            store.ping()
        assert "hunter2" not in str(ping_error.value)
        assert ping_error.value.__cause__ is not None
        with pytest.raises(StoreUnavailableError):
            store.accept_events("hubspot", [event])
        with pytest.raises(StoreUnavailableError):
            store.inbox_depth()
        with pytest.raises(StoreUnavailableError):
            store.claim_key("k")
    finally:
        store.close()
    with pytest.raises(StoreUnavailableError):
        upgrade_database(unreachable_url)
    with pytest.raises(StoreUnavailableError):
        current_revision(unreachable_url)


def test_ping_succeeds_on_a_live_database(store: SyncStore) -> None:
    store.ping()


def _missing_pg_database() -> str:
    try:
        psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3").close()
    except psycopg.OperationalError as exc:
        service_unavailable(f"PostgreSQL at 127.0.0.1:5432 does not answer: {exc}")
    return "postgresql://postgres:hunter2@127.0.0.1:5432/sync_no_such_database"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("closed port", ["on 127.0.0.1:{port}", "'sync'", "Connection refused"]),
        ("missing database", ["on 127.0.0.1:5432", "'sync_no_such_database'", "does not exist"]),
        ("missing folder", ["SQLite database", "missing-dir", "the folder", "does not exist"]),
    ],
)
def test_store_errors_name_host_database_and_reason(case: str, expected: list[str], tmp_path: Path) -> None:
    port = _closed_port()
    url = {
        "closed port": lambda: f"postgresql://sync:hunter2@127.0.0.1:{port}/sync",
        "missing database": _missing_pg_database,
        "missing folder": lambda: f"sqlite:///{tmp_path / 'missing-dir' / 'store.db'}",
    }[case]()
    store = SyncStore(url)
    try:
        with pytest.raises(StoreUnavailableError) as ping_error:
            store.ping()
    finally:
        store.close()
    with pytest.raises(StoreUnavailableError) as migrate_error:
        upgrade_database(url)
    for message in (str(ping_error.value), str(migrate_error.value)):
        assert "hunter2" not in message
        for part in expected:
            assert part.format(port=port) in message, message
