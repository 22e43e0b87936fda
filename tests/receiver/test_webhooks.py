"""Webhook authentication and acceptance per source, through the HTTP app."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import dramatiq
import pytest

from connectors.hubspot.webhooks import signed_uri, v3_signature
from tests.receiver.conftest import (
    HUBSPOT_SECRET,
    LGM_SECRET,
    NOW_MS,
    PD_PASSWORD,
    PD_USER,
    Harness,
    fixture_bytes,
    make_settings,
)

HUBSPOT_BODY = fixture_bytes("hubspot", "webhook_events.json")
HUBSPOT_EVENTS = len(json.loads(HUBSPOT_BODY))


def hubspot_headers(
    url: str, body: bytes, *, timestamp: int = NOW_MS, secret: str = HUBSPOT_SECRET
) -> dict[str, str]:
    signature = v3_signature(secret, "POST", url, body, str(timestamp))
    return {
        "X-HubSpot-Signature-v3": signature,
        "X-HubSpot-Request-Timestamp": str(timestamp),
        "Content-Type": "application/json",
    }


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def inbox_count(harness: Harness) -> int:
    return harness.store.inbox_depth()


def queued_messages(harness: Harness) -> list[tuple[str, list[Any]]]:
    """(actor, args) of every message waiting on the stub broker's inbox queue, in order."""
    return [
        (message.actor_name, list(message.args))
        for message in map(dramatiq.Message.decode, list(harness.broker.queues["inbox"].queue))
    ]


def pending_ids(harness: Harness) -> list[int]:
    unprocessed = harness.store.pending_enqueue(timedelta(0), 100, stale_after=timedelta(0))
    return sorted(event.id for event in unprocessed)


# -- HubSpot ------------------------------------------------------------------------------------------


def test_hubspot_v3_signed_batch_is_stored_and_queued(harness: Harness) -> None:
    # Given a delivery signed as HubSpot signs it, over the URL it called
    url = "http://testserver/webhooks/hubspot"
    # When it arrives
    response = harness.client.post(url, content=HUBSPOT_BODY, headers=hubspot_headers(url, HUBSPOT_BODY))
    # Then every handled event is in the inbox and on the queue, the rest counted
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] + answer["unhandled"] == HUBSPOT_EVENTS
    assert answer["accepted"] >= 1
    assert answer["queued"] == answer["accepted"]
    assert inbox_count(harness) == answer["accepted"]
    # And the delivery is one message carrying all its inbox ids (one transaction for the worker)
    assert queued_messages(harness) == [("process_inbox_delivery", [pending_ids(harness)])]
    assert answer["accepted"] > 1 and len(pending_ids(harness)) == answer["accepted"]
    assert harness.store.pending_enqueue(timedelta(0), 100) == []
    labels = {"source": "hubspot", "outcome": "accepted"}
    assert harness.metrics.value("sync_worker_webhook_requests_total", labels) == 1.0


def test_hubspot_v1_documented_example_when_v1_is_accepted(make_harness: Callable[..., Harness]) -> None:
    # The body and hash of https://developers.hubspot.com/docs/faq/v1-request-validation
    body = fixture_bytes("hubspot", "webhook_v1_doc_example.json")
    documented = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
    assert hashlib.sha256(HUBSPOT_SECRET.encode() + body).hexdigest() == documented
    headers = {"X-HubSpot-Signature": documented, "X-HubSpot-Signature-Version": "v1"}
    accepting = make_harness(accept_v1=True)
    response = accepting.client.post("/webhooks/hubspot", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    refusing = make_harness(accept_v1=False)
    refused = refusing.client.post("/webhooks/hubspot", content=body, headers=headers)
    assert refused.status_code == 401


def test_hubspot_sdk_vector_still_holds() -> None:
    # HubSpot/hubspot-api-python's v3 test vector, guarding the helper the tests sign with.
    assert (
        v3_signature(
            HUBSPOT_SECRET,
            "POST",
            "https://www.example.com/webhook_uri",
            b"{'example_field':'example_value'}",
            "15000000",
        )
        == "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="
    )


@pytest.mark.parametrize(("skew_ms", "status"), [(-299_000, 200), (-301_000, 401), (301_000, 401)])
def test_hubspot_timestamp_window_is_five_minutes(harness: Harness, skew_ms: int, status: int) -> None:
    url = "http://testserver/webhooks/hubspot"
    headers = hubspot_headers(url, HUBSPOT_BODY, timestamp=NOW_MS + skew_ms)
    response = harness.client.post(url, content=HUBSPOT_BODY, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json()["error"] == "unauthorized"
        assert "5 minutes" in response.json()["detail"]
        assert inbox_count(harness) == 0


def test_hubspot_tampered_body_is_refused_and_nothing_stored(harness: Harness) -> None:
    url = "http://testserver/webhooks/hubspot"
    headers = hubspot_headers(url, HUBSPOT_BODY)
    tampered = HUBSPOT_BODY.replace(b"subscriber", b"customer")
    response = harness.client.post(url, content=tampered, headers=headers)
    assert response.status_code == 401
    assert inbox_count(harness) == 0
    assert harness.broker.queues["inbox"].qsize() == 0


def test_hubspot_wrong_secret_and_missing_signature(harness: Harness) -> None:
    url = "http://testserver/webhooks/hubspot"
    wrong = harness.client.post(
        url, content=HUBSPOT_BODY, headers=hubspot_headers(url, HUBSPOT_BODY, secret="not-the-secret")
    )
    missing = harness.client.post(url, content=HUBSPOT_BODY)
    assert (wrong.status_code, missing.status_code) == (401, 401)
    assert "missing" in missing.json()["detail"]
    assert inbox_count(harness) == 0


def test_hubspot_encoded_query_is_signed_as_hubspot_decodes_it(harness: Harness) -> None:
    # The receiver hands the connector the raw, still-encoded URI; HubSpot signs it with only the
    # documented escapes decoded (%2F, %3F, %40, %2C, ... but not %20 or %3D).
    url = "http://testserver/webhooks/hubspot?next=%2Fdeals%3Fa%3D1&who=a%40b%2Cc&sp=x%20y"
    as_hubspot_signs = signed_uri(url)
    assert as_hubspot_signs == "http://testserver/webhooks/hubspot?next=/deals?a%3D1&who=a@b,c&sp=x%20y"
    good = harness.client.post(
        url, content=HUBSPOT_BODY, headers=hubspot_headers(as_hubspot_signs, HUBSPOT_BODY)
    )
    assert good.status_code == 200, good.text
    # Signing a fully decoded URI (what a framework's decoded path and query would give) fails.
    fully_decoded = "http://testserver/webhooks/hubspot?next=/deals?a=1&who=a@b,c&sp=x y"
    bad = harness.client.post(url, content=HUBSPOT_BODY, headers=hubspot_headers(fully_decoded, HUBSPOT_BODY))
    assert bad.status_code == 401


@pytest.mark.parametrize(
    ("signature_name", "timestamp_name"),
    [
        ("X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp"),
        ("x-hubspot-signature-v3", "x-hubspot-request-timestamp"),
        ("X-HUBSPOT-SIGNATURE-V3", "X-HUBSPOT-REQUEST-TIMESTAMP"),
        ("x-HubSpot-SIGNATURE-v3", "X-hubspot-Request-TIMESTAMP"),
    ],
)
def test_hubspot_header_names_in_any_case(harness: Harness, signature_name: str, timestamp_name: str) -> None:
    url = "http://testserver/webhooks/hubspot"
    signed = hubspot_headers(url, HUBSPOT_BODY)
    headers = {
        signature_name: signed["X-HubSpot-Signature-v3"],
        timestamp_name: signed["X-HubSpot-Request-Timestamp"],
    }
    response = harness.client.post(url, content=HUBSPOT_BODY, headers=headers)
    assert response.status_code == 200, response.text


def test_hubspot_behind_a_proxy_uses_sync_public_url(make_harness: Callable[..., Harness]) -> None:
    # Given SYNC_PUBLIC_URL with a path prefix the proxy strips before the request reaches us
    proxied = make_harness(settings=make_settings(public_url="https://hooks.example.com/sync/"))
    public = "https://hooks.example.com/sync/webhooks/hubspot?portal=33"
    internal = "http://testserver/webhooks/hubspot?portal=33"
    # When HubSpot signs the public URL, Then it verifies though the request arrived on another host
    ok = proxied.client.post(internal, content=HUBSPOT_BODY, headers=hubspot_headers(public, HUBSPOT_BODY))
    assert ok.status_code == 200, ok.text
    # And a signature over the internal URL is refused there
    wrong = proxied.client.post(
        internal, content=HUBSPOT_BODY, headers=hubspot_headers(internal, HUBSPOT_BODY)
    )
    assert wrong.status_code == 401
    # And without SYNC_PUBLIC_URL the public signature does not match the arrival URL
    direct = make_harness()
    refused = direct.client.post(
        internal, content=HUBSPOT_BODY, headers=hubspot_headers(public, HUBSPOT_BODY)
    )
    assert refused.status_code == 401


def test_hubspot_redelivery_is_recognised_as_duplicate(harness: Harness) -> None:
    url = "http://testserver/webhooks/hubspot"
    first = harness.client.post(url, content=HUBSPOT_BODY, headers=hubspot_headers(url, HUBSPOT_BODY))
    # A retry carries a higher attemptNumber but is the same change.
    retried = json.dumps([{**event, "attemptNumber": 1} for event in json.loads(HUBSPOT_BODY)]).encode()
    second = harness.client.post(url, content=retried, headers=hubspot_headers(url, retried))
    assert first.status_code == second.status_code == 200
    assert second.json()["accepted"] == 0
    assert second.json()["duplicates"] == first.json()["accepted"]
    assert inbox_count(harness) == first.json()["accepted"]
    assert len(queued_messages(harness)) == 1  # the redelivery sent nothing more


# -- Pipedrive ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["webhook_v1_deal_updated.json", "webhook_v2_deal_change.json"])
@pytest.mark.parametrize(
    ("credentials", "status"),
    [
        ((PD_USER, PD_PASSWORD), 200),
        ((PD_USER, "wrong-password"), 401),
        (("someone-else", PD_PASSWORD), 401),
        (None, 401),
    ],
)
def test_pipedrive_basic_auth_v1_and_v2(
    harness: Harness, fixture: str, credentials: tuple[str, str] | None, status: int
) -> None:
    body = fixture_bytes("pipedrive", fixture)
    headers = basic(*credentials) if credentials else {}
    response = harness.client.post("/webhooks/pipedrive", content=body, headers=headers)
    assert response.status_code == status, response.text
    if status == 200:
        assert response.json()["accepted"] == 1
        assert harness.store.pending_enqueue(timedelta(0), 10) == []  # queued already
        assert inbox_count(harness) == 1
    else:
        assert response.json()["error"] == "unauthorized"
        assert inbox_count(harness) == 0


# -- LaGrowthMachine ----------------------------------------------------------------------------------


def test_lagrowthmachine_token_in_query_or_header(harness: Harness) -> None:
    body = fixture_bytes("lagrowthmachine", "webhook_reply.json")
    by_query = harness.client.post(f"/webhooks/lagrowthmachine?token={LGM_SECRET}", content=body)
    assert by_query.status_code == 200, by_query.text
    assert by_query.json()["accepted"] == 1
    by_header = harness.client.post(
        "/webhooks/lagrowthmachine", content=body, headers={"X-Sync-Token": LGM_SECRET}
    )
    assert by_header.status_code == 200
    assert by_header.json()["duplicates"] == 1
    assert inbox_count(harness) == 1


@pytest.mark.parametrize("query", ["", "?token=wrong", "?token="])
def test_lagrowthmachine_without_the_token_is_refused(harness: Harness, query: str) -> None:
    body = fixture_bytes("lagrowthmachine", "webhook_reply.json")
    response = harness.client.post(f"/webhooks/lagrowthmachine{query}", content=body)
    assert response.status_code == 401
    assert LGM_SECRET not in response.text
    assert inbox_count(harness) == 0


def test_lagrowthmachine_outgoing_message_is_counted_not_stored(harness: Harness) -> None:
    body = fixture_bytes("lagrowthmachine", "webhook_outgoing.json")
    response = harness.client.post(f"/webhooks/lagrowthmachine?token={LGM_SECRET}", content=body)
    assert response.status_code == 200
    assert response.json() == {"accepted": 0, "duplicates": 0, "unhandled": 1, "queued": 0}
    assert inbox_count(harness) == 0
    labels = {"source": "lagrowthmachine", "outcome": "unhandled"}
    assert harness.metrics.value("sync_worker_webhook_events_total", labels) == 1.0
