"""``sync-worker status``, ``pause`` and ``resume`` against the HubSpot sandbox, from a foreign
directory; pauses respected by the workers' actors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dramatiq
import pytest
import redis
from dramatiq.brokers.stub import StubBroker

from sync_worker.actors import LocalPushGuard, configure_actors, poll_source, push_target
from sync_worker.canonical import CanonicalRecord, StageKey
from sync_worker.store import SyncStore
from tests.core.test_cli import REPO, _run
from tests.engine.world import reply
from tests.runtime.conftest import REDIS_URL
from tests.runtime.test_actors import FakeService, drain, service, worker  # noqa: F401 - fixtures
from tests.runtime.test_commands import hubspot_url  # noqa: F401 - the HubSpot sandbox fixture


def _env(store_path: Path, hubspot: str) -> dict[str, str]:
    return {
        "SYNC_DATABASE_URL": f"sqlite:///{store_path}",
        "SYNC_REDIS_URL": REDIS_URL,
        "SYNC_MAPPINGS_DIR": str(REPO / "mappings"),
        "SYNC_HUBSPOT__TOKEN": "pat-sync-test",
        "SYNC_HUBSPOT__BASE_URL": hubspot,
    }


@pytest.mark.redis
def test_status_shows_each_stream_and_target_after_a_sync_and_the_pauses(
    store: SyncStore,
    store_path: Path,
    hubspot_url: str,  # noqa: F811
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    env = _env(store_path, hubspot_url)
    # Given a full pull of the sandbox's three deals
    synced = _run("sync", "--source", "hubspot", "--stream", "deals", "--full", cwd=tmp_path, env=env)
    assert synced.returncode == 0, synced.stderr
    # When an operator asks for the status
    shown = _run("status", "--json", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    # Then the stream shows its poll, records and the cursor the store keeps, and what comes next
    deals = next(s for s in status["streams"] if (s["source"], s["stream"]) == ("hubspot", "deals"))
    assert (deals["records_last"], deals["records_total"], deals["failures"]) == (3, 3, 0)
    assert deals["cursor"] == store.get_cursor("hubspot", "deals") and deals["cursor"]
    assert deals["last_success"] == deals["last_poll"] and deals["next_run"] > deals["last_poll"]
    hubspot = next(t for t in status["targets"] if t["target"] == "hubspot")
    assert hubspot["pending"] == 0 and hubspot["last_push"] is not None
    assert status["dead_letters"] == 0 and status["paused"] == []
    assert status["mappings"]["valid"] is True and "lgm-replies-to-hubspot" in status["mappings"]["routes"]
    # When hubspot and a route are paused, status says so (text and JSON), and resume lifts it
    assert _run("pause", "hubspot", "--reason", "CRM migration", cwd=tmp_path, env=env).stdout.strip() == (
        "source hubspot paused"
    )
    assert _run("pause", "lgm-replies-to-hubspot", cwd=tmp_path, env=env).returncode == 0
    text = _run("status", cwd=tmp_path, env=env).stdout
    assert "hubspot/deals: PAUSED" in text and "next paused" in text
    assert "paused: route lgm-replies-to-hubspot, source hubspot" in text
    unknown = _run("pause", "hubspt", cwd=tmp_path, env=env)
    assert unknown.returncode == 2 and "neither a system nor a route" in unknown.stderr
    assert _run("resume", "hubspot", cwd=tmp_path, env=env).stdout.strip() == "source hubspot resumed"
    assert [(p.scope, p.name) for p in store.pauses()] == [("route", "lgm-replies-to-hubspot")]


def test_status_on_an_unmigrated_store_exits_2_with_the_hint(tmp_path: Path) -> None:
    result = _run("status", cwd=tmp_path, env={"SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'new.db'}"})
    assert result.returncode == 2 and "sync-worker db upgrade" in result.stderr


def test_a_paused_source_is_neither_polled_nor_pushed_until_resumed(
    service: FakeService,  # noqa: F811
    stub_broker: StubBroker,
    worker: dramatiq.Worker,  # noqa: F811
    store: SyncStore,
) -> None:
    # Given hubspot paused
    store.pause("source", "hubspot")
    # When its poll and its push come up
    poll_source.send("hubspot", "deals")
    push_target.send("hubspot")
    poll_source.send("pipedrive", "deals")
    drain(stub_broker, worker)
    # Then only the other source ran
    assert service.polls == [("pipedrive", "deals", False)] and service.pushes == []
    # And once resumed, it runs again
    store.resume("source", "hubspot")
    poll_source.send("hubspot", "deals")
    drain(stub_broker, worker)
    assert ("hubspot", "deals", False) in service.polls


def _stalled_deal(store: SyncStore) -> None:
    at = datetime.now(UTC) - timedelta(days=60)
    record = CanonicalRecord(
        source="pipedrive",
        kind="deal",
        external_id="77",
        updated_at=at,
        stage=StageKey.PROPOSAL,
        status="open",
        title="Initech renewal",
        amount=Decimal("1200"),
        stage_changed_at=at,
    )
    store.upsert_record(record, origin="pipedrive", written_by_worker=False, seen_at=at)


def test_leaks_scan_scans_now_and_status_says_when(
    store: SyncStore, store_path: Path, tmp_path: Path
) -> None:
    # Given a deal sitting in Proposal for two months, and no scan yet
    _stalled_deal(store)
    env = {"SYNC_DATABASE_URL": f"sqlite:///{store_path}", "SYNC_MAPPINGS_DIR": str(REPO / "mappings")}
    # When an operator scans now
    scanned = _run("leaks", "scan", cwd=tmp_path, env=env)
    # Then the flag is raised at once, and status shows the scan
    assert scanned.returncode == 0, scanned.stderr
    assert "leak scan done: 1 raised, 0 cleared" in scanned.stdout and "stalled 1" in scanned.stdout
    assert store.open_flags_by_rule() == {"stalled": 1}
    status = json.loads(_run("status", "--json", cwd=tmp_path, env=env).stdout)
    assert status["open_flags"] == {"stalled": 1} and status["last_scan"] is not None


def test_leaks_scan_as_of_rehearses_the_rules_at_another_time_and_writes_only_when_asked(
    store: SyncStore, store_path: Path, tmp_path: Path
) -> None:
    # Given a lead that replied an hour ago (the reply SLA is 3 days) and no deal that followed
    replied = datetime.now(UTC) - timedelta(hours=1)
    lead = reply("L9", "ada@example.com", replied)
    store.upsert_record(lead, origin="lagrowthmachine", written_by_worker=False, seen_at=replied)
    env = {"SYNC_DATABASE_URL": f"sqlite:///{store_path}", "SYNC_MAPPINGS_DIR": str(REPO / "mappings")}
    # When the scan runs now, nothing is unanswered yet
    assert "0 would be raised" in _run("leaks", "scan", "--dry-run", cwd=tmp_path, env=env).stdout
    # When it is rehearsed five days ahead: the reply is unanswered then, and nothing is written
    ahead = (replied + timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%S")
    rehearsed = _run("leaks", "scan", "--as-of", ahead, cwd=tmp_path, env=env)
    assert rehearsed.returncode == 0, rehearsed.stderr
    assert "would raise unanswered: lagrowthmachine lead L9: replied more than 3 days ago" in rehearsed.stdout
    assert f"dry run as of {ahead}+00:00: 1 would be raised" in rehearsed.stdout
    assert "nothing was written" in rehearsed.stdout
    assert store.open_flags_by_rule() == {}
    # When the operator asks for it to be written, the flag is stored as of that time
    written = _run("leaks", "scan", "--as-of", ahead, "--write", cwd=tmp_path, env=env)
    assert written.returncode == 0, written.stderr
    assert "leak scan done: 1 raised" in written.stdout
    assert store.open_flags_by_rule() == {"unanswered": 1}


def test_a_completed_full_pull_is_followed_by_a_leak_scan(
    store: SyncStore,
    stub_broker: StubBroker,
    worker: dramatiq.Worker,  # noqa: F811
) -> None:
    scans: list[datetime] = []
    configure_actors(
        store,
        service=FakeService(),
        leak_scan=lambda: scans.append(datetime.now(UTC)),
        push_guard=LocalPushGuard(),
    )
    # An incremental poll scans nothing; a full pull is followed by one scan
    poll_source.send("pipedrive", "deals")
    drain(stub_broker, worker)
    assert scans == []
    poll_source.send("pipedrive", "deals", True)
    drain(stub_broker, worker)
    assert len(scans) == 1
    assert [row.name for row in store.list_activity("scan")] == ["leaks"]
