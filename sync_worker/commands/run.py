"""``sync-worker run``: receiver, workers and scheduler together on one machine.

Three child processes (``python -m sync_worker.commands serve|scheduler`` and the Dramatiq
supervisor) so a crash in one is seen, not hidden in a thread. SIGINT/SIGTERM stop all three
with SIGTERM (then SIGKILL after a grace period); SIGHUP is forwarded to each (the receiver reloads
its mappings, Dramatiq restarts its workers, the scheduler logs it) and ``run`` keeps going; if one
child exits on its own, the others are stopped and the command exits 1. The children never outlive
``run``: each is started with ``PR_SET_PDEATHSIG`` (:func:`~sync_worker.commands._common.start_child`),
so a ``kill -9`` of ``run`` stops them too. The workers' Prometheus series (multiprocess files in a
temporary folder) are served by the receiver's ``/metrics`` next to its own.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping

import click

from sync_worker.commands._common import (
    MIGRATE_OPTION_HELP,
    errors_to_exit_codes,
    forward_signal,
    install_stop_handlers,
    prepare_start,
    settings_from,
    start_child,
    worker_metrics_dir,
)
from sync_worker.commands.worker import worker_argv

__all__ = ["child_commands", "run_command", "supervise"]

_log = logging.getLogger(__name__)


def child_commands(
    host: str, port: int, processes: int, threads: int, metrics_dir: str | None = None
) -> dict[str, list[str]]:
    """The command line of each child, by name; the receiver also serves the workers' series in
    ``metrics_dir``."""
    module = [sys.executable, "-m", "sync_worker.commands"]
    receiver = [*module, "serve", "--host", host, "--port", str(port)]
    if metrics_dir is not None:
        receiver += ["--worker-metrics-dir", metrics_dir]
    return {
        "receiver": receiver,
        "worker": worker_argv(processes, threads),
        "scheduler": [*module, "scheduler"],
    }


def supervise(
    commands: dict[str, list[str]],
    stop: threading.Event,
    *,
    grace: float = 30.0,
    envs: Mapping[str, Mapping[str, str]] | None = None,
) -> int:
    """Start the children, wait for ``stop`` or a child's exit, stop the rest; 0 when stopped on request.

    ``envs`` adds environment variables per child name.
    """
    children = {name: start_child(argv, (envs or {}).get(name)) for name, argv in commands.items()}
    restore = install_stop_handlers(stop, on_hup=lambda: forward_signal(children.values(), signal.SIGHUP))
    failed: str | None = None
    try:
        while failed is None and not stop.wait(0.2):
            for name, child in children.items():
                if child.poll() is not None:
                    _log.error("%s exited with code %s: stopping the others", name, child.returncode)
                    failed = name
                    break
    finally:
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        for child in children.values():
            try:
                child.wait(grace)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        restore()
    return 1 if failed is not None else 0


@click.command("run")
@click.option("--host", default="127.0.0.1", show_default=True, help="receiver address")
@click.option("--port", default=8000, show_default=True, help="receiver port")
@click.option("--processes", "-p", default=1, show_default=True, help="worker processes")
@click.option("--threads", "-t", default=4, show_default=True, help="threads per worker process")
@click.option("--migrate/--no-migrate", default=True, show_default=True, help=MIGRATE_OPTION_HELP)
@click.pass_context
@errors_to_exit_codes
def run_command(
    ctx: click.Context, host: str, port: int, processes: int, threads: int, migrate: bool
) -> None:
    """Run the receiver, the workers and the scheduler together (a single machine)."""
    settings = settings_from(ctx)  # exit 2 on bad configuration before starting anything
    prepare_start(settings, migrate=migrate)
    stop = threading.Event()
    with worker_metrics_dir() as metrics_dir:
        commands = child_commands(host, port, processes, threads, metrics_dir)
        code = supervise(commands, stop, envs={"worker": {"PROMETHEUS_MULTIPROC_DIR": metrics_dir}})
    if code:
        raise click.exceptions.Exit(1)
