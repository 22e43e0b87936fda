"""The queue on a real Redis: redelivered messages write once; worker processes share one rate limit.

Redis db 13 (flushed around each test); the HubSpot API is the project's sandbox server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dramatiq
import httpx
import pytest
import redis

from sync_worker.actors import LocalPushGuard, configure_actors, poll_source, process_inbox_event
from sync_worker.broker import build_broker, install_broker
from sync_worker.canonical import StageKey, WebhookEvent
from sync_worker.mappings import load_mappings
from sync_worker.ratelimit import KEY_PREFIX
from sync_worker.sandbox.common import serve_in_thread
from sync_worker.sandbox.hubspot.app import create_app
from sync_worker.sandbox.hubspot.state import HubSpotSandbox, HubSpotSandboxConfig
from sync_worker.settings import Settings
from sync_worker.store import SyncStore
from tests.engine.fakes import T0, FakeClock
from tests.engine.world import World, deal
from tests.runtime.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
HS_TOKEN = "pat-na1-runtime-test-token"
LIMIT_PER_10S = 20
REQUESTS = 30


def wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.mark.redis
def test_a_message_delivered_twice_writes_once(redis_client: redis.Redis, store: SyncStore) -> None:
    # Given a Pipedrive deal linked to a HubSpot deal, and one stage change accepted in the inbox
    world = World(store, load_mappings(ROOT / "mappings"), FakeClock(), coalesce_window=timedelta(0))
    world.linked_pair()
    world.pipedrive.by_payload["7"] = deal("pipedrive", "7", StageKey.MEETING, T0, change_source="app:9001")
    event = WebhookEvent(
        source="pipedrive",
        dedupe_key="v2:abc",
        object_type="deal",
        object_id="7",
        action="change",
        occurred_at=T0,
        raw={"meta": {"id": "abc"}, "data": {"id": 7}, "previous": {"stage_id": 1}},
        change_source="app:9001",
    )
    (inbox_id,) = store.accept_events("pipedrive", [event]).new_ids
    broker = install_broker(build_broker(Settings(redis_url=REDIS_URL)))
    configure_actors(
        store,
        service=world.service,
        push_targets=("hubspot",),
        push_window=timedelta(milliseconds=50),
        push_guard=LocalPushGuard(),
    )
    # When the same message reaches Redis twice (a sweep racing the request) and two threads work
    process_inbox_event.send(inbox_id)
    process_inbox_event.send(inbox_id)
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        wait_for(lambda: len(world.hubspot.updates) >= 1, timeout=20)
        time.sleep(0.5)  # room for a wrong second write to show up
    finally:
        worker.stop()
        broker.close()
    # Then HubSpot received exactly one write, with the mapped stage
    (update,) = world.hubspot.updates
    assert (update.external_id, update.stage) == ("15", StageKey.MEETING)
    stored = store.get_inbox_event(inbox_id)
    assert stored is not None and stored.processed_at is not None


class RequestLog:
    """ASGI wrapper recording when each CRM API request reached the sandbox."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.times: list[float] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/crm/"):
            with self._lock:
                self.times.append(time.monotonic())
        await self.app(scope, receive, send)

    def max_in_window(self, window: float) -> int:
        with self._lock:
            return max_in_window(sorted(self.times), window)


def max_in_window(stamps: list[float], window: float) -> int:
    """The most stamps (sorted) inside any half-open interval of ``window`` seconds."""
    best, start = 0, 0
    for end, stamp in enumerate(stamps):
        while stamp - stamps[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.fixture
def hubspot_sandbox() -> Iterator[tuple[HubSpotSandbox, RequestLog, str]]:
    sandbox = HubSpotSandbox(
        HubSpotSandboxConfig(private_app_tokens=frozenset({HS_TOKEN}), rate_limit_per_10s=LIMIT_PER_10S)
    )
    log = RequestLog(create_app(sandbox))
    handle = serve_in_thread(log)
    try:
        yield sandbox, log, handle.url
    finally:
        handle.stop()
        sandbox.close()


@pytest.mark.redis
@pytest.mark.slow
def test_four_worker_processes_share_one_hubspot_limit(
    redis_client: redis.Redis,
    store_path: Path,
    hubspot_sandbox: tuple[HubSpotSandbox, RequestLog, str],
) -> None:
    sandbox, log, url = hubspot_sandbox
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "SYNC_REDIS_URL": REDIS_URL,
            "SYNC_DATABASE_URL": f"sqlite:///{store_path}",
            "SYNC_MAPPINGS_DIR": str(ROOT / "mappings"),
            "SYNC_HUBSPOT__TOKEN": HS_TOKEN,
            "SYNC_HUBSPOT__BASE_URL": url,
            "SYNC_HUBSPOT__RATE_LIMIT_PER_10S": str(LIMIT_PER_10S),
            "SYNC_LOG_LEVEL": "WARNING",
        }
    )
    # Given 30 polls queued, each one HubSpot API request (the archived-deals list is empty)
    broker = build_broker(Settings(redis_url=REDIS_URL))
    broker.declare_queue(poll_source.queue_name)
    for _ in range(REQUESTS):
        broker.enqueue(poll_source.message("hubspot", "deals_archived"))
    broker.close()
    # When four worker processes (one thread each) started by `sync-worker worker` drain them
    workers = subprocess.Popen(
        [sys.executable, "-m", "sync_worker.commands", "worker", "--processes", "4", "--threads", "1"],
        cwd=ROOT,
        env=env,
    )
    try:
        wait_for(
            lambda: len(log.times) >= REQUESTS or workers.poll() is not None, timeout=240
        )  # four processes booting on a busy 2-core machine (once over 120 s beside other suites)
    finally:
        workers.terminate()
        workers.wait(30)
    assert len(log.times) == REQUESTS, f"worker exited with {workers.returncode}"
    # Then the sandbox never answered 429, and no 10-second window held more than the limit
    assert sandbox.calls.by_status.get(429, 0) == 0, dict(sandbox.calls.by_status)
    # (arrival times include up to a second of scheduling delay between a grant and the request
    # reaching the server on this 2-core machine, so a 10 s window over arrivals could count a
    # request granted 10.5 s after another; the grant log below is checked over the full 10 s)
    assert log.max_in_window(9.0) <= LIMIT_PER_10S
    # And the shared grant log in Redis (Redis clock, immune to network delays) shows the budget
    # of 18 per 10 s binding: all 30 grants, never more than 18 in 10 s, so spread over > 10 s
    (key,) = redis_client.keys(f"{KEY_PREFIX}:hubspot-*:default")
    grants = redis_client.zrange(key, 0, -1, withscores=True)
    stamps = sorted(score for _, score in grants)
    assert len(stamps) == REQUESTS
    assert max_in_window(stamps, 10.0) <= 18
    assert stamps[-1] - stamps[0] >= 9.9, [round(t - stamps[0], 2) for t in stamps]
    # And that log was written by more than one worker process
    processes = {member.decode().rsplit("-", 1)[0] for member, _ in grants}
    assert len(processes) >= 2, processes
    assert httpx.get(f"{url}/_sandbox/calls").json()["by_status"].get("429") is None
