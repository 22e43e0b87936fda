"""``sync-worker plan``: a dry run of the first sync against the live accounts, writing nothing.

Every enabled source is pulled in full (reads only) into a throwaway state store (a fresh SQLite
file in a temporary folder, migrated and removed afterwards), through the same engine and routes as
a real first sync, first-run safety included (reply routes ignore replies older than now unless
``history: true``). What the routes queued is then read back from that store's outbox and never
pushed: per target, how many records would be created and how many updated (each such update also
links the two records), with a sample of each. The configured store and the targets are not
touched. Ops teams run it before turning two-way sync on.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from sync_worker.commands._common import errors_to_exit_codes, settings_from, validated_mappings
from sync_worker.errors import ConfigError
from sync_worker.settings import Settings

__all__ = ["Plan", "TargetPlan", "make_plan", "plan_command"]

_SAMPLE = 5
_FAR = timedelta(days=3650)


@dataclass
class TargetPlan:
    """What the first sync would write into one target."""

    target: str
    creates: int = 0
    updates: int = 0
    by_route: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    pulled: Mapping[str, int]
    """Records read per ``source/stream``."""
    targets: Sequence[TargetPlan]


def _describe(payload: Mapping[str, Any]) -> str:
    fields = payload.get("fields", {})
    shown = ", ".join(
        f"{name}={json.dumps(value.get('v') if isinstance(value, Mapping) else value)}"
        for name, value in sorted(fields.items())
    )
    origin = f"{payload.get('origin')} {payload.get('origin_id')}"
    where = (
        "new record"
        if payload.get("external_id") is None
        else f"{payload.get('kind', 'record')} {payload.get('external_id')}"
    )
    return f"{payload.get('route')}: {origin} -> {where}: {shown or '(link only)'}"


def make_plan(settings: Settings, *, sample: int = _SAMPLE) -> Plan:
    """Pull everything into a throwaway store and read back what would be written (see module)."""
    from sync_worker.runtime import build_runtime, enabled_streams
    from sync_worker.store import upgrade_database

    streams = enabled_streams(settings)
    if not streams:
        raise ConfigError("no system has credentials set: nothing to plan (see: sync-worker config)")
    with tempfile.TemporaryDirectory(prefix="sync-worker-plan-") as folder:
        url = f"sqlite:///{Path(folder) / 'plan.db'}"
        upgrade_database(url)
        scratch = settings.model_copy(update={"database_url": url})
        runtime = build_runtime(
            scratch, watch_mappings=False, shared_limits=False, coalesce_window=timedelta(0)
        )
        try:
            pulled: dict[str, int] = {}
            for source, names in sorted(streams.items()):
                for stream in names:
                    stats = runtime.service.poll(source, stream, full=True)
                    pulled[f"{source}/{stream}"] = stats.records
            plans: dict[str, TargetPlan] = {}
            horizon = datetime.now(UTC) + _FAR
            for target in sorted(runtime.connectors):
                items = runtime.store.due_outbox(horizon, 100_000, target=target)
                plan = plans.setdefault(target, TargetPlan(target))
                for item in items:
                    payload = item.payload if isinstance(item.payload, Mapping) else {}
                    if payload.get("external_id") is None:
                        plan.creates += 1
                    else:
                        plan.updates += 1
                    plan.by_route[str(payload.get("route"))] += 1
                    if len(plan.samples) < sample:
                        plan.samples.append(_describe(payload))
        finally:
            runtime.close()
    return Plan(pulled=pulled, targets=tuple(plans.values()))


def render_plan(plan: Plan) -> str:
    lines = ["sync-worker plan: what a first sync would do (nothing was written)", "", "read:"]
    lines += [f"  {name}: {count} records" for name, count in plan.pulled.items()]
    lines += ["", "would write:"]
    for target in plan.targets:
        routes = ", ".join(f"{name} {n}" for name, n in sorted(target.by_route.items())) or "no route"
        lines.append(
            f"  {target.target}: {target.creates} to create, {target.updates} to update and link ({routes})"
        )
        lines += [f"    e.g. {line}" for line in target.samples]
    return "\n".join(lines) + "\n"


@click.command("plan")
@click.option(
    "--sample", default=_SAMPLE, show_default=True, type=click.IntRange(0, 100), help="examples per target"
)
@click.pass_context
@errors_to_exit_codes
def plan_command(ctx: click.Context, sample: int) -> None:
    """Dry-run the first sync against the live accounts: what it would create, update and link in
    each target, with counts and a sample. Reads only; writes nothing anywhere."""
    settings = settings_from(ctx)
    validated_mappings(settings.resolved_mappings_dir())
    click.echo(render_plan(make_plan(settings, sample=sample)), nl=False)
