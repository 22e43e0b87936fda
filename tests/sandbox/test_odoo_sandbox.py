"""The Odoo connector against the live Odoo sandbox, on JSON-2 (19) and JSON-RPC (17, 18, 19)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from connectors.odoo import OdooConnector, OdooSettings, from_settings
from connectors.odoo.sandbox import WEBHOOK_FIELDS, OdooSandbox, start_sandbox
from sync_worker.canonical import CanonicalUpdate, StageKey
from sync_worker.connector import WebhookRequest
from sync_worker.errors import AuthError, PermanentError, SignatureError, TransientError
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.plugins import SandboxOptions
from sync_worker.sandbox.common import FaultConfig
from tests.sandbox.conftest import Receiver

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
DEALS = 40
TRANSPORTS = [(19, "json2"), (19, "jsonrpc"), (18, "jsonrpc"), (17, "auto"), (19, "auto")]


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(REPO / "mappings")


Start = Callable[..., OdooSandbox]


@pytest.fixture
def start() -> Iterator[Start]:
    boxes: list[OdooSandbox] = []

    def run(version: int = 19, **options: Any) -> OdooSandbox:
        box = start_sandbox(SandboxOptions(seed=5, deals=DEALS, now=NOW, **options), version=version)
        boxes.append(box)
        return box

    yield run
    for box in boxes:
        box.stop()


Connect = Callable[..., OdooConnector]


@pytest.fixture
def connect(mappings: Mappings) -> Iterator[Connect]:
    """A connector to a sandbox, from its ``env()`` (plus ``settings``), closed after the test."""
    made: list[OdooConnector] = []

    def build(box: OdooSandbox, **settings: Any) -> OdooConnector:
        env: dict[str, Any] = {k.removeprefix("SYNC_ODOO__").lower(): v for k, v in box.env().items()}
        env.update(settings)
        connector = from_settings(OdooSettings(**env), lambda: mappings, sleep=lambda _: None, max_attempts=2)
        made.append(connector)
        return connector

    yield build
    for connector in made:
        connector.close()


def pull_all(connector: OdooConnector, cursor: str | None = None) -> tuple[list[Any], str | None]:
    records, last = [], cursor
    for page in connector.pull_changes("deals", cursor):
        records.extend(page.records)
        last = page.cursor
    return records, last


def leads(box: OdooSandbox) -> dict[int, dict[str, Any]]:
    with box.state.lock:
        return {k: dict(v) for k, v in box.state.records["crm.lead"].items()}


@pytest.mark.parametrize(("version", "transport"), TRANSPORTS)
def test_a_full_pull_lists_every_opportunity_archived_ones_included(
    start: Start, connect: Connect, version: int, transport: str
) -> None:
    box = start(version)
    connector = connect(box, transport=transport)
    records, cursor = pull_all(connector)
    expected = {i for i, r in leads(box).items() if r["type"] == "opportunity"}
    assert {int(r.external_id) for r in records} == expected and len(expected) == DEALS
    assert connector.transport == ("json2" if version >= 19 and transport != "jsonrpc" else "jsonrpc")
    archived = {i for i in expected if not leads(box)[i]["active"]}
    assert archived and {int(r.external_id) for r in records if r.status == "lost"} == archived
    assert all(r.stage is not None for r in records)
    assert all(r.lost_reason for r in records if r.status == "lost")
    # Nothing changed: resuming reads nothing, not even the lead at the cursor
    again, same = pull_all(connector, cursor)
    assert again == [] and same == cursor


@pytest.mark.parametrize(("version", "transport"), [(19, "json2"), (17, "jsonrpc")])
def test_lost_is_an_archived_lead_whose_stage_stays(
    start: Start, connect: Connect, version: int, transport: str
) -> None:
    box = start(version)
    connector = connect(box, transport=transport)
    _, cursor = pull_all(connector)
    lead_id = box.open_opportunities()[0]
    stage_before = leads(box)[lead_id]["stage_id"]
    # When the service marks it lost with a reason Odoo does not know yet
    [result] = connector.apply_updates(
        [
            CanonicalUpdate(
                "odoo", "k1", "pipedrive", external_id=str(lead_id), status="lost", lost_reason="Budget cut"
            )
        ]
    )
    assert result.ok and result.updated_at is not None
    # Then Odoo archived it, probability 0, stage unchanged, with the reason
    lead = leads(box)[lead_id]
    assert (lead["active"], lead["probability"], lead["stage_id"]) == (False, 0.0, stage_before)
    reason = box.state.records["crm.lost.reason"][lead["lost_reason_id"]]["name"]
    assert reason == "Budget cut" and lead["write_uid"] == box.ids.bot_uid
    # And a default search no longer sees it, while active_test false does
    visible = box.as_person("crm.lead", "search", [("id", "=", lead_id)])
    hidden = box.state.call(
        box_env(box, active_test=True), "crm.lead", "search", [[("id", "=", lead_id)]], {}
    )
    assert visible == [lead_id] and hidden == []
    # And the next pull reads it as lost, written by the service
    changed, _ = pull_all(connector, cursor)
    [record] = [r for r in changed if r.external_id == str(lead_id)]
    assert (record.status, record.stage, record.lost_reason) == ("lost", StageKey.LOST, "Budget cut")
    assert record.source_stage == str(stage_before) and record.change_source == connector.own_marker()


def box_env(box: OdooSandbox, *, active_test: bool) -> Any:
    from connectors.odoo.sandbox.state import Env

    return Env(box.ids.person_uid, {"active_test": active_test})


@pytest.mark.parametrize(("version", "transport"), [(19, "json2"), (18, "jsonrpc")])
def test_grouped_writes_won_and_reopen(start: Start, connect: Connect, version: int, transport: str) -> None:
    box = start(version)
    connector = connect(box, transport=transport)
    first, second, third, fourth = box.open_opportunities()[:4]
    lost = next(i for i, r in leads(box).items() if not r["active"] and r["type"] == "opportunity")
    results = connector.apply_updates(
        [
            CanonicalUpdate("odoo", "a", "hubspot", external_id=str(first), stage=StageKey.NEGOTIATION),
            CanonicalUpdate("odoo", "b", "hubspot", external_id=str(second), stage=StageKey.NEGOTIATION),
            CanonicalUpdate("odoo", "c", "hubspot", external_id=str(third), stage=StageKey.WON),
            CanonicalUpdate(
                "odoo", "d", "hubspot", external_id=str(lost), status="open", stage=StageKey.PROPOSAL
            ),
            CanonicalUpdate("odoo", "e", "hubspot", external_id="999999", stage=StageKey.NEGOTIATION),
            CanonicalUpdate("odoo", "f", "hubspot", external_id=str(fourth), stage=StageKey.NEGOTIATION),
        ]
    )
    assert [r.ok for r in results] == [True, True, True, True, False, True]
    assert "does not exist" in (results[4].error or "")
    now = leads(box)
    negotiation, won, proposition = (box.ids.stages[n] for n in ("Negotiation", "Won", "Proposition"))
    assert {now[i]["stage_id"] for i in (first, second, fourth)} == {negotiation}
    assert (now[third]["stage_id"], now[third]["probability"]) == (won, 100.0)
    assert (now[lost]["active"], now[lost]["lost_reason_id"], now[lost]["stage_id"]) == (
        True,
        False,
        proposition,
    )


def test_rpc_errors_inside_http_200_and_json2_errors(start: Start, connect: Connect) -> None:
    box17 = start(17)
    raw = httpx.post(
        box17.url + "/jsonrpc",
        json={
            "jsonrpc": "2.0",
            "method": "call",
            "id": 1,
            "params": {
                "service": "object",
                "method": "execute_kw",
                "args": [
                    "sandbox",
                    box17.ids.bot_uid,
                    box17.api_key,
                    "crm.lead",
                    "read",
                    [[1]],
                    {"fields": ["nope"]},
                ],
            },
        },
    )
    assert raw.status_code == 200 and raw.json()["error"]["data"]["name"] == "builtins.ValueError"
    connector = connect(box17, transport="jsonrpc")
    with pytest.raises(PermanentError, match="Invalid field"):
        connector._search_read("crm.lead", [], ["nope"])
    with pytest.raises(AuthError):
        connect(box17, transport="jsonrpc", user_id=None, api_key="wrong").list_stages()
    with pytest.raises(AuthError):
        connect(box17, transport="jsonrpc", api_key="wrong").list_stages()
    box19 = start(19)
    assert httpx.post(box17.url + "/json/2/crm.stage/search_read", json={}).status_code == 404
    with pytest.raises(AuthError, match="Invalid apikey"):
        connect(box19, api_key="wrong").list_stages()
    bad = httpx.post(
        box19.url + "/json/2/crm.lead/write",
        headers={"Authorization": f"bearer {box19.api_key}"},
        json={"ids": [1], "vals_list": [{"name": "x"}]},
    )
    assert bad.status_code == 422 and bad.json()["name"] == "builtins.TypeError"


def test_the_cursor_second_is_inclusive_without_double_counting(start: Start, connect: Connect) -> None:
    box = start(19)
    connector = connect(box)
    moment = NOW + timedelta(hours=1, microseconds=250_000)
    box.state.now = lambda: moment
    first, second = box.open_opportunities()[:2]
    box.as_person("crm.lead", "write", [first], {"name": "First"})
    _, cursor = pull_all(connector)
    assert cursor == f"{(NOW + timedelta(hours=1)):%Y-%m-%d %H:%M:%S}|{first}"
    # A person writes another lead in the same second, after the pull
    box.state.now = lambda: moment + timedelta(microseconds=500_000)
    box.as_person("crm.lead", "write", [second], {"name": "Second"})
    changed, cursor = pull_all(connector, cursor)
    assert [r.external_id for r in changed] == [str(second)]
    assert pull_all(connector, cursor)[0] == []


def test_a_deletion_is_seen_only_through_a_full_pull(start: Start, connect: Connect) -> None:
    box = start(19)
    connector = connect(box)
    before, cursor = pull_all(connector)
    victim = box.open_opportunities()[0]
    box.as_person("crm.lead", "unlink", [victim])
    changed, _ = pull_all(connector, cursor)
    assert changed == []  # no feed, no tombstone: an incremental pull says nothing
    after, _ = pull_all(connector)
    assert {r.external_id for r in before} - {r.external_id for r in after} == {str(victim)}


def test_a_persons_change_is_announced_once_with_the_secret_in_the_url(
    start: Start, connect: Connect, receiver: Receiver
) -> None:
    receiver.default_status = 500  # Odoo never retries, whatever the answer
    box = start(19, webhook_base_url=receiver.url(""))
    connector = connect(box)
    lead_id = box.simulate_change()
    box.deliverer.wait_idle(5)
    time.sleep(0.05)
    [delivery] = box.deliveries()
    [received] = receiver.received
    assert received.path == "/webhooks/odoo" and delivery.attempt == 1
    assert {k for k in received.headers if k.startswith("content-")} == {"content-type", "content-length"}
    payload = json.loads(received.body)
    assert list(payload) == sorted(payload) and payload["_id"] == int(lead_id)
    assert payload["_model"] == "crm.lead" and payload["_action"].endswith("(#7)")
    assert set(payload) == {"_action", "_id", "_model", *WEBHOOK_FIELDS}
    assert isinstance(payload["stage_id"], int) and payload["write_uid"] == box.ids.person_uid
    query = dict(parse_qsl(urlsplit(received.url).query))
    request = WebhookRequest("POST", received.url, received.headers, received.body, query)
    connector.verify_webhook(request)
    forged = box.forge(delivery)
    forged_query = dict(parse_qsl(urlsplit(forged.url).query))
    with pytest.raises(SignatureError):
        connector.verify_webhook(WebhookRequest("POST", forged.url, {}, forged.body, forged_query))
    [event] = connector.parse_webhook(received.body)
    assert (event.object_id, event.change_source, event.handled) == (
        lead_id,
        f"user:{box.ids.person_uid}",
        True,
    )


def test_faults_surface_as_transient_errors(start: Start, connect: Connect) -> None:
    box = start(19)
    connector = connect(box)
    box.set_faults(FaultConfig(burst_429_rate=1.0, seed=1))
    with pytest.raises(TransientError):
        connector.list_stages()
    assert box.rate_limited() == 2 and box.api_calls() >= 2
    box.set_faults(FaultConfig())
    assert len(connector.list_stages()) == 5
