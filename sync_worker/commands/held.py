"""``sync-worker held``: records whose source stage no mapping covers, and their re-application.

``list`` shows each held record with the raw pipeline and stage it sits on (ids and names, as the
source gave them), when it was first and last seen there and how often. ``reapply`` asks a worker
to re-apply the held stages the mappings now cover (workers also do so after each good reload and
at start), so the twins move. Exit codes: 0 ok, 1 a failure reported (broker down), 2 bad usage.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import click
from rich.console import Console
from rich.table import Table

from sync_worker.commands._common import errors_to_exit_codes, prepare_store, settings_from
from sync_worker.store import HeldStage, SyncStore
from sync_worker.store.models import held_label

__all__ = ["held_group"]


def _table(rows: list[HeldStage]) -> Table:
    table = Table("source", "record", "pipeline", "stage", "first held", "last held", "seen")
    for row in rows:
        table.add_row(
            row.source,
            f"{row.kind} {row.external_id}",
            held_label(row.pipeline, row.pipeline_name),
            held_label(row.stage, row.stage_name),
            row.first_held_at.strftime("%Y-%m-%d %H:%M:%S"),
            row.last_held_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(row.held_count),
        )
    return table


@click.group("held")
def held_group() -> None:
    """Records held on a stage no mapping covers (re-applied once a mapping does)."""


@held_group.command("list")
@click.option("--source", default=None, help="only this system's records")
@click.option("--json", "as_json", is_flag=True, help="one JSON document")
@click.pass_context
@errors_to_exit_codes
def held_list(ctx: click.Context, source: str | None, as_json: bool) -> None:
    """List held records by source, pipeline and stage."""
    settings = settings_from(ctx)
    prepare_store(settings, migrate=False)
    store = SyncStore(settings.database_url)
    try:
        rows = store.held_stages(source)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([asdict(row) for row in rows], indent=2, default=str))
        return
    if not rows:
        click.echo("no held stages")
        return
    Console(width=160).print(_table(rows))
    click.echo(
        f"{len(rows)} held; map the stages (see: sync-worker mappings check), then reload the mappings"
    )


@held_group.command("reapply")
@click.pass_context
@errors_to_exit_codes
def held_reapply(ctx: click.Context) -> None:
    """Ask a worker to re-apply the held stages the mappings now cover."""
    from sync_worker.actors import reapply_held_job
    from sync_worker.broker import build_broker, check_broker

    broker = build_broker(settings_from(ctx))
    try:
        check_broker(broker)
        message = broker.enqueue(reapply_held_job.message())
    finally:
        broker.close()
    click.echo(f"sent {message.actor_name} as message {message.message_id}")
