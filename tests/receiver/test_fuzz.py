"""Property-based fuzz of the webhook endpoints: whatever arrives, the answer is never a 5xx.

Half the examples carry valid credentials, so the parsers (not only the auth checks) see the
random bodies.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.receiver.conftest import LGM_SECRET, PD_PASSWORD, PD_USER, Harness, make_settings
from tests.receiver.test_webhooks import basic, hubspot_headers

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=16), children, max_size=5)
    ),
    max_leaves=20,
)
_hubspot_like = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "subscriptionType": st.sampled_from(
                ["deal.creation", "deal.propertyChange", "contact.merge", "object.creation", "x", ""]
            )
            | st.text(max_size=10),
            "objectId": st.integers() | st.text(max_size=8) | st.none(),
            "occurredAt": st.integers() | st.text(max_size=8),
            "attemptNumber": st.integers() | st.text(max_size=3),
            "objectTypeId": st.sampled_from(["0-3", "0-1", "2-99"]) | st.integers(),
            "propertyName": _json,
            "propertyValue": _json,
        },
    ),
    max_size=5,
)
_pipedrive_like = st.fixed_dictionaries(
    {},
    optional={
        "meta": st.dictionaries(
            st.sampled_from(["id", "action", "entity", "entity_id", "timestamp", "object", "v"]),
            _json,
            max_size=6,
        ),
        "data": _json,
        "previous": _json,
        "current": _json,
        "event": st.sampled_from(["updated.deal", "added.person", "x"]) | st.text(max_size=8),
        "v": st.sampled_from([1, 2]),
    },
)
_lgm_like = st.fixed_dictionaries(
    {},
    optional={
        "messageId": _json,
        "leadId": _json,
        "createdAt": st.integers() | st.text(max_size=25),
        "received": _json,
        "sent": _json,
        "lead": _json,
    },
)
_bodies = st.one_of(
    st.binary(max_size=200),
    _json.map(lambda value: json.dumps(value).encode()),
    _hubspot_like.map(lambda value: json.dumps(value).encode()),
    _pipedrive_like.map(lambda value: json.dumps(value).encode()),
    _lgm_like.map(lambda value: json.dumps(value).encode()),
)
_header_names = st.sampled_from(
    [
        "x-hubspot-signature-v3",
        "x-hubspot-request-timestamp",
        "x-hubspot-signature",
        "x-hubspot-signature-version",
        "authorization",
        "x-sync-token",
        "content-type",
        "x-random",
    ]
)
_header_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
_headers = st.dictionaries(_header_names, _header_values, max_size=4)


@pytest.fixture(scope="module")
def fuzz_harness(
    tmp_path_factory: pytest.TempPathFactory, migrated_template: object, mappings: object
) -> Iterator[Harness]:
    import shutil

    from dramatiq.brokers.stub import StubBroker

    from sync_worker.mappings import MappingsHolder
    from sync_worker.settings import default_mappings_dir
    from sync_worker.store import SyncStore
    from tests.receiver.conftest import make_connectors

    path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    shutil.copyfile(migrated_template, path)  # type: ignore[arg-type]
    settings_ = make_settings(webhook_max_bytes=150)
    store = SyncStore(f"sqlite:///{path}")
    harness = Harness(
        settings_,
        store,
        StubBroker(),
        make_connectors(settings_, mappings),  # type: ignore[arg-type]
        MappingsHolder(default_mappings_dir(), interval=60.0),
        sweep_interval=None,
    )
    yield harness
    harness.close()
    store.close()


def _authenticate(
    source: str, body: bytes, headers: dict[str, str], query: str
) -> tuple[dict[str, str], str]:
    if source == "hubspot":
        return {**headers, **hubspot_headers(f"http://testserver/webhooks/hubspot{query}", body)}, query
    if source == "pipedrive":
        return {**headers, **basic(PD_USER, PD_PASSWORD)}, query
    return headers, f"?token={LGM_SECRET}"


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    source=st.sampled_from(["hubspot", "pipedrive", "lagrowthmachine", "nope", "HubSpot", "%2e%2e"]),
    body=_bodies,
    headers=_headers,
    query=st.sampled_from(["", "?token=x", "?a=%2F%3F&b=1", "?token="]),
    authentic=st.booleans(),
)
def test_no_random_request_gets_a_5xx(
    fuzz_harness: Harness, source: str, body: bytes, headers: dict[str, str], query: str, authentic: bool
) -> None:
    if authentic:
        headers, query = _authenticate(source, body, headers, query)
    response = fuzz_harness.client.post(f"/webhooks/{source}{query}", content=body, headers=headers)
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        answer = response.json()
        assert set(answer) == {"error", "detail"}


def test_fuzz_fixture_is_wired(fuzz_harness: Harness, make_harness: Callable[..., Harness]) -> None:
    assert fuzz_harness.client.get("/healthz").status_code == 200
