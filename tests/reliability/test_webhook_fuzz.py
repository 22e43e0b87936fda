"""Webhook fuzzing: random and malformed bodies AND headers on every source (hypothesis, bounded).

Whatever arrives, the receiver answers below 500, keeps answering, and stores nothing it cannot
authenticate and parse: random headers never carry a valid signature, and correctly signed bodies
that are not well-formed deliveries are refused with 400.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from dramatiq.brokers.stub import StubBroker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync_worker.mappings import MappingsHolder
from sync_worker.settings import default_mappings_dir
from sync_worker.store import SyncStore
from tests.receiver.conftest import LGM_SECRET, PD_PASSWORD, PD_USER, Harness, make_connectors, make_settings
from tests.receiver.test_webhooks import basic, hubspot_headers

SOURCES = ("hubspot", "pipedrive", "lagrowthmachine", "salesforce", "", "../admin")
_header_names = st.sampled_from(
    [
        "content-type",
        "content-length",
        "authorization",
        "x-hubspot-signature",
        "x-hubspot-signature-v3",
        "x-hubspot-request-timestamp",
        "x-hubspot-signature-version",
        "x-sync-token",
        "transfer-encoding",
        "content-encoding",
    ]
) | st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)
_header_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60
) | st.sampled_from(
    [
        "Basic Og==",
        "Basic !!!",
        "Bearer x",
        "-1",
        "99999999999999999999",
        "gzip",
        "chunked",
        "application/json",
    ]
)
_bodies = (
    st.binary(max_size=300)
    | st.text(max_size=200).map(str.encode)
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=15,
    ).map(lambda v: json.dumps(v).encode())
)


@pytest.fixture(scope="module")
def fuzz_harness(tmp_path_factory: pytest.TempPathFactory, migrated_db_module: str) -> Iterator[Harness]:
    store = SyncStore(migrated_db_module)
    settings_ = make_settings(webhook_max_bytes=256)
    holder = MappingsHolder(default_mappings_dir(), interval=60.0)
    harness = Harness(settings_, store, StubBroker(), make_connectors(settings_, holder.current), holder)
    try:
        yield harness
    finally:
        harness.close()
        store.close()


@pytest.fixture(scope="module")
def migrated_db_module(tmp_path_factory: pytest.TempPathFactory) -> str:
    import shutil

    from sync_worker.store import upgrade_database

    path = tmp_path_factory.mktemp("fuzz") / "store.db"
    template = tmp_path_factory.mktemp("fuzz-template") / "t.db"
    upgrade_database(f"sqlite:///{template}")
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    source=st.sampled_from(SOURCES),
    query=st.sampled_from(["", "?token=wrong", "?token=", "?a=%ZZ&&=", f"?token={LGM_SECRET}x"]),
    headers=st.dictionaries(_header_names, _header_values, max_size=6),
    body=_bodies,
)
def test_random_requests_never_5xx_and_store_nothing(
    fuzz_harness: Harness, source: str, query: str, headers: dict[str, str], body: bytes
) -> None:
    before = fuzz_harness.store.inbox_depth()
    headers.pop("content-length", None)  # httpx sets the true length; a lying one is a transport error
    headers.pop("transfer-encoding", None)
    response = fuzz_harness.client.post(f"/webhooks/{source}{query}", content=body, headers=headers)
    assert response.status_code < 500, response.text
    assert fuzz_harness.store.inbox_depth() == before


_malformed = st.one_of(
    st.binary(max_size=200).filter(lambda b: not b.strip().startswith((b"[", b"{"))),
    st.sampled_from([b"", b"[", b"{", b"null", b"[null]", b'[{"eventId": "x"}]', b'{"meta": 5}', b"[1,2]"]),
    st.recursive(st.integers() | st.text(max_size=5), lambda c: st.lists(c, max_size=3), max_leaves=6).map(
        lambda v: json.dumps(v).encode()
    ),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=st.sampled_from(["hubspot", "pipedrive", "lagrowthmachine"]), body=_malformed)
def test_signed_malformed_bodies_are_400_and_store_nothing(
    fuzz_harness: Harness, source: str, body: bytes
) -> None:
    before = fuzz_harness.store.inbox_depth()
    url = f"http://testserver/webhooks/{source}"
    if source == "hubspot":
        headers = hubspot_headers(url, body)
    elif source == "pipedrive":
        headers = basic(PD_USER, PD_PASSWORD)
    else:
        url += f"?token={LGM_SECRET}"
        headers = {}
    response = fuzz_harness.client.post(url, content=body, headers=headers)
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        assert response.json().get("accepted", 0) == 0  # a well-formed delivery with nothing handled
    else:
        assert response.status_code in (400, 413), response.text
        assert "error" in response.json()
    assert fuzz_harness.store.inbox_depth() == before
    assert fuzz_harness.client.get("/healthz").status_code == 200
