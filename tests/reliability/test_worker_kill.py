"""A worker killed with SIGKILL in the middle of a sync: every change lands once, and fast.

Run on each broker (``SYNC_BROKER_URL``): a private Redis, and a private virtual host on the
machine's RabbitMQ (rate limits, locks and leases on the private Redis either way). Given N linked
Pipedrive/HubSpot deal pairs and N Pipedrive stage changes accepted into the inbox (from the
sandbox's real webhooks) with one ``process_inbox_event`` message each on the broker, a real worker
process (``python -m dramatiq
sync_worker.runtime:boot_worker``, as ``sync-worker worker`` runs it) is killed with SIGKILL, process
group and all, while it holds messages. A new worker is started. Then:

* the dead worker's unacknowledged messages are redelivered within a minute, measured from the
  kill. On Redis (the project's broker settings: 15 s heartbeat timeout, maintenance on every
  fetch) a live worker puts them back, so the new worker starts first and the clock stops when the
  dead worker's ack sets are gone; on RabbitMQ the server requeues them when the dead worker's
  connection drops, so the clock stops when the queue holds no unacknowledged message and the new
  worker starts after that;
* every inbox event is processed, every change has reached HubSpot, no deal was created twice, and
  HubSpot reported exactly one ``dealstage`` change per deal (nothing was written twice).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.hubspot import to_canonical as hubspot_to_canonical
from sync_worker.actors import INBOX_QUEUE, process_inbox_event
from sync_worker.broker import UNBOUND_BROKER, build_broker, install_broker
from sync_worker.commands.worker import worker_argv
from sync_worker.engine import SyncService
from sync_worker.mappings import Mappings
from sync_worker.runtime import build_connectors
from sync_worker.sandbox.common import serve_in_thread
from sync_worker.sandbox.runner import start_sandbox
from sync_worker.store import SyncStore
from tests.e2e.conftest import settings_from_env

from .brokers import BrokerUnderTest
from .conftest import FIGURES, REPO, RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.redis]

CHANGES = int(os.environ.get("SYNC_RELIABILITY_KILL_CHANGES", "2000"))  # bench/kill_worker.py: 10,000
SCALE = max(1.0, CHANGES / 2_000)  # waits grow with the work
ACK_PATTERN = "sync-worker:__acks__.*"


class Sink:
    """Records webhook bodies by source."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bodies: dict[str, list[bytes]] = {}

        async def hook(request: Request) -> Response:
            body = await request.body()
            with self.lock:
                self.bodies.setdefault(request.path_params["source"], []).append(body)
            return Response(status_code=200)

        self.handle = serve_in_thread(Starlette(routes=[Route("/webhooks/{source}", hook, methods=["POST"])]))

    def take(self, source: str) -> list[bytes]:
        with self.lock:
            return self.bodies.pop(source, [])


@pytest.fixture
def sink() -> Iterator[Sink]:
    made = Sink()
    try:
        yield made
    finally:
        made.handle.stop()


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            worker_argv(1, 4, shutdown_timeout_ms=2_000),
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _wait(predicate: object, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(step)
    return False


def test_sigkilled_worker_loses_nothing_writes_nothing_twice_and_redelivers_within_a_minute(
    sink: Sink,
    db_path: Path,
    private_redis: RedisServer,
    broker_under_test: BrokerUnderTest,
    mappings: Mappings,
    tmp_path: Path,
) -> None:
    shared_redis = redis.Redis.from_url(private_redis.url)
    box = start_sandbox(deals=0, webhook_base_url=sink.handle.url, time_scale=0.001)
    database = f"sqlite:///{db_path}"
    env_vars = {
        **box.env(),
        "SYNC_DATABASE_URL": database,
        "SYNC_REDIS_URL": private_redis.url,
        "SYNC_BROKER_URL": broker_under_test.url,
        "SYNC_MAPPINGS_DIR": str(REPO / "mappings"),
        "SYNC_LOG_LEVEL": "INFO",
    }
    settings = settings_from_env(env_vars)
    store = SyncStore(database)
    connectors = build_connectors(settings, mappings, limiter=lambda _system: None)
    service = SyncService(store, mappings, connectors)
    broker = build_broker(settings)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        # Given N deal pairs in step, pulled and linked
        stock = min(box.pipedrive.pipelines)
        stage = {s["name"]: s["id"] for s in box.pipedrive.stages.values() if s["pipeline_id"] == stock}
        pairs = []
        for n in range(CHANGES):
            pd = box.pipedrive.create_deal(
                {"title": f"Kill {n}", "stage_id": stage["Contact Made"], "value": 10 + n}, notify=False
            )
            hs = box.hubspot.put_deal({"dealname": f"Kill {n}", "dealstage": "appointmentscheduled"})
            pairs.append((int(pd["id"]), hs))
        service.poll("pipedrive", "deals")
        for _, hs_id in pairs:  # HubSpot side ingested from its wire objects (setup only)
            service.ingest_record(hubspot_to_canonical(box.hubspot.wire(hs_id), mappings))  # type: ignore[arg-type]
        for pd_id, hs_id in pairs:
            a, b = (
                store.get_record("pipedrive", "deal", str(pd_id)),
                store.get_record("hubspot", "deal", hs_id),
            )
            assert a is not None and b is not None
            store.link_records([a.id, b.id])
        # And N Pipedrive stage changes accepted from the sandbox's webhooks, one message each on Redis
        time.sleep(1.1)
        for pd_id, _ in pairs:
            box.pipedrive.simulate_user_change(pd_id, stage_id=stage["Demo Scheduled"])
        assert box.pipedrive.deliverer.wait_idle(60.0 * SCALE)
        ids: list[int] = []
        for body in sink.take("pipedrive"):
            events = [e for e in connectors["pipedrive"].parse_webhook(body) if e.handled]
            ids.extend(store.accept_events("pipedrive", events).new_ids)
        assert len(ids) == CHANGES
        install_broker(broker)
        for inbox_id in ids:
            process_inbox_event.send(inbox_id)
        store.mark_enqueued(ids)
        sink.take("hubspot")
        env = {**os.environ, **env_vars, "PYTHONPATH": str(REPO)}
        log = Path(os.environ.get("SYNC_TEST_WORKER_LOG", tmp_path / "worker.log"))
        # When a worker runs and is SIGKILLed, process group and all, while it holds messages
        workers.append(_start_worker(env, log))

        def holding() -> bool:
            return store.inbox_depth() < CHANGES * 0.7 and broker_under_test.unacked(INBOX_QUEUE) > 0

        assert _wait(holding, 90 * SCALE), (
            store.inbox_depth(),
            workers[0].poll(),
            log.read_text()[-3000:],
        )
        held = {k for k in shared_redis.scan_iter(ACK_PATTERN) if shared_redis.scard(k)}
        unacked = broker_under_test.unacked(INBOX_QUEUE)
        os.killpg(workers[0].pid, signal.SIGKILL)
        killed_at = time.monotonic()
        workers[0].wait(timeout=10)
        depth_at_kill = store.inbox_depth()
        on_redis = broker_under_test.kind == "redis"

        def redelivered() -> bool:
            if on_redis:
                return not any(shared_redis.exists(k) for k in held)
            return broker_under_test.unacked(INBOX_QUEUE) == 0

        # And a new worker is started (on Redis first: a live worker is what puts the messages back)
        if on_redis:
            workers.append(_start_worker(env, log))
        # Then the dead worker's messages are back on the queue within a minute
        assert _wait(redelivered, 60, step=0.05), (
            f"unacked messages not redelivered: still held {[k for k in held if shared_redis.exists(k)]}, "
            f"{broker_under_test.unacked(INBOX_QUEUE)} unacked, "
            f"heartbeats {shared_redis.zrange('sync-worker:__heartbeats__', 0, -1, withscores=True)}, "
            f"now {time.time()}; {log.read_text()[-2000:]}"
        )
        redelivery_seconds = time.monotonic() - killed_at
        if not on_redis:
            workers.append(_start_worker(env, log))
        # And every change lands, once
        assert _wait(lambda: store.inbox_depth() == 0, 120 * SCALE), store.inbox_depth()
        target = "presentationscheduled"

        def stage_of(hs_id: str) -> str | None:
            props = box.hubspot.deal_properties(hs_id)
            return props.get("dealstage") if props is not None else None

        def landed() -> bool:
            return all(stage_of(hs) == target for _, hs in pairs)

        if not _wait(landed, 60 * SCALE, step=0.5):
            done = sum(1 for _, hs in pairs if stage_of(hs) == target)
            due = store.due_outbox(datetime.now(UTC) + timedelta(days=1), 10_000, target="hubspot")
            keys = sorted(k.decode() for k in shared_redis.scan_iter("sync-worker:*"))
            lost = [(pd, hs) for pd, hs in pairs if stage_of(hs) != target][:5]
            stored = [
                (r.stage if (r := store.get_record("pipedrive", "deal", str(pd))) else None) for pd, _ in lost
            ]
            raise AssertionError(
                f"{done}/{CHANGES} landed; lost {lost}, their stored Pipedrive stage {stored} (see "
                f"test_crash_window.py); {len(due)} due; keys {keys}; {log.read_text()[-2000:]}"
            )
        assert box.hubspot.deliverer.wait_idle(30.0)
        time.sleep(1.0)
        assert box.hubspot.deliverer.wait_idle(30.0)
        writes: Counter[str] = Counter()
        for body in sink.take("hubspot"):
            for event in json.loads(body):
                if event.get("propertyName") == "dealstage":
                    writes[str(event["objectId"])] += 1
        assert len(box.hubspot.live_deals()) == CHANGES  # no deal created twice
        assert set(writes) == {hs for _, hs in pairs}
        twice = [deal for deal, count in writes.items() if count > 1]
        assert twice == []
        assert all((e := store.get_inbox_event(i)) is not None and e.processed_at for i in ids)
        assert store.list_dead_letters() == []
    finally:
        for process in workers:
            _stop(process)
        install_broker(UNBOUND_BROKER)
        broker.close()
        for connector in connectors.values():
            connector.close()
        store.close()
        box.stop()
        shared_redis.close()
    assert redelivery_seconds < 60.0
    FIGURES[f"worker SIGKILL mid-sync ({broker_under_test.kind})"] = {
        "changes": CHANGES,
        "in_flight_at_kill": depth_at_kill,
        "unacked_at_kill": unacked,
        "lost": 0,
        "duplicates": len(twice),
        "redelivery_seconds": round(redelivery_seconds, 1),
    }
