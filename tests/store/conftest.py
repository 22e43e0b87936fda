"""Fixtures for the state store suite: every test runs on SQLite (a temp file) and PostgreSQL.

PostgreSQL: one uniquely named database per session (dropped at the end) and one schema per test
(chosen through ``search_path``), so concurrent runs never collide. The PostgreSQL session time
zone is set to Asia/Kolkata (+05:30) so every test also proves timestamps come back in UTC.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from sync_worker.store import SyncStore, upgrade_database
from tests.conftest import service_unavailable

from .fakes import FakeClock

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
PG_SESSION_TIME_ZONE = "Asia/Kolkata"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh database for this session, as a ``postgresql://`` URL; dropped afterwards."""
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        service_unavailable(f"PostgreSQL at 127.0.0.1:5432 (database test) does not answer: {exc}")
    name = f"sync_store_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (never migrated) on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    base: str = request.getfixturevalue("pg_database")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(
        f"{PG_ADMIN_DSN.replace('dbname=test', 'dbname=' + base.rsplit('/', 1)[1])}"
    ) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.commit()
    options = quote(f"-c search_path={schema} -c timezone={PG_SESSION_TIME_ZONE}", safe="")
    yield f"{base}?options={options}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(db_url: str, clock: FakeClock) -> Iterator[SyncStore]:
    """A migrated store on each backend, with a hand-moved clock."""
    upgrade_database(db_url)
    sync_store = SyncStore(db_url, clock=clock)
    try:
        yield sync_store
    finally:
        sync_store.close()
