"""Leak detection wired into the running service: scan job -> alert push -> Slack, and full pulls.

A real :class:`Runtime` (SQLite store, shipped mappings, no CRM connectors) runs the project's
actors on Dramatiq's stub broker; the Slack webhook is faked with respx; the push guard is the real
Redis one (db 13, keys that expire in milliseconds; the database is not flushed, other suites share it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dramatiq
import httpx
import pytest
import respx
from dramatiq.brokers.stub import StubBroker
from pydantic import SecretStr

from connectors.pipedrive.settings import PipedriveSettings
from sync_worker.actors import (
    PUSH_BATCH,
    LocalPushGuard,
    configure_actors,
    push_target,
    replay_dead_letter,
    scan_leaks_job,
)
from sync_worker.canonical import CanonicalRecord, StageKey
from sync_worker.engine.fullpull import record_full_pull
from sync_worker.engine.model import PushStats
from sync_worker.leaks import ScanResult
from sync_worker.runtime import Runtime, build_runtime
from sync_worker.scheduler import scheduled_jobs
from sync_worker.settings import AlertSettings, Settings
from sync_worker.store import SyncStore
from tests.runtime.conftest import REDIS_URL, EnqueueLog
from tests.runtime.test_actors import drain

URL = "https://hooks.slack.test/services/T000/B000/s3cr3tT0ken"
MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
DAY = timedelta(days=1)


def _settings(
    store_path: Path, *, alerts: bool = True, pipedrive: bool = False, min_amount: Decimal | None = None
) -> Settings:
    return Settings(
        database_url=f"sqlite:///{store_path}",
        redis_url=REDIS_URL,
        mappings_dir=MAPPINGS,
        alerts=AlertSettings(webhook_url=SecretStr(URL) if alerts else None, min_amount=min_amount),
        pipedrive=PipedriveSettings(api_token=SecretStr("pd-token") if pipedrive else None),
    )


def _record(
    external_id: str,
    *,
    seen_days_ago: float,
    stage: StageKey,
    amount: Decimal = Decimal("100"),
    owner: str | None = None,
) -> CanonicalRecord:
    at = datetime.now(UTC) - seen_days_ago * DAY
    return CanonicalRecord(
        source="pipedrive",
        kind="deal",
        external_id=external_id,
        updated_at=at,
        stage=stage,
        status="open",
        title=f"Deal {external_id}",
        amount=amount,
        currency="EUR",
        owner_id=owner,
        stage_changed_at=at,
    )


def _deal(store: SyncStore, external_id: str, **fields: Any) -> None:
    record = _record(external_id, **fields)
    store.upsert_record(record, origin="pipedrive", written_by_worker=False, seen_at=record.updated_at)


@pytest.fixture
def runtime(store_path: Path, stub_broker: StubBroker) -> Iterator[Runtime]:
    built = build_runtime(
        _settings(store_path), watch_mappings=False, coalesce_window=timedelta(milliseconds=20)
    )
    built.configure_actors()
    yield built
    built.close()


@pytest.fixture
def worker(stub_broker: StubBroker) -> Iterator[dramatiq.Worker]:
    running = dramatiq.Worker(stub_broker, worker_threads=1, worker_timeout=50)
    running.start()
    yield running
    running.stop()


@respx.mock
def test_a_scan_posts_one_digest_and_a_message_only_for_flags_above_the_min_amount(
    store_path: Path,
    store: SyncStore,
    stub_broker: StubBroker,
    worker: dramatiq.Worker,
    enqueue_log: EnqueueLog,
) -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(200, text="ok"))
    # Given alerts above 10,000 and three deals stalled in Proposal, one of them large
    built = build_runtime(
        _settings(store_path, min_amount=Decimal("10000")),
        watch_mappings=False,
        coalesce_window=timedelta(milliseconds=20),
    )
    built.configure_actors()
    try:
        _deal(store, "a", seen_days_ago=30, stage=StageKey.PROPOSAL)
        _deal(store, "b", seen_days_ago=40, stage=StageKey.PROPOSAL)
        _deal(store, "c", seen_days_ago=35, stage=StageKey.PROPOSAL, amount=Decimal("50000"), owner="u-77")
        # When the scheduler's leak scan job runs (twice: the second finds nothing new)
        scan_leaks_job.send()
        drain(stub_broker, worker)
        scan_leaks_job.send()
        drain(stub_broker, worker)
        # A redelivered push message sends nothing again
        push_target.send("alert")
        drain(stub_broker, worker)
    finally:
        built.close()
    # Then one alert push was scheduled, and Slack got one digest plus one message for the big deal
    scheduled = [args for _, args, delay in enqueue_log.named("push_target") if delay is not None]
    assert scheduled == [("alert",)]
    bodies = [json.loads(call.request.content) for call in route.calls]
    assert sorted(body["text"].split(" (")[0] for body in bodies) == [
        "Leak scan: 3 new leak flag(s): stalled 3",
        "Leak: Deal c",
    ]
    (digest,) = [body for body in bodies if body["text"].startswith("Leak scan")]
    top = next(block["text"]["text"] for block in digest["blocks"] if "Top 3" in str(block))
    lines = top.splitlines()[1:]
    assert lines[0].startswith("• *Deal c*: stalled in proposal, 50,000.00 EUR") and "owner u-77" in lines[0]
    assert [line.split("*")[1] for line in lines[1:]] == ["Deal a", "Deal b"]
    assert all("no owner" in line for line in lines[1:])
    assert store.list_dead_letters() == []


@respx.mock
def test_a_refused_alert_is_dead_lettered_and_its_replay_sends_it_once(
    runtime: Runtime, store: SyncStore, stub_broker: StubBroker, worker: dramatiq.Worker
) -> None:
    route = respx.post(URL).mock(side_effect=[httpx.Response(404, text="no_service"), httpx.Response(200)])
    _deal(store, "a", seen_days_ago=30, stage=StageKey.PROPOSAL)
    scan_leaks_job.send()
    drain(stub_broker, worker)
    # The 404 made the alert dead: one dead letter naming the outbox item, no URL in the reason
    (dead,) = store.list_dead_letters()
    assert dead.actor == "push_target" and "outbox_id" in dead.payload
    assert "s3cr3t" not in dead.reason
    # Replaying it (twice over: the replay message is redelivered) posts the alert once
    replay_dead_letter(store, stub_broker, dead.id)
    drain(stub_broker, worker)
    push_target.send("alert")
    drain(stub_broker, worker)
    assert route.call_count == 2
    assert store.list_dead_letters() == []


@pytest.mark.parametrize("enabled", [True, False])
def test_runtime_scan_flags_deals_missing_from_the_last_full_pull(
    store_path: Path, store: SyncStore, enabled: bool
) -> None:
    # Given a complete full pull of Pipedrive deals that started a day ago, which saw "kept" only
    _deal(store, "gone", seen_days_ago=3, stage=StageKey.QUALIFIED)
    _deal(store, "kept", seen_days_ago=3, stage=StageKey.QUALIFIED)
    started = datetime.now(UTC) - DAY
    _deal(store, "kept", seen_days_ago=0.5, stage=StageKey.QUALIFIED)
    record_full_pull(store, "pipedrive", "deals", started)
    # When the runtime scans (Pipedrive enabled, or not configured any more)
    built = build_runtime(_settings(store_path, alerts=False, pipedrive=enabled), watch_mappings=False)
    try:
        result = built.scan_leaks()
    finally:
        built.close()
    # Then "gone" is dropped, "kept" is not; a disabled source's deals are not judged
    flagged = {store.get_record_by_id(f.record_id).external_id: f.rule for f in result.raised}  # type: ignore[union-attr]
    assert flagged == ({"gone": "dropped"} if enabled else {})


def test_without_a_webhook_no_alert_is_queued_or_pushed(
    store_path: Path, store: SyncStore, stub_broker: StubBroker, worker: dramatiq.Worker
) -> None:
    built = build_runtime(_settings(store_path, alerts=False), watch_mappings=False)
    try:
        built.configure_actors()
        _deal(store, "a", seen_days_ago=30, stage=StageKey.PROPOSAL)
        assert built.scan_leaks().alerts == 0
        push_target.send("alert")  # sent by mistake: refused for good, with the fix in the reason
        drain(stub_broker, worker)
        (dead,) = store.list_dead_letters()
        assert "SYNC_ALERTS__WEBHOOK_URL" in dead.reason
    finally:
        built.close()


@pytest.mark.parametrize(("alerts", "scheduled"), [(2, True), (0, False)])
def test_scan_job_adds_the_alert_push_only_when_alerts_were_queued(
    store: SyncStore,
    stub_broker: StubBroker,
    worker: dramatiq.Worker,
    enqueue_log: EnqueueLog,
    alerts: int,
    scheduled: bool,
) -> None:
    pushed: list[int] = []

    def alert_push(limit: int) -> PushStats:
        pushed.append(limit)
        return PushStats("alert")

    configure_actors(
        store,
        leak_scan=lambda: ScanResult(raised=(), cleared=(), open_by_rule={}, queued=alerts, alerts=alerts),
        push_targets=("pipedrive",),
        push_window=timedelta(milliseconds=5),
        push_guard=LocalPushGuard(),
        alert_push=alert_push,
    )
    scan_leaks_job.send()
    stub_broker.join("maintenance", timeout=10_000)
    targets = sorted(args[0] for _, args, delay in enqueue_log.named("push_target") if delay is not None)
    assert targets == (["alert", "pipedrive"] if scheduled else ["pipedrive"])
    drain(stub_broker, worker)
    assert pushed == ([PUSH_BATCH] if scheduled else [])  # push_target("alert") ran the alert push


def test_scheduler_safety_net_pushes_alerts_only_when_configured(store_path: Path) -> None:
    streams = {"pipedrive": ("deals",)}
    on = {job.name for job in scheduled_jobs(_settings(store_path), streams)}
    off = {job.name for job in scheduled_jobs(_settings(store_path, alerts=False), streams)}
    assert "push:alert" in on and "push:pipedrive" in on
    assert "push:alert" not in off


def test_a_deal_that_moves_has_its_flag_cleared_by_the_ingest_not_the_next_scan(
    runtime: Runtime, store: SyncStore
) -> None:
    # Given a deal stalled in Proposal, flagged by a scan
    _deal(store, "m", seen_days_ago=30, stage=StageKey.PROPOSAL)
    assert [f.rule for f in runtime.scan_leaks().raised] == ["stalled"]
    # When the deal moves on through the engine (a webhook or a poll)
    moved = _record("m", seen_days_ago=0, stage=StageKey.NEGOTIATION)
    runtime.service.ingest_record(moved)
    # Then the flag is gone right away, before any scan
    assert store.open_flags() == []
