"""The Salesforce sandbox org, driven by the real connector and by plain HTTP.

What it must reproduce (research file, section 2.9): the token endpoint with ``instance_url`` and
``id``; 401 ``INVALID_SESSION_ID``; ``query``/``queryAll`` batches with ``nextRecordsUrl``;
``updated/``/``deleted/`` with seconds cut; ``composite/sobjects`` with per-item results and
``allOrNone`` rollback; error arrays; ``Sforce-Limit-Info`` and 403 ``REQUEST_LIMIT_EXCEEDED``; and
Outbound Messages retried until ``Ack``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.salesforce import SalesforceConnector, SalesforceSettings
from connectors.salesforce.sandbox import SalesforceSandbox, start_sandbox
from connectors.salesforce.webhooks import ack_body, parse_message
from connectors.salesforce.wire import EXHAUSTED_BLOCK_SECONDS
from sync_worker.canonical import CanonicalUpdate, StageKey
from sync_worker.errors import AuthError, TransientError
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.plugins import SandboxOptions
from sync_worker.sandbox.common import ServerHandle, serve_in_thread

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 2, 9, 30, 0, tzinfo=UTC)
V = "/services/data/v62.0"


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(REPO / "mappings")


@pytest.fixture
def org() -> Iterator[SalesforceSandbox]:
    box = start_sandbox(SandboxOptions(seed=5, deals=450, now=NOW))
    try:
        yield box
    finally:
        box.stop()


def settings_of(box: SalesforceSandbox, **values: Any) -> SalesforceSettings:
    env = {k.removeprefix("SYNC_SALESFORCE__").lower(): v for k, v in box.env().items()}
    return SalesforceSettings(**{**env, **values})


_OPEN: list[SalesforceConnector] = []


@pytest.fixture(autouse=True)
def close_connectors() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def connect(box: SalesforceSandbox, mappings: Mappings, **values: Any) -> SalesforceConnector:
    """A connector on the sandbox's env(); closed after the test."""
    connector = SalesforceConnector(
        settings_of(box, **values), lambda: mappings, sleep=lambda _: None, clock=box.org.now
    )
    _OPEN.append(connector)
    return connector


def session(box: SalesforceSandbox) -> httpx.Client:
    """A plain client with a session from the refresh-token grant."""
    form = {
        "grant_type": "refresh_token",
        "client_id": box.state.client_id,
        "refresh_token": box.state.refresh_token,
    }
    token = httpx.post(f"{box.url}/services/oauth2/token", data=form).json()
    return httpx.Client(
        base_url=token["instance_url"], headers={"Authorization": f"Bearer {token['access_token']}"}
    )


# -- auth ------------------------------------------------------------------------------------


def test_the_token_answer_names_the_instance_and_the_identity(org: SalesforceSandbox) -> None:
    form = {
        "grant_type": "refresh_token",
        "client_id": org.state.client_id,
        "refresh_token": org.state.refresh_token,
    }
    answer = httpx.post(f"{org.url}/services/oauth2/token", data=form).json()
    assert answer["instance_url"] == org.url
    assert answer["id"] == f"{org.url}/id/{org.org.org_id}/{org.org.integration_user}"
    assert answer["token_type"] == "Bearer" and answer["issued_at"].isdigit() and answer["signature"]
    refused = httpx.post(f"{org.url}/services/oauth2/token", data={**form, "refresh_token": "stolen"})
    assert refused.status_code == 400
    assert refused.json() == {"error": "invalid_grant", "error_description": "expired access/refresh token"}


def test_an_expired_session_is_401_and_the_connector_gets_a_new_one(
    org: SalesforceSandbox, mappings: Mappings
) -> None:
    connector = connect(org, mappings)
    assert connector.list_stages()
    with session(org) as api:
        httpx.delete(f"{org.url}/_sandbox/sessions")
        stale = api.get(f"{V}/query", params={"q": "SELECT Id FROM OpportunityStage"})
    assert stale.status_code == 401
    assert stale.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    assert len(connector.list_stages()) == 10
    assert connector.api.tokens.grants == 2


def test_the_jwt_bearer_flow_is_checked_against_the_public_key(
    org: SalesforceSandbox, mappings: Mappings
) -> None:
    values = {"refresh_token": None, "client_secret": None, "username": org.state.username}
    good = connect(org, mappings, private_key=SecretStr(org.state.private_key_pem()), **values)
    assert good.list_stages()
    assert good.own_user_id() == org.org.integration_user
    other = connect(
        org, mappings, private_key=SecretStr(org.state.private_key_pem()), **{**values, "username": "x@y.z"}
    )
    with pytest.raises(AuthError, match="invalid_grant"):
        other.list_stages()


# -- reads -----------------------------------------------------------------------------------


def test_a_full_pull_follows_batches_and_a_resume_sees_only_later_changes(
    org: SalesforceSandbox, mappings: Mappings
) -> None:
    connector = connect(org, mappings, query_batch_size=200)
    pages = list(connector.pull_changes("opportunities", None))
    live = len(org.org.live())
    assert [len(p.records) for p in pages] == [200, 200, live - 400]
    assert [p.done for p in pages] == [False, False, True]
    assert len({r.external_id for p in pages for r in p.records}) == live
    assert all(r.stage is not None for p in pages for r in p.records)

    changed = org.simulate_change()
    again = list(connector.pull_changes("opportunities", pages[-1].cursor))
    assert [r.external_id for p in again for r in p.records] == [changed]


def test_every_answer_carries_the_limit_header_and_errors_are_arrays(org: SalesforceSandbox) -> None:
    with session(org) as api:
        bad = api.get(f"{V}/query", params={"q": "SELECT Id FROM Opportunity WHERE"})
        assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "MALFORMED_QUERY"
        unknown = api.get(f"{V}/query", params={"q": "SELECT Id, CurrencyIsoCode FROM Opportunity"})
        assert unknown.json()[0]["errorCode"] == "INVALID_FIELD"
        ok = api.get(f"{V}/query", params={"q": "SELECT Id FROM Opportunity LIMIT 1"})
        used = [r.headers["Sforce-Limit-Info"] for r in (bad, unknown, ok)]
        assert used == ["api-usage=1/100000", "api-usage=2/100000", "api-usage=3/100000"]
        record = ok.json()["records"][0]
        assert record["attributes"]["type"] == "Opportunity"


def test_updated_and_deleted_cut_seconds_from_their_windows(org: SalesforceSandbox) -> None:
    start = (NOW - timedelta(days=11)).replace(second=42)
    params = {
        "start": start.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        "end": (NOW + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S+00:00"),
    }
    cut = start.replace(second=0)
    with session(org) as api:
        updated = api.get(f"{V}/sobjects/Opportunity/updated/", params=params).json()
        gone = api.get(f"{V}/sobjects/Opportunity/deleted/", params=params).json()
        too_old = {**params, "start": (NOW - timedelta(days=16)).strftime("%Y-%m-%dT%H:%M:%SZ")}
        refused = api.get(f"{V}/sobjects/Opportunity/deleted/", params=too_old)
    latest = NOW.replace(second=0)  # the org's clock: end is past it
    assert updated["latestDateCovered"] == gone["latestDateCovered"] == "2026-03-02T09:30:00.000+0000"
    expected = {
        o["Id"]
        for o in org.org.live()
        if cut <= datetime.strptime(o["SystemModstamp"], "%Y-%m-%dT%H:%M:%S.%f%z") < latest
    }
    assert expected and set(updated["ids"]) == expected
    deleted = {o["Id"] for o in org.org.opportunities.values() if o["IsDeleted"]}
    assert {d["id"] for d in gone["deletedRecords"]} == deleted
    assert set(gone) == {"deletedRecords", "earliestDateAvailable", "latestDateCovered"}
    assert refused.status_code == 400 and refused.json()[0]["errorCode"] == "INVALID_REPLICATION_DATE"


def test_the_connector_reads_deletions_from_the_delete_log_and_the_recycle_bin(
    org: SalesforceSandbox, mappings: Mappings
) -> None:
    connector = connect(org, mappings)
    pages = list(connector.pull_changes("opportunities_deleted", None))
    first = [r for p in pages for r in p.records]
    seeded = {o["Id"] for o in org.org.opportunities.values() if o["IsDeleted"]}
    assert sorted(r.external_id for r in first) == sorted(seeded)
    assert all(r.status == "deleted" for r in first)
    victim = org.org.live()[3]["Id"]
    org.org.delete(victim)
    # deleted/ answers up to the org's current minute: the deletion shows once that minute is past.
    assert [
        r for p in connector.pull_changes("opportunities_deleted", pages[-1].cursor) for r in p.records
    ] == []
    org.advance(timedelta(minutes=2))
    later = list(connector.pull_changes("opportunities_deleted", pages[-1].cursor))
    assert [(r.external_id, r.status) for p in later for r in p.records] == [(victim, "deleted")]
    assert [
        r for p in connector.pull_changes("opportunities_deleted", later[-1].cursor) for r in p.records
    ] == []


# -- writes ----------------------------------------------------------------------------------


def test_composite_reports_each_record_and_all_or_none_rolls_back(org: SalesforceSandbox) -> None:
    good, other = (o["Id"] for o in org.org.live()[:2])
    records = [
        {"attributes": {"type": "Opportunity"}, "id": good, "StageName": "Closed Won"},
        {"attributes": {"type": "Opportunity"}, "id": "006xx000003DGb2999", "StageName": "Closed Won"},
        {"attributes": {"type": "Opportunity"}, "id": other, "IsWon": True},
    ]
    with session(org) as api:
        before = org.org.opportunities[good]["StageName"]
        rolled = api.patch(f"{V}/composite/sobjects", json={"allOrNone": True, "records": records})
        assert rolled.status_code == 200
        assert [r["errors"][0]["statusCode"] for r in rolled.json()] == [
            "ALL_OR_NONE_OPERATION_ROLLED_BACK",
            "INVALID_CROSS_REFERENCE_KEY",
            "INVALID_FIELD_FOR_INSERT_UPDATE",
        ]
        assert org.org.opportunities[good]["StageName"] == before
        partial = api.patch(f"{V}/composite/sobjects", json={"allOrNone": False, "records": records}).json()
        assert [r["success"] for r in partial] == [True, False, False]
        assert partial[0] == {"id": good, "success": True, "errors": []}
        assert org.org.opportunities[good]["IsWon"] is True
        too_many = api.patch(f"{V}/composite/sobjects", json={"allOrNone": False, "records": records * 67})
        assert too_many.status_code == 400
        single = api.patch(f"{V}/sobjects/Opportunity/{other}", json={"StageName": "Qualification"})
        assert single.status_code == 204 and single.content == b""


def test_pushed_stages_are_read_back_and_marked_as_ours(org: SalesforceSandbox, mappings: Mappings) -> None:
    connector = connect(org, mappings)
    target = next(o for o in org.org.live() if not o["IsClosed"])["Id"]
    results = connector.apply_updates(
        [
            CanonicalUpdate(
                target="salesforce",
                idempotency_key="k1",
                origin="hubspot",
                external_id=target,
                stage=StageKey.NEGOTIATION,
            ),
            CanonicalUpdate(
                target="salesforce",
                idempotency_key="k2",
                origin="hubspot",
                title="From HubSpot",
                stage=StageKey.MEETING,
            ),
        ]
    )
    assert [r.ok for r in results] == [True, True]
    created = results[1].external_id
    assert created is not None
    by_id = {r.external_id: r for p in connector.pull_changes("opportunities", None) for r in p.records}
    assert by_id[target].stage is StageKey.NEGOTIATION
    assert (by_id[created].stage, by_id[created].title, by_id[created].source_stage) == (
        StageKey.MEETING,
        "From HubSpot",
        "Value Proposition",
    )
    assert by_id[target].change_source == org.org.integration_user == connector.own_user_id()


def test_a_used_up_allocation_is_403_and_comes_out_as_a_rate_limit(
    org: SalesforceSandbox, mappings: Mappings
) -> None:
    connector = connect(org, mappings)
    connector.list_stages()
    httpx.post(f"{org.url}/_sandbox/limits", json={"used": 500, "allocation": 500})
    with pytest.raises(TransientError) as caught:
        connector.list_stages()
    assert (caught.value.status, caught.value.retry_after) == (429, EXHAUSTED_BLOCK_SECONDS)
    assert org.rate_limited() == 1
    with pytest.raises(TransientError, match="next slot"):
        connector.list_stages()  # the limiter now holds every call back without asking
    assert org.rate_limited() == 1


# -- Outbound Messages -----------------------------------------------------------------------


@dataclass
class Listener:
    """Answers each Outbound Message with the next scripted answer, then with the Ack."""

    script: list[tuple[int, bytes]]
    handle: ServerHandle | None = None
    bodies: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> str:
        async def hook(request: Request) -> Response:
            with self.lock:
                self.bodies.append(await request.body())
                status, body = self.script.pop(0) if self.script else (200, ack_body(1)[1])
            return Response(body, status_code=status, media_type="text/xml")

        self.handle = serve_in_thread(
            Starlette(routes=[Route("/webhooks/salesforce", hook, methods=["POST"])])
        )
        return self.handle.url


def test_outbound_messages_are_retried_until_acked_with_the_same_notification(mappings: Mappings) -> None:
    listener = Listener(script=[(200, b"<ok/>"), (500, b"")])
    box = start_sandbox(
        SandboxOptions(seed=2, deals=10, now=NOW, time_scale=0.001, webhook_base_url=listener.start())
    )
    try:
        changed = box.simulate_change()
        deadline = time.monotonic() + 10
        while len(box.deliveries()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        attempts = box.deliveries()
        assert [(d.attempt, d.status, d.error) for d in attempts] == [
            (1, None, "NoAckError"),
            (2, 500, None),
            (3, 200, None),
        ]
        time.sleep(0.1)
        assert len(box.deliveries()) == 3  # acked: no more attempts
        messages = [parse_message(body) for body in listener.bodies]
        assert {m.notifications[0][0] for m in messages} == {messages[0].notifications[0][0]}
        assert messages[0].organization_id == box.org.org_id
        assert messages[0].notifications[0][2]["Id"] == changed
        assert attempts[0].headers["SOAPAction"] == '""'
        connector = connect(box, mappings)
        forged = box.forge(attempts[0])
        from sync_worker.connector import WebhookRequest
        from sync_worker.errors import SignatureError

        connector.verify_webhook(WebhookRequest("POST", attempts[0].url, {}, attempts[0].body, {}))
        with pytest.raises(SignatureError):
            connector.verify_webhook(WebhookRequest("POST", forged.url, {}, forged.body, {}))
    finally:
        box.stop()
        assert listener.handle is not None
        listener.handle.stop()
