"""Every way a webhook request can be wrong: the status, the JSON error, and nothing stored."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.receiver.conftest import LGM_SECRET, PD_PASSWORD, PD_USER, Harness, make_settings
from tests.receiver.test_webhooks import basic, hubspot_headers

HS_URL = "http://testserver/webhooks/hubspot"


def signed_hubspot(body: bytes) -> dict[str, Any]:
    return {"content": body, "headers": hubspot_headers(HS_URL, body)}


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"objectId": 1}', "JSON array"),
        (b'[{"objectId": 1, "occurredAt": 1}]', "subscriptionType"),
        (b'[{"subscriptionType": "deal.creation", "occurredAt": 1}]', "objectId"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (
            json.dumps(
                [{"subscriptionType": "deal.creation", "objectId": i, "occurredAt": 1} for i in range(101)]
            ).encode(),
            "at most 100",
        ),
    ],
    ids=["malformed", "object-not-array", "no-type", "no-object-id", "not-utf8", "too-many-events"],
)
def test_hubspot_bad_bodies_are_400_naming_the_problem(harness: Harness, body: bytes, detail: str) -> None:
    response = harness.client.post(HS_URL, **signed_hubspot(body))
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["error"] == "bad_request"
    assert detail in answer["detail"]
    assert harness.store.inbox_depth() == 0
    labels = {"source": "hubspot", "outcome": "bad_request"}
    assert harness.metrics.value("sync_worker_webhook_requests_total", labels) == 1.0


@pytest.mark.parametrize(
    ("body", "detail"),
    [(b"[1, 2]", "not a JSON object"), (b'{"meta": 5}', "meta"), (b"nope", "not valid JSON")],
)
def test_pipedrive_bad_bodies_are_400(harness: Harness, body: bytes, detail: str) -> None:
    response = harness.client.post("/webhooks/pipedrive", content=body, headers=basic(PD_USER, PD_PASSWORD))
    assert response.status_code == 400, response.text
    assert detail in response.json()["detail"]


def _pipedrive_change(version: int, deal: dict[str, object] | None) -> bytes:
    if version == 2:
        meta = {"id": "d-1", "action": "change", "entity": "deal", "entity_id": "7"}
        return json.dumps({"meta": {**meta, "timestamp": "2024-06-01T12:00:00Z"}, "data": deal}).encode()
    meta_v1 = {"action": "updated", "object": "deal", "id": 7, "timestamp": 1717243200}
    return json.dumps({"v": 1, "meta": meta_v1, "current": deal, "previous": None}).encode()


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize(
    ("deal", "detail"),
    [
        ({"id": 7, "stage_id": 1, "title": "Acme"}, "update_time is missing"),
        ({"id": 7, "update_time": "yesterday"}, "update_time is not an RFC 3339 time"),
        (None, "is missing for a deal change"),
    ],
    ids=["no-update-time", "bad-update-time", "no-deal"],
)
def test_pipedrive_deal_changes_the_worker_cannot_apply_are_400_at_the_door(
    harness: Harness, version: int, deal: dict[str, object] | None, detail: str
) -> None:
    # Given an authenticated Pipedrive delivery of a deal change the worker could not order
    body = _pipedrive_change(version, deal)
    response = harness.client.post("/webhooks/pipedrive", content=body, headers=basic(PD_USER, PD_PASSWORD))
    # Then it is refused with the reason (Pipedrive retries and shows it), and nothing is stored
    assert response.status_code == 400, response.text
    assert detail in response.json()["detail"]
    assert harness.store.inbox_depth() == 0


@pytest.mark.parametrize(
    ("body", "reason"), [(b"[]", "empty"), (b'{"leadId": 1}', "unrecognised shape"), (b"{", "JSON")]
)
def test_lagrowthmachine_unrecognised_bodies_are_kept_and_answered_2xx(
    harness: Harness, body: bytes, reason: str
) -> None:
    # LaGrowthMachine does not document its webhook body and disables a webhook that keeps failing:
    # an authenticated body it cannot read is stored with its reason and listed as a dead letter.
    response = harness.client.post(f"/webhooks/lagrowthmachine?token={LGM_SECRET}", content=body)
    assert response.status_code == 200, response.text
    assert response.json()["unhandled"] == 1
    (letter,) = harness.store.list_dead_letters()
    assert letter.queue == "webhooks" and letter.error_class == "UnrecognisedWebhook"
    assert reason in letter.reason and letter.payload["source"] == "lagrowthmachine"
    # The body itself is kept: as the object it is, or as its text.
    kept = letter.payload["body"]
    assert kept == (json.loads(body) if body.startswith(b'{"') else {"body": body.decode()})


def test_bad_signature_is_checked_before_the_body_is_parsed(harness: Harness) -> None:
    # A malformed body without credentials is a 401, not a 400: nothing unauthenticated is parsed.
    response = harness.client.post("/webhooks/pipedrive", content=b"{not json")
    assert response.status_code == 401


def test_unknown_source_is_404(harness: Harness) -> None:
    response = harness.client.post("/webhooks/salesforce", content=b"[]")
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_source"
    assert (
        harness.metrics.value(
            "sync_worker_webhook_requests_total", {"source": "unknown", "outcome": "unknown_source"}
        )
        == 1.0
    )


def test_get_on_a_webhook_is_405(harness: Harness) -> None:
    assert harness.client.get("/webhooks/hubspot").status_code == 405


def test_declared_length_over_the_limit_is_413(make_harness: Callable[..., Harness]) -> None:
    small = make_harness(settings=make_settings(webhook_max_bytes=256))
    body = b"[" + b" " * 300 + b"]"
    response = small.client.post(HS_URL, **signed_hubspot(body))
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert small.store.inbox_depth() == 0


def test_streamed_body_over_the_limit_is_413(make_harness: Callable[..., Harness]) -> None:
    small = make_harness(settings=make_settings(webhook_max_bytes=256))

    async def chunks() -> Any:
        for _ in range(20):
            yield b" " * 64

    # No Content-Length: httpx sends it chunked, the receiver counts as it reads.
    response = small.client.post(HS_URL, content=chunks(), headers={"X-HubSpot-Signature-v3": "x"})
    assert response.status_code == 413


def _asgi_post(
    app: Any, path: str, receive_chunks: list[bytes], headers: list[tuple[bytes, bytes]]
) -> tuple[int, int]:
    """POST through the raw ASGI interface; (status, how many body messages the app pulled)."""
    pulled = 0
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pulled < len(receive_chunks):
            chunk = receive_chunks[pulled]
            pulled += 1
            return {"type": "http.request", "body": chunk, "more_body": pulled < len(receive_chunks)}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    return status[0], pulled


def test_oversized_body_is_refused_without_reading_it_all(make_harness: Callable[..., Harness]) -> None:
    small = make_harness(settings=make_settings(webhook_max_bytes=1000))
    # Given a 100 x 100-byte streamed body (10 kB) against a 1 kB limit
    chunks = [b"x" * 100 for _ in range(100)]
    status, pulled = _asgi_post(small.app, "/webhooks/hubspot", chunks, [])
    # Then the receiver stops after the chunk that crosses the limit
    assert status == 413
    assert pulled == 11
    # And with a declared Content-Length over the limit it reads nothing at all
    status, pulled = _asgi_post(small.app, "/webhooks/hubspot", chunks, [(b"content-length", b"10000")])
    assert (status, pulled) == (413, 0)


def test_non_numeric_content_length_is_400(harness: Harness) -> None:
    status, pulled = _asgi_post(harness.app, "/webhooks/hubspot", [b"[]"], [(b"content-length", b"abc")])
    assert (status, pulled) == (400, 0)


def test_unhandled_event_types_are_accepted_and_counted(harness: Harness) -> None:
    body = json.dumps(
        [
            {"subscriptionType": "company.creation", "objectId": 7, "occurredAt": 1717243200000},
            {"subscriptionType": "deal.creation", "objectId": 8, "occurredAt": 1717243200000},
        ]
    ).encode()
    response = harness.client.post(HS_URL, **signed_hubspot(body))
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0, "unhandled": 1, "queued": 1}
    assert (
        harness.metrics.value(
            "sync_worker_webhook_events_total", {"source": "hubspot", "outcome": "unhandled"}
        )
        == 1.0
    )
    assert (
        harness.metrics.value("sync_worker_webhook_events_total", {"source": "hubspot", "outcome": "stored"})
        == 1.0
    )
