"""Fixtures for the engine suite: a migrated SQLite store in tmp, a hand-moved clock, the shipped mappings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sync_worker.mappings import Mappings, load_mappings
from sync_worker.store import SyncStore, upgrade_database

from .fakes import FakeClock
from .world import World

MAPPINGS_DIR = Path(__file__).resolve().parents[2] / "mappings"


@pytest.fixture(scope="session")
def mappings() -> Mappings:
    return load_mappings(MAPPINGS_DIR)


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file per session; each test copies it (migrating is the slow part)."""
    path = tmp_path_factory.mktemp("engine-db") / "template.db"
    upgrade_database(f"sqlite:///{path}")
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(migrated_db: Path, tmp_path: Path, clock: FakeClock) -> Iterator[SyncStore]:
    target = tmp_path / "store.db"
    target.write_bytes(migrated_db.read_bytes())
    sync_store = SyncStore(f"sqlite:///{target}", clock=clock)
    try:
        yield sync_store
    finally:
        sync_store.close()


@pytest.fixture
def world(store: SyncStore, mappings: Mappings, clock: FakeClock) -> World:
    """The service with fake HubSpot, Pipedrive and LaGrowthMachine connectors."""
    return World(store, mappings, clock)
