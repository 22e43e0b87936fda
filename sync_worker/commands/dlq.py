"""``sync-worker dlq``: list, show, replay and purge dead letters (the store is the source of truth).

``replay`` re-sends the original actor message with its arguments on the Redis broker (a dead push
item is queued again as a fresh outbox item) and marks the letter replayed.
Exit codes: 0 ok, 1 a failure reported (unknown id, broker down), 2 bad usage.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta

import click
from rich.console import Console
from rich.table import Table

from sync_worker.commands._common import errors_to_exit_codes, settings_from
from sync_worker.errors import ConfigError, PermanentError
from sync_worker.store import DeadLetter, SyncStore

__all__ = ["dlq_group"]


def _store(ctx: click.Context) -> SyncStore:
    return SyncStore(settings_from(ctx).database_url)


def _args(letter: DeadLetter) -> str:
    payload = letter.payload
    if "args" in payload:
        args = [json.dumps(a) for a in payload.get("args", [])]
        args += [f"{k}={json.dumps(v)}" for k, v in dict(payload.get("kwargs", {})).items()]
        return ", ".join(args)
    return f"outbox item {payload.get('outbox_id')}"


def _table(letters: list[DeadLetter]) -> Table:
    table = Table("id", "created", "actor", "arguments", "reason", "replayed")
    for letter in letters:
        table.add_row(
            str(letter.id),
            letter.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            letter.actor,
            _args(letter),
            letter.reason[:80],
            "" if letter.replayed_at is None else letter.replayed_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table


@click.group("dlq")
def dlq_group() -> None:
    """Inspect and replay messages that failed for good."""


@dlq_group.command("list")
@click.option("--all", "include_replayed", is_flag=True, help="include replayed dead letters")
@click.option("--limit", default=1000, show_default=True)
@click.pass_context
@errors_to_exit_codes
def dlq_list(ctx: click.Context, include_replayed: bool, limit: int) -> None:
    """List dead letters, oldest first."""
    store = _store(ctx)
    try:
        letters = store.list_dead_letters(include_replayed=include_replayed, limit=limit)
    finally:
        store.close()
    if not letters:
        click.echo("no dead letters")
        return
    Console(width=160).print(_table(letters))


@dlq_group.command("show")
@click.argument("dead_letter_id", type=int)
@click.pass_context
@errors_to_exit_codes
def dlq_show(ctx: click.Context, dead_letter_id: int) -> None:
    """Show one dead letter with its full reason and payload."""
    store = _store(ctx)
    try:
        letter = store.get_dead_letter(dead_letter_id)
        if letter is None:
            raise PermanentError(f"dead letter {dead_letter_id} does not exist")
        _show(store, letter)
    finally:
        store.close()


def _show(store: SyncStore, letter: DeadLetter) -> None:
    console = Console(width=160)
    console.print(_table([letter]))
    console.print(f"queue: {letter.queue}  message: {letter.message_id}  error: {letter.error_class or '-'}")
    console.print(f"reason: {letter.reason}", markup=False)
    console.print("message:")
    console.print_json(json.dumps(dict(letter.payload), default=str))
    title, body = _failed_body(store, letter)
    if body is not None:
        console.print(f"{title}:")
        console.print_json(json.dumps(body, default=str))


def _failed_body(store: SyncStore, letter: DeadLetter) -> tuple[str, object | None]:
    """What the message carried by reference: the webhook body of its inbox row, or its outbox item."""
    if letter.inbox_id is not None:
        event = store.get_inbox_event(letter.inbox_id)
        label = f"webhook body (inbox row {letter.inbox_id})"
        return label, dict(event.payload) if event is not None else "(the inbox row is gone)"
    outbox_id = letter.payload.get("outbox_id")
    if isinstance(outbox_id, int):
        item = store.get_outbox(outbox_id)
        label = f"outbox item {outbox_id} ({item.target if item is not None else 'gone'})"
        return label, dict(item.payload) if item is not None else "(the outbox item is gone)"
    return "", None


@dlq_group.command("replay")
@click.argument("dead_letter_id", type=int, required=False)
@click.option("--all", "replay_all", is_flag=True, help="replay every dead letter not yet replayed")
@click.pass_context
@errors_to_exit_codes
def dlq_replay(ctx: click.Context, dead_letter_id: int | None, replay_all: bool) -> None:
    """Re-send a dead letter's message (or all of them) and mark it replayed."""
    from sync_worker.actors import replay_dead_letter
    from sync_worker.broker import build_broker, check_broker

    if (dead_letter_id is None) == (not replay_all):
        raise ConfigError("give one dead letter ID or --all")
    settings = settings_from(ctx)
    store = SyncStore(settings.database_url)
    broker = build_broker(settings)
    try:
        check_broker(broker)
        ids = [dead_letter_id] if dead_letter_id is not None else [d.id for d in store.list_dead_letters()]
        for each in ids:
            message = replay_dead_letter(store, broker, each)
            click.echo(f"replayed dead letter {each} as message {message.message_id} ({message.actor_name})")
        if not ids:
            click.echo("no dead letters to replay")
    finally:
        broker.close()
        store.close()


@dlq_group.command("purge")
@click.argument("dead_letter_ids", metavar="[ID]...", type=int, nargs=-1)
@click.option("--all", "purge_all", is_flag=True, help="every dead letter (narrowed by the options below)")
@click.option("--replayed-only", is_flag=True, help="only dead letters already replayed")
@click.option("--older-than-days", type=float, default=None, help="only those older than this")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation (needed without a terminal)")
@click.pass_context
@errors_to_exit_codes
def dlq_purge(
    ctx: click.Context,
    dead_letter_ids: tuple[int, ...],
    purge_all: bool,
    replayed_only: bool,
    older_than_days: float | None,
    yes: bool,
) -> None:
    """Delete the dead letters given by ID, or --all of them (optionally only replayed or older ones)."""
    if bool(dead_letter_ids) == purge_all:
        raise ConfigError("give the dead letter IDs to delete, or --all")
    what = (
        f"dead letter(s) {', '.join(map(str, dead_letter_ids))}" if dead_letter_ids else "every dead letter"
    )
    if replayed_only or older_than_days is not None:
        what += " matching the filters"
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError(f"refusing to delete {what} without confirmation: pass --yes")
        click.confirm(f"delete {what}?", abort=True)
    store = _store(ctx)
    try:
        older = timedelta(days=older_than_days) if older_than_days is not None else None
        removed = store.purge_dead_letters(
            replayed_only=replayed_only, older_than=older, ids=list(dead_letter_ids) or None
        )
    finally:
        store.close()
    click.echo(f"purged {removed} dead letter(s)")
