"""HubSpot deal identity against respx: contact e-mails through associations, the external-id property.

Payload shapes follow the HubSpot docs cited in :mod:`connectors.hubspot.identity` (v4 associations
batch read ``results[].from.id`` / ``results[].to[].toObjectId``, contacts batch read, batch/create
``associations``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from connectors.hubspot import HubSpotConnector, to_canonical
from sync_worker.canonical import CanonicalUpdate, StageKey
from sync_worker.mappings import Mappings, load_mappings

BASE = "https://api.hubapi.com"
SEARCH = f"{BASE}/crm/v3/objects/deals/search"
ASSOCIATIONS = f"{BASE}/crm/v4/associations/deals/contacts/batch/read"
CONTACTS_READ = f"{BASE}/crm/v3/objects/contacts/batch/read"
CREATE = f"{BASE}/crm/v3/objects/deals/batch/create"
UPDATE = f"{BASE}/crm/v3/objects/deals/batch/update"
IDENTITY_PROPERTY = f"{BASE}/crm/v3/properties/deals/sync_worker_pipedrive_id"
T0 = 1_709_287_200_000  # 2024-03-01T10:00:00Z


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _deal(deal_id: str, modified_ms: int = T0, **extra: str) -> dict[str, Any]:
    return {
        "id": deal_id,
        "properties": {
            "dealname": f"Deal {deal_id}",
            "dealstage": "qualifiedtobuy",
            "pipeline": "default",
            "hs_lastmodifieddate": _iso(modified_ms),
            **extra,
        },
        "createdAt": "2024-01-01T00:00:00.000Z",
        "updatedAt": _iso(modified_ms),
        "archived": False,
    }


def _to(*contact_ids: int) -> list[dict[str, Any]]:
    return [
        {
            "toObjectId": cid,
            "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 3, "label": None}],
        }
        for cid in contact_ids
    ]


def _contact(contact_id: str, email: str | None) -> dict[str, Any]:
    return {
        "id": contact_id,
        "properties": {"email": email, "hs_object_id": contact_id},
        "createdAt": "2024-01-01T00:00:00.000Z",
        "updatedAt": "2024-01-01T00:00:00.000Z",
        "archived": False,
    }


def _no_associations(deal_id: str) -> dict[str, Any]:
    return {
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
        "context": {"fromObjectId": [deal_id]},
        "message": f"No contacts are associated with deal {deal_id}.",
    }


def _json(call: Any) -> Any:
    return json.loads(call.request.content)


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(Path(__file__).resolve().parents[2] / "mappings")


@pytest.fixture
def hub(mappings: Mappings) -> Iterator[HubSpotConnector]:
    connector = HubSpotConnector(
        mappings, token=SecretStr("pat-na1-secret"), link_systems=("pipedrive",), sleep=lambda _: None
    )
    yield connector
    connector.close()


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=True) as mock:
        yield mock


# -- pulls: e-mail through associations --------------------------------------------------------------


def test_a_pulled_page_gets_its_contact_emails_with_one_associations_and_one_contacts_call(
    hub: HubSpotConnector, router: respx.MockRouter
) -> None:
    # Given three deals: one with two contacts, one with one, one with none (a 207 error entry)
    router.post(SEARCH).respond(200, json={"results": [_deal("1"), _deal("2"), _deal("3", T0 + 1)]})
    associations = router.post(ASSOCIATIONS).respond(
        207,
        json={
            "status": "COMPLETE",
            "results": [
                {"from": {"id": "1"}, "to": _to(902, 901)},
                {"from": {"id": "2"}, "to": _to(903)},
            ],
            "numErrors": 1,
            "errors": [_no_associations("3")],
        },
    )
    contacts = router.post(CONTACTS_READ).respond(
        200,
        json={
            "status": "COMPLETE",
            "results": [
                _contact("901", " Ada.Lovelace@Acme.example "),
                _contact("903", "grace@globex.example"),
            ],
        },
    )

    # When the stream is pulled
    (page,) = hub.pull_changes("deals", None)

    # Then the associations of the whole page were read in one call, then the chosen contacts in one
    assert associations.call_count == 1 and contacts.call_count == 1
    assert _json(associations.calls.last) == {"inputs": [{"id": "1"}, {"id": "2"}, {"id": "3"}]}
    # the lowest contact id of deal 1 (901), not the first listed (902), is the one read
    assert _json(contacts.calls.last) == {"properties": ["email"], "inputs": [{"id": "901"}, {"id": "903"}]}
    emails = {r.external_id: r.contact_email for r in page.records}
    assert emails == {"1": "ada.lovelace@acme.example", "2": "grace@globex.example", "3": None}


def test_a_full_page_of_200_deals_costs_one_associations_call_and_one_contacts_call_per_100(
    hub: HubSpotConnector, router: respx.MockRouter
) -> None:
    deals = [_deal(str(1000 + i)) for i in range(200)]
    router.post(SEARCH).respond(200, json={"results": deals})

    def associated(request: httpx.Request) -> httpx.Response:
        inputs = json.loads(request.content)["inputs"]
        # every deal has its own contact, except that deals 1000..1049 share contact 5000
        results = [
            {"from": {"id": i["id"]}, "to": _to(5000 if int(i["id"]) < 1050 else 4000 + int(i["id"]))}
            for i in inputs
        ]
        return httpx.Response(200, json={"status": "COMPLETE", "results": results})

    def read_contacts(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        results = [_contact(i["id"], f"c{i['id']}@example.com") for i in body["inputs"]]
        return httpx.Response(200, json={"status": "COMPLETE", "results": results})

    associations = router.post(ASSOCIATIONS).mock(side_effect=associated)
    contacts = router.post(CONTACTS_READ).mock(side_effect=read_contacts)

    (page,) = hub.pull_changes("deals", None)

    assert [len(_json(c)["inputs"]) for c in associations.calls] == [200]
    # 151 distinct contacts -> two reads, none repeated
    sizes = [len(_json(c)["inputs"]) for c in contacts.calls]
    assert sizes == [100, 51]
    read_ids = [i["id"] for c in contacts.calls for i in _json(c)["inputs"]]
    assert len(read_ids) == len(set(read_ids))
    by_id = {r.external_id: r.contact_email for r in page.records}
    assert by_id["1000"] == by_id["1049"] == "c5000@example.com"
    assert by_id["1199"] == "c5199@example.com"


def test_no_records_no_identity_calls(hub: HubSpotConnector, router: respx.MockRouter) -> None:
    router.post(SEARCH).respond(200, json={"results": []})
    (page,) = hub.pull_changes("deals", None)
    assert page.records == () and len(router.calls) == 1


def test_read_deals_fills_email_and_the_pipedrive_link(
    hub: HubSpotConnector, router: respx.MockRouter
) -> None:
    router.post(f"{BASE}/crm/v3/objects/deals/batch/read").respond(
        200,
        json={
            "status": "COMPLETE",
            "results": [_deal("5", sync_worker_pipedrive_id="42"), _deal("6", sync_worker_pipedrive_id="")],
        },
    )
    associations = router.post(ASSOCIATIONS).respond(
        200, json={"status": "COMPLETE", "results": [{"from": {"id": "6"}, "to": _to(77)}]}
    )
    router.post(CONTACTS_READ).respond(
        200, json={"status": "COMPLETE", "results": [_contact("77", "x@y.example")]}
    )

    five, six = hub.read_deals(["5", "6"])

    assert _json(associations.calls.last) == {"inputs": [{"id": "5"}, {"id": "6"}]}
    assert (five.contact_email, dict(five.links)) == (None, {"pipedrive": "42"})
    assert (six.contact_email, dict(six.links)) == ("x@y.example", {})


def test_to_canonical_reads_the_external_id_property_into_links(mappings: Mappings) -> None:
    record = to_canonical(_deal("9", sync_worker_pipedrive_id=" 314 "), mappings)
    assert record.links == {"pipedrive": "314"} and record.stage is StageKey.QUALIFIED
    assert to_canonical(_deal("9"), mappings).links == {}


def test_search_asks_for_the_external_id_property(hub: HubSpotConnector, router: respx.MockRouter) -> None:
    route = router.post(SEARCH).respond(200, json={"results": []})
    list(hub.pull_changes("deals", None))
    assert "sync_worker_pipedrive_id" in _json(route.calls.last)["properties"]


# -- pushes: association on create, external-id property ---------------------------------------------


def _created(request: httpx.Request) -> httpx.Response:
    inputs = json.loads(request.content)["inputs"]
    results = [
        {"id": str(800 + n), "objectWriteTraceId": i["objectWriteTraceId"], "properties": i["properties"]}
        for n, i in enumerate(inputs)
    ]
    return httpx.Response(201, json={"status": "COMPLETE", "results": results})


def _updated(request: httpx.Request) -> httpx.Response:
    inputs = json.loads(request.content)["inputs"]
    results = [
        {"id": i["id"], "objectWriteTraceId": i["objectWriteTraceId"], "properties": {}} for i in inputs
    ]
    return httpx.Response(200, json={"status": "COMPLETE", "results": results})


def test_a_create_is_associated_with_the_contact_of_its_email_and_carries_the_pipedrive_id(
    hub: HubSpotConnector, router: respx.MockRouter
) -> None:
    pipelines = json.loads(
        (Path(__file__).parent / "fixtures" / "hubspot" / "pipelines_deals.json").read_text()
    )
    router.get(f"{BASE}/crm/v3/pipelines/deals").respond(200, json=pipelines)
    prop = router.get(IDENTITY_PROPERTY).respond(200, json={"name": "sync_worker_pipedrive_id"})
    lookup = router.post(CONTACTS_READ).respond(
        207,
        json={
            "status": "COMPLETE",
            "results": [_contact("501", "ada@acme.example")],
            "numErrors": 1,
            "errors": [
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": "Could not get some CONTACT objects, they may be deleted or not exist.",
                    "context": {"ids": ["nobody@acme.example"]},
                }
            ],
        },
    )
    create = router.post(CREATE).mock(side_effect=_created)
    update = router.post(UPDATE).mock(side_effect=_updated)
    updates = [
        CanonicalUpdate(
            target="hubspot",
            idempotency_key="k-known",
            origin="pipedrive",
            origin_id="17",
            title="Acme - Pilot",
            contact_email="Ada@Acme.example",
        ),
        CanonicalUpdate(
            target="hubspot",
            idempotency_key="k-unknown",
            origin="lagrowthmachine",
            origin_id="lead-1",
            title="Nobody",
            contact_email="nobody@acme.example",
        ),
        CanonicalUpdate(
            target="hubspot",
            idempotency_key="k-update",
            origin="pipedrive",
            origin_id="18",
            external_id="600",
            stage=StageKey.PROPOSAL,
        ),
    ]

    results = hub.apply_updates(updates)

    assert [(r.ok, r.external_id) for r in results] == [(True, "800"), (True, "801"), (True, "600")]
    assert prop.call_count == 1
    assert _json(lookup.calls.last) == {
        "idProperty": "email",
        "properties": ["email"],
        "inputs": [{"id": "ada@acme.example"}, {"id": "nobody@acme.example"}],
    }
    known, unknown = _json(create.calls.last)["inputs"]
    assert known == {
        "properties": {"dealname": "Acme - Pilot", "sync_worker_pipedrive_id": "17"},
        "objectWriteTraceId": "k-known",
        "associations": [
            {
                "to": {"id": "501"},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}],
            }
        ],
    }
    assert unknown == {"properties": {"dealname": "Nobody"}, "objectWriteTraceId": "k-unknown"}
    (changed,) = _json(update.calls.last)["inputs"]
    assert changed["properties"]["sync_worker_pipedrive_id"] == "18"
    assert "associations" not in changed


def test_the_external_id_is_not_written_when_the_property_is_missing_and_asked_once(
    hub: HubSpotConnector, router: respx.MockRouter
) -> None:
    prop = router.get(IDENTITY_PROPERTY).respond(
        404, json={"status": "error", "message": "Unable to find property", "category": "OBJECT_NOT_FOUND"}
    )
    update = router.post(UPDATE).mock(side_effect=_updated)
    for n in range(2):
        (result,) = hub.apply_updates(
            [
                CanonicalUpdate(
                    target="hubspot",
                    idempotency_key=f"k{n}",
                    origin="pipedrive",
                    origin_id="18",
                    external_id="600",
                    title=f"t{n}",
                )
            ]
        )
        assert result.ok
    assert prop.call_count == 1
    assert [_json(c)["inputs"][0]["properties"] for c in update.calls] == [
        {"dealname": "t0"},
        {"dealname": "t1"},
    ]


def test_ensure_identity_properties_creates_the_property_then_writes_use_it(
    hub: HubSpotConnector, router: respx.MockRouter
) -> None:
    router.get(f"{BASE}/crm/v3/properties/deals/groups").respond(
        200, json={"results": [{"name": "sync_worker"}]}
    )
    router.get(f"{BASE}/crm/v3/properties/deals").respond(200, json={"results": [{"name": "dealname"}]})
    created = router.post(f"{BASE}/crm/v3/properties/deals").respond(
        201, json={"name": "sync_worker_pipedrive_id"}
    )
    update = router.post(UPDATE).mock(side_effect=_updated)

    assert hub.ensure_identity_properties() == ["sync_worker_pipedrive_id"]
    body = _json(created.calls.last)
    assert (body["name"], body["type"], body["fieldType"], body["groupName"]) == (
        "sync_worker_pipedrive_id",
        "string",
        "text",
        "sync_worker",
    )
    # no GET of the property afterwards: respx would refuse an unmocked call
    hub.apply_updates(
        [
            CanonicalUpdate(
                target="hubspot", idempotency_key="k", origin="pipedrive", origin_id="3", external_id="9"
            )
        ]
    )
    assert _json(update.calls.last)["inputs"][0]["properties"] == {"sync_worker_pipedrive_id": "3"}


def test_a_transient_contact_lookup_failure_fails_only_the_creates_needing_it(
    hub: HubSpotConnector, router: respx.MockRouter
) -> None:
    router.post(CONTACTS_READ).respond(503, json={"status": "error", "message": "down"})
    create = router.post(CREATE).mock(side_effect=_created)
    results = hub.apply_updates(
        [
            CanonicalUpdate(
                target="hubspot",
                idempotency_key="with",
                origin="lagrowthmachine",
                title="a",
                contact_email="a@b.c",
            ),
            CanonicalUpdate(target="hubspot", idempotency_key="without", origin="lagrowthmachine", title="b"),
        ]
    )
    assert [(r.idempotency_key, r.ok, r.retryable) for r in results] == [
        ("with", False, True),
        ("without", True, False),
    ]
    assert [i["objectWriteTraceId"] for i in _json(create.calls.last)["inputs"]] == ["without"]
