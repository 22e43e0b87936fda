"""Backfill benchmark: a full pull of N Pipedrive deals into the store, through the real connector.

``SyncService.poll("pipedrive", "deals", full=True)`` pages through ``GET /api/v2/deals``
(cursor paging, 500 deals a page, sorted by ``update_time``:
https://developers.pipedrive.com/docs/api/v1/Deals#getDeals and
https://pipedrive.readme.io/docs/core-api-concepts-pagination) with the connector's documented
rate limit (80 requests per 2 s, https://pipedrive.readme.io/docs/core-api-concepts-rate-limiting),
normalises every deal through the shipped mappings and stores it (SQLite in a temp dir by default,
``--database`` for PostgreSQL).

The server runs in a child process so its memory is not counted: the Pipedrive sandbox app serves
everything (auth, stages) except the deal list, which a feed serves in the sandbox's own wire format
from deals generated on the fly from a template the sandbox made (``create_deal``). The sandbox's
own list endpoint filters and deep-copies every deal on every page (fine for tests, quadratic for a
million), so it cannot be the bottleneck being measured here.

First the bare connector pulls and translates the whole feed with no store (the ceiling); then the
service pulls it into the store. Prints records/s and the process RSS (current, from
``/proc/self/status``, and peak, from ``resource.getrusage``) at checkpoints, so memory can be read
against the number of deals pulled, then ``name: value`` lines: ``records_per_s``,
``bare_pull_records_per_s``, their ratio ``backfill_vs_pull``, ``cpu_ms_per_record`` (this process's
CPU: the sandbox runs in a child), ``peak_rss_mb`` and the database transactions per page and per
record (``bench/counters.py``).

    PYTHONPATH=. .venv/bin/python bench/backfill.py --deals 100000
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import resource
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.counters import counting

TOKEN = "bench-pipedrive-token-0123456789"
PAGE_MAX = 500
REPO = Path(__file__).resolve().parent.parent


# -- server side (child process) ------------------------------------------------------------------


def _serve(port: int, deals: int) -> None:
    import uvicorn

    from sync_worker.sandbox.pipedrive import PipedriveSandbox, create_app

    sandbox = PipedriveSandbox(api_token=TOKEN)
    stock = min(sandbox.pipelines)
    stages = [s for s in sandbox.stages.values() if s["pipeline_id"] == stock]
    template = sandbox.create_deal({"title": "template", "value": 1}, notify=False)
    sandbox.deals.clear()
    start = datetime.now(UTC) - timedelta(seconds=deals // 100 + 10)
    inner = create_app(sandbox)

    def deal(n: int) -> dict[str, Any]:
        item = copy.copy(template)
        stamp = (start + timedelta(seconds=n // 100)).strftime("%Y-%m-%dT%H:%M:%SZ")
        item.update(
            id=n + 1,
            title=f"Backfill deal {n + 1}",
            value=1000 + n % 9000,
            stage_id=stages[n % len(stages)]["id"],
            add_time=stamp,
            update_time=stamp,
            stage_change_time=stamp,
            label_ids=[],
            custom_fields={},
        )
        return item

    def page(query: dict[str, str]) -> dict[str, Any]:
        limit = max(1, min(PAGE_MAX, int(query.get("limit", "100"))))
        cursor = query.get("cursor")
        first = int(base64.urlsafe_b64decode(cursor.encode()).decode()) if cursor else 0
        last = min(deals, first + limit)
        next_cursor = base64.urlsafe_b64encode(str(last).encode()).decode() if last < deals else None
        return {
            "success": True,
            "data": [deal(n) for n in range(first, last)],
            "additional_data": {"next_cursor": next_cursor},
        }

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/api/v2/deals":
            query = dict(httpx.QueryParams(scope["query_string"].decode()))
            headers = dict(scope["headers"])
            authorised = sandbox.accepts_token(query.get("api_token")) or sandbox.accepts_token(
                headers.get(b"x-api-token", b"").decode() or None
            )
            status, body = (
                (200, page(query)) if authorised else (401, {"success": False, "error": "unauthorized"})
            )
            data = json.dumps(body).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": data})
            return
        await inner(scope, receive, send)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, log_config=None)


# -- client side ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process: the client, not the sandbox child."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _wait_up(base: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(base + "/api/v2/stages", params={"api_token": TOKEN}, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"sandbox did not start at {base}")


def run(deals: int, database: str, checkpoints: int) -> dict[str, float]:
    from pydantic import AnyHttpUrl, SecretStr

    from connectors.pipedrive import from_settings
    from connectors.pipedrive.settings import PipedriveSettings
    from sync_worker.engine import SyncService
    from sync_worker.mappings import load_mappings
    from sync_worker.settings import Settings
    from sync_worker.store import SyncStore, upgrade_database

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--deals", str(deals)], env=env
    )
    try:
        _wait_up(base)
        upgrade_database(database)
        mappings = load_mappings(REPO / "mappings")
        settings = Settings(
            _env_file=None,
            database_url=database,
            pipedrive=PipedriveSettings(api_token=SecretStr(TOKEN), base_url=AnyHttpUrl(base)),
        )
        connector = from_settings(settings, mappings)
        # The ceiling: the same feed pulled and translated by the bare connector, nothing stored.
        bare_started = time.perf_counter()
        bare_records = sum(len(p.records) for p in connector.pull_changes("deals", None))
        bare_seconds = time.perf_counter() - bare_started
        print(
            f"bare connector pull: {bare_records} deals in {bare_seconds:.1f}s "
            f"({bare_records / bare_seconds:.0f} records/s)",
            flush=True,
        )
        store = SyncStore(database)
        service = SyncService(store, mappings, {"pipedrive": connector})
        every = max(1, deals // checkpoints)
        done = 0
        next_mark = every
        started = time.perf_counter()
        print(f"{'deals':>9} {'seconds':>8} {'records/s':>10} {'rss MB':>8} {'peak MB':>8}", flush=True)
        print(f"{0:>9} {0.0:>8.1f} {'':>10} {_rss_mb():>8.1f} {_peak_mb():>8.1f}", flush=True)

        def progress(count: int) -> None:
            nonlocal done, next_mark
            done += count
            if done >= next_mark:
                elapsed = time.perf_counter() - started
                print(
                    f"{done:>9} {elapsed:>8.1f} {done / elapsed:>10.0f} {_rss_mb():>8.1f} {_peak_mb():>8.1f}",
                    flush=True,
                )
                next_mark += every

        cpu_started = _cpu_s()
        with counting() as counts:
            stats = service.poll("pipedrive", "deals", full=True, progress=progress)
        elapsed = time.perf_counter() - started
        cpu = _cpu_s() - cpu_started
        connector.close()
        store.close()
    finally:
        server.terminate()
        server.wait(timeout=15)
    records_per_s = stats.records / elapsed if elapsed else 0.0
    bare_per_s = bare_records / bare_seconds if bare_seconds else 0.0
    result = {
        "deals": float(deals),
        "records": float(stats.records),
        "pages": float(stats.pages),
        "seconds": elapsed,
        "records_per_s": records_per_s,
        "bare_pull_records_per_s": bare_per_s,
        "backfill_vs_pull": records_per_s / bare_per_s if bare_per_s else 0.0,
        "cpu_ms_per_record": 1000 * cpu / max(1, stats.records),
        "peak_rss_mb": _peak_mb(),
        "transactions_per_page": counts.transactions / max(1, stats.pages),
        **{k.replace("_change", "_record"): v for k, v in counts.per(stats.records).items()},
    }
    print(
        f"pulled {stats.records} of {deals} deals in {stats.pages} pages, {elapsed:.1f}s: "
        f"{result['records_per_s']:.0f} records/s, peak RSS {result['peak_rss_mb']:.1f} MB"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deals", type=int, default=1_000_000)
    parser.add_argument("--database", help="store URL (default: SQLite in a temp dir)")
    parser.add_argument("--checkpoints", type=int, default=10, help="RSS lines printed (default 10)")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.serve, args.deals)
        return 0
    print("command:", shlex.join([sys.executable, *sys.argv]))
    with tempfile.TemporaryDirectory(prefix="sync-backfill-") as tmp:
        database = args.database or f"sqlite:///{Path(tmp) / 'backfill.db'}"
        result = run(args.deals, database, args.checkpoints)
    for name, value in result.items():
        print(f"{name}: {value:.4g}")
    return 0 if result["records"] == args.deals else 1


if __name__ == "__main__":
    raise SystemExit(main())
