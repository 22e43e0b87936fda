"""ClinchPad connector: listing, snapshot change detection, writes and translation, against respx.

Payloads are the documentation's samples (``fixtures/clinchpad/README.md``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from connectors.clinchpad import (
    SPEC,
    STREAM_LEADS,
    STREAM_SNAPSHOT,
    ClinchPadConnector,
    ClinchPadSettings,
    fingerprint,
    from_section,
    snapshot,
    to_canonical,
)
from connectors.clinchpad.convert import EPOCH, object_id_time
from sync_worker.canonical import CanonicalUpdate, LeakFlag, StageKey
from sync_worker.connector import Connector
from sync_worker.errors import AuthError, ConfigError
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.ratelimit import Limit

BASE = "https://www.clinchpad.com/api/v1"
KEY = "4e65146b302a2a2ec8135aa6dc501a17"
NOW = datetime(2024, 6, 3, 12, 0, tzinfo=UTC)
FIXTURES = Path(__file__).parent / "fixtures" / "clinchpad"
MAPPINGS_DIR = Path(__file__).resolve().parents[2] / "mappings"
PIPELINE = "521f26eccce8b4310e00006b"
FOO, ARCHIVE_TEST = "521f26eccce8b4310e000074", "5224419acce8b4d8a6000003"
PROSPECT, OFFER, CLOSING = "521f26eccce8b4310e00006f", "521f26eccce8b4310e00006e", "521f26eccce8b4310e00006c"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(MAPPINGS_DIR)


def connector(mappings: Mappings, *, page_size: int = 100, **extra: Any) -> ClinchPadConnector:
    section = ClinchPadSettings(api_key=SecretStr(KEY), page_size=page_size, **extra)
    return from_section(section, mappings, sleep=lambda _: None, max_attempts=2, clock=lambda: NOW)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        router.get("/pipelines").mock(return_value=httpx.Response(200, json=fixture("pipelines.json")))
        router.get(f"/pipelines/{PIPELINE}/stages").mock(
            return_value=httpx.Response(200, json=fixture("stages.json"))
        )
        yield router


def leads_route(api: respx.MockRouter, *pages: list[dict[str, Any]]) -> respx.Route:
    route = api.get("/leads")
    route.reset()  # the same route again: count only the calls of this listing
    return route.mock(side_effect=[httpx.Response(200, json=page) for page in pages])


def lead(lead_id: str, stage_id: str = PROSPECT, **fields: Any) -> dict[str, Any]:
    names = {PROSPECT: "Prospect", OFFER: "Offer", CLOSING: "Closing"}
    base = {"_id": lead_id, "name": f"Lead {lead_id[-4:]}", "size": 100, "archived": False, "user": None}
    return {**base, "stage": {"_id": stage_id, "name": names[stage_id]}, **fields}


def oid(n: int) -> str:
    return f"65000000{n:016x}"


# -- translation ---------------------------------------------------------------------------------


def test_the_documented_leads_translate_to_deals(mappings: Mappings) -> None:
    foo, archive_test = (
        to_canonical(
            item, mappings, updated_at=NOW, pipeline_id=PIPELINE, pipeline_name="Default", currency="EUR"
        )
        for item in fixture("leads.json")
    )
    assert (foo.external_id, foo.kind, foo.title, foo.amount, foo.currency) == (
        FOO,
        "deal",
        "[Sample] Foo",
        Decimal(1500),
        "EUR",
    )
    assert (foo.stage, foo.status, foo.owner_id, foo.source_stage) == (
        StageKey.PROSPECT,
        "open",
        "521f26ebcce8b4310e000064",
        PROSPECT,
    )
    assert (archive_test.amount, archive_test.currency, archive_test.owner_id) == (None, None, None)
    assert archive_test.stage is StageKey.NEGOTIATION  # "Closing" is still open in the canonical funnel
    assert foo.updated_at == NOW and foo.pipeline_id == PIPELINE


@pytest.mark.parametrize(
    ("extra", "stage", "status"),
    [
        ({"archived": True}, StageKey.LOST, "lost"),
        ({"status": "Won"}, StageKey.WON, "won"),
        ({"lost": True, "archived": True}, StageKey.LOST, "lost"),
        ({"status": "open"}, StageKey.PROSPECT, "open"),
        ({"size": "2500.50"}, StageKey.PROSPECT, "open"),
    ],
)
def test_undocumented_status_shapes_are_tolerated(
    mappings: Mappings, extra: dict[str, Any], stage: StageKey, status: str
) -> None:
    record = to_canonical(
        lead(FOO, **extra), mappings, updated_at=NOW, pipeline_id=PIPELINE, pipeline_name="Default"
    )
    assert (record.stage, record.status) == (stage, status)


def test_an_unknown_stage_is_unmapped_never_guessed(mappings: Mappings) -> None:
    item = {**lead(FOO), "stage": {"_id": oid(9), "name": "Waiting for legal"}}
    record = to_canonical(item, mappings, updated_at=NOW, pipeline_id=PIPELINE, pipeline_name="Default")
    assert record.stage is None and record.unmapped is not None
    assert record.unmapped.stage == oid(9)


def test_the_fingerprint_follows_synced_fields_only(mappings: Mappings) -> None:
    def mark(item: dict[str, Any], at: datetime = NOW) -> str:
        return fingerprint(
            to_canonical(item, mappings, updated_at=at, pipeline_id=PIPELINE, pipeline_name="Default")
        )

    same = mark(lead(FOO))
    assert mark(lead(FOO), datetime(2030, 1, 1, tzinfo=UTC)) == same
    photo = {"_id": "u1", "name": "C", "photo_url": "https://s3.amazonaws.com/signed?x=2"}
    assert mark(lead(FOO, user=photo)) == mark(lead(FOO, user={**photo, "photo_url": "other"}))
    changed = {
        mark(lead(FOO, OFFER)),
        mark(lead(FOO, size=101)),
        mark(lead(FOO, name="x")),
        mark(lead(FOO, archived=True)),
    }
    assert same not in changed and len(changed) == 4 and len(same) == 11


def test_the_object_id_time_is_a_lower_bound_or_the_epoch() -> None:
    assert object_id_time(FOO) == datetime(2013, 8, 29, 10, 48, 12, tzinfo=UTC)
    assert object_id_time("not-an-object-id") == EPOCH


def test_a_snapshot_cursor_round_trips_and_a_foreign_one_means_none() -> None:
    snap = snapshot.Snapshot(at=NOW, leads={oid(i): f"fp{i}" for i in range(500)})
    cursor = snapshot.encode(snap)
    assert cursor.startswith(snapshot.PREFIX) and len(cursor) < 500 * 30
    back = snapshot.decode(cursor)
    assert back is not None and back.at == NOW and dict(back.leads) == dict(snap.leads)
    for foreign in (
        "2024-06-01T00:00:00Z",
        "cp1:!!!",
        snapshot.PREFIX + base64.urlsafe_b64encode(b"x").decode(),
    ):
        assert snapshot.decode(foreign) is None


# -- listing and pulls ---------------------------------------------------------------------------


def test_requests_use_basic_auth_with_the_api_key_user_and_page_from_one(
    mappings: Mappings, api: respx.MockRouter
) -> None:
    route = leads_route(api, fixture("leads.json"))
    pages = list(connector(mappings).pull_changes(STREAM_LEADS, None))
    request = route.calls.last.request
    expected = "Basic " + base64.b64encode(f"api-key:{KEY}".encode()).decode()
    assert request.method == "GET" and request.headers["authorization"] == expected
    assert dict(request.url.params) == {"pipeline_id": PIPELINE, "page": "1", "size": "100"}
    assert dict(api.routes[0].calls.last.request.url.params) == {"page": "1", "size": "100"}
    assert [r.external_id for p in pages for r in p.records] == [FOO, ARCHIVE_TEST]


def test_lead_pages_run_until_a_short_or_an_empty_page(mappings: Mappings, api: respx.MockRouter) -> None:
    short = leads_route(api, [lead(oid(1)), lead(oid(2))], [lead(oid(3)), lead(oid(4))], [lead(oid(5))])
    pages = list(connector(mappings, page_size=2).pull_changes(STREAM_LEADS, None))
    assert [c.request.url.params["page"] for c in short.calls] == ["1", "2", "3"]
    assert [len(p.records) for p in pages] == [2, 2, 1, 0]
    empty = leads_route(api, [lead(oid(1)), lead(oid(2))], [])
    list(connector(mappings, page_size=2).pull_changes(STREAM_LEADS, None))
    assert empty.call_count == 2


def test_a_server_that_ignores_page_is_not_paged_forever(mappings: Mappings, api: respx.MockRouter) -> None:
    route = api.get("/leads").mock(return_value=httpx.Response(200, json=[lead(oid(1)), lead(oid(2))]))
    pages = list(connector(mappings, page_size=2).pull_changes(STREAM_LEADS, None))
    assert route.call_count == 2
    assert [r.external_id for p in pages for r in p.records] == [oid(1), oid(2)]


def test_a_first_listing_yields_every_lead_and_its_digest_rides_on_the_last_page(
    mappings: Mappings, api: respx.MockRouter
) -> None:
    leads_route(api, [lead(oid(1)), lead(oid(2))], [lead(oid(3))])
    pages = list(connector(mappings, page_size=2).pull_changes(STREAM_LEADS, None))
    assert [(len(p.records), p.cursor is None, p.done) for p in pages] == [
        (2, True, False),
        (1, True, False),
        (0, False, True),
    ]
    assert {r.updated_at for p in pages for r in p.records} == {NOW}
    digest = snapshot.decode(pages[-1].cursor)
    assert digest is not None and set(digest.leads) == {oid(1), oid(2), oid(3)} and digest.at == NOW


def test_the_next_listing_yields_only_new_and_changed_leads(
    mappings: Mappings, api: respx.MockRouter
) -> None:
    # Given a listing of three leads
    leads_route(api, [lead(oid(1)), lead(oid(2)), lead(oid(3))])
    cursor = list(connector(mappings).pull_changes(STREAM_LEADS, None))[-1].cursor
    # When lead 2 moves to Offer, lead 3 vanishes and lead 4 appears
    leads_route(api, [lead(oid(1)), lead(oid(2), OFFER), lead(oid(4))])
    pages = list(connector(mappings).pull_changes(STREAM_LEADS, cursor))
    # Then only 2 and 4 are yielded, and the new digest no longer knows 3
    records = {r.external_id: r for p in pages for r in p.records}
    assert set(records) == {oid(2), oid(4)} and records[oid(2)].stage is StageKey.PROPOSAL
    digest = snapshot.decode(pages[-1].cursor)
    assert digest is not None and set(digest.leads) == {oid(1), oid(2), oid(4)}


def test_the_snapshot_stream_yields_every_lead_at_its_creation_time_and_no_cursor(
    mappings: Mappings, api: respx.MockRouter
) -> None:
    leads_route(api, fixture("leads.json"))
    pages = list(connector(mappings).pull_changes(STREAM_SNAPSHOT, "ignored"))
    assert [p.cursor for p in pages] == [None, None] and pages[-1].done
    assert {r.external_id: r.updated_at for r in pages[0].records} == {
        FOO: object_id_time(FOO),
        ARCHIVE_TEST: object_id_time(ARCHIVE_TEST),
    }


def test_list_stages_keeps_the_answer_order(mappings: Mappings, api: respx.MockRouter) -> None:
    stages = connector(mappings).list_stages()
    assert [(s.stage_label, s.order, s.pipeline_label) for s in stages][:2] == [
        ("Closing", 0, "Default"),
        ("In Negotiation", 1, "Default"),
    ]


def test_an_unknown_stream_is_a_config_error(mappings: Mappings) -> None:
    with pytest.raises(ConfigError, match="leads_snapshot"):
        connector(mappings).pull_changes("deals", None)


# -- writes --------------------------------------------------------------------------------------


def _update(**fields: Any) -> CanonicalUpdate:
    return CanonicalUpdate(target="clinchpad", idempotency_key="k1", origin="pipedrive", **fields)


def test_a_stage_move_puts_the_stage_id_of_the_leads_own_pipeline(
    mappings: Mappings, api: respx.MockRouter
) -> None:
    api.get(f"/leads/{FOO}").mock(return_value=httpx.Response(200, json=fixture("leads.json")[0]))
    put = api.put(f"/leads/{FOO}").mock(return_value=httpx.Response(200, json=lead(FOO, OFFER)))
    [result] = connector(mappings).apply_updates(
        [_update(external_id=FOO, stage=StageKey.PROPOSAL, amount=Decimal("1234.50"))]
    )
    assert result.ok and result.external_id == FOO
    request = put.calls.last.request
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"stage_id": OFFER, "size": 1234.5}


def test_a_new_lead_is_posted_to_the_mapped_pipeline_then_moved(
    mappings: Mappings, api: respx.MockRouter
) -> None:
    post = api.post("/leads").mock(return_value=httpx.Response(200, json=lead(oid(7))))
    put = api.put(f"/leads/{oid(7)}").mock(return_value=httpx.Response(200, json=lead(oid(7), OFFER)))
    [result] = connector(mappings).apply_updates(
        [_update(title="Acme", amount=Decimal(900), stage=StageKey.PROPOSAL)]
    )
    assert result.ok and result.external_id == oid(7)
    assert json.loads(post.calls.last.request.content) == {
        "name": "Acme",
        "size": 900,
        "pipeline_id": PIPELINE,
    }
    assert json.loads(put.calls.last.request.content) == {"stage_id": OFFER}


def test_won_without_a_won_stage_is_refused_and_nothing_is_written(
    mappings: Mappings, api: respx.MockRouter
) -> None:
    api.get(f"/leads/{FOO}").mock(return_value=httpx.Response(200, json=lead(FOO)))
    put = api.put(f"/leads/{FOO}")
    [result] = connector(mappings).apply_updates([_update(external_id=FOO, status="won")])
    assert not result.ok and not result.retryable
    assert "no way to mark a lead won" in (result.error or "")
    assert put.call_count == 0


def test_a_leak_flag_is_written_as_a_note(mappings: Mappings, api: respx.MockRouter) -> None:
    note = api.post(f"/leads/{FOO}/notes").mock(return_value=httpx.Response(200, json={"_id": oid(8)}))
    flag = LeakFlag("stalled", reason="42 days in Offer", stage=StageKey.PROPOSAL, days_in_stage=42)
    [result] = connector(mappings).apply_updates([_update(external_id=FOO, flag=flag)])
    assert result.ok
    content = json.loads(note.calls.last.request.content)["content"]
    assert content.startswith("sync-worker: leak flag (stalled)") and "Days in stage: 42" in content
    [off] = connector(mappings, flag_notes=False).apply_updates([_update(external_id=FOO, flag=flag)])
    assert off.ok and note.call_count == 1


def test_a_429_is_retried_and_a_lasting_one_is_retryable(mappings: Mappings, api: respx.MockRouter) -> None:
    busy = httpx.Response(429, json={"error": "Rate limit exceeded"})
    put = api.put(f"/leads/{FOO}").mock(side_effect=[busy, httpx.Response(200, json=lead(FOO))])
    [ok] = connector(mappings).apply_updates([_update(external_id=FOO, amount=Decimal(5))])
    assert ok.ok and put.call_count == 2
    put.side_effect = [busy, busy]
    [failed] = connector(mappings).apply_updates([_update(external_id=FOO, amount=Decimal(5))])
    assert not failed.ok and failed.retryable and "429" in (failed.error or "")


@pytest.mark.parametrize(
    ("response", "retryable"),
    [
        (httpx.Response(400, text="<html>Bad request</html>"), False),
        (httpx.Response(400, json=["size must be numeric"]), False),
        (httpx.Response(404, json={"message": "Lead not found"}), False),
        (httpx.Response(503, json={"error": {"code": 503}}), True),
        (httpx.Response(500), True),
    ],
)
def test_any_error_body_maps_by_status(
    mappings: Mappings, api: respx.MockRouter, response: httpx.Response, retryable: bool
) -> None:
    api.put(f"/leads/{FOO}").mock(return_value=response)
    [result] = connector(mappings).apply_updates([_update(external_id=FOO, amount=Decimal(5))])
    assert not result.ok and result.retryable is retryable
    assert f"HTTP {response.status_code}" in (result.error or "") and KEY not in (result.error or "")


def test_a_401_is_an_auth_failure_that_names_no_key(mappings: Mappings, api: respx.MockRouter) -> None:
    api.get("/pipelines").mock(return_value=httpx.Response(401, json={"error": "Invalid API key"}))
    c = connector(mappings)
    with pytest.raises(AuthError) as caught:
        c.list_stages()
    assert KEY not in str(caught.value) and KEY not in repr(c)


# -- the spec ------------------------------------------------------------------------------------


def test_the_spec_declares_snapshot_polling_limits_and_streams(mappings: Mappings) -> None:
    section = ClinchPadSettings(api_key=SecretStr(KEY), user_id="u-owner")
    assert SPEC.limits(section) == {"default": Limit(1200, 3600.0)}
    assert SPEC.account(section) == (BASE, section.api_key)
    assert SPEC.full_stream == STREAM_SNAPSHOT and SPEC.polled_streams == (STREAM_LEADS,)
    assert all(s.cursor == "opaque" for s in SPEC.streams)
    assert SPEC.extra["polling"] == "snapshot" and "snapshot" in SPEC.description
    assert SPEC.echo_markers(section) == frozenset({"user:u-owner"})
    assert not SPEC.enabled(ClinchPadSettings()) and SPEC.enabled(section)
    assert isinstance(connector(mappings), Connector)
    with pytest.raises(ConfigError, match="SYNC_CLINCHPAD__API_KEY"):
        from_section(ClinchPadSettings(), mappings)
