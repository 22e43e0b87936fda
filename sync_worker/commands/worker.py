"""``sync-worker worker``: Dramatiq worker processes for the project's actors.

Runs ``python -m dramatiq sync_worker.runtime:boot_worker`` as a child process (the robust option:
Dramatiq's own supervisor forks the workers, restarts none silently, and handles its signals; our
process only forwards SIGINT/SIGTERM). Each worker process reads the settings from the
environment and builds its runtime once at boot (:class:`sync_worker.runtime.RuntimeMiddleware`).
https://dramatiq.io/guide.html#running-workers and https://dramatiq.io/reference.html#cli
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sync_worker.commands._common import (
    MIGRATE_OPTION_HELP,
    errors_to_exit_codes,
    prepare_start,
    run_child,
    settings_from,
)
from sync_worker.errors import ConfigError

__all__ = ["WORKER_ENTRY", "worker_argv", "worker_command"]

WORKER_ENTRY = "sync_worker.runtime:boot_worker"


def worker_argv(
    processes: int, threads: int, queues: tuple[str, ...] = (), *, shutdown_timeout_ms: int = 30_000
) -> list[str]:
    """The command line of the Dramatiq supervisor for our actors."""
    if processes < 1 or threads < 1:
        raise ConfigError("--processes and --threads must be at least 1")
    argv = [
        *_dramatiq_command(),
        WORKER_ENTRY,
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        "--skip-logging",  # each worker configures the project's redacting logging itself
        "--worker-shutdown-timeout",
        str(shutdown_timeout_ms),
    ]
    if queues:
        argv += ["--queues", *queues]
    return argv


def _dramatiq_command() -> list[str]:
    # Dramatiq re-executes itself on SIGHUP: from `python -m dramatiq` it runs plain "python" from
    # PATH (outside a virtualenv not on PATH); its console script next to our interpreter re-executes
    # as itself.
    script = Path(sys.executable).parent / "dramatiq"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "dramatiq"]


@click.command("worker")
@click.option("--processes", "-p", default=2, show_default=True, help="worker processes")
@click.option("--threads", "-t", default=4, show_default=True, help="threads per worker process")
@click.option("--queue", "-Q", "queues", multiple=True, help="only these queues (default: all)")
@click.option("--migrate/--no-migrate", default=False, show_default=True, help=MIGRATE_OPTION_HELP)
@click.pass_context
@errors_to_exit_codes
def worker_command(
    ctx: click.Context, processes: int, threads: int, queues: tuple[str, ...], migrate: bool
) -> None:
    """Run Dramatiq workers for the project's actors until interrupted."""
    settings = settings_from(ctx)  # validate the configuration here: exit 2 before starting anything
    prepare_start(settings, migrate=migrate)
    code = run_child(worker_argv(processes, threads, queues))
    if code:
        raise click.exceptions.Exit(1)
