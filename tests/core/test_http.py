"""The HTTP boundary: status table, retries honouring Retry-After, no secret in any message."""

from __future__ import annotations

import httpx
import pytest
import respx

from sync_worker.errors import AuthError, PermanentError, TransientError
from sync_worker.http import USER_AGENT, ApiClient, error_for_status, parse_retry_after

BASE = "https://api.example.test"


class _BearerAuth(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sleeps: list[float]) -> ApiClient:
    api = ApiClient("example", BASE, auth=_BearerAuth("s3cr3t-token"), max_attempts=4, sleep=sleeps.append)
    yield api  # type: ignore[misc]
    api.close()


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, TransientError),
        (500, TransientError),
        (503, TransientError),
        (401, AuthError),
        (403, AuthError),
        (400, PermanentError),
        (404, PermanentError),
        (422, PermanentError),
    ],
)
def test_status_table(status: int, kind: type[Exception]) -> None:
    assert type(error_for_status(status, "x")) is kind


def test_retry_after_seconds_and_date() -> None:
    assert parse_retry_after(httpx.Headers({"Retry-After": "7"})) == 7.0
    assert parse_retry_after(httpx.Headers({"x-ratelimit-reset": "2"})) == 2.0
    assert parse_retry_after(httpx.Headers({})) is None
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert parse_retry_after(httpx.Headers({"Retry-After": "Thu, 01 Jan 2026 00:00:30 GMT"}), now) == 30.0


@respx.mock
def test_sends_user_agent_and_auth(client: ApiClient) -> None:
    route = respx.get(f"{BASE}/things").respond(200, json={"ok": True})
    response = client.request("GET", "/things", params={"limit": 2})
    assert response.data == {"ok": True}
    sent = route.calls.last.request
    assert sent.headers["User-Agent"] == USER_AGENT
    assert sent.headers["Authorization"] == "Bearer s3cr3t-token"
    assert sent.url.params["limit"] == "2"


@respx.mock
def test_429_with_retry_after_waits_at_least_that_long(client: ApiClient, sleeps: list[float]) -> None:
    route = respx.get(f"{BASE}/x").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "3"}, json={"message": "slow down"}),
            httpx.Response(200, json={"n": 1}),
        ]
    )
    assert client.request("GET", "/x").data == {"n": 1}
    assert route.call_count == 2
    assert sleeps and sleeps[0] >= 3.0


@respx.mock
def test_429_without_retry_after_backs_off(client: ApiClient, sleeps: list[float]) -> None:
    respx.get(f"{BASE}/x").mock(side_effect=[httpx.Response(429), httpx.Response(200, json=[])])
    assert client.request("GET", "/x").data == []
    assert len(sleeps) == 1 and 0.0 <= sleeps[0] <= 0.5


@respx.mock
def test_5xx_then_success(client: ApiClient) -> None:
    route = respx.post(f"{BASE}/y").mock(
        side_effect=[httpx.Response(502), httpx.Response(503), httpx.Response(201, json={"id": 9})]
    )
    assert client.request("POST", "/y", json_body={"a": 1}).data == {"id": 9}
    assert route.call_count == 3
    assert route.calls.last.request.content == b'{"a":1}'


@respx.mock
def test_transient_gives_up_after_bounded_attempts(client: ApiClient) -> None:
    route = respx.get(f"{BASE}/z").respond(500, json={"message": "boom"})
    with pytest.raises(TransientError) as info:
        client.request("GET", "/z")
    assert route.call_count == 4
    assert info.value.status == 500
    assert isinstance(info.value.__cause__, httpx.HTTPStatusError)


@respx.mock
def test_timeouts_are_transient_and_chained(client: ApiClient) -> None:
    respx.get(f"{BASE}/slow").mock(side_effect=httpx.ReadTimeout("read timed out"))
    with pytest.raises(TransientError) as info:
        client.request("GET", "/slow")
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


@respx.mock
def test_401_is_auth_and_not_retried(client: ApiClient) -> None:
    route = respx.get(f"{BASE}/me").respond(401, json={"message": "Authentication credentials not found."})
    with pytest.raises(AuthError) as info:
        client.request("GET", "/me")
    assert route.call_count == 1
    assert "Authentication credentials not found." in str(info.value)


@respx.mock
def test_malformed_json_body_is_an_error(client: ApiClient) -> None:
    respx.get(f"{BASE}/bad").respond(200, content=b"{not json", headers={"Content-Type": "application/json"})
    with pytest.raises(TransientError, match="not JSON"):
        client.request("GET", "/bad")


@respx.mock
def test_no_secret_in_messages_or_repr(client: ApiClient) -> None:
    respx.get(f"{BASE}/leads").respond(400, json={"error": "bad request"})
    with pytest.raises(PermanentError) as info:
        client.request("GET", "/leads", params={"apikey": "s3cr3t-key"})
    text = str(info.value) + repr(client)
    assert "s3cr3t" not in text
    assert "/leads" in text
