"""``sync-worker sync``: one pull (or a backfill) in this process, then push what it routed.

No broker: the sync service runs here, streaming pages (constant memory; each page's cursor is
persisted once its records are stored and routed) behind a rich progress bar, then drains the
outbox of every enabled target. Rate limits are shared through Redis when it answers, so a
backfill next to running workers does not push a provider over its limit; otherwise each
connector keeps its in-process limiter. https://rich.readthedocs.io/en/stable/progress.html
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import click
import redis
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from sync_worker.commands._common import errors_to_exit_codes, settings_from
from sync_worker.engine.model import PullStats, PushStats
from sync_worker.errors import ConfigError
from sync_worker.plugins import spec_for

__all__ = ["since_cursor", "sync_command"]

_PUSH_ROUNDS = 1000


def since_cursor(source: str, stream: str, since: datetime) -> str:
    """The stored-cursor value meaning "changed since ``since``" for a stream whose cursor is a time
    (its spec's ``since``). Streams that page by ids or tokens: :class:`ConfigError`."""
    moment = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
    spec = spec_for(source).stream(stream)
    if spec.since is None:
        raise ConfigError(f"--since is not supported for {source}/{stream}; use --full for a backfill")
    return spec.since(moment)


def since_streams(source: str, streams: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``streams`` split into those ``--since`` applies to (time cursors) and those it skips."""
    spec = spec_for(source)
    takes = tuple(name for name in streams if spec.stream(name).since is not None)
    return takes, tuple(name for name in streams if name not in takes)


def _summary(pulls: Sequence[PullStats], pushes: Sequence[PushStats]) -> Table:
    table = Table("what", "pages", "records", "changed", "echoes", "routed", "writes", "created", "dead")
    for pull in pulls:
        table.add_row(
            f"pull {pull.source}/{pull.stream}",
            str(pull.pages),
            str(pull.records),
            str(pull.changed),
            str(pull.echoes),
            str(pull.enqueued),
            "",
            "",
            "",
        )
    for push in pushes:
        table.add_row(
            f"push {push.target}",
            "",
            "",
            "",
            "",
            "",
            str(push.writes),
            str(push.created),
            str(len(push.dead)),
        )
    return table


def _add(total: PushStats, more: PushStats) -> PushStats:
    return PushStats(
        target=total.target,
        items=total.items + more.items,
        writes=total.writes + more.writes,
        created=total.created + more.created,
        skipped=total.skipped + more.skipped,
        retried=total.retried + more.retried,
        dead=total.dead + more.dead,
        removed=total.removed + more.removed,
    )


@click.command("sync")
@click.option("--source", required=True, help="a registered source (see `sync-worker config`)")
@click.option("--stream", default=None, help="one stream (default: every polled stream of the source)")
@click.option("--since", type=click.DateTime(), default=None, help="changes since this time (UTC)")
@click.option("--full", is_flag=True, help="pull everything from the beginning (a backfill)")
@click.pass_context
@errors_to_exit_codes
def sync_command(
    ctx: click.Context, source: str, stream: str | None, since: datetime | None, full: bool
) -> None:
    """Pull one source now (incremental, --since T, or --full), then push what it routed."""
    from sync_worker.activity import note_poll, note_push
    from sync_worker.actors import record_dead_items
    from sync_worker.runtime import build_runtime, enabled_streams, redis_client

    if since is not None and full:
        raise ConfigError("use either --since or --full, not both")
    settings = settings_from(ctx)
    streams = enabled_streams(settings)
    if source not in streams:
        raise ConfigError(f"{source}: not an enabled source (enabled: {', '.join(streams) or 'none'})")
    chosen = (stream,) if stream is not None else streams[source]
    if since is not None and stream is None:
        chosen, skipped = since_streams(source, chosen)
        if skipped:
            click.echo(
                f"--since skips {', '.join(skipped)} (no time cursor); pull it with --stream", err=True
            )
        if not chosen:
            raise ConfigError(f"--since applies to no stream of {source}; use --full for a backfill")
    cursors = {name: since_cursor(source, name, since) for name in chosen} if since is not None else {}
    probe = redis_client(settings)
    try:
        probe.ping()
        shared = True
    except redis.RedisError:
        shared = False
    finally:
        probe.close()
    console = Console(stderr=True)
    if not shared:
        console.print("[yellow]Redis does not answer: rate limits are this process's only[/yellow]")
    runtime = build_runtime(
        settings, watch_mappings=False, shared_limits=shared, coalesce_window=timedelta(0)
    )
    pulls: list[PullStats] = []
    pushes: list[PushStats] = []
    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed} records"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            for name in chosen:
                if name in cursors:
                    runtime.store.set_cursor(source, name, cursors[name])
                task = progress.add_task(f"{source}/{name}", total=None)

                def advance(count: int, task_id: TaskID = task) -> None:
                    progress.advance(task_id, count)

                pulled = runtime.service.poll(source, name, full=full, progress=advance)
                note_poll(runtime.store, source, name, pulled.records)
                pulls.append(pulled)
            for target in runtime.connectors:
                total = PushStats(target=target)
                for _ in range(_PUSH_ROUNDS):
                    done = runtime.service.push(target)
                    total = _add(total, done)
                    if done.items == 0 or done.writes + len(done.dead) == 0:
                        break
                record_dead_items(runtime.store, total.dead, target)
                note_push(runtime.store, total)
                pushes.append(total)
    finally:
        runtime.close()
    Console(width=140).print(_summary(pulls, pushes))
    dead = sum(len(push.dead) for push in pushes)
    if dead:
        click.echo(f"{dead} write(s) failed for good: see `sync-worker dlq list`", err=True)
        raise click.exceptions.Exit(1)
