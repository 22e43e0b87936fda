"""The whole service path of a change, counted: Pipedrive webhook -> receiver -> Redis -> worker -> HubSpot.

N linked Pipedrive/HubSpot deal pairs are seeded in the sandboxes, pulled and linked. Then a person
moves each Pipedrive deal to another stage; the Pipedrive sandbox delivers its webhooks v2
(https://pipedrive.readme.io/docs/guide-for-webhooks-v2) to the service's real receiver (the
Starlette app ``sync-worker serve`` runs, with its signature check and durable intake), which
sends one ``process_inbox_delivery`` message per delivery to a real Redis broker; a Dramatiq
worker (4 threads, in this process so its work is counted) handles them, marks HubSpot due and
pushes through HubSpot's batch update (https://developers.hubspot.com/docs/api/crm/deals) under
the shared rate limiter (100 requests / 10 s). HubSpot's own webhooks for the service's writes
come back to the receiver and are recognised as echoes; that work is counted too.

It prints, per routed change, the database transactions (every ``BEGIN``, read-only ones
included), the durable commits and the Redis round trips made by the receiver, the worker and the
push together (SQLAlchemy engine events and redis-py's ``send_packed_command``; see
``bench/counters.py``), HubSpot API calls, the wall time, and the changes lost (HubSpot deals not
in the expected stage at the end: must be 0). The closing ``name: value`` lines are for scripts.

    PYTHONPATH=. .venv/bin/python bench/webhook_path.py --changes 1000
    PYTHONPATH=. .venv/bin/python bench/webhook_path.py --changes 1000 \\
        --database postgresql://postgres@127.0.0.1:5432/test

The Redis keys it made (a private broker namespace, the limiter, locks and guards in database 8)
and, on PostgreSQL, the tables are dropped at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import socket
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import dramatiq
import redis
import sqlalchemy as sa

from bench.counters import counting
from sync_worker.actors import clear_actors
from sync_worker.broker import UNBOUND_BROKER, build_broker, install_broker
from sync_worker.receiver.app import create_app
from sync_worker.receiver.serve import build_webhook_sources
from sync_worker.runtime import build_runtime
from sync_worker.sandbox.common import serve_in_thread
from sync_worker.sandbox.runner import start_sandbox
from sync_worker.settings import load_settings
from sync_worker.store import upgrade_database

REPO = Path(__file__).resolve().parent.parent
SEED_STAGE = ("Contact Made", "appointmentscheduled")
UPDATE_STAGES = (("Demo Scheduled", "presentationscheduled"), ("Proposal Made", "decisionmakerboughtin"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(predicate: object, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(step)
    return bool(predicate())  # type: ignore[operator]


def _drop_postgres(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


def run(changes: int, redis_url: str, database: str | None, workdir: Path) -> dict[str, float]:
    port = _free_port()
    box = start_sandbox(deals=0, time_scale=0.001, webhook_base_url=f"http://127.0.0.1:{port}")
    url = database or f"sqlite:///{workdir / 'bench.db'}"
    if url.startswith("postgresql"):
        _drop_postgres(url)
    os.environ.update(
        {
            **box.env(),
            "SYNC_DATABASE_URL": url,
            "SYNC_REDIS_URL": redis_url,
            "SYNC_MAPPINGS_DIR": str(REPO / "mappings"),
            "SYNC_LOG_LEVEL": "WARNING",
        }
    )
    settings = load_settings()
    upgrade_database(url)
    runtime = build_runtime(settings, watch_mappings=False, coalesce_window=timedelta(seconds=1))
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    broker = build_broker(settings, namespace=namespace)
    install_broker(broker)
    runtime.configure_actors()
    app = create_app(
        settings,
        store=runtime.store,
        broker=broker,
        mappings_holder=runtime.mappings,
        connectors=build_webhook_sources(settings, lambda: runtime.mappings.current),
        access_log=False,
        sweep_interval=None,
    )
    receiver = serve_in_thread(app, port=port)
    worker = dramatiq.Worker(broker, worker_threads=4)  # the `worker` command's timeout (1 s)
    client = redis.Redis.from_url(redis_url)
    store, service = runtime.store, runtime.service
    try:
        # Given N deal pairs in step on both sides, pulled and linked (no webhooks while seeding)
        started = time.perf_counter()
        hubspot_hooks, box.hubspot.webhook_url = box.hubspot.webhook_url, None
        stock = min(box.pipedrive.pipelines)
        stage = {s["name"]: int(s["id"]) for s in box.pipedrive.stages.values() if s["pipeline_id"] == stock}
        pairs: list[tuple[int, str]] = []
        for n in range(changes):
            title = f"Bench deal {n}"
            pd = box.pipedrive.create_deal(
                {"title": title, "stage_id": stage[SEED_STAGE[0]], "value": 1000 + n}, notify=False
            )
            hs = box.hubspot.put_deal(
                {"dealname": title, "dealstage": SEED_STAGE[1], "amount": str(1000 + n)}
            )
            pairs.append((int(pd["id"]), hs))
        service.poll("pipedrive", "deals", full=True)
        service.poll("hubspot", "deals", full=True)
        for pd_id, hs_id in pairs:
            a = store.get_record("pipedrive", "deal", str(pd_id))
            b = store.get_record("hubspot", "deal", hs_id)
            if a is None or b is None:
                raise SystemExit(f"setup: pair {pd_id}/{hs_id} was not pulled")
            store.link_records([a.id, b.id])
        box.hubspot.webhook_url = hubspot_hooks
        print(f"setup   {changes} linked pairs in {time.perf_counter() - started:.1f}s", flush=True)
        time.sleep(1.1)  # Pipedrive update_time has one-second resolution
        worker.start()
        box.hubspot.calls.reset()
        expected = {hs: UPDATE_STAGES[n % 2][1] for n, (_, hs) in enumerate(pairs)}

        def landed() -> bool:
            return all(
                box.hubspot.deal_properties(hs).get("dealstage") == want for hs, want in expected.items()
            )

        # When a person moves every Pipedrive deal, one webhook each, and the service routes them
        with counting() as counts:
            t0 = time.perf_counter()
            for n, (pd_id, _) in enumerate(pairs):
                box.pipedrive.simulate_user_change(pd_id, stage_id=stage[UPDATE_STAGES[n % 2][0]])
            done = _wait(landed, 120 + changes * 0.05)
            wall = time.perf_counter() - t0
            # and the echoes HubSpot sends back for those writes are received and settled
            _wait(
                lambda: (
                    box.hubspot.deliverer.wait_idle(1.0)
                    and box.pipedrive.deliverer.wait_idle(1.0)
                    and store.inbox_depth() == 0
                ),
                60,
            )
            time.sleep(2.0)  # the last delayed push messages find nothing due
        lost = sum(
            1 for hs, want in expected.items() if box.hubspot.deal_properties(hs).get("dealstage") != want
        )
        if not done:
            print(f"  warning: {lost} of {changes} changes had not landed when the wait ended")
        calls = box.hubspot.calls.total
        print("  hubspot calls by path:", dict(box.hubspot.calls.by_path))
        print(
            f"routed  changes={changes} wall={wall:.2f}s transactions={counts.transactions} "
            f"commits={counts.commits} redis_round_trips={counts.redis_round_trips} hubspot_calls={calls} "
            f"lost={lost} store={url.split(':', 1)[0]}"
        )
        return {
            "changes": changes,
            "wall_s": round(wall, 2),
            **{k: round(v, 2) for k, v in counts.per(changes).items()},
            "hubspot_calls_per_change": round(calls / changes, 4),
            "lost": lost,
        }
    finally:
        worker.stop()
        receiver.stop()
        clear_actors()
        install_broker(UNBOUND_BROKER)
        broker.close()
        runtime.close()
        box.stop()
        keys = list(client.scan_iter(f"{namespace}:*")) + list(client.scan_iter("sync-worker:*"))
        if keys:
            client.delete(*keys)
        client.close()
        if url.startswith("postgresql"):
            _drop_postgres(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--changes", type=int, default=1000, help="Pipedrive deals changed (default 1000)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/8")
    parser.add_argument(
        "--database", default=None, help="a PostgreSQL URL (default: a temporary SQLite file)"
    )
    args = parser.parse_args(argv)
    print("command:", shlex.join([sys.executable, *sys.argv]))
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="sync-bench-") as tmp:
        figures = run(args.changes, args.redis_url, args.database, Path(tmp))
    for name, value in figures.items():
        print(f"{name}: {value}")
    return 1 if figures["lost"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
