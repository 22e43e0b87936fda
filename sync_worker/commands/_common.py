"""What the runtime commands share: settings once per invocation, errors to exit codes, child processes.

Exit codes (the CLI contract): 0 ok; 1 a failure the command reports; 2 bad usage or configuration.
"""

from __future__ import annotations

import functools
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, TypeVar

import click

from sync_worker.errors import ConfigError, MappingError, SyncWorkerError
from sync_worker.settings import Settings, load_settings

__all__ = [
    "MIGRATE_OPTION_HELP",
    "errors_to_exit_codes",
    "install_stop_handlers",
    "prepare_store",
    "run_child",
    "settings_from",
]

MIGRATE_OPTION_HELP = "apply the database migrations first (else refuse an unmigrated store)"

F = TypeVar("F", bound=Callable[..., Any])

_log = logging.getLogger(__name__)


def errors_to_exit_codes(func: F) -> F:
    """Turn the project's errors into the documented exit codes at one place."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ConfigError, MappingError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except SyncWorkerError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def settings_from(ctx: click.Context) -> Settings:
    """The invocation's settings: built once (shared with the main group's ``ctx.obj``) and logged with."""
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings()
    settings: Settings = obj["settings"]
    if not obj.get("logging_configured"):
        from sync_worker.logs import configure_logging

        configure_logging(settings)
        obj["logging_configured"] = True
    return settings


def prepare_store(settings: Settings, *, migrate: bool) -> None:
    """Migrate the store to head (``migrate``) or refuse with :class:`ConfigError` unless it is at head.

    Called before any child or worker starts, so an unmigrated database is one clear exit 2, not a
    stream of "no such table" tracebacks.
    """
    from sync_worker.settings import mask_url
    from sync_worker.store import current_revision, head_revision, upgrade_database

    if migrate:
        upgrade_database(settings.database_url)
        return
    revision = current_revision(settings.database_url)
    head = head_revision()
    if revision != head:
        raise ConfigError(
            f"the state store {mask_url(settings.database_url)} is at revision {revision or 'none'},"
            f" not {head}: run `sync-worker db upgrade` (or pass --migrate)"
        )


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set ``stop`` (a second signal is left to the default handler)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        _log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run_child(argv: Sequence[str], *, grace: float = 30.0) -> int:
    """Run one child process until it exits; SIGINT/SIGTERM are passed on as SIGTERM. Its exit code."""
    child = subprocess.Popen(list(argv))  # noqa: S603 - argv is built by the program, not from input
    stop = threading.Event()
    install_stop_handlers(stop)
    while child.poll() is None:
        if stop.wait(0.2):
            child.terminate()
            try:
                return child.wait(grace)
            except subprocess.TimeoutExpired:
                child.kill()
                return child.wait()
    return int(child.returncode)
