"""Sync-efficiency benchmark: N Pipedrive deal changes mirrored into the sandbox HubSpot.

The sandbox HubSpot enforces its documented private-app limit, 100 requests per 10 s
(https://developers.hubspot.com/docs/api/usage-details); the connectors use the project's shared
Redis rate limiter (:func:`sync_worker.ratelimit.limiter_for`) exactly as the workers do, and the
HubSpot writes go through the batch endpoints, 100 inputs a call
(https://developers.hubspot.com/docs/api/crm/deals). Setup (not measured) seeds N deals in step on
both sides, pulls and links them; the measured phase, **update**, moves each of the N Pipedrive deals
to another stage as a person would (one change per deal, so nothing is coalesced away), polls them
incrementally and mirrors them (``batch/update``).

It prints HubSpot API calls per change (a per-event workflow tool makes at least 1.0), wall time
next to the bound the rate limit allows (calls / (limit / 10 s)), 429s the sandbox answered
(absorbed by the limiter and retries), 429s surfaced to the user (errors out of ``push`` or dead
items: must be 0), changes lost (HubSpot deals not in the expected stage: must be 0), and the
database transactions and Redis round trips per change (``bench/counters.py``), then one
``name: value`` line per figure.

    PYTHONPATH=. .venv/bin/python bench/sync_efficiency.py --changes 1000

The rate-limiter keys in the Redis database (default 14) are deleted at the end.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import redis
from pydantic import AnyHttpUrl, SecretStr

import connectors.hubspot as hubspot_connector
import connectors.pipedrive as pipedrive_connector
from bench.counters import Counts, counting
from connectors.hubspot.settings import HubSpotSettings
from connectors.pipedrive.settings import PipedriveSettings
from sync_worker.connector import Connector
from sync_worker.engine import EngineConfig, SyncService
from sync_worker.errors import TransientError
from sync_worker.mappings import load_mappings
from sync_worker.ratelimit import KEY_PREFIX, limiter_for
from sync_worker.sandbox.runner import RunningSandbox, start_sandbox
from sync_worker.settings import Settings, default_mappings_dir
from sync_worker.store import SyncStore, upgrade_database

REPO = Path(__file__).resolve().parent.parent
# Pipedrive stock stage -> HubSpot stock stage, through the shipped mappings (canonical in between).
UPDATE_STAGES = (("Demo Scheduled", "presentationscheduled"), ("Proposal Made", "decisionmakerboughtin"))
SEED_STAGE = ("Contact Made", "appointmentscheduled")


@dataclass
class Phase:
    name: str
    changes: int
    hubspot_calls: int
    hubspot_429: int
    surfaced_429: int
    lost: int
    seconds: float
    poll_seconds: float
    limit_per_10s: int
    counts: Counts

    @property
    def bound_seconds(self) -> float:
        return self.hubspot_calls / (self.limit_per_10s / 10.0)

    def report(self) -> str:
        return (
            f"{self.name:6}  changes={self.changes:<6} hubspot_calls={self.hubspot_calls:<5} "
            f"calls/change={self.hubspot_calls / max(1, self.changes):.3f}  "
            f"wall={self.seconds:7.2f}s (push {self.seconds - self.poll_seconds:6.2f}s, "
            f"rate-limit bound {self.bound_seconds:6.2f}s)  "
            f"429 answered by sandbox={self.hubspot_429}  429 surfaced={self.surfaced_429}  lost={self.lost}"
        )

    def figures(self) -> dict[str, float]:
        """The closing ``name: value`` lines."""
        return {
            "changes": float(self.changes),
            "seconds": self.seconds,
            "rate_limit_bound_s": self.bound_seconds,
            "wall_vs_bound": self.seconds / self.bound_seconds if self.bound_seconds else 0.0,
            "hubspot_calls_per_change": self.hubspot_calls / max(1, self.changes),
            "surfaced_429": float(self.surfaced_429),
            "lost": float(self.lost),
            **self.counts.per(self.changes),
        }


def _settings(box: RunningSandbox, redis_url: str) -> Settings:
    creds = box.credentials
    return Settings(
        _env_file=None,
        redis_url=redis_url,
        hubspot=HubSpotSettings(token=SecretStr(creds.hubspot_token), base_url=AnyHttpUrl(box.hubspot_url)),
        pipedrive=PipedriveSettings(
            api_token=SecretStr(creds.pipedrive_api_token), base_url=AnyHttpUrl(box.pipedrive_url)
        ),
    )


def _drain(service: SyncService, target: str) -> int:
    """Push until the outbox of ``target`` is empty; the number of errors surfaced to the caller."""
    surfaced = 0
    idle = 0
    while idle < 2:
        try:
            stats = service.push(target, limit=500)
        except TransientError:
            surfaced += 1
            continue
        surfaced += len(stats.dead)
        if stats.items == 0 and stats.retried == 0:
            idle += 1
        else:
            idle = 0
    return surfaced


def _phase(
    name: str,
    service: SyncService,
    box: RunningSandbox,
    *,
    changes: int,
    full: bool,
    expected: dict[int, str],
    store: SyncStore,
    limit: int,
) -> Phase:
    box.hubspot.calls.reset()
    with counting() as counts:  # the pull and the pushes: every transaction and Redis round trip
        started = time.perf_counter()
        service.poll("pipedrive", "deals", full=full)
        polled = time.perf_counter()
        surfaced = _drain(service, "hubspot")
        elapsed = time.perf_counter() - started
    lost = 0
    first = min(expected)
    for pd_id, stage in expected.items():
        links = store.get_record("pipedrive", "deal", str(pd_id))
        target = None
        if links is not None:
            target = next((r for r in store.linked_records(links.id) if r.source == "hubspot"), None)
        props = box.hubspot.deal_properties(target.external_id) if target is not None else None
        if (
            props is None
            or props.get("dealstage") != stage
            or props.get("amount") != str(5000 + pd_id - first)
        ):
            lost += 1
            if lost == 1:
                print("  first lost:", pd_id, stage, props)
    print("  hubspot calls by path:", dict(box.hubspot.calls.by_path))
    hubspot_deals = len(box.hubspot.live_deals())
    if hubspot_deals != len(expected):
        print(f"  warning: HubSpot holds {hubspot_deals} deals for {len(expected)} Pipedrive deals")
    return Phase(
        name=name,
        changes=changes,
        hubspot_calls=box.hubspot.calls.total,
        hubspot_429=box.hubspot.calls.by_status.get(429, 0),
        surfaced_429=surfaced,
        lost=lost + abs(hubspot_deals - len(expected)),
        seconds=elapsed,
        poll_seconds=polled - started,
        limit_per_10s=limit,
        counts=counts,
    )


def _seed_linked(
    box: RunningSandbox, service: SyncService, store: SyncStore, stage_ids: dict[str, int], count: int
) -> list[int]:
    """``count`` deals in step on both sides (seeded in memory), pulled into the store and linked."""
    started = time.perf_counter()
    pd_ids: list[int] = []
    hs_ids: list[str] = []
    for n in range(count):
        title = f"Bench deal {n}"
        pd = box.pipedrive.create_deal(
            {"title": title, "stage_id": stage_ids[SEED_STAGE[0]], "value": 1000 + n}, notify=False
        )
        pd_ids.append(int(pd["id"]))
        hs_ids.append(
            box.hubspot.put_deal({"dealname": title, "dealstage": SEED_STAGE[1], "amount": str(1000 + n)})
        )
    service.poll("pipedrive", "deals", full=True)
    service.poll("hubspot", "deals", full=True)
    for pd_id, hs_id in zip(pd_ids, hs_ids, strict=True):
        pd_rec = store.get_record("pipedrive", "deal", str(pd_id))
        hs_rec = store.get_record("hubspot", "deal", hs_id)
        if pd_rec is None or hs_rec is None:
            raise SystemExit(f"setup: deal pair {pd_id}/{hs_id} was not pulled into the store")
        store.link_records([pd_rec.id, hs_rec.id])
    print(
        f"setup   {count} linked deal pairs seeded, pulled and linked in {time.perf_counter() - started:.1f}s"
    )
    return pd_ids


def run(changes: int, redis_url: str, workdir: Path) -> list[Phase]:
    database = f"sqlite:///{workdir / 'bench.db'}"
    upgrade_database(database)
    mappings = load_mappings(REPO / "mappings" if (REPO / "mappings").is_dir() else default_mappings_dir())
    client = redis.Redis.from_url(redis_url)
    box = start_sandbox(deals=0, time_scale=0.001)
    store = SyncStore(database)
    settings = _settings(box, redis_url)
    connectors: dict[str, Connector] = {
        "hubspot": hubspot_connector.from_settings(
            settings, mappings, limiter=limiter_for("hubspot", settings, client)
        ),
        "pipedrive": pipedrive_connector.from_settings(
            settings, mappings, limiter=limiter_for("pipedrive", settings, client)
        ),
    }
    source, app_id = box.hubspot.api_source()
    markers = {
        "hubspot": frozenset({f"{source}:{app_id}"}),
        "pipedrive": frozenset({f"api:{box.pipedrive.user_id}"}),
    }
    service = SyncService(
        store,
        mappings,
        connectors,
        config=EngineConfig(coalesce_window=timedelta(0), own_change_sources=markers),
    )
    stock = min(box.pipedrive.pipelines)  # the stock "Pipeline"; seeding may add others with same stage names
    stage_ids = {s["name"]: int(s["id"]) for s in box.pipedrive.stages.values() if s["pipeline_id"] == stock}
    limit = settings.hubspot.rate_limit_per_10s
    try:
        ids = _seed_linked(box, service, store, stage_ids, changes)
        time.sleep(1.1)  # Pipedrive update_time has one-second resolution: keep the changes after the cursor
        expected: dict[int, str] = {}
        for n, pd_id in enumerate(ids):
            pd_stage, hs_stage = UPDATE_STAGES[n % len(UPDATE_STAGES)]
            box.pipedrive.simulate_user_change(pd_id, stage_id=stage_ids[pd_stage], value=5000 + n)
            expected[pd_id] = hs_stage
        update = _phase(
            "update", service, box, changes=changes, full=False, expected=expected, store=store, limit=limit
        )
        print(update.report(), flush=True)
        return [update]
    finally:
        for connector in connectors.values():
            connector.close()
        store.close()
        box.stop()
        keys = list(client.scan_iter(f"{KEY_PREFIX}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--changes", type=int, default=10_000, help="Pipedrive deals changed (default 10000)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args(argv)
    print("command:", shlex.join([sys.executable, *sys.argv]))
    with tempfile.TemporaryDirectory(prefix="sync-bench-") as tmp:
        phases = run(args.changes, args.redis_url, Path(tmp))
    for phase in phases:
        for name, value in phase.figures().items():
            print(f"{name}: {value:.4g}")
    bad = [p for p in phases if p.surfaced_429 or p.lost]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
