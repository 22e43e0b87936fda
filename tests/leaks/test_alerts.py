"""Alert delivery to a respx-mocked Slack webhook, and the CanonicalUpdate JSON round trip."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import httpx
import pytest
import respx
from pydantic import SecretStr

from sync_worker.canonical import CanonicalUpdate, LeakFlag, StageKey
from sync_worker.errors import PermanentError, TransientError
from sync_worker.leaks import alert_client, alert_payload, deserialise_update, send_alert, serialise_update
from sync_worker.store.leak_queries import FlaggedRecord
from sync_worker.store.models import StoredFlag

URL = "https://hooks.slack.test/services/T000/B000/s3cr3tT0ken"


def _item() -> FlaggedRecord:
    flag = StoredFlag(
        id=7,
        record_id=3,
        rule="stalled",
        raised_at=datetime(2024, 5, 1, tzinfo=UTC),
        reason="in Proposal longer than 21 days",
        stage=StageKey.PROPOSAL,
        days_in_stage=30,
        amount=Decimal("1000.0000"),
        weighted_amount=Decimal("500.0000"),
    )
    return FlaggedRecord(flag, "pipedrive", "deal", "42", "Acme <renewal> & co")


def test_alert_payload_is_slack_json_with_escaped_text() -> None:
    payload = alert_payload(_item(), stage_label="Proposal")
    assert "Acme &lt;renewal&gt; &amp; co" in payload["text"]
    assert [block["type"] for block in payload["blocks"]] == ["section", "section", "section", "context"]
    facts = [f["text"] for f in payload["blocks"][1]["fields"]]
    assert "*Stage:* Proposal" in facts and "*Weighted at risk:* 500.00 (no currency)" in facts


@respx.mock
def test_send_alert_posts_the_json_to_the_secret_url() -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(200, text="ok"))
    client = alert_client(sleep=lambda _: None)
    payload = alert_payload(_item())
    send_alert(payload, SecretStr(URL), client)
    assert route.call_count == 1
    request = route.calls.last.request
    assert json.loads(request.content) == payload
    assert request.headers["host"] == "hooks.slack.test"
    assert "x-sync-alert-target" not in request.headers
    assert "s3cr3t" not in repr(client)


@respx.mock
def test_send_alert_errors_never_carry_the_url() -> None:
    respx.post(URL).mock(return_value=httpx.Response(500, text="oops"))
    client = alert_client(max_attempts=2, sleep=lambda _: None)
    with pytest.raises(TransientError) as caught:
        send_alert({"text": "x"}, SecretStr(URL), client)
    assert "s3cr3t" not in str(caught.value) and "hooks.slack" not in str(caught.value)
    respx.post(URL).mock(return_value=httpx.Response(404, text="no_service"))
    with pytest.raises(PermanentError) as refused:
        send_alert({"text": "x"}, SecretStr(URL), client)
    assert "s3cr3t" not in str(refused.value)


def test_update_round_trips_through_json() -> None:
    update = CanonicalUpdate(
        target="hubspot",
        idempotency_key="leak:1:raise",
        origin="leak-scan",
        external_id="9",
        stage=StageKey.MEETING,
        amount=Decimal("12.50"),
        close_date=date(2024, 6, 1),
        flag=LeakFlag(
            rule="regressed",
            reason="moved back",
            stage=StageKey.NEGOTIATION,
            since=datetime(2024, 4, 1, 8, tzinfo=UTC),
            days_in_stage=4,
        ),
    )
    body = json.loads(json.dumps(serialise_update(update)))
    assert deserialise_update(body) == update
    cleared = CanonicalUpdate(target="pipedrive", idempotency_key="k", origin="o", flag=LeakFlag(rule=None))
    assert deserialise_update(serialise_update(cleared)) == cleared
    with pytest.raises(PermanentError):
        deserialise_update({"target": "x"})
