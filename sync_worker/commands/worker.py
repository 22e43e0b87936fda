"""``sync-worker worker``: Dramatiq worker processes for the project's actors.

Runs ``python -m dramatiq sync_worker.runtime:boot_worker`` as a child process (the robust option:
Dramatiq's own supervisor forks the workers, restarts none silently, and handles its signals; our
process only forwards SIGINT/SIGTERM, and SIGHUP, on which Dramatiq restarts its workers). The
workers' Prometheus series use prometheus_client's multiprocess mode: each process writes to a
temporary ``PROMETHEUS_MULTIPROC_DIR`` and this process serves their sum on ``--metrics-port``
(https://prometheus.github.io/client_python/multiprocess/). Each worker process reads the settings from the
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
    worker_metrics_dir,
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
@click.option(
    "--metrics-port",
    default=9191,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="serve the workers' Prometheus series (summed over the processes) here; 0: off",
)
@click.option("--metrics-host", default="0.0.0.0", show_default=True, help="address of the metrics port")  # noqa: S104
@click.pass_context
@errors_to_exit_codes
def worker_command(
    ctx: click.Context,
    processes: int,
    threads: int,
    queues: tuple[str, ...],
    migrate: bool,
    metrics_port: int,
    metrics_host: str,
) -> None:
    """Run Dramatiq workers for the project's actors until interrupted."""
    from sync_worker.metrics import serve_worker_metrics

    settings = settings_from(ctx)  # validate the configuration here: exit 2 before starting anything
    prepare_start(settings, migrate=migrate)
    argv = worker_argv(processes, threads, queues)
    with worker_metrics_dir() as metrics_dir:
        if metrics_port:
            try:
                serve_worker_metrics(metrics_dir, metrics_port, metrics_host)
            except OSError as exc:
                raise ConfigError(f"--metrics-port {metrics_port}: {exc.strerror}") from exc
        code = run_child(argv, env={"PROMETHEUS_MULTIPROC_DIR": metrics_dir})
    if code:
        raise click.exceptions.Exit(1)
