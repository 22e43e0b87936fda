"""``sync-worker scheduler``: enqueue polls, pushes, the inbox sweep and leak scans on intervals.

Guarded by a Redis lease lock: a second scheduler waits as a standby and takes over if the first
dies (see :mod:`sync_worker.scheduler`).
"""

from __future__ import annotations

import threading

import click

from sync_worker.commands._common import (
    MIGRATE_OPTION_HELP,
    errors_to_exit_codes,
    install_stop_handlers,
    prepare_start,
    settings_from,
)
from sync_worker.settings import Settings

__all__ = ["LOCK_NAME", "run_scheduler", "scheduler_command"]

LOCK_NAME = "scheduler"


def run_scheduler(settings: Settings, stop: threading.Event, *, lock_ttl: float = 30.0) -> None:
    """Install the Redis broker and run the scheduler loop until ``stop`` is set."""
    from sync_worker.broker import build_broker, install_broker, queue_loss_watch
    from sync_worker.locks import RedisLock
    from sync_worker.runtime import enabled_streams, redis_client
    from sync_worker.scheduler import Scheduler, scheduled_jobs

    broker = install_broker(build_broker(settings))
    client = redis_client(settings)
    lock = RedisLock(client, LOCK_NAME, ttl=lock_ttl)
    scheduler = Scheduler(
        scheduled_jobs(settings, enabled_streams(settings), queue_watch=queue_loss_watch(broker)),
        lock=lock,
        renew_every=lock_ttl / 3,
        standby_poll=min(2.0, lock_ttl / 6),
    )
    try:
        scheduler.run(stop)
    finally:
        broker.close()
        client.close()


@click.command("scheduler")
@click.option("--migrate/--no-migrate", default=False, show_default=True, help=MIGRATE_OPTION_HELP)
@click.pass_context
@errors_to_exit_codes
def scheduler_command(ctx: click.Context, migrate: bool) -> None:
    """Enqueue incremental polls, pushes, inbox sweeps and leak scans until interrupted."""
    settings = settings_from(ctx)
    prepare_start(settings, migrate=migrate)
    stop = threading.Event()
    install_stop_handlers(stop)
    run_scheduler(settings, stop)
