"""``sync-worker status``, ``pause`` and ``resume``: watch and steer a running service.

``pause NAME`` stops a source (no polls of it and no writes to it: its writes wait in the outbox;
its webhooks are still accepted and stored) or a route (changes are not routed along it), until
``resume NAME``. The pause is a row in the store, so every worker on every machine respects it at
its next message; ``status`` shows it. NAME is a registered system or a route in ``routes.yaml``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from sync_worker.commands._common import errors_to_exit_codes, prepare_store, settings_from
from sync_worker.errors import ConfigError
from sync_worker.settings import Settings
from sync_worker.store import SyncStore

__all__ = ["pause_command", "resume_command", "status_command"]


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="one JSON document (what GET /status answers)")
@click.pass_context
@errors_to_exit_codes
def status_command(ctx: click.Context, as_json: bool) -> None:
    """Per source and stream the last poll, cursor, records and next run; per target the outbox;
    dead letters, open flags, pauses, whether the mappings are valid, and each source's request
    budget (used in the window, and what the provider says is left where it says)."""
    from sync_worker.runtime import redis_client
    from sync_worker.status import build_status, render_status

    settings = settings_from(ctx)
    prepare_store(settings, migrate=False)
    store = SyncStore(settings.database_url)
    client = redis_client(settings, socket_timeout=2.0)
    try:
        status = build_status(settings, store, now=datetime.now(UTC), redis_client=client)
    finally:
        store.close()
        client.close()
    click.echo(json.dumps(status.to_dict(), indent=2) if as_json else render_status(status), nl=not as_json)


def _scope(settings: Settings, name: str) -> str:
    """``source`` for a registered system, ``route`` for a route of the mappings; ConfigError otherwise."""
    from sync_worker.mappings import load_mappings
    from sync_worker.plugins import registry

    if name in registry():
        return "source"
    routes = {route.name for route in load_mappings(settings.resolved_mappings_dir()).routes}
    if name in routes:
        return "route"
    known = ", ".join(sorted(registry())) + "; routes: " + (", ".join(sorted(routes)) or "none")
    raise ConfigError(f"{name!r} is neither a system nor a route (systems: {known})")


def _steer(ctx: click.Context, name: str, *, pause: bool, reason: str | None = None) -> None:
    settings = settings_from(ctx)
    prepare_store(settings, migrate=False)
    scope = _scope(settings, name)
    store = SyncStore(settings.database_url)
    try:
        changed = store.pause(scope, name, reason=reason) if pause else store.resume(scope, name)
    finally:
        store.close()
    verb = "paused" if pause else "resumed"
    click.echo(f"{scope} {name} {verb}" if changed else f"{scope} {name} was already {verb}")


@click.command("pause")
@click.argument("name")
@click.option("--reason", default=None, help="shown in status")
@click.pass_context
@errors_to_exit_codes
def pause_command(ctx: click.Context, name: str, reason: str | None) -> None:
    """Pause a source (SYSTEM) or a route (ROUTE name) for every worker, until `resume`."""
    _steer(ctx, name, pause=True, reason=reason)


@click.command("resume")
@click.argument("name")
@click.pass_context
@errors_to_exit_codes
def resume_command(ctx: click.Context, name: str) -> None:
    """Lift a pause set with `pause`."""
    _steer(ctx, name, pause=False)
