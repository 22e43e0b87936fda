"""The scheduler's daily ``prepare_targets`` job creates the HubSpot deal properties the service writes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from sync_worker.actors import clear_actors, prepare_targets_job
from sync_worker.runtime import Runtime, build_runtime
from sync_worker.sandbox.common import serve_in_thread
from sync_worker.sandbox.hubspot import HubSpotSandbox, HubSpotSandboxConfig, create_app
from sync_worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "pat-na1-prepare-targets"


@pytest.fixture
def hubspot() -> Iterator[tuple[HubSpotSandbox, str]]:
    sandbox = HubSpotSandbox(HubSpotSandboxConfig(private_app_tokens=frozenset({TOKEN})))
    handle = serve_in_thread(create_app(sandbox))
    yield sandbox, handle.url
    handle.stop()
    sandbox.close()


@pytest.fixture
def runtime(hubspot: tuple[HubSpotSandbox, str], store_path: Path) -> Iterator[Runtime]:
    settings = Settings(
        _env_file=None,
        database_url=f"sqlite:///{store_path}",
        mappings_dir=ROOT / "mappings",
        hubspot={"token": TOKEN, "base_url": hubspot[1]},
    )
    built = build_runtime(settings, watch_mappings=False, shared_limits=False)
    yield built
    built.close()
    clear_actors()


def _deal_properties(sandbox: HubSpotSandbox) -> set[str]:
    return {p["name"] for p in sandbox.properties() if p["name"].startswith("sync_worker_")}


def test_the_job_creates_the_properties_once(
    stub_broker: StubBroker, runtime: Runtime, hubspot: tuple[HubSpotSandbox, str]
) -> None:
    sandbox, _ = hubspot
    assert _deal_properties(sandbox) == set()
    runtime.configure_actors()
    # When the scheduler's job runs on a worker
    worker = dramatiq.Worker(stub_broker, worker_timeout=50)
    worker.start()
    try:
        prepare_targets_job.send()
        stub_broker.join(prepare_targets_job.queue_name, timeout=30_000)
        worker.join()
    finally:
        worker.stop()
    # Then the leak-flag properties and the Pipedrive-id property exist in HubSpot
    names = _deal_properties(sandbox)
    assert "sync_worker_pipedrive_id" in names
    assert {"sync_worker_leak_status", "sync_worker_leak_reason"} <= names
    # And running it again creates nothing
    assert runtime.prepare_targets() == []
