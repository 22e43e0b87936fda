"""The ClinchPad sandbox: what the docs say it does, and the connector against it live."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.clinchpad import (
    SPEC,
    STREAM_LEADS,
    STREAM_SNAPSHOT,
    ClinchPadConnector,
    ClinchPadSettings,
    from_section,
)
from connectors.clinchpad.sandbox import ClinchPadSandbox, ClinchPadServer, create_app
from sync_worker.canonical import CanonicalUpdate, StageKey
from sync_worker.connector import WebhookRequest
from sync_worker.errors import SignatureError
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.plugins import SandboxOptions
from sync_worker.sandbox.common import ServerHandle, serve_in_thread
from tests.sandbox.conftest import Receiver

KEY = "sandbox-key-0123456789"
MAPPINGS_DIR = Path(__file__).resolve().parents[2] / "mappings"
NOW = datetime(2026, 2, 1, tzinfo=UTC)


class Ticks:
    def __init__(self) -> None:
        self.seconds = 100.0

    def __call__(self) -> float:
        return self.seconds


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(MAPPINGS_DIR)


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest.fixture
def box(ticks: Ticks) -> Iterator[tuple[ClinchPadSandbox, ServerHandle]]:
    state = ClinchPadSandbox(api_key=KEY, leads=30, rate_limit=50, clock=ticks)
    handle = serve_in_thread(create_app(state))
    try:
        yield state, handle
    finally:
        handle.stop()
        state.close()


def client(handle: ServerHandle, key: str = KEY) -> httpx.Client:
    return httpx.Client(base_url=f"{handle.url}/api/v1", auth=("api-key", key), timeout=5)


def _pipeline(state: ClinchPadSandbox) -> str:
    return next(iter(state.pipelines))


def test_basic_auth_with_the_api_key_user_is_required(box: tuple[ClinchPadSandbox, ServerHandle]) -> None:
    _, handle = box
    with client(handle) as ok, client(handle, "wrong") as wrong:
        assert ok.get("/pipelines").status_code == 200
        assert wrong.get("/pipelines").status_code == 401
    with httpx.Client(base_url=handle.url, auth=("someone", KEY)) as other_user:
        assert other_user.get("/api/v1/pipelines").status_code == 401
    assert httpx.get(f"{handle.url}/api/v1/pipelines").status_code == 401


def test_lists_are_bare_arrays_paged_25_by_default_and_empty_past_the_end(
    box: tuple[ClinchPadSandbox, ServerHandle],
) -> None:
    state, handle = box
    pipeline = _pipeline(state)
    with client(handle) as api:
        first = api.get("/leads", params={"pipeline_id": pipeline}).json()
        second = api.get("/leads", params={"pipeline_id": pipeline, "page": 2}).json()
        past = api.get("/leads", params={"pipeline_id": pipeline, "page": 9, "size": 10}).json()
        assert (len(first), len(second), past) == (25, 5, [])
        assert api.get("/leads").status_code == 400  # pipeline_id is required
        stages = api.get(f"/pipelines/{pipeline}/stages").json()
    assert [s["name"] for s in stages] == ["Closing", "In Negotiation", "Offer", "Contact", "Prospect"]
    assert set(first[0]) == {"_id", "name", "size", "archived", "user", "stage"}
    assert set(first[0]["stage"]) == {"_id", "name"} and len(first[0]["_id"]) == 24


def test_put_takes_json_and_form_bodies_and_delete_answers_an_empty_object(
    box: tuple[ClinchPadSandbox, ServerHandle],
) -> None:
    state, handle = box
    pipeline = _pipeline(state)
    lead_id = sorted(state.leads)[0]
    offer = next(s["_id"] for s in state.stages[pipeline] if s["name"] == "Offer")
    contact = next(s["_id"] for s in state.stages[pipeline] if s["name"] == "Contact")
    with client(handle) as api:
        assert (
            api.put(f"/leads/{lead_id}", json={"stage_id": offer, "size": 900}).json()["stage"]["_id"]
            == offer
        )
        moved = api.put(f"/leads/{lead_id}", data={"stage_id": contact, "size": "1200"}).json()
        assert (moved["stage"]["name"], moved["size"]) == ("Contact", 1200)
        assert api.put(f"/leads/{lead_id}", json={"stage_id": "0" * 24}).status_code == 400
        assert api.delete(f"/leads/{lead_id}").json() == {}
        assert api.get(f"/leads/{lead_id}").status_code == 404


def test_the_hourly_limit_answers_429(box: tuple[ClinchPadSandbox, ServerHandle], ticks: Ticks) -> None:
    state, handle = box
    with client(handle) as api:
        statuses = [api.get("/pipelines").status_code for _ in range(51)]
        assert statuses[:50] == [200] * 50 and statuses[50] == 429
        ticks.seconds += 3600
        assert api.get("/pipelines").status_code == 200
    assert state.calls.by_status[429] == 1


def test_a_person_s_change_is_delivered_with_the_handshake_key(receiver: Receiver) -> None:
    state = ClinchPadSandbox(
        api_key=KEY, handshake_key="hk-1", webhook_url=receiver.url("/webhooks/clinchpad")
    )
    try:
        lead_id = sorted(state.leads)[1]
        pipeline = _pipeline(state)
        target = next(
            s["_id"] for s in state.stages[pipeline] if s["_id"] != state.leads[lead_id]["stage_id"]
        )
        state.simulate_user_change(lead_id, stage_id=target)
        assert state.deliverer.wait_idle(5)
    finally:
        state.close()
    [hook] = receiver.received
    body = json.loads(hook.body)
    assert hook.path == "/webhooks/clinchpad" and body["handshake_key"] == "hk-1"
    assert body["lead"]["_id"] == lead_id and body["lead"]["pipe"]["_id"] == pipeline
    assert body["lead"]["stage"]["_id"] == target and body["activity"]["user"]["_id"] == state.users[1]["_id"]


def test_the_same_options_seed_the_same_account() -> None:
    options = SandboxOptions(seed=5, deals=20, now=NOW)
    first, second = ClinchPadServer(options), ClinchPadServer(options)
    try:
        assert sorted(first.state.leads) == sorted(second.state.leads)
        assert [x["stage_id"] for x in first.state.leads.values()] == [
            x["stage_id"] for x in second.state.leads.values()
        ]
        assert all(int(i[:8], 16) < NOW.timestamp() for i in first.state.leads)
    finally:
        first.stop()
        second.stop()


# -- the connector against the live sandbox --------------------------------------------------------


@pytest.fixture
def live(receiver: Receiver) -> Iterator[ClinchPadServer]:
    server = SPEC.sandbox(SandboxOptions(seed=2, deals=14, webhook_base_url=receiver.url("")))  # type: ignore[misc]
    assert isinstance(server, ClinchPadServer)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def connect(server: ClinchPadServer, mappings: Mappings, **extra: Any) -> Iterator[ClinchPadConnector]:
    env = server.env()
    section = ClinchPadSettings(
        api_key=env["SYNC_CLINCHPAD__API_KEY"],
        base_url=env["SYNC_CLINCHPAD__BASE_URL"],
        handshake_key=env["SYNC_CLINCHPAD__HANDSHAKE_KEY"],
        user_id=env["SYNC_CLINCHPAD__USER_ID"],
        **extra,
    )
    connector = from_section(section, mappings, sleep=lambda _: None)
    try:
        yield connector
    finally:
        connector.close()


def test_the_connector_lists_detects_changes_and_writes_against_the_sandbox(
    live: ClinchPadServer, mappings: Mappings
) -> None:
    with connect(live, mappings, page_size=5) as clinchpad:
        assert {s.stage_label for s in clinchpad.list_stages()} == {
            "Closing",
            "In Negotiation",
            "Offer",
            "Contact",
            "Prospect",
        }
        first = list(clinchpad.pull_changes(STREAM_LEADS, None))
        assert sum(len(p.records) for p in first) == 14
        cursor = first[-1].cursor
        assert [r for p in clinchpad.pull_changes(STREAM_LEADS, cursor) for r in p.records] == []
        changed = live.simulate_change()
        assert [r.external_id for p in clinchpad.pull_changes(STREAM_LEADS, cursor) for r in p.records] == [
            changed
        ]
        [result] = clinchpad.apply_updates(
            [
                CanonicalUpdate(
                    target="clinchpad",
                    idempotency_key="k",
                    origin="pipedrive",
                    external_id=changed,
                    stage=StageKey.PROPOSAL,
                    amount=Decimal("4200"),
                )
            ]
        )
        assert result.ok
        lead = live.state.leads[changed]
        offer = next(s for s in live.state.stages[lead["pipeline_id"]] if s["name"] == "Offer")
        assert (lead["stage_id"], lead["size"]) == (offer["_id"], 4200)
        snapshot = [r for p in clinchpad.pull_changes(STREAM_SNAPSHOT, None) for r in p.records]
        assert len(snapshot) == 14 and all(r.updated_at < datetime.now(UTC) for r in snapshot)


def test_the_sandbox_s_webhooks_verify_and_forged_ones_do_not(
    live: ClinchPadServer, mappings: Mappings
) -> None:
    with connect(live, mappings) as clinchpad:
        live.simulate_change()
        deadline = time.monotonic() + 5
        while not live.deliveries() and time.monotonic() < deadline:
            time.sleep(0.02)
        [delivery] = live.deliveries()
        real = WebhookRequest("POST", delivery.url, delivery.headers, delivery.body, {})
        clinchpad.verify_webhook(real)
        [event] = clinchpad.parse_webhook(delivery.body)
        assert event.handled and event.change_source == f"user:{live.state.users[1]['_id']}"
        forged = live.forge(delivery)
        with pytest.raises(SignatureError):
            clinchpad.verify_webhook(WebhookRequest("POST", forged.url, forged.headers, forged.body, {}))
        assert live.api_calls() == 0 and live.rate_limited() == 0
