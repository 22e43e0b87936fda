"""push_alerts: the leak scan's queued alerts reach a respx-mocked Slack webhook once per flag.

Runs on SQLite and PostgreSQL (the store suite's fixtures). The outbox is real; only HTTP is faked.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
import respx
from pydantic import SecretStr

from sync_worker.canonical import CanonicalRecord, StageKey, StageModel
from sync_worker.engine import EngineConfig
from sync_worker.http import ApiClient
from sync_worker.leaks import alert_client, push_alerts, scan_leaks
from sync_worker.store import SyncStore
from tests.store.fakes import FakeClock

URL = "https://hooks.slack.test/services/T000/B000/s3cr3tT0ken"
SECRET = SecretStr(URL)
DAY = timedelta(days=1)
CONFIG = EngineConfig(max_attempts=3, retry_base=timedelta(seconds=30))


def _stalled(store: SyncStore, clock: FakeClock, external_id: str) -> None:
    at = clock.now - 30 * DAY
    record = CanonicalRecord(
        source="pipedrive",
        kind="deal",
        external_id=external_id,
        updated_at=at,
        stage=StageKey.PROPOSAL,
        status="open",
        title=f"Deal {external_id}",
        amount=Decimal("1000"),
        stage_changed_at=at,
    )
    store.upsert_record(record, origin="pipedrive", written_by_worker=False, seen_at=at)


def _client() -> ApiClient:
    return alert_client(max_attempts=1, sleep=lambda _: None)


def _alert_items(store: SyncStore) -> dict[str, str]:
    """Every alert outbox item: idempotency key -> status."""
    with store.engine.connect() as conn:
        from sync_worker.store.schema import outbox

        rows = conn.execute(outbox.select().where(outbox.c.target == "alert")).all()
    return {row.idempotency_key: row.status for row in rows}


@respx.mock
def test_each_flag_is_posted_once_as_slack_json(
    store: SyncStore, clock: FakeClock, model: StageModel
) -> None:
    # Given two stalled deals and a scan that queued their alerts
    route = respx.post(URL).mock(return_value=httpx.Response(200, text="ok"))
    _stalled(store, clock, "a")
    _stalled(store, clock, "b")
    scan = scan_leaks(store, model, now=clock.now)
    assert scan.alerts == 2
    queued = {item.idempotency_key: item.payload for item in store.due_outbox(clock.now, target="alert")}
    # When the alerts are pushed, twice (a redelivered push message)
    client = _client()
    first = push_alerts(store, SECRET, client, now=clock.now, config=CONFIG)
    second = push_alerts(store, SECRET, client, now=clock.now + DAY, config=CONFIG)
    # Then each flag's Slack message was posted exactly once, as queued, and nothing went twice
    assert (first.target, first.items, first.writes, first.dead) == ("alert", 2, 2, ())
    assert second.items == 0 and second.writes == 0
    assert route.call_count == 2
    bodies = [json.loads(call.request.content) for call in route.calls]
    assert sorted(bodies, key=str) == sorted(queued.values(), key=str)
    assert all(set(body) == {"text", "blocks"} and "Deal " in body["text"] for body in bodies)
    assert set(_alert_items(store).values()) == {"sent"}
    # A later scan raises nothing new, so queues and sends nothing
    assert scan_leaks(store, model, now=clock.now + DAY).alerts == 0
    assert push_alerts(store, SECRET, client, now=clock.now + DAY, config=CONFIG).writes == 0
    assert route.call_count == 2


@respx.mock
def test_a_500_is_retried_later_with_backoff_then_sent(
    store: SyncStore, clock: FakeClock, model: StageModel
) -> None:
    # Given a webhook that fails once with 500, then accepts
    route = respx.post(URL).mock(
        side_effect=[httpx.Response(500, text="oops"), httpx.Response(200, text="ok"), httpx.Response(200)]
    )
    _stalled(store, clock, "a")
    _stalled(store, clock, "b")
    scan_leaks(store, model, now=clock.now)
    client = _client()
    # When the first round hits the 500
    first = push_alerts(store, SECRET, client, now=clock.now, config=CONFIG)
    # Then that item is due again after the back-off; the round stopped, the other item untouched
    assert (first.items, first.writes, first.retried, first.dead) == (1, 0, 1, ())
    assert route.call_count == 1
    failed = [i for i in store.due_outbox(clock.now + DAY, target="alert") if i.attempts == 1]
    assert len(failed) == 1 and failed[0].status == "failed"
    assert failed[0].next_attempt_at == clock.now + timedelta(seconds=30)
    assert failed[0].last_error is not None and "s3cr3t" not in failed[0].last_error
    # Within the back-off only the untouched item goes; after it, the failed one succeeds
    early = push_alerts(store, SECRET, client, now=clock.now + timedelta(seconds=10), config=CONFIG)
    assert (early.items, early.writes) == (1, 1)
    later = push_alerts(store, SECRET, client, now=clock.now + timedelta(seconds=31), config=CONFIG)
    assert (later.items, later.writes) == (1, 1)
    assert route.call_count == 3
    assert set(_alert_items(store).values()) == {"sent"}


@respx.mock
def test_failing_alerts_go_dead_after_max_attempts_with_the_reason(
    store: SyncStore, clock: FakeClock, model: StageModel
) -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(503, text="down"))
    _stalled(store, clock, "a")
    scan_leaks(store, model, now=clock.now)
    client = _client()
    outcomes = []
    now = clock.now
    for _ in range(CONFIG.max_attempts):
        stats = push_alerts(store, SECRET, client, now=now, config=CONFIG)
        outcomes.append((stats.retried, len(stats.dead)))
        now += timedelta(hours=2)
    # retried twice (back-off 30 s then 60 s), dead on the third attempt, then left alone
    assert outcomes == [(1, 0), (1, 0), (0, 1)]
    assert push_alerts(store, SECRET, client, now=now + DAY, config=CONFIG).items == 0
    assert route.call_count == 3
    (item,) = [i for i in _alert_items(store).items()]
    assert item[1] == "dead"
    dead = stats.dead[0]
    assert "503" in dead.reason and "s3cr3t" not in dead.reason and "hooks.slack" not in dead.reason


@respx.mock
def test_a_refused_alert_dies_at_once_and_a_replay_sends_it_once(
    store: SyncStore, clock: FakeClock, model: StageModel
) -> None:
    # Given a webhook that refuses (404) and then, fixed, accepts
    route = respx.post(URL).mock(side_effect=[httpx.Response(404, text="no_service"), httpx.Response(200)])
    _stalled(store, clock, "a")
    scan_leaks(store, model, now=clock.now)
    client = _client()
    refused = push_alerts(store, SECRET, client, now=clock.now, config=CONFIG)
    assert len(refused.dead) == 1 and refused.retried == 0
    dead = refused.dead[0]
    # When the dead item is replayed twice (as replay_dead_letter re-queues it) and pushed
    item = store.get_outbox(dead.outbox_id)
    assert item is not None
    for replay in (1, 2):
        store.enqueue_outbox("alert", f"{item.idempotency_key}:replay:{replay}", item.payload)
    replayed = push_alerts(store, SECRET, client, now=clock.now, config=CONFIG)
    # Then the alert went out once; the second copy was recognised as the same flag's alert
    assert (replayed.writes, replayed.skipped) == (1, 1)
    assert route.call_count == 2
    assert push_alerts(store, SECRET, client, now=clock.now + DAY, config=CONFIG).items == 0


@respx.mock
def test_an_alert_claimed_elsewhere_is_not_sent(
    store: SyncStore, clock: FakeClock, model: StageModel
) -> None:
    # Given another worker holds the claim of this flag's alert (sending it right now)
    route = respx.post(URL).mock(return_value=httpx.Response(200))
    _stalled(store, clock, "a")
    scan_leaks(store, model, now=clock.now)
    (item,) = store.due_outbox(clock.now, target="alert")
    assert store.claim_key(f"{item.idempotency_key}:sent")
    # When this worker pushes
    stats = push_alerts(store, SECRET, _client(), now=clock.now, config=CONFIG)
    # Then it sends nothing and looks again after the back-off
    assert (stats.writes, stats.retried) == (0, 1)
    assert route.call_count == 0
    # and once the other worker recorded its send, the item is settled without a second POST
    store.record_result(f"{item.idempotency_key}:sent", {"outbox_id": item.id})
    after = push_alerts(store, SECRET, _client(), now=clock.now + DAY, config=CONFIG)
    assert (after.writes, after.skipped) == (0, 1)
    assert route.call_count == 0


def test_a_bad_url_is_a_config_error_and_sends_nothing(
    store: SyncStore, clock: FakeClock, model: StageModel
) -> None:
    from sync_worker.errors import ConfigError

    _stalled(store, clock, "a")
    scan_leaks(store, model, now=clock.now)
    with pytest.raises(ConfigError) as caught:
        push_alerts(store, SecretStr("ftp://secret-host/x"), _client(), now=clock.now, config=CONFIG)
    assert "secret-host" not in str(caught.value)
    (item,) = store.due_outbox(clock.now, target="alert")
    assert item.attempts == 0
    assert store.claim_key(f"{item.idempotency_key}:sent")  # the claim was released
