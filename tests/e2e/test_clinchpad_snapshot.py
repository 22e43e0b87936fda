"""ClinchPad end to end: snapshot polling through the real service and store, against the sandbox.

A lead moved in ClinchPad's UI reaches the store through the ``leads`` stream (the digest cursor);
the ``leads_snapshot`` full pull marks live leads seen without re-stamping them; a lead that
vanished from a complete snapshot is flagged ``dropped`` by the leak scan. Store on SQLite and
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from connectors.clinchpad import (
    STREAM_LEADS,
    STREAM_SNAPSHOT,
    ClinchPadConnector,
    ClinchPadSettings,
    from_section,
)
from connectors.clinchpad.sandbox import ClinchPadServer
from sync_worker.canonical import StageModel
from sync_worker.engine import SyncService, full_pull_started, full_streams
from sync_worker.leaks import scan_leaks
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.plugins import SandboxOptions
from sync_worker.store import SyncStore
from tests.store.conftest import clock, db_url, pg_database, store  # noqa: F401
from tests.store.fakes import FakeClock

MAPPINGS_DIR = Path(__file__).resolve().parents[2] / "mappings"
HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(MAPPINGS_DIR)


@pytest.fixture
def server(clock: FakeClock) -> Iterator[ClinchPadServer]:  # noqa: F811
    running = ClinchPadServer(SandboxOptions(seed=4, deals=16, now=clock.now))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def connector(server: ClinchPadServer, mappings: Mappings, clock: FakeClock) -> Iterator[ClinchPadConnector]:  # noqa: F811
    env = server.env()
    section = ClinchPadSettings(
        api_key=env["SYNC_CLINCHPAD__API_KEY"], base_url=env["SYNC_CLINCHPAD__BASE_URL"], page_size=5
    )
    built = from_section(section, mappings, clock=clock, sleep=lambda _: None)
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def service(
    store: SyncStore,  # noqa: F811
    mappings: Mappings,
    clock: FakeClock,  # noqa: F811
    connector: ClinchPadConnector,
) -> SyncService:
    return SyncService(store, mappings, {"clinchpad": connector}, clock=clock)


def _scan(store: SyncStore, model: StageModel, clock: FakeClock) -> dict[str, str]:  # noqa: F811
    started = full_pull_started(store, full_streams(["clinchpad"]))
    result = scan_leaks(store, model, now=clock.now, full_pull_started=started)
    return {store.get_record_by_id(f.record_id).external_id: f.reason for f in result.raised}  # type: ignore[union-attr]


def test_a_ui_move_is_pulled_by_digest_and_a_vanished_lead_is_flagged_dropped(
    store: SyncStore,  # noqa: F811
    clock: FakeClock,  # noqa: F811
    mappings: Mappings,
    server: ClinchPadServer,
    service: SyncService,
) -> None:
    # Given a first listing of the account, stored with the listing's time
    first = service.poll("clinchpad", STREAM_LEADS)
    assert first.records == 16 and first.cursor is not None
    listed_at = clock.now
    # When a salesperson moves one lead and the stream is polled again
    moved = server.simulate_change()
    clock.advance(HOUR)
    second = service.poll("clinchpad", STREAM_LEADS)
    # Then only that lead was sent, and the store holds its new stage stamped at the second listing
    assert second.records == 1 and second.changed == 1
    stored = store.get_record("clinchpad", "deal", moved)
    assert stored is not None and stored.source_stage == server.state.leads[moved]["stage_id"]
    assert stored.source_updated_at == clock.now

    # When the periodic full pull (the snapshot stream) runs
    clock.advance(HOUR)
    full = service.poll("clinchpad", STREAM_SNAPSHOT, full=True)
    # Then every lead was seen and none was re-stamped
    assert full.records == 16 and full.changed == 0
    untouched = next(i for i in server.state.leads if i != moved)
    kept = store.get_record("clinchpad", "deal", untouched)
    assert kept is not None and kept.source_updated_at == listed_at and kept.last_seen_at == clock.now
    before = _scan(store, mappings.model, clock)
    assert all("no longer returned" not in reason for reason in before.values())

    # When a live lead is deleted in ClinchPad and the next full pull no longer lists it
    gone = next(i for i, lead in sorted(server.state.leads.items()) if not lead["archived"] and i != moved)
    server.state.delete_lead(gone)
    clock.advance(timedelta(days=1))
    service.poll("clinchpad", STREAM_SNAPSHOT, full=True)
    # Then the scan flags exactly that lead dropped, as vanished from a full pull
    flagged = _scan(store, mappings.model, clock)
    assert set(flagged) - set(before) == {gone}
    assert "no longer returned by a full pull" in flagged[gone]
    # And the digest stream notices nothing new, while dropping the lead from its digest
    assert service.poll("clinchpad", STREAM_LEADS).records == 0
