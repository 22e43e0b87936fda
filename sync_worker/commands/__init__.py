"""The runtime's click commands: ``worker``, ``scheduler``, ``run``, ``sync``, ``dlq``, ``status``,
``pause``, ``resume``, ``plan`` and ``held``.

The main group in :mod:`sync_worker.cli` registers each of :data:`COMMANDS`
(``for command in COMMANDS: main.add_command(command)``).
"""

from __future__ import annotations

import click

from sync_worker.commands.dlq import dlq_group
from sync_worker.commands.held import held_group
from sync_worker.commands.operate import pause_command, resume_command, status_command
from sync_worker.commands.plan import plan_command
from sync_worker.commands.run import run_command
from sync_worker.commands.scheduler import scheduler_command
from sync_worker.commands.sync import sync_command
from sync_worker.commands.worker import worker_command

__all__ = [
    "COMMANDS",
    "dlq_group",
    "held_group",
    "pause_command",
    "plan_command",
    "resume_command",
    "run_command",
    "scheduler_command",
    "status_command",
    "sync_command",
    "worker_command",
]

COMMANDS: list[click.Command] = [
    worker_command,
    scheduler_command,
    run_command,
    sync_command,
    dlq_group,
    status_command,
    pause_command,
    resume_command,
    plan_command,
    held_group,
]
