"""Leak-scan benchmark: one million records, scanned on SQLite and on PostgreSQL.

Builds N records (90 % deals across the open, won and lost stages, 10 % leads, some with replies
and links to deals) with stage ages and stage histories, loaded in bulk (``executemany`` on SQLite,
``COPY`` on PostgreSQL), then times :func:`sync_worker.leaks.scan_leaks` twice: the first scan
raises every flag and queues their write-backs and alerts, the second must raise nothing. Prints
records, seconds, flags raised, outbox items and the process's peak RSS.

    PYTHONPATH=. .venv/bin/python bench/leak_scan.py --records 1000000

PostgreSQL: database ``test`` on 127.0.0.1:5432 as ``postgres``, in a schema of its own that is
dropped afterwards. ``--skip-postgres`` runs SQLite only.
"""

from __future__ import annotations

import argparse
import random
import resource
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import psycopg

from sync_worker.mappings import load_mappings
from sync_worker.store import SyncStore, upgrade_database

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PULL = NOW - timedelta(hours=6)
OPEN = ("prospect", "contacted", "qualified", "meeting", "proposal", "negotiation")
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
RECORD_COLUMNS = (
    "id", "source", "kind", "external_id", "stage", "status", "title", "amount",
    "source_updated_at", "stage_entered_at", "replied_at", "first_seen_at", "last_seen_at", "deleted",
)  # fmt: skip
HISTORY_COLUMNS = ("record_id", "from_stage", "to_stage", "at", "origin", "written_by_worker")


def _rows(
    n: int, seed: int = 7
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], list[tuple[int, int]]]:
    """``(records, stage_history, links)`` with timestamps as aware datetimes."""
    rng = random.Random(seed)
    records: list[tuple[object, ...]] = []
    history: list[tuple[object, ...]] = []
    links: list[tuple[int, int]] = []
    deals = int(n * 0.9)
    for rid in range(1, n + 1):
        source = "pipedrive" if rid % 2 else "hubspot"
        old = rng.random() < 0.03
        age = timedelta(days=rng.uniform(8, 120) if old else rng.uniform(0, 6.5))
        entered = NOW - age
        seen = PULL - timedelta(hours=1) if rng.random() < 0.005 else NOW - timedelta(hours=1)
        if rid <= deals:
            roll = rng.random()
            status, stage = "open", rng.choice(OPEN)
            history_rows = [(rid, None, stage, entered)]
            if roll < 0.02:  # lost from proposal
                status, stage = "lost", "lost"
                history_rows = [(rid, None, "proposal", entered - 10 * timedelta(days=1)),
                                (rid, "proposal", "lost", entered)]  # fmt: skip
            elif roll < 0.06:
                status, stage = "won", "won"
                history_rows = [(rid, None, "won", entered)]
            elif roll < 0.07 and stage != "negotiation":  # moved back from negotiation
                history_rows = [(rid, None, "negotiation", entered - 5 * timedelta(days=1)),
                                (rid, "negotiation", stage, entered)]  # fmt: skip
            amount = f"{rng.randint(5, 500) * 100}.00"
            records.append((rid, source, "deal", f"d{rid}", stage, status, f"Deal {rid}", amount,
                            entered, entered, None, entered, seen, False))  # fmt: skip
            history += [(*row, source, False) for row in history_rows]
        else:
            replied = NOW - timedelta(days=rng.uniform(0, 10)) if rng.random() < 0.1 else None
            records.append((rid, "lagrowthmachine", "lead", f"l{rid}", "contacted", "open", None, None,
                            entered, entered, replied, entered, NOW, False))  # fmt: skip
            history.append((rid, None, "contacted", entered, "lagrowthmachine", False))
            if replied is not None and rng.random() < 0.5:
                links.append((rid, rng.randint(1, deals)))
    return records, history, links


def _naive(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _load_sqlite(path: Path, data: tuple[list[tuple[object, ...]], ...]) -> None:
    records, history, links = data
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        # Column names are this module's constants, never input.
        marks = ", ".join("?" * len(RECORD_COLUMNS))
        conn.executemany(
            f"INSERT INTO records ({', '.join(RECORD_COLUMNS)}) VALUES ({marks})",  # noqa: S608
            ([_naive(v) for v in row] for row in records),
        )
        conn.executemany(
            f"INSERT INTO stage_history ({', '.join(HISTORY_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)",  # noqa: S608
            ([_naive(v) for v in row] for row in history),
        )
        now = _naive(NOW)
        conn.executemany("INSERT INTO link_groups (id, created_at) VALUES (?, ?)",
                         ((gid, now) for gid in range(1, len(links) + 1)))  # fmt: skip
        members: Iterator[tuple[object, ...]] = (
            (rid, gid, now) for gid, pair in enumerate(links, 1) for rid in pair
        )
        conn.executemany(
            "INSERT OR IGNORE INTO link_members (record_id, group_id, linked_at) VALUES (?, ?, ?)", members
        )
        conn.commit()
        conn.execute("ANALYZE")
    finally:
        conn.close()


def _load_postgres(schema: str, data: tuple[list[tuple[object, ...]], ...]) -> None:
    records, history, links = data
    with psycopg.connect(PG_DSN) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        with conn.cursor() as cur:
            with cur.copy(f"COPY records ({', '.join(RECORD_COLUMNS)}) FROM STDIN") as copy:
                for row in records:
                    copy.write_row(row)
            with cur.copy(f"COPY stage_history ({', '.join(HISTORY_COLUMNS)}) FROM STDIN") as copy:
                for row in history:
                    copy.write_row(row)
            with cur.copy("COPY link_groups (id, created_at) FROM STDIN") as copy:
                for gid in range(1, len(links) + 1):
                    copy.write_row((gid, NOW))
            seen: set[int] = set()
            with cur.copy("COPY link_members (record_id, group_id, linked_at) FROM STDIN") as copy:
                for gid, pair in enumerate(links, 1):
                    for rid in pair:
                        if rid not in seen:
                            seen.add(rid)
                            copy.write_row((rid, gid, NOW))
            cur.execute(
                "SELECT setval(pg_get_serial_sequence('records', 'id'), (SELECT max(id) FROM records))"
            )
        conn.commit()
        conn.execute("ANALYZE")
        conn.commit()


def _scan(label: str, url: str, n: int) -> None:
    model = load_mappings(Path(__file__).resolve().parents[1] / "mappings").model
    from sync_worker.leaks import scan_leaks

    store = SyncStore(url)
    try:
        started = time.perf_counter()
        first = scan_leaks(store, model, now=NOW, full_pull_started={"pipedrive": PULL, "hubspot": PULL})
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        second = scan_leaks(
            store, model, now=NOW + timedelta(minutes=5), full_pull_started={"pipedrive": PULL}
        )
        second_s = time.perf_counter() - started
    finally:
        store.close()
    rules = ", ".join(f"{rule} {count}" for rule, count in first.open_by_rule.items())
    print(f"{label}: records {n:,}  first scan {first_s:.2f} s  flags raised {len(first.raised):,} ({rules})"
          f"  outbox items {first.queued:,}")  # fmt: skip
    print(f"{label}: records {n:,}  second scan {second_s:.2f} s  flags raised {len(second.raised):,}"
          f"  cleared {len(second.cleared):,}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    data = _rows(args.records)
    print(f"generated {args.records:,} records, {len(data[1]):,} history rows, {len(data[2]):,} links "
          f"in {time.perf_counter() - started:.1f} s")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade_database(url)
        started = time.perf_counter()
        _load_sqlite(Path(tmp) / "bench.db", data)
        print(f"sqlite: loaded in {time.perf_counter() - started:.1f} s")
        _scan("sqlite", url, args.records)

    if not args.skip_postgres:
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            url = "postgresql://postgres@127.0.0.1:5432/test?options=" + quote(
                f"-c search_path={schema}", safe=""
            )
            upgrade_database(url)
            started = time.perf_counter()
            _load_postgres(schema, data)
            print(f"postgresql: loaded in {time.perf_counter() - started:.1f} s")
            _scan("postgresql", url, args.records)
        finally:
            with psycopg.connect(PG_DSN, autocommit=True) as admin:
                admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
