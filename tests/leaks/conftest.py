"""Leak-scan fixtures: the store suite's SQLite + PostgreSQL fixtures, and the shipped stage model."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync_worker.canonical import StageModel
from sync_worker.mappings import load_mappings
from tests.store.conftest import clock, db_url, pg_database, store  # noqa: F401

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"


@pytest.fixture(scope="session")
def model() -> StageModel:
    return load_mappings(MAPPINGS).model
