"""The workers' Prometheus series: per source and target, summed over the Dramatiq processes of
``sync-worker worker`` and served on its ``--metrics-port`` (prometheus_client multiprocess mode)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from sync_worker.actors import clear_actors, poll_source
from sync_worker.broker import build_broker, install_broker
from sync_worker.settings import Settings
from sync_worker.store import SyncStore
from tests.runtime.conftest import REDIS_URL
from tests.runtime.test_commands import hubspot_url  # noqa: F401 - the HubSpot sandbox fixture
from tests.runtime.test_startup import _free_port, _sync_worker


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.redis
def test_worker_processes_expose_per_source_series_on_the_metrics_port(
    store: SyncStore,
    store_path: Path,
    hubspot_url: str,  # noqa: F811
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    # Given `sync-worker worker` with two processes, HubSpot pointed at the sandbox
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SYNC_")},
        "SYNC_DATABASE_URL": f"sqlite:///{store_path}",
        "SYNC_REDIS_URL": REDIS_URL,
        "SYNC_HUBSPOT__TOKEN": "pat-sync-test",
        "SYNC_HUBSPOT__BASE_URL": hubspot_url,
    }
    worker = subprocess.Popen(
        [*_sync_worker(), "worker", "-p", "2", "-t", "1", "--metrics-port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    broker = install_broker(build_broker(Settings(redis_url=REDIS_URL)))
    try:
        # When a full pull and a poll of a stream that does not exist are queued
        poll_source.send("hubspot", "deals", True)
        poll_source.send("hubspot", "dealz")
        ok = ("sync_worker_polls_total", (("outcome", "ok"), ("source", "hubspot"), ("stream", "deals")))
        dead = ("sync_worker_dead_letters_total", (("queue", "poll"), ("system", "hubspot")))
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (ok in samples and dead in samples):
            time.sleep(0.5)
            try:
                samples = _samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text)
            except httpx.HTTPError:
                continue
    finally:
        broker.close()
        clear_actors()
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    # Then the worker's endpoint carries the per-source series of whichever process ran them
    assert samples.get(ok) == 1.0, sorted(samples)
    assert samples[("sync_worker_records_pulled_total", (("source", "hubspot"), ("stream", "deals")))] == 3.0
    error = ("sync_worker_polls_total", (("outcome", "error"), ("source", "hubspot"), ("stream", "dealz")))
    assert samples[error] == 1.0
    assert samples[("sync_worker_failures_total", (("operation", "poll"), ("system", "hubspot")))] == 1.0
    assert samples[dead] == 1.0
    last = (
        "sync_worker_last_success_timestamp_seconds",
        (("operation", "poll"), ("stream", "deals"), ("system", "hubspot")),
    )
    assert time.time() - 120 < samples[last] <= time.time()
    # And the store keeps the same runs for `status`
    runs = {row.name: row for row in store.list_activity("poll")}
    assert runs["hubspot/deals"].last_count == 3 and runs["hubspot/deals"].last_success_at is not None
    assert runs["hubspot/dealz"].failures == 1 and "unknown stream" in (
        runs["hubspot/dealz"].last_error or ""
    )
