"""Secrets never leak: a full sync with recognisable credentials, every output searched for them.

Given the three sandboxes seeded and served with recognisable tokens, a full sync (pulls of every
stream, pushes, leak scan, flag write-back), failures (a refused token, injected 5xx), the receiver
(good and badly signed webhooks, ``/metrics``, ``/readyz``) and the report in every format: no
credential, nor its Basic-auth encoding, appears in any log record (all loggers, DEBUG, with
arguments and tracebacks), any error message or repr, the report output or the metric text.
"""

from __future__ import annotations

import base64
import io
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest
from pydantic import AnyHttpUrl, SecretStr

import connectors.hubspot as hubspot_connector
import connectors.lagrowthmachine as lgm_connector
import connectors.pipedrive as pipedrive_connector
from connectors.hubspot.settings import HubSpotSettings
from connectors.lagrowthmachine.settings import LaGrowthMachineSettings
from connectors.pipedrive.settings import PipedriveSettings
from sync_worker.engine import EngineConfig, SyncService
from sync_worker.errors import SyncWorkerError
from sync_worker.leaks import scan_leaks
from sync_worker.logs import configure_logging
from sync_worker.mappings import Mappings, MappingsHolder
from sync_worker.report import build_report, render_csv, render_html, render_json, render_table
from sync_worker.sandbox.common import FaultConfig, ServerHandle, serve_in_thread
from sync_worker.sandbox.hubspot import HubSpotSandbox, HubSpotSandboxConfig
from sync_worker.sandbox.hubspot import create_app as hubspot_app
from sync_worker.sandbox.lagrowthmachine import LaGrowthMachineSandbox
from sync_worker.sandbox.lagrowthmachine import create_app as lgm_app
from sync_worker.sandbox.pipedrive import PipedriveSandbox
from sync_worker.sandbox.pipedrive import create_app as pipedrive_app
from sync_worker.sandbox.seed import seed_sandboxes
from sync_worker.settings import Settings, default_mappings_dir, describe_settings
from sync_worker.store import SyncStore
from tests.receiver.conftest import Harness, make_connectors
from tests.receiver.test_webhooks import basic, hubspot_headers

pytestmark = pytest.mark.slow

HS_TOKEN = "pat-na1-SEKRET-HS-4f1c2e9a"
HS_CLIENT_SECRET = "SEKRET-HS-CLIENT-77aa"
PD_TOKEN = "SEKRETpdtoken9b8c7d6e5f"
PD_HOOK_PASSWORD = "SEKRET-pd-hook-pw-31"
LGM_KEY = "SEKRET-lgm-key-0d0e"
LGM_HOOK_SECRET = "SEKRET-lgm-hook-9z"
SECRETS = (HS_TOKEN, HS_CLIENT_SECRET, PD_TOKEN, PD_HOOK_PASSWORD, LGM_KEY, LGM_HOOK_SECRET)


def _needles() -> list[str]:
    found = list(SECRETS)
    found.append(base64.b64encode(f"sync-worker:{PD_HOOK_PASSWORD}".encode()).decode())
    found.append("SEKRET")  # every credential above carries it
    return found


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        self.texts.append(text + " " + " ".join(f"{k}={v!r}" for k, v in vars(record).items()))


@pytest.fixture
def capture_logs() -> Iterator[_Everything]:
    handler = _Everything()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


@pytest.fixture
def boxes() -> Iterator[tuple[HubSpotSandbox, PipedriveSandbox, LaGrowthMachineSandbox, list[ServerHandle]]]:
    hubspot = HubSpotSandbox(
        HubSpotSandboxConfig(private_app_tokens=frozenset({HS_TOKEN}), client_secret=HS_CLIENT_SECRET)
    )
    pipedrive = PipedriveSandbox(api_token=PD_TOKEN)
    lgm = LaGrowthMachineSandbox(api_key=LGM_KEY)
    seed_sandboxes(hubspot, pipedrive, lgm, deals=40, seed=5, now=datetime.now(UTC))
    handles = [
        serve_in_thread(hubspot_app(hubspot)),
        serve_in_thread(pipedrive_app(pipedrive)),
        serve_in_thread(lgm_app(lgm)),
    ]
    try:
        yield hubspot, pipedrive, lgm, handles
    finally:
        for handle in handles:
            handle.stop()
        for box in (hubspot, pipedrive, lgm):
            box.close()


def _settings(handles: list[ServerHandle], **override: Any) -> Settings:
    return Settings(
        _env_file=None,
        hubspot=HubSpotSettings(
            token=SecretStr(override.get("hs_token", HS_TOKEN)),
            client_secret=SecretStr(HS_CLIENT_SECRET),
            base_url=AnyHttpUrl(handles[0].url),
        ),
        pipedrive=PipedriveSettings(
            api_token=SecretStr(PD_TOKEN),
            base_url=AnyHttpUrl(handles[1].url),
            webhook_user="sync-worker",
            webhook_password=SecretStr(PD_HOOK_PASSWORD),
        ),
        lagrowthmachine=LaGrowthMachineSettings(
            api_key=SecretStr(LGM_KEY),
            base_url=AnyHttpUrl(handles[2].url + "/flow"),
            webhook_secret=SecretStr(LGM_HOOK_SECRET),
        ),
    )


def test_no_secret_in_logs_errors_reports_or_metrics(
    boxes: Any, store: SyncStore, mappings: Mappings, capture_logs: _Everything
) -> None:
    hubspot, pipedrive, lgm, handles = boxes
    settings = _settings(handles)
    # The production log set-up (JSON lines, so ``extra`` fields are written too), at DEBUG
    written = io.StringIO()
    installed = configure_logging(
        settings.model_copy(update={"log_format": "json", "log_level": "DEBUG"}), stream=written
    )
    logging.getLogger().handlers.insert(0, capture_logs)  # sees each record before the redacting filter
    outputs: list[str] = [repr(settings), str(settings), repr(describe_settings(settings))]

    def sleepless(seconds: float) -> None:
        time.sleep(min(seconds, 0.05))

    connectors: dict[str, Any] = {
        "hubspot": hubspot_connector.from_settings(settings, mappings, sleep=sleepless),
        "pipedrive": pipedrive_connector.from_settings(settings, mappings, sleep=sleepless),
        "lagrowthmachine": lgm_connector.from_settings(settings, mappings, sleep=sleepless),
    }
    outputs += [repr(c) for c in connectors.values()]
    service = SyncService(store, mappings, connectors, config=EngineConfig(coalesce_window=timedelta(0)))
    errors: list[BaseException] = []
    try:
        # A full sync: every stream pulled, every target pushed, a leak scan and its write-backs
        for source, streams in {
            "pipedrive": ("deals", "deals_deleted"),
            "hubspot": ("deals", "deals_archived"),
            "lagrowthmachine": ("lead_statuses", "replies"),
        }.items():
            for stream in streams:
                try:
                    outputs.append(repr(service.poll(source, stream, full=True)))
                except SyncWorkerError as exc:
                    errors.append(exc)
        scan = scan_leaks(store, mappings.model, now=datetime.now(UTC) + timedelta(days=1), alerts=False)
        outputs.append(repr(scan))
        for target in ("hubspot", "pipedrive", "lagrowthmachine"):
            outputs.append(repr(service.push(target)))
        # Failures: injected 5xx, then a refused token
        for box in (hubspot, pipedrive, lgm):
            box.faults.config = FaultConfig(error_rate=1.0, seed=1)
        for source in ("pipedrive", "hubspot", "lagrowthmachine"):
            stream = "deals" if source != "lagrowthmachine" else "replies"
            try:
                service.poll(source, stream, full=True)
            except SyncWorkerError as exc:
                errors.append(exc)
        for box in (hubspot, pipedrive, lgm):
            box.faults.config = FaultConfig()
        wrong = hubspot_connector.from_settings(
            _settings(handles, hs_token="pat-na1-SEKRET-WRONG-0000"), mappings
        )
        try:
            list(wrong.pull_changes("deals", None))
        except SyncWorkerError as exc:
            errors.append(exc)
        finally:
            wrong.close()
        assert len(errors) >= 4, errors
        # The report in every format
        report = build_report(store, mappings.model, datetime.now(UTC))
        outputs += [
            render_table(report),
            render_csv(report),
            render_json(report),
            render_html(report, mappings.model),
        ]
        assert report is not None
    finally:
        for connector in connectors.values():
            connector.close()
    # The receiver: good and bad webhooks, probes and metrics
    holder = MappingsHolder(default_mappings_dir(), interval=60.0)
    from dramatiq.brokers.stub import StubBroker

    harness = Harness(settings, store, StubBroker(), make_connectors(settings, mappings), holder)
    try:
        url = "http://testserver/webhooks/pipedrive"
        body = b'{"meta": {"action": "change", "entity": "deal"}, "data": {"id": 1}}'
        outputs.append(
            harness.client.post(url, content=body, headers=basic("sync-worker", PD_HOOK_PASSWORD)).text
        )
        outputs.append(harness.client.post(url, content=body, headers=basic("sync-worker", "nope")).text)
        hs_url = "http://testserver/webhooks/hubspot"
        outputs.append(
            harness.client.post(hs_url, content=b"[]", headers=hubspot_headers(hs_url, b"[]")).text
        )
        lgm_url = f"http://testserver/webhooks/lagrowthmachine?token={LGM_HOOK_SECRET}"
        outputs.append(harness.client.post(lgm_url, content=b"{not json").text)
        outputs.append(harness.client.get("/readyz").text)
        outputs.append(harness.client.get("/metrics").text)
    finally:
        harness.close()
    outputs.append(generate_latest(REGISTRY).decode())
    logging.getLogger().removeHandler(installed)
    # Then no secret shows anywhere
    ours = [t for t in capture_logs.texts if t.startswith(("sync_worker", "connectors"))]
    texts = {
        "log output": written.getvalue().splitlines(),
        "records of the project's loggers (before redaction)": ours,
        "errors": [f"{type(e).__name__}: {e} {e!r} {e.__cause__!r}" for e in errors],
        "outputs": outputs,
    }
    assert len(written.getvalue().splitlines()) > 10 and len(ours) > 5
    for where, items in texts.items():
        for text in items:
            for needle in _needles():
                assert needle not in text, f"{where}: a credential appears in: {text[:300]}"
