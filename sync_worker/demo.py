"""``sync-worker demo``: the whole service against the sandbox, on one machine, in about a minute.

It starts the three sandboxes (seeded), then the real service in this process: the receiver
(uvicorn), Dramatiq workers on the Redis of ``SYNC_REDIS_URL`` (their own key namespace, so a
running service's queues are never touched), and the scheduler's jobs. Then it

1. backfills: the scheduler's poll jobs pull every stream of every source;
2. makes changes as people would in the tools: leads reply in LaGrowthMachine, deals move and
   are lost in Pipedrive, a deal is won in HubSpot; the sandboxes deliver signed webhooks, the
   receiver stores and enqueues them, the workers normalise, route and push;
3. runs a leak scan, whose flags are written back to the CRMs through the outbox;
4. writes the HTML pipeline report and prints what happened.

Everything it writes stays in ``--output`` (a fresh SQLite database and the report).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dramatiq
import redis
from sqlalchemy import func, select

from sync_worker.errors import ConfigError, SyncWorkerError
from sync_worker.plugins import SandboxOptions, SandboxServer
from sync_worker.report.render_html import SystemSync
from sync_worker.settings import Settings

__all__ = ["DemoSummary", "records_text", "run_demo", "sync_lines"]

DEMO_NAMESPACE = "sync-worker-demo"


@dataclass
class DemoSummary:
    """What the demo did, for printing and for tests."""

    records: dict[str, Counter[str]] = field(default_factory=dict)
    webhooks: Counter[str] = field(default_factory=Counter)
    writes: Counter[str] = field(default_factory=Counter)
    failed_writes: Counter[str] = field(default_factory=Counter)
    api_calls: Counter[str] = field(default_factory=Counter)
    rate_limited: Counter[str] = field(default_factory=Counter)
    flags: Counter[str] = field(default_factory=Counter)
    changes: list[str] = field(default_factory=list)
    dead_letters: int = 0
    report: Path | None = None
    seconds: float = 0.0


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _check_redis(settings: Settings) -> None:
    from sync_worker.runtime import redis_client

    client = redis_client(settings, socket_timeout=2.0)
    try:
        client.ping()
    except redis.RedisError as exc:
        host = client.connection_pool.connection_kwargs.get("host", "?")
        port = client.connection_pool.connection_kwargs.get("port", "?")
        raise ConfigError(
            f"no Redis answers at {host}:{port} ({type(exc).__name__}). Start one with "
            "`redis-server --daemonize yes` (Debian: apt-get install redis-server), "
            "or point SYNC_REDIS_URL at one."
        ) from exc
    finally:
        client.close()


def _demo_settings(base: Settings, env: dict[str, str], database: Path) -> Settings:
    """The base settings pointed at the sandbox (its SYNC_* variables) and the demo database."""
    nested: dict[str, Any] = {}
    for name, value in env.items():
        section, _, key = name.removeprefix("SYNC_").lower().partition("__")
        nested.setdefault(section, {})[key] = value
    nested["hubspot"]["app_id"] = "1160452"  # the sandbox app's id: its webhooks of our writes
    nested["pipedrive"]["user_id"] = "9001"  # the sandbox API user we write as
    sections = {
        name: type(base.section(name)).model_validate(values)
        for name, values in nested.items()
        if name in base.sections()
    }
    return base.model_copy(
        update={"database_url": f"sqlite:///{database}", "mappings_reload_seconds": 1.0, **sections}
    )


def _wait_settled(
    broker: Any, store: Any, timeout: float, clock: Callable[[], float] = time.monotonic
) -> None:
    """Until every queue is empty (delayed messages included), the inbox processed and no push due."""
    deadline = clock() + timeout
    quiet = 0
    while clock() < deadline:
        busy = sum(broker.do_qsize(queue) for queue in broker.get_declared_queues())
        due = store.due_outbox(datetime.now(UTC) + timedelta(seconds=5), limit=1)
        if busy == 0 and store.inbox_depth() == 0 and not due:
            quiet += 1
            if quiet >= 3:
                return
        else:
            quiet = 0
        time.sleep(0.3)
    raise SyncWorkerError(f"the demo did not settle within {timeout:.0f} s")


def _make_changes(box: Any, summary: DemoSummary) -> None:
    """Changes as people make them in the tools; each one reaches the service as a webhook."""
    replied = set(box.summary.replied_lead_ids)
    fresh = [lead for lead in box.summary.lgm_lead_ids if lead not in replied][:3]
    for lead_id in fresh:
        box.lgm.simulate_reply(lead_id, "Sounds interesting, can we talk on Thursday?")
        summary.changes.append(f"LaGrowthMachine: lead {lead_id} replied")

    pd = box.pipedrive
    open_deals = [
        deal for deal in pd.deals.values() if deal["status"] == "open" and not deal.get("is_deleted")
    ]
    open_deals.sort(key=lambda deal: deal["id"])
    for deal in open_deals[:3]:
        stages = sorted(
            (stage for stage in pd.stages.values() if stage["pipeline_id"] == deal["pipeline_id"]),
            key=lambda stage: stage["order_nr"],
        )
        ids = [stage["id"] for stage in stages]
        position = ids.index(deal["stage_id"])
        if position + 1 < len(ids):
            pd.simulate_user_change(deal["id"], stage_id=ids[position + 1])
            summary.changes.append(f"Pipedrive: deal {deal['id']} moved to {stages[position + 1]['name']}")
    if len(open_deals) > 3:
        lost = open_deals[3]
        pd.simulate_user_change(lost["id"], status="lost", lost_reason="Went with a competitor")
        summary.changes.append(f"Pipedrive: deal {lost['id']} lost (went with a competitor)")
    lead_emails = {lead.get("proEmail") for lead in box.lgm.leads.values()} - {None}
    in_outreach = [deal for deal in open_deals[4:] if _person_email(pd, deal) in lead_emails]
    if in_outreach:
        won = in_outreach[0]
        pd.simulate_user_change(won["id"], status="won")
        summary.changes.append(
            f"Pipedrive: deal {won['id']} won (its contact is still in an outreach sequence)"
        )

    hubspot_ids = list(box.summary.hubspot_deal_ids)
    if hubspot_ids:
        box.hubspot.simulate_user_change(hubspot_ids[0], {"dealstage": "closedwon"})
        summary.changes.append(f"HubSpot: deal {hubspot_ids[0]} won")


def _person_email(pd: Any, deal: dict[str, Any]) -> str | None:
    person = pd.persons.get(deal.get("person_id"))
    emails = [entry["value"] for entry in (person or {}).get("emails", []) if entry.get("primary")]
    return emails[0] if emails else None


def _count(store: Any, summary: DemoSummary, box: Any, extras: Mapping[str, SandboxServer]) -> None:
    from sync_worker.store.schema import inbox, outbox, records

    with store.engine.connect() as conn:
        for source, kind, n in conn.execute(
            select(records.c.source, records.c.kind, func.count()).group_by(records.c.source, records.c.kind)
        ):
            summary.records.setdefault(source, Counter())[kind] += int(n)
        for source, n in conn.execute(select(inbox.c.source, func.count()).group_by(inbox.c.source)):
            summary.webhooks[source] = int(n)
        for target, status, n in conn.execute(
            select(outbox.c.target, outbox.c.status, func.count()).group_by(outbox.c.target, outbox.c.status)
        ):
            if status == "sent":
                summary.writes[target] += int(n)
            elif status == "dead":
                summary.failed_writes[target] += int(n)
    for flag in store.open_flags():
        summary.flags[flag.rule] += 1
    summary.dead_letters = len(store.list_dead_letters())
    for name, sandbox in (
        ("hubspot", box.hubspot),
        ("pipedrive", box.pipedrive),
        ("lagrowthmachine", box.lgm),
    ):
        summary.api_calls[name] = sandbox.calls.total
        summary.rate_limited[name] = sandbox.calls.by_status.get(429, 0)
    for name, server in extras.items():
        summary.api_calls[name] = server.api_calls()
        summary.rate_limited[name] = server.rate_limited()


@contextlib.contextmanager
def _service(settings: Settings, host: str, port: int) -> Iterator[tuple[Any, Any, Any]]:
    """Receiver, workers and the runtime they share; all stopped on the way out."""
    from sync_worker.broker import broker_middleware, build_broker, install_broker
    from sync_worker.receiver import build_webhook_sources, create_app
    from sync_worker.runtime import build_runtime
    from sync_worker.sandbox.common import serve_in_thread

    runtime = build_runtime(settings, coalesce_window=timedelta(milliseconds=300))
    runtime.prepare_targets()
    broker = install_broker(build_broker(settings, middleware=broker_middleware(), namespace=DEMO_NAMESPACE))
    runtime.configure_actors()
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    app = create_app(
        settings,
        store=runtime.store,
        broker=broker,
        mappings_holder=runtime.mappings,
        connectors=build_webhook_sources(settings, lambda: runtime.mappings.current),
        sweep_interval=2.0,
        sweep_older_than=timedelta(seconds=2),
    )
    worker.start()
    receiver = serve_in_thread(app, host=host, port=port)
    try:
        yield runtime, broker, receiver
    finally:
        receiver.stop()
        worker.stop()
        broker.close()
        runtime.close()


def records_text(summary: DemoSummary, system: str) -> str:
    """``"12 deals, 3 leads"``: what the demo stored of one system."""
    kinds = summary.records.get(system, Counter())
    return ", ".join(f"{n} {kind}s" for kind, n in sorted(kinds.items())) or "0"


def sync_lines(summary: DemoSummary) -> list[SystemSync]:
    """The per-system sync summary the demo prints, as the report's data."""
    systems = sorted(set(summary.api_calls) | set(summary.records))
    return [
        SystemSync(
            system,
            records_text(summary, system),
            webhooks=summary.webhooks[system],
            writes=summary.writes[system],
            failed_writes=summary.failed_writes[system],
            api_calls=summary.api_calls[system],
            rate_limited=summary.rate_limited[system],
        )
        for system in systems
    ]


@contextlib.contextmanager
def _plugin_sandboxes(
    options: SandboxOptions, say: Callable[[str], None]
) -> Iterator[Mapping[str, SandboxServer]]:
    """The sandboxes of the registered connectors beyond the three built-in ones."""
    from sync_worker.sandbox.plugin import plugin_sandboxes

    servers = plugin_sandboxes(options)
    if servers:
        say(f"started the plug-in sandboxes: {', '.join(servers)}")
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def run_demo(
    base: Settings,
    *,
    output: Path,
    seed: int = 7,
    deals: int = 150,
    host: str = "127.0.0.1",
    say: Callable[[str], None] = print,
    timeout: float = 90.0,
) -> DemoSummary:
    """Run the demo; raises :class:`ConfigError` when Redis does not answer."""
    from sync_worker.plugins import deal_links
    from sync_worker.report import render_report_html
    from sync_worker.sandbox.runner import start_sandbox
    from sync_worker.scheduler import scheduled_jobs
    from sync_worker.store import upgrade_database

    started = time.monotonic()
    _check_redis(base)
    output.mkdir(parents=True, exist_ok=True)
    database = output / "demo.db"
    for stale in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        stale.unlink(missing_ok=True)
    summary = DemoSummary()
    port = _free_port(host)
    say(f"starting the sandbox (HubSpot, Pipedrive, LaGrowthMachine) with {deals} deals, seed {seed}")
    webhooks = f"http://{host}:{port}"
    with (
        start_sandbox(seed=seed, deals=deals, host=host, time_scale=0.01, webhook_base_url=webhooks) as box,
        _plugin_sandboxes(
            SandboxOptions(seed=seed, deals=deals, host=host, time_scale=0.01, webhook_base_url=webhooks), say
        ) as extras,
    ):
        env = dict(box.env())
        for server in extras.values():
            env.update(server.env())
        settings = _demo_settings(base, env, database)
        upgrade_database(settings.database_url)
        with _service(settings, host, port) as (runtime, broker, receiver):
            say(f"service up: receiver {receiver.url}, 4 worker threads, Redis namespace {DEMO_NAMESPACE!r}")
            from sync_worker.runtime import enabled_streams

            jobs = scheduled_jobs(settings, enabled_streams(settings))
            say("1/4 backfill: the scheduler's poll jobs pull every stream")
            for job in jobs:
                if job.name.startswith("poll:"):
                    job.send()
            _wait_settled(broker, runtime.store, timeout)
            say("2/4 live changes in the tools, delivered as signed webhooks:")
            _make_changes(box, summary)
            for name, server in extras.items():
                summary.changes.append(f"{name}: record {server.simulate_change()} moved to another stage")
            for change in summary.changes:
                say(f"    {change}")
            for sandbox in (box.hubspot, box.pipedrive, box.lgm):
                sandbox.deliverer.wait_idle(timeout)
            _wait_settled(broker, runtime.store, timeout)
            say("3/4 leak scan; flags are written back to the CRMs")
            next(job for job in jobs if job.name == "scan_leaks").send()
            _wait_settled(broker, runtime.store, timeout)
            for job in jobs:
                if job.name.startswith("push:"):
                    job.send()
            _wait_settled(broker, runtime.store, timeout)
            say("4/4 pipeline report")
            _count(runtime.store, summary, box, extras)
            report = output / "report.html"
            report.write_text(
                render_report_html(
                    runtime.store,
                    runtime.mappings.current.model,
                    datetime.now(UTC),
                    deal_links=deal_links(settings),
                    sync_summary=sync_lines(summary),
                    dead_letters=summary.dead_letters,
                ),
                encoding="utf-8",
            )
            summary.report = report
    summary.seconds = time.monotonic() - started
    return summary
