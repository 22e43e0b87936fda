"""The "dropped" rule for vanished deals: full pulls record when they started, the scan uses it.

A fake Pipedrive connector serves pages from memory; the service, the store (SQLite and
PostgreSQL) and the scan are real.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from sync_worker.canonical import CanonicalRecord, PullPage, StageKey, StageModel
from sync_worker.engine import SyncService, full_pull_started, full_streams, last_full_pull
from sync_worker.errors import TransientError
from sync_worker.leaks import scan_leaks
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.store import SyncStore
from tests.leaks.conftest import MAPPINGS
from tests.store.fakes import FakeClock

DAY = timedelta(days=1)


def _started(store: SyncStore) -> dict[str, datetime]:
    """What the runtime passes the scan: the full-stream starts of every registered source."""
    return full_pull_started(store, full_streams(("hubspot", "pipedrive", "lagrowthmachine")))


@dataclass
class PagedPipedrive:
    """Serves its deals in pages of two; ``fail_after`` pages, then a TransientError."""

    deals: dict[str, CanonicalRecord] = field(default_factory=dict)
    fail_after: int | None = None
    cursors: list[str | None] = field(default_factory=list)
    name: str = "pipedrive"

    def pull_changes(self, stream: str, cursor: str | None) -> Iterator[PullPage]:
        self.cursors.append(cursor)
        ids = sorted(self.deals)
        chunks = [ids[i : i + 2] for i in range(0, len(ids), 2)] or [[]]
        for number, chunk in enumerate(chunks):
            if self.fail_after is not None and number >= self.fail_after:
                raise TransientError("503 from the API", status=503)
            last = number == len(chunks) - 1
            yield PullPage(stream, tuple(self.deals[i] for i in chunk), f"page-{number}", last)

    def list_stages(self) -> list[object]:
        return []

    def close(self) -> None:
        return None


def _deal(external_id: str, at: datetime) -> CanonicalRecord:
    return CanonicalRecord(
        source="pipedrive",
        kind="deal",
        external_id=external_id,
        updated_at=at,
        stage=StageKey.QUALIFIED,
        status="open",
        title=f"Deal {external_id}",
        amount=Decimal("100"),
        stage_changed_at=at,
    )


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(MAPPINGS)


@pytest.fixture
def source(clock: FakeClock) -> PagedPipedrive:
    at = clock.now - DAY
    return PagedPipedrive({key: _deal(key, at) for key in ("a", "b", "c", "d", "e")})


@pytest.fixture
def service(store: SyncStore, mappings: Mappings, clock: FakeClock, source: PagedPipedrive) -> SyncService:
    return SyncService(store, mappings, {"pipedrive": source}, clock=clock)  # type: ignore[dict-item]


def test_a_deal_gone_between_two_full_pulls_is_flagged_dropped(
    store: SyncStore, clock: FakeClock, model: StageModel, service: SyncService, source: PagedPipedrive
) -> None:
    # Given a first full pull of five deals
    first = clock.now
    service.poll("pipedrive", "deals", full=True)
    assert last_full_pull(store, "pipedrive", "deals") == first
    assert scan_leaks(store, model, now=clock.now, full_pull_started=_started(store)).raised == ()
    # When "c" is deleted in Pipedrive (it simply stops being returned) and a second full pull runs
    del source.deals["c"]
    second = clock.advance(DAY)
    service.poll("pipedrive", "deals", full=True)
    # Then the recorded start moved to the second pull, and the scan flags exactly "c" as dropped
    assert _started(store) == {"pipedrive": second}
    result = scan_leaks(store, model, now=clock.now, full_pull_started=_started(store))
    flagged = {store.get_record_by_id(f.record_id).external_id: f for f in result.raised}  # type: ignore[union-attr]
    assert set(flagged) == {"c"}
    assert flagged["c"].rule == "dropped"
    assert "no longer returned by a full pull" in flagged["c"].reason
    assert flagged["c"].stage is StageKey.QUALIFIED


def test_a_full_pull_that_fails_part_way_records_nothing(
    store: SyncStore, clock: FakeClock, model: StageModel, service: SyncService, source: PagedPipedrive
) -> None:
    # Given a complete first pull
    first = clock.now
    service.poll("pipedrive", "deals", full=True)
    # When a later full pull stores its first page ("a", "b") and then fails
    del source.deals["e"]
    source.fail_after = 1
    clock.advance(DAY)
    with pytest.raises(TransientError):
        service.poll("pipedrive", "deals", full=True)
    # Then the last complete pull is still the first one, and nothing unseen by it is flagged:
    # "c", "d" (not reached) and "e" (gone) are not judged on a pull that did not finish
    assert last_full_pull(store, "pipedrive", "deals") == first
    result = scan_leaks(store, model, now=clock.now, full_pull_started=_started(store))
    assert result.raised == ()


def test_only_pulls_from_the_beginning_count(
    store: SyncStore, clock: FakeClock, service: SyncService, source: PagedPipedrive
) -> None:
    # A first poll without a stored cursor reads everything: it counts as a full pull
    first = clock.now
    service.poll("pipedrive", "deals")
    assert source.cursors == [None]
    assert last_full_pull(store, "pipedrive", "deals") == first
    # An incremental poll from the stored cursor does not
    clock.advance(DAY)
    service.poll("pipedrive", "deals")
    assert source.cursors[-1] == "page-2"
    assert last_full_pull(store, "pipedrive", "deals") == first
    # The record is under a reserved stream name: the stream's own cursor is untouched
    assert store.get_cursor("pipedrive", "deals") == "page-2"
    # A source with no complete full pull is left out (its vanished deals are not judged)
    assert set(_started(store)) == {"pipedrive"}
