"""Scale-out benchmark: 1, 2 and 4 worker processes against one Redis and one PostgreSQL.

For each process count, from a clean start: N linked Pipedrive/HubSpot deal pairs in step (setup,
not measured), N Pipedrive stage changes made by a person and delivered by the sandbox's real
webhooks into the inbox (also setup), then ``sync-worker worker --processes P`` (the Dramatiq
supervisor, as production runs it) applies them: one ``process_inbox_event`` message per change on
Redis, pushes to HubSpot batched and held to HubSpot's 100 requests / 10 s by the rate limiter the
workers share in Redis. The clock runs from the moment the messages are sent to the booted workers
until every change shows in the sandbox HubSpot. Each run gets a fresh PostgreSQL database (created
and dropped) and a flushed Redis database.

Printed, per process count: changes/s, the rate-limit bound (HubSpot calls / (100 / 10 s): how fast
the calls could have gone at the limit), the most HubSpot requests seen on the wire in any 10 s window
(sampled every 50 ms from the sandbox's own counter; never above the limit) and any 429, and changes
lost (must be 0). The sandbox runs in this process; the workers are separate processes.

    PYTHONPATH=. .venv/bin/python bench/scale.py --changes 1000 --processes 1 2 4
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.sync_efficiency import SEED_STAGE, UPDATE_STAGES, _seed_linked, _settings
from sync_worker.actors import process_inbox_event
from sync_worker.broker import UNBOUND_BROKER, build_broker, install_broker
from sync_worker.commands.worker import worker_argv
from sync_worker.connector import Connector
from sync_worker.engine import SyncService
from sync_worker.mappings import load_mappings
from sync_worker.runtime import build_connectors
from sync_worker.sandbox.common import serve_in_thread
from sync_worker.sandbox.runner import RunningSandbox, start_sandbox
from sync_worker.store import SyncStore, upgrade_database

REPO = Path(__file__).resolve().parent.parent
HUBSPOT_LIMIT = (100, 10.0)  # the sandbox's (and HubSpot's documented) private-app limit


class WebhookSink:
    """Collects the sandbox's webhook deliveries by source."""

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


class WireSampler:
    """Samples a request counter every ``step`` seconds; the most requests in any ``window``."""

    def __init__(self, count: object, step: float = 0.05) -> None:
        self._count = count
        self._step = step
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), int(self._count())))  # type: ignore[operator]
            self._stop.wait(self._step)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def max_in(self, window: float) -> int:
        best, start = 0, 0
        for at, total in self.samples:
            while at - self.samples[start][0] > window:
                start += 1
            best = max(best, total - self.samples[start][1])
        return best


@dataclass(frozen=True)
class Run:
    processes: int
    changes: int
    seconds: float
    hubspot_calls: int
    hubspot_429: int
    max_per_window: int
    pipedrive_calls: int
    lost: int

    def lines(self) -> list[str]:
        limit, window = HUBSPOT_LIMIT
        p = f"processes_{self.processes}"
        return [
            f"{p}_seconds: {self.seconds:.1f}",
            f"{p}_changes_per_s: {self.changes / self.seconds:.1f}",
            f"{p}_hubspot_calls: {self.hubspot_calls}",
            f"{p}_rate_limit_bound_s: {self.hubspot_calls / (limit / window):.1f}",
            f"{p}_hubspot_max_per_{window:g}s_on_wire: {self.max_per_window} (limit {limit})",
            f"{p}_hubspot_429: {self.hubspot_429}",
            f"{p}_pipedrive_calls: {self.pipedrive_calls}",
            f"{p}_lost: {self.lost}",
        ]


@contextmanager
def _database(admin_url: str) -> Iterator[str]:
    name = f"sync_scale_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
        upgrade_database(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _accept_changes(
    box: RunningSandbox, sink: WebhookSink, store: SyncStore, parser: Connector, pd_ids: list[int]
) -> list[int]:
    """A person moves each deal; the sandbox's webhooks are accepted into the inbox (not yet queued)."""
    stage_ids = _stage_ids(box)
    time.sleep(1.1)  # the change lands in a later second than the seed (Pipedrive's update_time)
    for pd_id in pd_ids:
        box.pipedrive.simulate_user_change(pd_id, stage_id=stage_ids[UPDATE_STAGES[0][0]])
    if not box.pipedrive.deliverer.wait_idle(120.0):
        raise SystemExit("setup: the sandbox did not deliver every webhook")
    ids: list[int] = []
    for body in sink.take("pipedrive"):
        events = [e for e in parser.parse_webhook(body) if e.handled]
        ids.extend(store.accept_events("pipedrive", events).new_ids)
    if len(ids) != len(pd_ids):
        raise SystemExit(f"setup: {len(ids)} inbox events for {len(pd_ids)} changes")
    return ids


def _stage_ids(box: RunningSandbox) -> dict[str, int]:
    stock = min(box.pipedrive.pipelines)
    return {s["name"]: s["id"] for s in box.pipedrive.stages.values() if s["pipeline_id"] == stock}


def _wait(predicate: object, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(step)
    return False


def run_once(processes: int, threads: int, changes: int, redis_url: str, admin_url: str) -> Run:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    sink = WebhookSink()
    box = start_sandbox(deals=0, webhook_base_url=sink.handle.url, time_scale=0.001)
    mappings = load_mappings(REPO / "mappings")
    worker: subprocess.Popen[bytes] | None = None
    with _database(admin_url) as database:
        store = SyncStore(database)
        settings = _settings(box, redis_url).model_copy(update={"database_url": database})
        connectors = build_connectors(settings, mappings, limiter=lambda _system: None)
        service = SyncService(store, mappings, connectors)
        broker = build_broker(settings)
        try:
            pd_ids = _seed_linked(box, service, store, _stage_ids(box), changes)
            hs_of = {
                pd: next(r.external_id for r in store.linked_records(rec.id) if r.source == "hubspot")
                for pd in pd_ids
                if (rec := store.get_record("pipedrive", "deal", str(pd))) is not None
            }
            ids = _accept_changes(box, sink, store, connectors["pipedrive"], pd_ids)
            env = {
                **os.environ,
                **box.env(),
                "SYNC_DATABASE_URL": database,
                "SYNC_REDIS_URL": redis_url,
                "SYNC_MAPPINGS_DIR": str(REPO / "mappings"),
                "SYNC_LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(REPO),
            }
            env.pop("SYNC_BROKER_URL", None)
            worker = subprocess.Popen(
                worker_argv(processes, threads), env=env, cwd=REPO, start_new_session=True
            )
            # every worker process's consumers have fetched once (Dramatiq heartbeats) before the clock starts
            if not _wait(lambda: client.zcard("sync-worker:__heartbeats__") >= processes, 120):
                raise SystemExit("the workers did not start")
            box.hubspot.calls.reset()
            box.pipedrive.calls.reset()
            sampler = WireSampler(lambda: box.hubspot.calls.total)
            started = time.monotonic()
            install_broker(broker)
            for inbox_id in ids:
                process_inbox_event.send(inbox_id)
            store.mark_enqueued(ids)
            target = UPDATE_STAGES[0][1]

            def landed() -> bool:
                if store.inbox_depth():
                    return False
                return all(
                    (props := box.hubspot.deal_properties(hs)) is not None
                    and props.get("dealstage") == target
                    for hs in hs_of.values()
                )

            _wait(landed, 600, step=0.2)
            seconds = time.monotonic() - started
            sampler.stop()
            lost = sum(
                1
                for hs in hs_of.values()
                if (box.hubspot.deal_properties(hs) or {}).get("dealstage") != target
            )
            return Run(
                processes=processes,
                changes=changes,
                seconds=seconds,
                hubspot_calls=box.hubspot.calls.total,
                hubspot_429=box.hubspot.calls.by_status.get(429, 0),
                max_per_window=sampler.max_in(HUBSPOT_LIMIT[1]),
                pipedrive_calls=box.pipedrive.calls.total,
                lost=lost + len(pd_ids) - len(hs_of),
            )
        finally:
            if worker is not None:
                os.killpg(worker.pid, 15)
                worker.wait(timeout=60)
            install_broker(UNBOUND_BROKER)
            broker.close()
            for connector in connectors.values():
                connector.close()
            store.close()
            box.stop()
            sink.handle.stop()
            client.flushdb()
            client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--threads", type=int, default=4, help="threads per worker process")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12", help="flushed before and after")
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="where to create the run's database",
    )
    args = parser.parse_args(argv)
    print("command:", shlex.join([sys.executable, *sys.argv]), flush=True)
    print(f"changes: {args.changes}")
    print(f"threads_per_process: {args.threads}")
    print(f"cores: {os.cpu_count()}")
    print(f"seed_stage: {SEED_STAGE[0]} -> change to {UPDATE_STAGES[0][0]}")
    runs: dict[int, Run] = {}
    for processes in args.processes:
        runs[processes] = run_once(processes, args.threads, args.changes, args.redis_url, args.postgres)
        for line in runs[processes].lines():
            print(line, flush=True)
    first = runs[args.processes[0]]
    for processes, result in runs.items():
        if processes != first.processes:
            print(f"speedup_{processes}_vs_{first.processes}: {first.seconds / result.seconds:.2f}")
    return 1 if any(r.lost or r.max_per_window > HUBSPOT_LIMIT[0] for r in runs.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
