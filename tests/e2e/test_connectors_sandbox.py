"""The connectors against the sandbox servers, end to end, through ``from_settings``.

Given the three sandboxes seeded from one seed, each connector lists its stages, pulls every stream to
the end (counts checked against the sandbox's own state), resumes from a saved cursor, pushes updates
and sees them on the next pull, writes leak flags, survives lowered rate limits and injected 5xx
faults, and verifies and parses the webhooks the sandbox delivers. HubSpot's 10,000-result search cap
is exercised on a dedicated sandbox holding more than 10,000 deals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis

import connectors.hubspot as hubspot
import connectors.lagrowthmachine as lgm
import connectors.pipedrive as pipedrive
from sync_worker.canonical import CanonicalRecord, CanonicalUpdate, LeakFlag, PullPage, StageKey
from sync_worker.errors import TransientError
from sync_worker.mappings import Mappings
from sync_worker.ratelimit import limiter_for
from sync_worker.sandbox.common import FaultConfig, WindowRateLimiter, serve_in_thread
from sync_worker.sandbox.hubspot import HubSpotSandbox, HubSpotSandboxConfig
from sync_worker.sandbox.hubspot import create_app as create_hubspot_app
from sync_worker.sandbox.runner import RunningSandbox
from sync_worker.settings import Settings
from tests.conftest import REDIS_SERVER, service_unavailable
from tests.e2e.conftest import WebhookSink, settings_from_env

pytestmark = pytest.mark.slow


def _pull(connector: Any, stream: str, cursor: str | None = None) -> tuple[list[CanonicalRecord], str | None]:
    """Every record of ``stream`` from ``cursor`` to the end, and the cursor the last page carries."""
    pages: list[PullPage] = list(connector.pull_changes(stream, cursor))
    assert pages, f"{stream}: no page at all"
    assert pages[-1].done and not any(p.done for p in pages[:-1])
    return [r for p in pages for r in p.records], pages[-1].cursor


def _fast_sleep(seconds: float) -> None:
    time.sleep(min(seconds, 0.05))


def _key(prefix: str) -> str:
    return f"e2e-{prefix}-{time.monotonic_ns()}"


# --------------------------------------------------------------------------------------------------
# HubSpot
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hs(settings: Settings, mappings: Mappings) -> Iterator[hubspot.HubSpotConnector]:
    connector = hubspot.from_settings(settings, mappings)
    yield connector
    connector.close()


def test_hubspot_lists_the_sandbox_pipelines(hs: hubspot.HubSpotConnector, sandbox: RunningSandbox) -> None:
    stages = hs.list_stages()
    expected = {(p["id"], s["id"]) for p in sandbox.hubspot.pipelines() for s in p["stages"]}
    assert {(s.pipeline_id, s.stage_id) for s in stages} == expected
    assert {s.stage_id for s in stages if s.is_closed} == {"closedwon", "closedlost"}


def test_hubspot_pulls_every_deal_then_resumes_with_later_changes_only(
    hs: hubspot.HubSpotConnector, sandbox: RunningSandbox
) -> None:
    box = sandbox.hubspot
    # Given one deal archived in HubSpot by a user
    archived_id = box.deal_ids()[0]
    assert box.simulate_user_archive(archived_id)

    # When both streams are pulled to the end
    live, cursor = _pull(hs, "deals")
    gone, archived_cursor = _pull(hs, "deals_archived")

    # Then they hold exactly what the sandbox holds
    assert sorted(r.external_id for r in live) == box.deal_ids()
    assert sorted(r.external_id for r in gone) == box.deal_ids(archived=True)
    assert archived_id in {r.external_id for r in gone}
    assert all(r.status == "deleted" for r in gone)
    assert all(r.stage is not None for r in live), [r.unmapped for r in live if r.stage is None]
    by_id = {r.external_id: r for r in live}
    for deal_id in box.deal_ids()[:10]:
        props = box.deal_properties(deal_id)
        assert props is not None
        assert by_id[deal_id].title == props["dealname"]
        assert by_id[deal_id].amount == Decimal(props["amount"])

    # When two deals change and the stream resumes from the saved cursor
    changed = box.deal_ids()[1:3]
    for deal_id in changed:
        box.simulate_user_change(deal_id, {"amount": "4242"})
    later, _ = _pull(hs, "deals", cursor)

    # Then only those come back, with the new amount
    assert sorted(r.external_id for r in later) == sorted(changed)
    assert all(r.amount == Decimal("4242") for r in later)
    again, _ = _pull(hs, "deals_archived", archived_cursor)
    assert {r.external_id for r in again} <= {archived_id}


def test_hubspot_pushes_are_seen_on_the_next_pull(
    hs: hubspot.HubSpotConnector, sandbox: RunningSandbox, webhook_sink: WebhookSink
) -> None:
    box = sandbox.hubspot
    _, cursor = _pull(hs, "deals")
    open_ids = [
        i for i in box.deal_ids() if (box.deal_properties(i) or {}).get("dealstage") == "appointmentscheduled"
    ]
    moved, won = open_ids[0], open_ids[1]
    updates = [
        CanonicalUpdate(
            "hubspot",
            _key("stage"),
            "pipedrive",
            external_id=moved,
            stage=StageKey.PROPOSAL,
            amount=Decimal("12345.50"),
        ),
        CanonicalUpdate("hubspot", _key("won"), "pipedrive", external_id=won, status="won"),
        CanonicalUpdate(
            "hubspot",
            _key("create"),
            "pipedrive",
            stage=StageKey.MEETING,
            title="E2E Created Deal",
            amount=Decimal("999"),
            close_date=datetime(2030, 1, 31, tzinfo=UTC).date(),
        ),
    ]
    results = hs.apply_updates(updates)
    assert [r.ok for r in results] == [True, True, True], [r.error for r in results]
    assert [r.idempotency_key for r in results] == [u.idempotency_key for u in updates]
    created = results[2].external_id
    assert created is not None and created not in (moved, won)

    later = {r.external_id: r for r in _pull(hs, "deals", cursor)[0]}
    assert set(later) == {moved, won, created}
    assert later[moved].stage is StageKey.PROPOSAL and later[moved].source_stage == "decisionmakerboughtin"
    assert later[moved].amount == Decimal("12345.50")
    assert later[won].status == "won" and later[won].stage is StageKey.WON
    assert later[created].title == "E2E Created Deal" and later[created].stage is StageKey.MEETING
    assert [r.external_id for r in hs.read_deals([created])] == [created]

    # The API changes were announced by signed webhooks that the connector verifies and parses.
    request = webhook_sink.wait_for("hubspot", lambda r: moved.encode() in r.body)
    hs.verify_webhook(request)
    events = hs.parse_webhook(request.body)
    assert any(e.object_id == moved and e.object_type == "deal" for e in events)


def test_hubspot_flag_properties_are_created_once_then_set(
    hs: hubspot.HubSpotConnector, sandbox: RunningSandbox
) -> None:
    box = sandbox.hubspot
    created = hs.ensure_flag_properties()
    assert "group:sync_worker" in created and "sync_worker_leak_status" in created
    assert hs.ensure_flag_properties() == []
    names = {p["name"] for p in box.properties()}
    assert {"sync_worker_leak_status", "sync_worker_leak_reason", "sync_worker_leak_days"} <= names

    deal_id = box.deal_ids()[5]
    since = datetime(2025, 3, 1, tzinfo=UTC)
    flag = LeakFlag("stalled", "42 days in proposal", StageKey.PROPOSAL, since, 42)
    [result] = hs.apply_updates(
        [CanonicalUpdate("hubspot", _key("flag"), "sync-worker", external_id=deal_id, flag=flag)]
    )
    assert result.ok, result.error
    props = box.deal_properties(deal_id) or {}
    assert props["sync_worker_leak_status"] == "stalled"
    assert props["sync_worker_leak_days"] == "42"
    assert props["sync_worker_leak_stage"] == "proposal"

    [cleared] = hs.apply_updates(
        [CanonicalUpdate("hubspot", _key("clear"), "sync-worker", external_id=deal_id, flag=LeakFlag(None))]
    )
    assert cleared.ok, cleared.error
    assert not (box.deal_properties(deal_id) or {}).get("sync_worker_leak_status")


# --------------------------------------------------------------------------------------------------
# Pipedrive
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pd(settings: Settings, mappings: Mappings) -> Iterator[pipedrive.PipedriveConnector]:
    connector = pipedrive.from_settings(settings, mappings)
    yield connector
    connector.close()


def test_pipedrive_lists_the_sandbox_stages(
    pd: pipedrive.PipedriveConnector, sandbox: RunningSandbox
) -> None:
    stages = pd.list_stages()
    live = {str(s["id"]) for s in sandbox.pipedrive.stages.values() if not s["is_deleted"]}
    assert {s.stage_id for s in stages} == live
    names = {p["id"]: p["name"] for p in sandbox.pipedrive.pipelines.values()}
    assert {s.pipeline_label for s in stages} == set(names.values())


def test_pipedrive_pulls_every_stream_then_resumes_with_later_changes_only(
    pd: pipedrive.PipedriveConnector, sandbox: RunningSandbox
) -> None:
    box = sandbox.pipedrive
    # Given one open deal archived
    open_deal = next(d for d in box.list_deals(statuses=["open"]))
    box.update_deal(open_deal["id"], {"is_archived": True})

    # When every stream is pulled
    deals, cursor = _pull(pd, "deals")
    deleted, _ = _pull(pd, "deals_deleted")
    archived, _ = _pull(pd, "deals_archived")

    # Then the counts and statuses are the sandbox's
    assert sorted(int(r.external_id) for r in deals) == sorted(d["id"] for d in box.list_deals())
    assert sorted(int(r.external_id) for r in deleted) == sorted(
        d["id"] for d in box.list_deals(statuses=["deleted"])
    )
    assert len(deleted) == sandbox.summary.deleted and all(r.status == "deleted" for r in deleted)
    assert [int(r.external_id) for r in archived] == [open_deal["id"]]
    statuses = {s: sum(1 for r in deals if r.status == s) for s in ("won", "lost")}
    assert statuses == {"won": sandbox.summary.won, "lost": sandbox.summary.lost}
    assert all(r.lost_reason for r in deals if r.status == "lost")
    emails = {r.contact_email for r in deals}
    assert None not in emails  # every seeded deal has a person with an email

    # When two deals change in the app and the stream resumes from the saved cursor
    assert cursor is not None
    saved = datetime.fromisoformat(cursor.replace("Z", "+00:00"))
    changed = [d["id"] for d in box.list_deals(statuses=["open"])[:2]]
    time.sleep(1.05)  # Pipedrive times are whole seconds: make the change strictly later
    for deal_id in changed:
        box.simulate_user_change(deal_id, value=777)
    later, _ = _pull(pd, "deals", cursor)

    # Then everything newer than the cursor is exactly those two (the cursor's own second may repeat)
    assert all(r.updated_at >= saved for r in later)
    assert sorted(int(r.external_id) for r in later if r.updated_at > saved) == sorted(changed)
    assert all(r.amount == Decimal(777) for r in later if int(r.external_id) in changed)


def test_pipedrive_pushes_are_seen_on_the_next_pull(
    pd: pipedrive.PipedriveConnector, sandbox: RunningSandbox, webhook_sink: WebhookSink
) -> None:
    box = sandbox.pipedrive
    _, cursor = _pull(pd, "deals")
    stock = min(box.pipelines)
    candidates = [d["id"] for d in box.list_deals(statuses=["open"], pipeline_id=stock)]
    moved, lost, won = (str(i) for i in candidates[:3])
    time.sleep(1.05)
    updates = [
        CanonicalUpdate(
            "pipedrive",
            _key("stage"),
            "hubspot",
            external_id=moved,
            stage=StageKey.PROPOSAL,
            amount=Decimal("2500"),
        ),
        CanonicalUpdate(
            "pipedrive",
            _key("lost"),
            "hubspot",
            external_id=lost,
            status="lost",
            lost_reason="Went with a competitor",
        ),
        CanonicalUpdate("pipedrive", _key("won"), "hubspot", external_id=won, status="won"),
    ]
    results = pd.apply_updates(updates)
    assert [r.ok for r in results] == [True, True, True], [r.error for r in results]

    later = {r.external_id: r for r in _pull(pd, "deals", cursor)[0]}
    assert {moved, lost, won} <= set(later)
    proposal = next(
        s for s in box.stages.values() if s["name"] == "Proposal Made" and s["pipeline_id"] == stock
    )
    assert later[moved].stage is StageKey.PROPOSAL and later[moved].source_stage == str(proposal["id"])
    assert later[moved].amount == Decimal(2500)
    assert later[lost].status == "lost" and later[lost].lost_reason == "Went with a competitor"
    assert later[lost].stage is StageKey.LOST
    assert later[won].status == "won" and later[won].stage is StageKey.WON

    # The API change was announced by a v2 webhook that the connector authenticates and parses.
    request = webhook_sink.wait_for(
        "pipedrive", lambda r: f'"entity_id": "{lost}"'.encode() in r.body and b'"lost"' in r.body
    )
    pd.verify_webhook(request)
    [event] = pd.parse_webhook(request.body)
    assert event.object_id == lost and event.action == "change"
    assert (event.change_source or "").startswith("api")


def test_pipedrive_leak_flag_writes_a_note_and_a_label(
    pd: pipedrive.PipedriveConnector, sandbox: RunningSandbox
) -> None:
    box = sandbox.pipedrive
    deal_id = box.list_deals(statuses=["open"])[3]["id"]
    flag = LeakFlag("stalled", "Sat in <Proposal> for 45 days", StageKey.PROPOSAL, None, 45)
    [result] = pd.apply_updates(
        [CanonicalUpdate("pipedrive", _key("flag"), "sync-worker", external_id=str(deal_id), flag=flag)]
    )
    assert result.ok, result.error

    notes = [n for n in box.notes.values() if n["deal_id"] == deal_id]
    assert len(notes) == 1 and "stalled" in notes[0]["content"] and "&lt;Proposal&gt;" in notes[0]["content"]
    labels = {o["label"]: o["id"] for o in box.label_options.values()}
    assert "Leak: stalled" in labels and {"Hot", "Warm", "Cold"} <= set(labels)
    assert labels["Leak: stalled"] in box.get_deal(deal_id)["label_ids"]

    [cleared] = pd.apply_updates(
        [
            CanonicalUpdate(
                "pipedrive", _key("clear"), "sync-worker", external_id=str(deal_id), flag=LeakFlag(None)
            )
        ]
    )
    assert cleared.ok, cleared.error
    assert labels["Leak: stalled"] not in box.get_deal(deal_id)["label_ids"]


# --------------------------------------------------------------------------------------------------
# LaGrowthMachine
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lg(settings: Settings, mappings: Mappings) -> Iterator[lgm.LaGrowthMachineConnector]:
    connector = lgm.from_settings(settings, mappings)
    yield connector
    connector.close()


def _inbound(sandbox: RunningSandbox) -> set[str]:
    return {m["id"] for m in sandbox.lgm.messages if m["direction"] == "INBOUND"}


def test_lgm_pulls_statuses_and_replies_then_resumes_with_later_replies_only(
    lg: lgm.LaGrowthMachineConnector, sandbox: RunningSandbox
) -> None:
    box = sandbox.lgm
    assert {s.stage_id for s in lg.list_stages()} >= {"CONTACTED", "CONVERTED", "NOT_INTERESTED"}

    statuses, _ = _pull(lg, "lead_statuses")
    assert len(statuses) == len(box.memberships)
    assert {r.external_id for r in statuses} == {lead for _, lead in box.memberships}
    assert all(r.stage is not None for r in statuses), [r.unmapped for r in statuses if r.stage is None]

    searched = box.calls.by_path_status[("/flow/conversations/search", 200)]
    pages = list(lg.pull_changes("replies", None))
    replies = [r for p in pages for r in p.records]
    # Polled through the vendor's path, one call a page.
    assert box.calls.by_path_status[("/flow/conversations/search", 200)] - searched == len(pages)
    cursor = pages[-1].cursor
    assert len(replies) == len(_inbound(sandbox))
    assert {r.external_id for r in replies} == set(sandbox.summary.replied_lead_ids)
    assert all(r.stage is StageKey.CONTACTED and r.replied_at is not None for r in replies)

    # When two more leads reply and the stream resumes from the saved cursor
    quiet = [lead for lead in sandbox.summary.lgm_lead_ids if lead not in sandbox.summary.replied_lead_ids][
        :2
    ]
    for lead_id in quiet:
        box.simulate_reply(lead_id, "Sounds good", notify=False)
    later, _ = _pull(lg, "replies", cursor)

    # Then both new replies come back, and nothing older than the last page already pulled: the
    # conversation search (``GET /conversations/search``, sorted by ``lastMessageAt`` ascending) moves
    # a conversation that changes past the saved ``nextToken``, so only what changed since comes back.
    new = [r for r in later if r.external_id in quiet]
    assert sorted(r.external_id for r in new) == sorted(quiet)
    old = {(r.external_id, r.replied_at) for r in later if r.external_id not in quiet}
    assert old <= {(r.external_id, r.replied_at) for r in pages[-1].records}


def test_lgm_lead_status_push_is_seen_on_the_next_pull(
    lg: lgm.LaGrowthMachineConnector, sandbox: RunningSandbox
) -> None:
    box = sandbox.lgm
    lead_id = sandbox.summary.lgm_lead_ids[0]
    email = box.leads[lead_id]["proEmail"]
    update = CanonicalUpdate(
        "lagrowthmachine",
        _key("lead"),
        "pipedrive",
        external_id=lead_id,
        kind="lead",
        stage=StageKey.NEGOTIATION,
        contact_email=email,
    )
    [result] = lg.apply_updates([update])
    assert result.ok, result.error
    assert {m["status"] for (_, lead), m in box.memberships.items() if lead == lead_id} == {"NEGOTIATING"}

    statuses, _ = _pull(lg, "lead_statuses")
    mine = [r for r in statuses if r.external_id == lead_id]
    assert mine and all(r.stage is StageKey.NEGOTIATION and r.source_stage == "NEGOTIATING" for r in mine)


def test_lgm_reply_webhook_verifies_and_parses(
    lg: lgm.LaGrowthMachineConnector, sandbox: RunningSandbox, webhook_sink: WebhookSink
) -> None:
    lead_id = sandbox.summary.lgm_lead_ids[-1]
    message = sandbox.lgm.simulate_reply(lead_id, "Call me tomorrow")
    request = webhook_sink.wait_for("lagrowthmachine", lambda r: message["id"].encode() in r.body)
    lg.verify_webhook(request)
    [event] = lg.parse_webhook(request.body)
    assert event.object_id == lead_id and event.handled


# --------------------------------------------------------------------------------------------------
# Rate limits and faults
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(f"{REDIS_SERVER}/10")
    try:
        client.ping()
    except redis.RedisError:
        service_unavailable("redis at 127.0.0.1:6379 is not answering")
    yield client
    client.close()


def test_hubspot_search_burst_under_a_lowered_limit_surfaces_no_error(
    sandbox: RunningSandbox, mappings: Mappings, redis_client: redis.Redis
) -> None:
    box = sandbox.hubspot
    original = box.access.search
    box.access.search = WindowRateLimiter(4, 1.0)
    box.calls.reset()
    settings = settings_from_env(sandbox.env(), hubspot={"search_rate_limit_per_s": 4})
    connector = hubspot.from_settings(
        settings, mappings, limiter=limiter_for("hubspot", settings, redis_client)
    )
    try:
        counts = [len(_pull(connector, "deals")[0]) for _ in range(9)]
    finally:
        box.access.search = original
        connector.close()
    assert counts == [len(box.deal_ids())] * 9
    search = "/crm/v3/objects/deals/search"
    assert box.calls.by_path_status[(search, 200)] == 9
    assert box.calls.by_path_status[(search, 429)] == 0  # the shared limiter kept under the limit


def test_pipedrive_burst_under_a_lowered_limit_surfaces_no_error(
    sandbox: RunningSandbox, pd: pipedrive.PipedriveConnector, settings: Settings, mappings: Mappings
) -> None:
    box = sandbox.pipedrive
    original = box.limiter
    box.limiter = WindowRateLimiter(5, 1.0)
    box.calls.reset()
    connector = pipedrive.from_settings(settings, mappings)
    try:
        sizes = [len(connector.list_stages()) for _ in range(8)]
    finally:
        box.limiter = original
        connector.close()
    assert len(set(sizes)) == 1 and sizes[0] > 0
    ok = (
        box.calls.by_path_status[("/api/v2/pipelines", 200)]
        + box.calls.by_path_status[("/api/v2/stages", 200)]
    )
    assert ok == 16
    # Either the connector kept under the limit or the 429s it met were waited out; nothing else.
    assert set(box.calls.by_status) <= {200, 429}


def test_lgm_burst_under_a_lowered_limit_surfaces_no_error(
    sandbox: RunningSandbox, settings: Settings, mappings: Mappings
) -> None:
    box = sandbox.lgm
    original = box.limiter
    box.limiter = WindowRateLimiter(4, 1.0)
    box.calls.reset()
    connector = lgm.from_settings(settings, mappings)
    try:
        sizes = [len(connector.list_campaigns()) for _ in range(10)]
    finally:
        box.limiter = original
        connector.close()
    assert sizes == [len(box.campaigns)] * 10
    assert box.calls.by_path_status[("/flow/campaigns", 200)] == 10
    assert box.calls.by_status[429] > 0  # no client-side limiter here: the 429s were waited out


def _lift_limits(sandbox: RunningSandbox, system: str) -> Callable[[], None]:
    """Raise the sandbox's rate limits for ``system``; return the function that restores them."""
    big = WindowRateLimiter(1_000_000, 1.0)
    if system == "hubspot":
        access = sandbox.hubspot.access
        saved = (access.general, access.secondly, access.search)
        access.general = access.secondly = access.search = big

        def restore_hubspot() -> None:
            access.general, access.secondly, access.search = saved

        return restore_hubspot
    box = sandbox.pipedrive if system == "pipedrive" else sandbox.lgm
    original = box.limiter
    box.limiter = big

    def restore() -> None:
        box.limiter = original

    return restore


def _converge(connector: Any, stream: str, attempts: int = 20) -> list[CanonicalRecord]:
    """Pull to the end the way the core does: keep each page's cursor, resume from it after an error."""
    cursor: str | None = None
    records: list[CanonicalRecord] = []
    for _ in range(attempts):
        try:
            for page in connector.pull_changes(stream, cursor):
                records.extend(page.records)
                cursor = page.cursor
                if page.done:
                    return records
        except TransientError:
            continue
    raise AssertionError(f"{stream} did not converge in {attempts} attempts")


@pytest.mark.parametrize(
    ("system", "stream"),
    [("hubspot", "deals"), ("pipedrive", "deals"), ("lagrowthmachine", "lead_statuses")],
)
def test_pulls_converge_under_seeded_5xx_faults(
    system: str, stream: str, sandbox: RunningSandbox, settings: Settings, mappings: Mappings
) -> None:
    build: dict[str, Callable[..., Any]] = {
        "hubspot": hubspot.from_settings,
        "pipedrive": pipedrive.from_settings,
        "lagrowthmachine": lgm.from_settings,
    }
    boxes: dict[str, Any] = {
        "hubspot": sandbox.hubspot,
        "pipedrive": sandbox.pipedrive,
        "lagrowthmachine": sandbox.lgm,
    }
    box = boxes[system]
    connector = build[system](settings, mappings, sleep=_fast_sleep)
    # Rate limits are another test's subject: lift them so the fast retries below meet only 5xx.
    box_limits = _lift_limits(sandbox, system)
    try:
        clean = {r.external_id for r in _converge(connector, stream)}
        box.calls.reset()
        box.faults.config = FaultConfig(error_rate=0.2, seed=5)
        try:
            rounds = [{r.external_id for r in _converge(connector, stream)} for _ in range(8)]
        finally:
            box.faults.config = FaultConfig()
    finally:
        connector.close()
        box_limits()
    assert rounds == [clean] * 8
    assert sum(n for status, n in box.calls.by_status.items() if status >= 500) > 0


# --------------------------------------------------------------------------------------------------
# HubSpot: more than 10,000 search results
# --------------------------------------------------------------------------------------------------


def test_hubspot_search_past_10000_results_reslices(mappings: Mappings) -> None:
    token = "pat-e2e-cap"
    box = HubSpotSandbox(
        HubSpotSandboxConfig(
            private_app_tokens=frozenset({token}), search_rate_limit_per_s=10_000, rate_limit_per_10s=10_000
        )
    )
    base_ms = 1_700_000_000_000
    total = 10_250
    for n in range(total):
        box.put_deal(
            {"dealname": f"Deal {n}", "amount": "100", "dealstage": "appointmentscheduled"},
            created_ms=base_ms,
            modified_ms=base_ms + n * 1000,
        )
    handle = serve_in_thread(create_hubspot_app(box))
    settings = settings_from_env({"SYNC_HUBSPOT__BASE_URL": handle.url, "SYNC_HUBSPOT__TOKEN": token})
    connector = hubspot.from_settings(settings, mappings)
    try:
        records, cursor = _pull(connector, "deals")
    finally:
        connector.close()
        handle.stop()
        box.close()
    ids = [r.external_id for r in records]
    assert len(ids) == total and len(set(ids)) == total
    search = "/crm/v3/objects/deals/search"
    assert box.calls.by_path_status[(search, 400)] == 0  # re-sliced before HubSpot had to refuse
    assert cursor is not None and str(base_ms + (total - 1) * 1000) in cursor
