"""SalesforceConnector against respx route sets: what is sent and what comes back.

Payloads come from Salesforce's documentation (see fixtures/salesforce/README.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from connectors.salesforce import SalesforceConnector, SalesforceSettings
from connectors.salesforce.wire import CONCURRENCY_RETRY_SECONDS, EXHAUSTED_BLOCK_SECONDS
from sync_worker.canonical import CanonicalUpdate, StageKey
from sync_worker.connector import Connector
from sync_worker.errors import AuthError, ConfigError, PermanentError, TransientError
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.ratelimit import Limit, LocalRateLimiter

LOGIN = "https://login.salesforce.com"
INSTANCE = "https://yourInstance.my.salesforce.com"
API = f"{INSTANCE}/services/data/v62.0"
NOW = datetime(2026, 2, 4, 10, 0, 37, tzinfo=UTC)
USAGE = {"Sforce-Limit-Info": "api-usage=18/5000"}


FIXTURES = Path(__file__).parent / "fixtures" / "salesforce"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(REPO / "mappings")


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(assert_all_called=False)


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def make(router: respx.Router, mappings: Mappings) -> Callable[..., SalesforceConnector]:
    def build(limiter: LocalRateLimiter | None = None, **values: Any) -> SalesforceConnector:
        settings: dict[str, Any] = {
            "client_id": "3MVG9consumer",
            "client_secret": SecretStr("consumer-secret"),
            "refresh_token": SecretStr("5Aep861refresh"),
            **values,
        }
        return SalesforceConnector(
            SalesforceSettings(**settings),
            lambda: mappings,
            limiter=limiter,
            transport=httpx.MockTransport(router.handler),
            clock=lambda: NOW,
            sleep=lambda _: None,
        )

    return build


def mock_token(router: respx.Router) -> respx.Route:
    return serve(router, "POST", f"{LOGIN}/services/oauth2/token", fixture("token_refresh.json"))


def serve(router: respx.Router, method: str, url: str, body: Any) -> respx.Route:
    """``url`` answers 200 with ``body`` and the limit header, as every Salesforce answer has it."""
    answer = httpx.Response(200, json=body, headers=USAGE)
    return router.route(method=method, url=url).mock(return_value=answer)


def mock_deleted(router: respx.Router) -> tuple[respx.Route, respx.Route]:
    """``deleted/`` answers the documented example; ``queryAll`` finds the first id in the recycle bin."""
    deleted = serve(router, "GET", f"{API}/sobjects/Opportunity/deleted/", fixture("deleted.json"))
    row = {**fixture("query_page2.json")["records"][0], "IsDeleted": True}
    return deleted, serve(router, "GET", f"{API}/queryAll", {"totalSize": 1, "done": True, "records": [row]})


def form_of(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


def test_it_is_a_connector(make: Callable[..., SalesforceConnector]) -> None:
    assert isinstance(make(), Connector)


# -- auth ------------------------------------------------------------------------------------


def test_refresh_grant_then_calls_go_to_the_instance_url_with_the_bearer_token(
    router: respx.Router, make: Callable[..., SalesforceConnector]
) -> None:
    token = mock_token(router)
    stages = serve(router, "GET", f"{API}/query", {"totalSize": 0, "done": True, "records": []})
    connector = make()
    assert connector.list_stages() == []

    sent = form_of(token.calls.last.request)
    assert sent == {
        "grant_type": "refresh_token",
        "refresh_token": "5Aep861refresh",
        "client_id": "3MVG9consumer",
        "client_secret": "consumer-secret",
    }
    request = stages.calls.last.request
    assert request.url.host == "yourinstance.my.salesforce.com"
    assert request.headers["Authorization"] == f"Bearer {fixture('token_refresh.json')['access_token']}"
    assert "FROM OpportunityStage" in request.url.params["q"]
    # The identity URL names the integration user: its writes are the service's own.
    assert connector.own_user_id() == "005xx000001SwiUAAS"


def test_a_401_invalid_session_gets_a_new_token_once_and_repeats_the_call(
    router: respx.Router, make: Callable[..., SalesforceConnector]
) -> None:
    token = mock_token(router)
    query = router.get(f"{API}/query").mock(
        side_effect=[
            httpx.Response(401, json=fixture("invalid_session.json")),
            httpx.Response(200, json={"totalSize": 0, "done": True, "records": []}, headers=USAGE),
        ]
    )
    make().list_stages()
    assert token.call_count == 2
    assert query.call_count == 2


def test_a_static_session_refused_is_an_auth_error(
    router: respx.Router, make: Callable[..., SalesforceConnector]
) -> None:
    router.get(f"{API}/query").mock(return_value=httpx.Response(401, json=fixture("invalid_session.json")))
    connector = make(refresh_token=None, access_token=SecretStr("00D!session"), instance_url=INSTANCE)
    with pytest.raises(AuthError) as caught:
        connector.list_stages()
    assert "00D!session" not in str(caught.value)


def test_a_refused_refresh_token_is_an_auth_error_without_the_secret(
    router: respx.Router, make: Callable[..., SalesforceConnector]
) -> None:
    router.post(f"{LOGIN}/services/oauth2/token").mock(
        return_value=httpx.Response(
            400, json={"error": "invalid_grant", "error_description": "expired access/refresh token"}
        )
    )
    with pytest.raises(AuthError, match="invalid_grant") as caught:
        make().list_stages()
    assert "5Aep861refresh" not in str(caught.value)
    assert "5Aep861refresh" not in repr(make())


def test_jwt_bearer_flow_signs_the_documented_claims_with_rs256(
    router: respx.Router, make: Callable[..., SalesforceConnector]
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    token = mock_token(router)
    serve(router, "GET", f"{API}/query", {"totalSize": 0, "done": True, "records": []})
    make(
        refresh_token=None, client_secret=None, private_key=SecretStr(pem), username="sync@acme.com"
    ).list_stages()

    sent = form_of(token.calls.last.request)
    assert sent["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    claims = jwt.decode(
        sent["assertion"],
        key.public_key(),
        algorithms=["RS256"],
        audience=LOGIN,
        options={"verify_exp": False},
    )
    assert (claims["iss"], claims["sub"]) == ("3MVG9consumer", "sync@acme.com")
    assert claims["exp"] == int(NOW.timestamp()) + 180


def test_no_credentials_is_a_config_error(make: Callable[..., SalesforceConnector]) -> None:
    with pytest.raises(ConfigError, match="SYNC_SALESFORCE__"):
        make(refresh_token=None)


def test_an_unusable_private_key_is_a_config_error_without_the_key(
    router: respx.Router, make: Callable[..., SalesforceConnector]
) -> None:
    connector = make(refresh_token=None, private_key=SecretStr("not-a-pem-key"), username="u@acme.com")
    with pytest.raises(ConfigError, match="PRIVATE_KEY") as caught:
        connector.list_stages()
    assert "not-a-pem-key" not in str(caught.value)


# -- pulls -----------------------------------------------------------------------------------


def test_pull_follows_next_records_url_and_keeps_the_last_systemmodstamp_as_cursor(
    router: respx.Router, make: Callable[..., SalesforceConnector]
) -> None:
    mock_token(router)
    first = serve(router, "GET", f"{API}/query", fixture("query_page1.json"))
    more = serve(router, "GET", f"{API}/query/01gRO0000016PIAYA2-2", fixture("query_page2.json"))
    pages = list(make(query_batch_size=500).pull_changes("opportunities", "2026-02-01T10:00:00Z"))

    soql = first.calls.last.request.url.params["q"]
    assert "WHERE SystemModstamp >= 2026-02-01T10:00:00Z ORDER BY SystemModstamp, Id" in soql
    assert "CurrencyIsoCode" not in soql
    assert first.calls.last.request.headers["Sforce-Query-Options"] == "batchSize=500"
    assert more.calls.last.request.url.query == b""
    assert [(len(p.records), p.cursor, p.done) for p in pages] == [
        (2, "2026-02-01T10:15:31.000Z|006xx000004TmiRAAS", False),
        (1, "2026-02-02T08:00:01.250Z|006xx000004TmiSAAS", True),
    ]
    generator, burlington = pages[0].records
    assert (generator.stage, generator.status, generator.company) == (
        StageKey.PROSPECT,
        "open",
        "Edge Communications",
    )
    assert generator.amount == Decimal("75000.0")
    assert generator.change_source == "005xx000001SvogAAC"
    assert burlington.stage is StageKey.PROPOSAL and burlington.company is None
    won = pages[1].records[0]
    assert (won.stage, won.status) == (StageKey.WON, "won")


def test_resuming_drops_what_the_cursor_already_covers(
    router: respx.Router, make: Callable[..., SalesforceConnector]
) -> None:
    mock_token(router)
    both = fixture("query_page1.json")["records"] + fixture("query_page2.json")["records"]
    query = serve(router, "GET", f"{API}/query", {"totalSize": 3, "done": True, "records": both})
    (page,) = make().pull_changes("opportunities", "2026-02-01T10:15:31.000Z|006xx000004TmiRAAS")

    assert "SystemModstamp >= 2026-02-01T10:15:31Z" in query.calls.last.request.url.params["q"]
    assert [r.external_id for r in page.records] == ["006xx000004TmiSAAS"]
    assert page.cursor == "2026-02-02T08:00:01.250Z|006xx000004TmiSAAS"


def test_overlapping_deleted_windows_report_a_deletion_once(
    router: respx.Router, make: Callable[..., SalesforceConnector]
) -> None:
    mock_token(router)
    deleted, query_all = mock_deleted(router)
    (page,) = make().pull_changes("opportunities_deleted", "2026-02-03T22:07:00.000Z|006xx000004TmiSAAS")

    assert deleted.calls.last.request.url.params["start"] == "2026-02-03T22:07:00+00:00"
    assert [r.external_id for r in page.records] == ["006xx000004TmiTAAS"]
    assert "'006xx000004TmiSAAS'" not in query_all.calls.last.request.url.params["q"]


def test_a_malformed_cursor_is_permanent(make: Callable[..., SalesforceConnector]) -> None:
    with pytest.raises(PermanentError, match="cursor"):
        list(make().pull_changes("opportunities", "yesterday"))


def test_deleted_opportunities_from_get_deleted_with_minute_windows(
    router: respx.Router, make: Callable[..., SalesforceConnector]
) -> None:
    mock_token(router)
    deleted, query_all = mock_deleted(router)
    pages = list(make().pull_changes("opportunities_deleted", "2026-02-03T21:59:45Z"))

    params = deleted.calls.last.request.url.params
    assert (params["start"], params["end"]) == ("2026-02-03T21:59:00+00:00", "2026-02-04T10:00:00+00:00")
    assert b"%2B00%3A00" in deleted.calls.last.request.url.query
    soql = query_all.calls.last.request.url.params["q"]
    assert "WHERE Id IN ('006xx000004TmiSAAS', '006xx000004TmiTAAS')" in soql
    assert len(pages) == 1 and pages[0].done
    assert pages[0].cursor == "2026-02-04T10:00:00.000Z"
    recycled, purged = pages[0].records
    assert (recycled.external_id, recycled.status, recycled.title) == (
        "006xx000004TmiSAAS",
        "deleted",
        "United Oil Refinery Generators",
    )
    assert recycled.updated_at == datetime(2026, 2, 3, 22, 7, 19, tzinfo=UTC)
    # Gone from the recycle bin too: only the id and the time are known.
    assert (purged.external_id, purged.status, purged.stage) == ("006xx000004TmiTAAS", "deleted", None)
    assert purged.unmapped is not None


def test_a_cursor_past_the_delete_log_scans_the_recycle_bin_and_drops_repeats(
    router: respx.Router, make: Callable[..., SalesforceConnector]
) -> None:
    mock_token(router)
    _, query_all = mock_deleted(router)
    pages = list(make().pull_changes("opportunities_deleted", "2026-01-01T00:00:00Z"))

    scan, detail = (call.request.url.params["q"] for call in query_all.calls)
    assert "WHERE IsDeleted = true AND SystemModstamp >= 2026-01-01T00:00:00Z" in scan
    assert "'006xx000004TmiSAAS'" not in detail  # already found by the scan
    ids = [r.external_id for page in pages for r in page.records]
    assert ids == ["006xx000004TmiSAAS", "006xx000004TmiTAAS"]
    assert pages[-1].cursor == "2026-02-04T10:00:00.000Z"


# -- pushes ----------------------------------------------------------------------------------


def update(key: str, external_id: str | None, **fields: Any) -> CanonicalUpdate:
    return CanonicalUpdate(
        target="salesforce", idempotency_key=key, origin="hubspot", external_id=external_id, **fields
    )


def test_composite_partial_failure_is_reported_item_by_item(
    router: respx.Router, make: Callable[..., SalesforceConnector]
) -> None:
    mock_token(router)
    patch = serve(router, "PATCH", f"{API}/composite/sobjects", fixture("composite_partial.json"))
    results = make().apply_updates(
        [
            update("a", "006xx000004TmiQAAS", stage=StageKey.NEGOTIATION, amount=Decimal("1200.50")),
            update("b", "006xx000003DGb2999", status="won"),
            update("c", "006xx000004TmiRAAS", status="deleted"),
        ]
    )
    body = json.loads(patch.calls.last.request.content)
    assert body == {
        "allOrNone": False,
        "records": [
            {
                "attributes": {"type": "Opportunity"},
                "id": "006xx000004TmiQAAS",
                "StageName": "Negotiation/Review",
                "Amount": 1200.5,
            },
            {"attributes": {"type": "Opportunity"}, "id": "006xx000003DGb2999", "StageName": "Closed Won"},
        ],
    }
    assert [(r.idempotency_key, r.ok, r.retryable) for r in results] == [
        ("a", True, False),
        ("b", False, False),
        ("c", False, False),
    ]
    assert results[1].error is not None and "MALFORMED_ID" in results[1].error and "(Id)" in results[1].error
    assert results[2].error is not None and "deleting" in results[2].error


def test_writes_go_200_a_call_and_creates_are_posted(
    router: respx.Router, make: Callable[..., SalesforceConnector]
) -> None:
    mock_token(router)

    def answer(request: httpx.Request) -> httpx.Response:
        records = json.loads(request.content)["records"]
        return httpx.Response(
            200,
            json=[{"id": r.get("id", "006xx000009NewAAA"), "success": True, "errors": []} for r in records],
        )

    patch = router.patch(f"{API}/composite/sobjects").mock(side_effect=answer)
    post = router.post(f"{API}/composite/sobjects").mock(side_effect=answer)
    updates = [update(f"u{i}", f"006xx{i:010d}AAA", title=f"Deal {i}") for i in range(201)]
    updates.append(update("new", None, title="Fresh", stage=StageKey.QUALIFIED))
    results = make().apply_updates(updates)

    assert [len(json.loads(c.request.content)["records"]) for c in patch.calls] == [200, 1]
    created = json.loads(post.calls.last.request.content)["records"]
    assert created == [
        {
            "attributes": {"type": "Opportunity"},
            "Name": "Fresh",
            "StageName": "Needs Analysis",
            "CloseDate": "2026-03-06",
        }
    ]
    assert all(r.ok for r in results) and results[-1].external_id == "006xx000009NewAAA"


def test_a_leak_flag_needs_the_flag_field(
    router: respx.Router, make: Callable[..., SalesforceConnector]
) -> None:
    from sync_worker.canonical import LeakFlag

    mock_token(router)
    patch = router.patch(f"{API}/composite/sobjects").mock(
        return_value=httpx.Response(200, json=[{"id": "006xx000004TmiQAAS", "success": True, "errors": []}])
    )
    flag = LeakFlag(rule="stalled", reason="no activity", stage=StageKey.PROPOSAL, days_in_stage=40)
    unset = make().apply_updates([update("f", "006xx000004TmiQAAS", flag=flag)])
    assert not unset[0].ok and unset[0].error is not None and "FLAG_FIELD" in unset[0].error
    assert patch.call_count == 0
    done = make(flag_field="Leak__c").apply_updates([update("f", "006xx000004TmiQAAS", flag=flag)])
    assert done[0].ok
    record = json.loads(patch.calls.last.request.content)["records"][0]
    assert record["Leak__c"] == "stalled in proposal for 40 days: no activity"


# -- limits ----------------------------------------------------------------------------------


def limiter() -> LocalRateLimiter:
    from connectors.salesforce.wire import read_limits

    return LocalRateLimiter({"default": Limit(100_000, 86_400.0)}, reader=read_limits, sleep=lambda _: None)


@pytest.mark.parametrize(
    ("usage", "wait", "blocked"),
    [
        ("api-usage=5000/5000", EXHAUSTED_BLOCK_SECONDS, EXHAUSTED_BLOCK_SECONDS),
        ("api-usage=120/5000", CONCURRENCY_RETRY_SECONDS, 0.0),
    ],
)
def test_403_request_limit_exceeded_is_a_rate_limit_not_an_auth_failure(
    router: respx.Router, make: Callable[..., SalesforceConnector], usage: str, wait: float, blocked: float
) -> None:
    mock_token(router)
    query = router.get(f"{API}/query").mock(
        return_value=httpx.Response(
            403, json=fixture("limit_exceeded.json"), headers={"Sforce-Limit-Info": usage}
        )
    )
    shared = limiter()
    with pytest.raises(TransientError) as caught:
        make(limiter=shared).list_stages()
    assert caught.value.retry_after == wait
    assert caught.value.status == 429  # rate limited, whatever status carried it
    assert "403 REQUEST_LIMIT_EXCEEDED" in str(caught.value)
    assert not isinstance(caught.value, AuthError)
    assert query.call_count == 1  # handed back to the queue, not slept on
    # A used-up allocation stops every worker sharing the limiter; a concurrency refusal only this call.
    assert shared.try_acquire("default") == pytest.approx(blocked, abs=1.0)


def test_another_403_is_still_an_auth_error(
    router: respx.Router, make: Callable[..., SalesforceConnector]
) -> None:
    mock_token(router)
    router.get(f"{API}/query").mock(
        return_value=httpx.Response(
            403, json=[{"message": "insufficient access", "errorCode": "INSUFFICIENT_ACCESS"}]
        )
    )
    with pytest.raises(AuthError):
        make().list_stages()


def test_the_limit_header_of_every_answer_reaches_the_limiter(
    router: respx.Router, make: Callable[..., SalesforceConnector]
) -> None:
    mock_token(router)
    router.get(f"{API}/query").mock(
        side_effect=[
            httpx.Response(
                200,
                json={"totalSize": 0, "done": True, "records": []},
                headers={"Sforce-Limit-Info": "api-usage=4999/5000"},
            ),
            httpx.Response(
                200,
                json={"totalSize": 0, "done": True, "records": []},
                headers={"Sforce-Limit-Info": "api-usage=5000/5000"},
            ),
        ]
    )
    shared = limiter()
    connector = make(limiter=shared)
    connector.list_stages()
    assert shared.try_acquire("default") == 0.0
    connector.list_stages()
    assert shared.try_acquire("default") == pytest.approx(EXHAUSTED_BLOCK_SECONDS, abs=1.0)


@pytest.mark.redis
def test_a_used_up_allocation_seen_by_one_worker_holds_back_another_through_redis(
    router: respx.Router, make: Callable[..., SalesforceConnector]
) -> None:
    import redis

    from connectors.salesforce import SPEC
    from sync_worker.ratelimit import RedisRateLimiter
    from tests.conftest import REDIS_SERVER, service_unavailable

    client = redis.Redis.from_url(f"{REDIS_SERVER}/12")
    try:
        client.ping()
    except redis.ConnectionError:
        service_unavailable(f"Redis at {REDIS_SERVER} does not answer")
    client.flushdb()
    try:
        section = SalesforceSettings(client_id="3MVG9consumer", refresh_token=SecretStr("5Aep861refresh"))

        def shared() -> RedisRateLimiter:
            return RedisRateLimiter(
                client, "salesforce-test", SPEC.limits(section), reader=SPEC.read_limits, max_wait=1.0
            )

        mock_token(router)
        empty = {"totalSize": 0, "done": True, "records": []}
        router.get(f"{API}/query").mock(
            return_value=httpx.Response(200, json=empty, headers={"Sforce-Limit-Info": "api-usage=5000/5000"})
        )
        first, second = make(limiter=shared()), make(limiter=shared())
        first.list_stages()  # its answer says the org has used its whole allocation
        with pytest.raises(TransientError) as caught:
            second.list_stages()
        assert caught.value.retry_after == pytest.approx(EXHAUSTED_BLOCK_SECONDS, abs=2.0)
        assert client.ttl("sync-worker:rl:salesforce-test:default:blocked") > 0
    finally:
        client.flushdb()
        client.close()
