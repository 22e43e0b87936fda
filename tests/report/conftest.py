"""The report suite's fixture: six deals and a lead with a known stage history, on each backend.

The history (``now`` is 2024-05-01 12:00 UTC; every transition at noon):

- D1 prospect Jan 1 -> contacted Jan 11 -> qualified Jan 21 -> won Feb 10; a stalled flag raised
  from contacted on Jan 20 and cleared on Jan 21. USD 1000.
- D2 prospect Jan 1 -> contacted Jan 6 -> lost Jan 20. USD 2000.
- D3 contacted Mar 1 -> meeting Mar 11 -> contacted Mar 21 (regression; open flag from meeting),
  still open. USD 3000, closes 2024-06-15.
- D4 prospect Apr 1, still open; open stalled flag from prospect. USD 500, closes 2024-05-20.
- D5 qualified Feb 1 -> proposal Feb 11, deleted in the source on Apr 11. USD 10000.
- D6 proposal Apr 21, still open. EUR 4000, no close date.
- L1 a lead (not a deal) in contacted with an open unanswered flag.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from sync_worker.canonical import CanonicalRecord, RecordKind, RecordStatus, StageKey, StageModel
from sync_worker.mappings import load_mappings
from sync_worker.store import SyncStore, upgrade_database
from tests.conftest import service_unavailable

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
MAPPINGS_DIR = Path(__file__).resolve().parents[2] / "mappings"
PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"


def day(month: int, dom: int) -> datetime:
    return datetime(2024, month, dom, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Step:
    at: datetime
    stage: StageKey | None
    status: RecordStatus = "open"


def _put(
    store: SyncStore,
    external_id: str,
    steps: list[Step],
    *,
    amount: str,
    currency: str = "USD",
    close: date | None = None,
    kind: RecordKind = "deal",
) -> int:
    record_id = 0
    for step in steps:
        record = CanonicalRecord(
            source="hubspot",
            kind=kind,
            external_id=external_id,
            updated_at=step.at,
            stage=step.stage,
            status=step.status,
            title=f"Deal {external_id} <b>&",
            amount=Decimal(amount),
            currency=currency,
            close_date=close,
            stage_changed_at=step.at if step.stage is not None else None,
        )
        change = store.upsert_record(record, origin="hubspot", written_by_worker=False, seen_at=step.at)
        record_id = change.record.id
    return record_id


def populate(store: SyncStore) -> dict[str, int]:
    """Write the fixture described in the module docstring; the record ids by name."""
    p, c, q, m = StageKey.PROSPECT, StageKey.CONTACTED, StageKey.QUALIFIED, StageKey.MEETING
    ids = {
        "D1": _put(
            store,
            "D1",
            [
                Step(day(1, 1), p),
                Step(day(1, 11), c),
                Step(day(1, 21), q),
                Step(day(2, 10), StageKey.WON, "won"),
            ],
            amount="1000",
        ),
        "D2": _put(
            store,
            "D2",
            [Step(day(1, 1), p), Step(day(1, 6), c), Step(day(1, 20), StageKey.LOST, "lost")],
            amount="2000",
        ),
        "D3": _put(
            store,
            "D3",
            [Step(day(3, 1), c), Step(day(3, 11), m), Step(day(3, 21), c)],
            amount="3000",
            close=date(2024, 6, 15),
        ),
        "D4": _put(store, "D4", [Step(day(4, 1), p)], amount="500", close=date(2024, 5, 20)),
        "D5": _put(
            store,
            "D5",
            [Step(day(2, 1), q), Step(day(2, 11), StageKey.PROPOSAL), Step(day(4, 11), None, "deleted")],
            amount="10000",
        ),
        "D6": _put(store, "D6", [Step(day(4, 21), StageKey.PROPOSAL)], amount="4000", currency="EUR"),
        "L1": _put(store, "L1", [Step(day(4, 20), c)], amount="0", kind="lead"),
    }
    old = store.raise_flag(ids["D1"], "stalled", stage=c, days_in_stage=9, raised_at=day(1, 20))
    assert old is not None
    store.clear_flags(ids["D1"], at=day(1, 21))
    store.raise_flag(
        ids["D3"],
        "regressed",
        reason="moved back from Meeting / demo to Contacted",
        stage=m,
        since=day(3, 21),
        days_in_stage=10,
        amount=Decimal("3000"),
        weighted_amount=Decimal("300.00"),
        raised_at=day(3, 21),
    )
    store.raise_flag(
        ids["D4"],
        "stalled",
        reason="30 days in Prospect (limit 14)",
        stage=p,
        since=day(4, 1),
        days_in_stage=30,
        amount=Decimal("500"),
        weighted_amount=Decimal("25.00"),
        raised_at=day(4, 30),
    )
    store.raise_flag(ids["L1"], "unanswered", reason="replied 11 days ago", stage=c, raised_at=day(5, 1))
    return ids


@pytest.fixture(scope="session")
def model() -> StageModel:
    return load_mappings(MAPPINGS_DIR).model


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def report_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database holding the fixture, as a URL (read-only use: built once per module)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'store.db'}"
        yield from _populated(url)
        return
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        service_unavailable(f"PostgreSQL at 127.0.0.1:5432 (database test) does not answer: {exc}")
    name = f"sync_report_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        options = quote("-c timezone=Asia/Kolkata", safe="")
        yield from _populated(f"postgresql://postgres@127.0.0.1:5432/{name}?options={options}")
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def sqlite_report_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The fixture on SQLite only, for tests of the outputs rather than of the SQL."""
    yield from _populated(f"sqlite:///{tmp_path_factory.mktemp('report') / 'store.db'}")


def _populated(url: str) -> Iterator[str]:
    upgrade_database(url)
    store = SyncStore(url, clock=lambda: NOW)
    try:
        populate(store)
    finally:
        store.close()
    yield url


@pytest.fixture
def report_store(report_db: str) -> Iterator[SyncStore]:
    store = SyncStore(report_db, clock=lambda: NOW)
    try:
        yield store
    finally:
        store.close()
