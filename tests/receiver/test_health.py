"""Probes, metrics and logs: what ops see, and that no secret or signature leaks into it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from sync_worker.broker import build_broker
from sync_worker.logs import RedactingFilter
from sync_worker.receiver import build_webhook_sources
from sync_worker.receiver.access import ACCESS_LOGGER
from sync_worker.settings import Settings
from sync_worker.store import SyncStore
from tests.receiver.conftest import (
    CLOSED_REDIS_URL,
    HUBSPOT_SECRET,
    LGM_SECRET,
    PD_PASSWORD,
    PD_USER,
    Harness,
    fixture_bytes,
    make_settings,
)
from tests.receiver.test_webhooks import HUBSPOT_BODY, basic, hubspot_headers


def test_healthz_is_up(harness: Harness) -> None:
    response = harness.client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_all_ok_with_the_stub_broker(harness: Harness) -> None:
    response = harness.client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"store": "ok", "schema": "ok", "broker": "ok", "mappings": "ok"}


def test_readyz_fails_while_the_schema_is_not_at_head(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    # Given a store the receiver can reach but that was never migrated
    empty = SyncStore(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        response = make_harness(the_store=empty).client.get("/readyz")
    finally:
        empty.close()
    # Then readiness fails on the schema, with the command that fixes it
    assert response.status_code == 503
    assert response.json()["failed"] == ["schema"]
    assert "sync-worker db upgrade" in response.json()["checks"]["schema"]


def test_readyz_names_the_broker_when_redis_is_down(make_harness: Callable[..., Harness]) -> None:
    down = build_broker(make_settings(redis_url=CLOSED_REDIS_URL))
    response = make_harness(broker=down).client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["broker"]
    assert response.json()["checks"]["broker"].startswith("unavailable")
    down.close()


def test_readyz_names_missing_mappings(make_harness: Callable[..., Harness]) -> None:
    response = make_harness(mappings_holder=None).client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["mappings"]


def test_metrics_count_requests_events_latency_and_depth(harness: Harness) -> None:
    url = "http://testserver/webhooks/hubspot"
    ok = harness.client.post(url, content=HUBSPOT_BODY, headers=hubspot_headers(url, HUBSPOT_BODY))
    harness.client.post(url, content=HUBSPOT_BODY)  # unsigned: 401
    stored = ok.json()["accepted"]
    text = harness.client.get("/metrics").text
    assert 'sync_worker_webhook_requests_total{outcome="accepted",source="hubspot"} 1.0' in text
    assert 'sync_worker_webhook_requests_total{outcome="unauthorized",source="hubspot"} 1.0' in text
    assert f'sync_worker_webhook_events_total{{outcome="stored",source="hubspot"}} {float(stored)}' in text
    assert 'sync_worker_webhook_latency_seconds_count{source="hubspot"} 2.0' in text
    assert f"sync_worker_inbox_depth {float(stored)}" in text


def test_no_secret_or_signature_in_logs_or_answers(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = "http://testserver/webhooks/hubspot"
    signed = hubspot_headers(url, HUBSPOT_BODY)
    answers = [
        harness.client.post(url, content=HUBSPOT_BODY, headers=signed),
        harness.client.post(url, content=HUBSPOT_BODY + b" ", headers=signed),
        harness.client.post(
            f"/webhooks/lagrowthmachine?token={LGM_SECRET}",
            content=fixture_bytes("lagrowthmachine", "webhook_reply.json"),
        ),
        harness.client.post("/webhooks/lagrowthmachine?token=guess-123", content=b"{}"),
        harness.client.post("/webhooks/pipedrive", content=b"{}", headers=basic(PD_USER, PD_PASSWORD + "x")),
    ]
    assert [a.status_code for a in answers] == [200, 401, 200, 401, 401]
    # The test's own httpx client logs its request URLs; only the server side is under test.
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in server_side)
    everything = logged + "".join(a.text for a in answers)
    for secret in (LGM_SECRET, "guess-123", PD_PASSWORD, HUBSPOT_SECRET, signed["X-HubSpot-Signature-v3"]):
        assert secret not in everything
    access = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    assert len(access) == len(answers)
    assert '"POST /webhooks/lagrowthmachine" 200' in access[2].getMessage()
    assert access[2].__dict__["http_status"] == 200


def test_build_webhook_sources_skips_and_logs_unconfigured(
    mappings: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    sources = build_webhook_sources(make_settings(), mappings)  # type: ignore[arg-type]
    assert sorted(sources) == ["lagrowthmachine", "pipedrive"]
    assert "hubspot disabled: no credentials set" in caplog.text
    for source in sources.values():
        source.close()  # type: ignore[attr-defined]
    assert build_webhook_sources(Settings(), mappings) == {}  # type: ignore[arg-type]


def test_redacting_filter_masks_a_query_token_uvicorn_would_print() -> None:
    # Belt and braces for libraries that log a request line: the root filter still masks it.
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '"%s %s"',
        ("POST", f"/webhooks/lagrowthmachine?token={LGM_SECRET}"),
        None,
    )
    RedactingFilter([LGM_SECRET]).filter(record)
    assert LGM_SECRET not in record.getMessage()


def test_serve_refuses_zero_workers() -> None:
    from sync_worker.errors import ConfigError
    from sync_worker.receiver import serve

    with pytest.raises(ConfigError, match="workers"):
        serve(make_settings(), "127.0.0.1", 0, workers=0)


@pytest.mark.redis
def test_build_app_wires_everything_from_settings(
    tmp_path: object, migrated_template: object, redis_client: object
) -> None:
    import asyncio
    import shutil
    from pathlib import Path

    from sync_worker.receiver import build_app
    from tests.receiver.conftest import SyncClient

    db = Path(str(tmp_path)) / "app.db"
    shutil.copyfile(str(migrated_template), db)
    app = build_app(make_settings(database_url=f"sqlite:///{db}"))
    client = SyncClient(app)
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = fixture_bytes("lagrowthmachine", "webhook_reply.json")
    assert client.post(f"/webhooks/lagrowthmachine?token={LGM_SECRET}", content=body).json()["queued"] == 1
    assert client.post("/webhooks/hubspot", content=b"[]").status_code == 404  # no HubSpot token: disabled

    async def cycle() -> None:
        async with app.router.lifespan_context(app):
            pass

    asyncio.run(cycle())  # shutdown stops the mappings reloader and closes the store
