"""Ingest benchmark: signed HubSpot batches through the real receiver under uvicorn.

Starts the receiver in a child process (uvicorn on a free port, SQLite store in a temp dir, real
Redis broker), posts v3-signed HubSpot batches of 1 and of 100 events from a concurrent httpx client
for a bounded time or count, and prints accepted events/s with p50/p99 latency, next to a bare ASGI
endpoint on the same server (reads the body, answers 200) as the ceiling, and their ratio.

    PYTHONPATH=. .venv/bin/python bench/ingest.py --seconds 5 --concurrency 16

The Redis database (default 15) is flushed of the broker's keys at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

SECRET = "bench-client-secret"
_ids = itertools.count(1)


# -- server side (child process) ------------------------------------------------------------------


def _serve(port: int, database: str, redis_url: str) -> None:
    import uvicorn
    from pydantic import SecretStr

    from connectors.hubspot import HubSpotConnector
    from sync_worker.broker import build_broker
    from sync_worker.mappings import MappingsHolder
    from sync_worker.receiver import create_app
    from sync_worker.settings import Settings, default_mappings_dir
    from sync_worker.store import SyncStore, upgrade_database

    settings = Settings(database_url=database, redis_url=redis_url)
    upgrade_database(database)
    holder = MappingsHolder(default_mappings_dir(), interval=60.0)
    connector = HubSpotConnector(holder.current, token=SecretStr("unused"), client_secret=SecretStr(SECRET))
    receiver = create_app(
        settings,
        store=SyncStore(database),
        broker=build_broker(settings),
        mappings_holder=holder,
        connectors={"hubspot": connector},
        access_log=False,
    )

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/bare":
            more = True
            while more:
                message = await receive()
                more = bool(message.get("more_body"))
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": b'{"accepted": 0}'})
            return
        await receiver(scope, receive, send)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, log_config=None)


# -- client side ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _batch(size: int) -> bytes:
    now_ms = int(time.time() * 1000)
    return json.dumps(
        [
            {
                "eventId": next(_ids),
                "subscriptionType": "deal.propertyChange",
                "objectId": next(_ids),
                "propertyName": "dealstage",
                "propertyValue": "contractsent",
                "occurredAt": now_ms,
                "attemptNumber": 0,
                "portalId": 62515,
                "changeSource": "CRM_UI",
            }
            for _ in range(size)
        ]
    ).encode()


def _headers(url: str, body: bytes) -> dict[str, str]:
    from connectors.hubspot.webhooks import v3_signature

    timestamp = str(int(datetime.now(UTC).timestamp() * 1000))
    return {
        "content-type": "application/json",
        "x-hubspot-signature-v3": v3_signature(SECRET, "POST", url, body, timestamp),
        "x-hubspot-request-timestamp": timestamp,
    }


@dataclass
class Run:
    label: str
    batch: int
    requests: int
    accepted: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def events_per_s(self) -> float:
        return (self.requests - self.errors) * self.batch / self.seconds

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.seconds

    def quantile(self, q: float) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] if self.latencies else float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q * 100) - 1]


async def _load(base: str, path: str, batch: int, seconds: float, max_requests: int, concurrency: int) -> Run:
    url = base + path
    latencies: list[float] = []
    accepted = errors = sent = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:

        async def worker() -> None:
            nonlocal accepted, errors, sent
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                body = _batch(batch)
                headers = _headers(url, body)
                started = time.perf_counter()
                response = await client.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                if response.status_code == 200:
                    accepted += int(response.json().get("accepted", 0))
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    label = "receiver" if path.startswith("/webhooks") else "bare ASGI"
    return Run(label, batch, len(latencies), accepted, errors, elapsed, latencies)


def _wait_ready(base: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"receiver did not become ready at {base}")


def _flush_redis(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter("sync-worker:*"))
    if keys:
        client.delete(*keys)
    client.close()


def _report(run: Run, ceiling: Run | None) -> str:
    line = (
        f"{run.label:9}  batch={run.batch:<3}  requests={run.requests:<6} errors={run.errors:<3} "
        f"events/s={run.events_per_s:9.1f}  accepted/s={run.accepted_per_s:9.1f}  "
        f"p50={run.quantile(0.50) * 1000:7.2f}ms  p99={run.quantile(0.99) * 1000:7.2f}ms"
    )
    if ceiling is not None and ceiling.events_per_s:
        line += f"  ratio={run.events_per_s / ceiling.events_per_s:6.1%} of bare"
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="time per scenario (default 5)")
    parser.add_argument("--max-requests", type=int, default=5000, help="cap per scenario (default 5000)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batches", default="1,100", help="batch sizes, comma-separated (default 1,100)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "DATABASE_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(int(args.serve[0]), args.serve[1], args.redis_url)
        return 0

    print("command:", shlex.join([sys.executable, *sys.argv]))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="sync-bench-") as tmp:
        database = f"sqlite:///{Path(tmp) / 'bench.db'}"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH")])
            ),
        }
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), database, "--redis-url", args.redis_url], env=env
        )
        try:
            _wait_ready(base)
            print(f"server: uvicorn pid {server.pid} on {base}; store {database}; broker {args.redis_url}")
            for size in (int(part) for part in args.batches.split(",")):
                ceiling = asyncio.run(
                    _load(base, "/bare", size, args.seconds, args.max_requests, args.concurrency)
                )
                run = asyncio.run(
                    _load(base, "/webhooks/hubspot", size, args.seconds, args.max_requests, args.concurrency)
                )
                print(_report(ceiling, None))
                print(_report(run, ceiling))
        finally:
            server.terminate()
            server.wait(timeout=15)
            _flush_redis(args.redis_url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
