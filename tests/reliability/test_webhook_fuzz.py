"""Webhook fuzzing of every registered source: hostile requests get a 4xx with a JSON error, never
a 5xx or a hang, and nothing unauthenticated or malformed is stored.

The receiver runs with a real migrated SQLite store and a connector for every registered source
that takes webhooks, each built from settings through the registry as ``serve`` builds them. Half
of the requests carry valid credentials (a real HubSpot v3 signature, Pipedrive basic auth, the
tokens and keys in the URL or inside the body), so the parsers, not only the auth checks, see:
random bytes, truncated and deeply nested JSON, huge and non-finite numbers, wrong types in the
provider's own payload shapes, strings with NUL or unpaired surrogates, and odd headers and
queries. Each request must be answered within ``HANG_SECONDS``.

``SYNC_FUZZ_REQUESTS`` (default 300) sets the requests per source; the README's figures come from
``SYNC_FUZZ_REQUESTS=10000`` (see its Reliability table).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from dramatiq.brokers.stub import StubBroker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from connectors.hubspot.webhooks import v3_signature
from connectors.trello.webhooks import sign as trello_sign
from sync_worker.mappings import MappingsHolder
from sync_worker.plugins import registry
from sync_worker.receiver import build_webhook_sources, create_app
from sync_worker.settings import Settings
from sync_worker.store import SyncStore
from tests.reliability.conftest import FIGURES, REPO

REQUESTS = int(os.environ.get("SYNC_FUZZ_REQUESTS", "300"))
HANG_SECONDS = 20.0
NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
HUBSPOT_SECRET = "hs-client-secret"
PD_USER, PD_PASSWORD = "pd-hook", "pd-password-123"
LGM_TOKEN, ODOO_TOKEN, ZOHO_TOKEN, CLINCHPAD_KEY = "lgm-secret", "odoo-secret", "zoho-token", "cp-key"
ZOHO_CHANNEL = "1000000068001"
TRELLO_SECRET = "trello-app-secret"
BODY_AUTHENTICATED = frozenset({"salesforce"})
FIXTURES = REPO / "tests" / "connectors" / "fixtures"

Signed = tuple[dict[str, str], str, bytes]
"""Headers, query string and body of an authentic request."""


def _fixture(system: str, name: str) -> Any:
    return json.loads((FIXTURES / system / name).read_text(encoding="utf-8"))


def _sign_hubspot(headers: dict[str, str], query: str, body: bytes) -> Signed:
    url = f"http://testserver/webhooks/hubspot{query}"
    signature = v3_signature(HUBSPOT_SECRET, "POST", url, body, str(NOW_MS))
    signed = {"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": str(NOW_MS)}
    return {**headers, **signed}, query, body


def _sign_pipedrive(headers: dict[str, str], query: str, body: bytes) -> Signed:
    basic = base64.b64encode(f"{PD_USER}:{PD_PASSWORD}".encode()).decode()
    return {**headers, "Authorization": f"Basic {basic}"}, query, body


def _sign_trello(headers: dict[str, str], query: str, body: bytes) -> Signed:
    url = f"http://testserver/webhooks/trello{query}"
    return {**headers, "X-Trello-Webhook": trello_sign(TRELLO_SECRET, body, url)}, query, body


def _as_is(headers: dict[str, str], query: str, body: bytes) -> Signed:
    """Salesforce signs nothing: the organisation id inside the SOAP envelope is checked."""
    return headers, query, body


def _query_token(token: str) -> Callable[[dict[str, str], str, bytes], Signed]:
    def sign(headers: dict[str, str], query: str, body: bytes) -> Signed:
        joiner = "&" if query else "?"
        return headers, f"{query}{joiner}token={token}", body

    return sign


def _body_keys(**keys: str) -> Callable[[dict[str, str], str, bytes], Signed]:
    """Authentication inside the body: the keys are set on a JSON object body (others stay as sent)."""

    def sign(headers: dict[str, str], query: str, body: bytes) -> Signed:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return headers, query, body
        if not isinstance(data, dict):
            return headers, query, body
        return headers, query, json.dumps({**data, **keys}).encode()

    return sign


# Per source: how an authentic sender signs a request, and a well-formed delivery to mutate.
SOURCES: dict[str, tuple[Callable[[dict[str, str], str, bytes], Signed], Any]] = {
    "hubspot": (_sign_hubspot, _fixture("hubspot", "webhook_events.json")),
    "pipedrive": (_sign_pipedrive, _fixture("pipedrive", "webhook_v2_deal_change.json")),
    "lagrowthmachine": (_query_token(LGM_TOKEN), _fixture("lagrowthmachine", "webhook_inbox_message.json")),
    "odoo": (_query_token(ODOO_TOKEN), _fixture("odoo", "webhook_lead.json")),
    "zoho": (
        _body_keys(token=ZOHO_TOKEN, channel_id=ZOHO_CHANNEL),
        {
            "server_time": NOW_MS,
            "module": "Deals",
            "resource_uri": "https://www.zohoapis.com/crm/v8/Deals",
            "ids": ["4150868000001"],
            "affected_fields": [{"4150868000001": ["Stage"]}],
            "affected_values": [{"record_id": "4150868000001", "values": {"Stage": "Negotiation"}}],
            "operation": "update",
            "channel_id": ZOHO_CHANNEL,
            "token": "not-ours",
            "query_params": {},
        },
    ),
    "clinchpad": (_body_keys(handshake_key=CLINCHPAD_KEY), _fixture("clinchpad", "webhook_note.json")),
    "trello": (
        _sign_trello,
        {
            "action": {
                "id": "5f1a2b3c4d5e6f7a8b9c0d1e",
                "type": "updateCard",
                "date": "2024-06-01T12:00:00.000Z",
                "idMemberCreator": "5a0000000000000000000001",
                "data": {
                    "card": {"id": "5f1a2b3c4d5e6f7a8b9c0d00", "idList": "5f1a2b3c4d5e6f7a8b9c0d02"},
                    "listBefore": {"id": "5f1a2b3c4d5e6f7a8b9c0d01", "name": "Leads"},
                    "listAfter": {"id": "5f1a2b3c4d5e6f7a8b9c0d02", "name": "Qualified"},
                    "board": {"id": "5f1a2b3c4d5e6f7a8b9c0aaa"},
                },
            },
            "model": {"id": "5f1a2b3c4d5e6f7a8b9c0aaa"},
        },
    ),
    "salesforce": (_as_is, (FIXTURES / "salesforce" / "outbound_message.xml").read_text(encoding="utf-8")),
}


def fuzz_settings() -> Settings:
    return Settings(
        database_url="sqlite:///./unused.db",
        redis_url="redis://127.0.0.1:1/0",
        webhook_max_bytes=64 * 1024,
        hubspot={"token": "hs-token", "client_secret": HUBSPOT_SECRET},
        pipedrive={"api_token": "pd-token", "webhook_user": PD_USER, "webhook_password": PD_PASSWORD},
        lagrowthmachine={"api_key": "lgm-key", "webhook_secret": LGM_TOKEN},
        odoo={"base_url": "http://127.0.0.1:1", "api_key": "k", "database": "d", "version": 19,
              "webhook_secret": ODOO_TOKEN},
        zoho={"access_token": "zoho-access", "webhook_token": ZOHO_TOKEN, "channel_id": ZOHO_CHANNEL},
        clinchpad={"api_key": "cp-api", "handshake_key": CLINCHPAD_KEY},
        trello={"api_key": "t-key", "token": "t-token", "board_id": "5f1a2b3c4d5e6f7a8b9c0aaa",
                "app_secret": TRELLO_SECRET},
        salesforce={"access_token": "sf-session", "instance_url": "http://127.0.0.1:1",
                    "organization_id": "00D5e000000KQ2eEAG"},
    )  # fmt: skip


# -- hostile values ---------------------------------------------------------------------------------

_huge_numbers = st.sampled_from(
    ["1e999", "-1e999", "NaN", "Infinity", "-Infinity", "1e308", "-0", "0.0000000001e-400"]
) | st.integers(min_value=19, max_value=6000).map(lambda n: "9" * n)
_odd_text = st.sampled_from(["\x00", "\ud800", "\udfff x", "²³", "٣", "\u202e", "", " ", "null", "9" * 30])
_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20) | _odd_text
)
_json_values = st.recursive(
    _scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12) | _odd_text, kids, max_size=4)
    ),
    max_leaves=20,
)


def _encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True)


def _nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    if kind == "dict":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b"[" * depth  # never closed


_deep = st.builds(
    _nested, st.integers(min_value=30, max_value=60_000), st.sampled_from(["list", "dict", "open"])
)


def _leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            paths.extend(_leaf_paths(item, (*path, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths.extend(_leaf_paths(item, (*path, index)))
    return paths


_HOLE = "\x00hole\x00"


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replaced(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replaced(copy[head], rest, new)
    return copy


@st.composite
def _mutated(draw: st.DrawFn, sample: Any) -> bytes:
    """The provider's own shape with one value replaced by a wrong type or a hostile number."""
    paths = _leaf_paths(sample)
    path = draw(st.sampled_from(paths))
    raw = draw(st.booleans())
    if raw:  # a raw token json.dumps would never write (huge or non-finite numbers)
        text = _encode(_replaced(sample, path, _HOLE))
        return text.replace(_encode(_HOLE), draw(_huge_numbers), 1).encode()
    new = draw(_json_values | st.sampled_from([[], {}, [[[[[]]]]], -1, 0, 2**63, -(2**63) - 1]))
    return _encode(_replaced(sample, path, new)).encode()


@st.composite
def _truncated(draw: st.DrawFn, sample: Any) -> bytes:
    text = json.dumps(sample).encode()
    return text[: draw(st.integers(min_value=0, max_value=max(0, len(text) - 1)))]


def _bodies(sample: Any) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        _mutated(sample),
        _mutated(sample),
        _truncated(sample),
        _deep,
        _json_values.map(lambda v: _encode(v).encode()),
        st.sampled_from(
            [b"", b"null", b"[]", b"{}", b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b'"x"', b"1e999"]
        ),
        st.just(json.dumps(sample).encode()).map(lambda b: b.decode().encode("utf-16")),
    )


_header_names = st.sampled_from(
    [
        "content-type",
        "authorization",
        "x-hubspot-signature-v3",
        "x-hubspot-request-timestamp",
        "x-hubspot-signature",
        "x-hubspot-signature-version",
        "x-sync-token",
        "content-encoding",
        "host",
        "expect",
        "x-forwarded-for",
    ]
) | st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)
_header_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60
) | st.sampled_from(
    [
        "Basic Og==",
        "Basic !!!",
        "Basic " + base64.b64encode(b"\xff\xfe:\x00").decode(),
        "Bearer x",
        "-1",
        "9" * 5000,
        "²³",
        "v1",
        "gzip",
        "application/json; charset=utf-16",
        "100-continue",
        "x" * 8000,
    ]
)
_queries = st.sampled_from(
    ["", "?token=", "?token=wrong", "?a=%ZZ&&=", "?token=%00", "?token=%FF%FE", "?" + "a=1&" * 500]
)


# -- the receiver under test --------------------------------------------------------------------------

T = TypeVar("T")


class LoopThread:
    """One event loop in a thread: requests run on it, the test waits with a deadline (a hang is a
    timeout here, not a stuck test)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class FuzzReceiver:
    def __init__(self, app: Starlette, store: SyncStore) -> None:
        self.app = app
        self.store = store
        self.loop = LoopThread()
        self.client = self.loop.run(self._open(), 10)

    async def _open(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)  # an error is a 500 here
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")

    def post(self, path: str, headers: dict[str, str], body: bytes) -> httpx.Response:
        raw = [(name.encode(), value.encode("utf-8")) for name, value in headers.items()]  # obs-text too
        return self.loop.run(self.client.post(path, headers=raw, content=body), HANG_SECONDS)

    def close(self) -> None:
        self.loop.run(self.client.aclose(), 10)
        self.loop.close()


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory, migrated_db: Path) -> Iterator[FuzzReceiver]:
    path = tmp_path_factory.mktemp("fuzz") / "store.db"
    shutil.copyfile(migrated_db, path)
    store = SyncStore(f"sqlite:///{path}")
    settings_ = fuzz_settings()
    holder = MappingsHolder(REPO / "mappings", interval=60.0)
    connectors = build_webhook_sources(settings_, lambda: holder.current, clock=lambda: NOW)
    app = create_app(
        settings_,
        store=store,
        broker=StubBroker(),
        mappings_holder=holder,
        connectors=connectors,
        enqueue=lambda inbox_id: None,
        sweep_interval=None,
        access_log=False,
    )
    fuzz = FuzzReceiver(app, store)
    try:
        yield fuzz
    finally:
        fuzz.close()
        for connector in connectors.values():
            connector.close()  # type: ignore[attr-defined]
        store.close()


def test_every_registered_webhook_source_is_fuzzed() -> None:
    assert set(SOURCES) == {name for name, spec in registry().items() if spec.webhooks}


def _assert_error_answer(source: str, response: httpx.Response) -> None:
    spec = registry()[source]
    if spec.webhook_fault is not None:
        media, _ = spec.webhook_fault(response.status_code, "probe")
        assert response.headers["content-type"].startswith(media.split(";")[0]), response.headers
        return
    answer = response.json()
    assert set(answer) == {"error", "detail"}, answer
    assert isinstance(answer["detail"], str) and answer["detail"]


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_hostile_requests_get_a_4xx_never_a_5xx_or_a_hang(receiver: FuzzReceiver, source: str) -> None:
    sign, sample = SOURCES[source]
    statuses: Counter[int] = Counter()
    slowest = 0.0

    @settings(
        max_examples=REQUESTS,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )
    @given(
        body=_bodies(sample),
        headers=st.dictionaries(_header_names, _header_values, max_size=5),
        query=_queries,
        authentic=st.booleans(),
    )
    def one(body: bytes, headers: dict[str, str], query: str, authentic: bool) -> None:
        nonlocal slowest
        if authentic:
            headers, query, body = sign(headers, query, body)
        before = receiver.store.inbox_depth()
        started = time.perf_counter()
        response = receiver.post(f"/webhooks/{source}{query}", headers, body)
        slowest = max(slowest, time.perf_counter() - started)
        statuses[response.status_code] += 1
        assert response.status_code < 500, (response.status_code, response.text[:300])
        if response.status_code >= 400:
            _assert_error_answer(source, response)
            assert receiver.store.inbox_depth() == before, "a refused request stored an event"
        if not authentic:
            # Salesforce's credential (the organisation id) lives inside the envelope: a body that
            # is no envelope cannot be authenticated, and is refused as malformed.
            refused = (401, 413, 400) if source in BODY_AUTHENTICATED else (401, 413)
            assert response.status_code in refused, (response.status_code, response.text[:300])

    one()
    total = sum(statuses.values())
    FIGURES[f"webhook fuzz {source}"] = {
        "requests": total,
        "5xx": sum(n for status, n in statuses.items() if status >= 500),
        "hangs": 0,
        "slowest_s": round(slowest, 3),
        "statuses": dict(sorted(statuses.items())),
    }
    assert total >= REQUESTS


# The causes of the 5xx the fuzzing found, kept as a table with the answer each gets now: a 400; a
# 401 where the key rides in a body too deep to read; a 200 for LaGrowthMachine, whose undocumented
# body is never refused but kept as unrecognised.
_FOUND: list[tuple[str, bytes, int]] = [
    ("hubspot", b"[" * 5000 + b"]" * 5000, 400),  # RecursionError in json
    ("hubspot", b"[" + b"9" * 5000 + b"]", 400),  # ValueError: over 4,300 digits
    (
        "hubspot",
        b'[{"subscriptionType":"deal.creation","objectId":1,"occurredAt":99999999999999999999}]',
        400,
    ),
    (
        "hubspot",
        b'[{"subscriptionType":"deal.creation","objectId":1,"occurredAt":"' + b"9" * 5000 + b'"}]',
        400,
    ),
    (
        "hubspot",
        b'[{"subscriptionType":"deal.creation","objectId":1,"occurredAt":1,"attemptNumber":"\xc2\xb2"}]',
        400,
    ),
    (
        "hubspot",
        b'[{"subscriptionType":"deal.creation","objectId":"1","occurredAt":1,"propertyValue":"\\u0000"}]',
        400,
    ),
    (
        "pipedrive",
        b'{"meta":{"action":"updated","object":"deal","id":1,"timestamp":1e300}}',
        400,
    ),  # OverflowError
    ("pipedrive", b'{"meta":{"action":"updated","object":"deal","id":1,"timestamp":NaN}}', 400),  # ValueError
    (
        "pipedrive",
        b'{"meta":{"id":"x","action":"change","entity":"deal","entity_id":"1",'
        b'"timestamp":"0001-01-01T00:00:00+01:00"}}',
        400,
    ),  # OverflowError moving year 1 into UTC
    ("pipedrive", b'{"meta":{"id":"\\ud800","action":"change","entity":"deal","entity_id":"1"}}', 400),
    ("zoho", b'{"module":"Deals","operation":"update","ids":["1"],"server_time":1e300}', 400),
    ("zoho", b'{"module":"Deals","operation":"update","ids":["1"],"server_time":Infinity}', 401),
    ("zoho", b'{"a":' * 3000 + b"1" + b"}" * 3000, 401),
    ("odoo", b'{"_model":"crm.lead","_id":1,"write_date":"9999-12-31 23:59:59+00:00x"}', 400),
    ("odoo", b'{"_model":"crm.lead","_id":1,"write_date":"0001-01-01 00:00:00+05:00"}', 400),
    (
        "clinchpad",
        b'{"activity":{"type":"x","created_at":"0001-01-01T00:00:00+05:00"},"lead":{"_id":"x"}}',
        400,
    ),
    ("clinchpad", b'{"activity":' * 3000 + b"1" + b"}" * 3000, 401),
    ("lagrowthmachine", b"[" * 5000 + b"]" * 5000, 200),
    ("lagrowthmachine", b'{"messageId":"1","leadId":"2","createdAt":1e999,"received":true}', 200),
]


@pytest.mark.parametrize(
    ("source", "body", "status"), _FOUND, ids=[f"{s}-{i}" for i, (s, _, _) in enumerate(_FOUND)]
)
def test_the_bodies_that_caused_5xx_are_refused(
    receiver: FuzzReceiver, source: str, body: bytes, status: int
) -> None:
    sign, _ = SOURCES[source]
    headers, query, signed = sign({"Content-Type": "application/json"}, "", body)
    before = receiver.store.inbox_depth()
    response = receiver.post(f"/webhooks/{source}{query}", headers, signed)
    assert response.status_code == status, response.text
    assert receiver.store.inbox_depth() == before  # LaGrowthMachine's is kept as already processed
    if status != 200:
        assert response.json()["error"] == ("bad_request" if status == 400 else "unauthorized")
