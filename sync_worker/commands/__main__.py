"""``python -m sync_worker.commands``: the runtime commands, plus ``serve``, for ``run``'s children."""

from __future__ import annotations

import click

from sync_worker.commands import COMMANDS
from sync_worker.commands._common import errors_to_exit_codes, settings_from


@click.group()
def _main() -> None:
    """sync-worker runtime commands."""


@_main.command("serve")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=8000)
@click.option("--worker-metrics-dir", default=None, help="also serve the workers' series written here")
@click.pass_context
@errors_to_exit_codes
def _serve(ctx: click.Context, host: str, port: int, worker_metrics_dir: str | None) -> None:
    """Run the webhook receiver."""
    from sync_worker.receiver.serve import serve

    serve(settings_from(ctx), host, port, worker_metrics_dir=worker_metrics_dir)


for _command in COMMANDS:
    _main.add_command(_command)

if __name__ == "__main__":
    _main()
