"""``sync-worker sandbox``: run the HubSpot, Pipedrive and LaGrowthMachine sandboxes until Ctrl-C.

The three servers start seeded on free local ports (:func:`~sync_worker.sandbox.runner.start_sandbox`);
the command prints the ``SYNC_*`` variables that point the service at them as ``export NAME=value``
lines (values shell-quoted, so ``eval "$(sync-worker sandbox ...)"`` works, though the command keeps
running: redirect its output to a file, or copy the lines), then a ``# ready`` line, and waits. SIGINT
or SIGTERM stops the servers cleanly and exits 0.

The printed values include the generated sandbox credentials: they are throw-away secrets that exist
only for this process, and printing them is the point of the command. Nothing is logged.
The wire formats followed are cited in each sandbox module (HubSpot:
https://developers.hubspot.com/docs/api-reference/crm-deals-v3/guide, Pipedrive:
https://developers.pipedrive.com/docs/api/v1/Deals, LaGrowthMachine:
https://documenter.getpostman.com/view/2071164/TVCmSkH2).
"""

from __future__ import annotations

import shlex
import signal
import threading
from collections.abc import Mapping
from types import FrameType

import click

from sync_worker.plugins import SandboxOptions
from sync_worker.sandbox.plugin import plugin_sandboxes
from sync_worker.sandbox.runner import RunningSandbox, start_sandbox

__all__ = ["export_lines", "sandbox_command"]


def export_lines(env: RunningSandbox | Mapping[str, str]) -> list[str]:
    """``export NAME=value`` for every variable (of :meth:`RunningSandbox.env`), sorted by name."""
    values = env.env() if isinstance(env, RunningSandbox) else env
    return [f"export {name}={shlex.quote(value)}" for name, value in sorted(values.items())]


@click.command("sandbox")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed for the generated data.")
@click.option(
    "--deals",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    help="Pipedrive deals to seed (a quarter mirrored in HubSpot).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface the servers listen on.")
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0.0),
    default=1.0,
    show_default=True,
    help="Multiplier for webhook retry delays (0.001 turns HubSpot's hours into seconds).",
)
@click.option(
    "--webhook-base-url",
    default=None,
    help="Base URL of the receiver the sandboxes deliver webhooks to (e.g. http://127.0.0.1:8000).",
)
def sandbox_command(
    seed: int, deals: int, host: str, time_scale: float, webhook_base_url: str | None
) -> None:
    """Run the sandboxes of every registered connector and print the SYNC_* variables."""
    if webhook_base_url is not None and not webhook_base_url.startswith(("http://", "https://")):
        raise click.BadParameter("must be an http:// or https:// URL", param_hint="--webhook-base-url")
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            running = start_sandbox(
                seed=seed, deals=deals, host=host, time_scale=time_scale, webhook_base_url=webhook_base_url
            )
        except OSError as exc:
            raise click.ClickException(f"could not start the sandbox servers: {exc.strerror or exc}") from exc
        try:
            options = SandboxOptions(
                seed=seed, deals=deals, host=host, time_scale=time_scale, webhook_base_url=webhook_base_url
            )
            plugins = plugin_sandboxes(options)
        except BaseException:
            running.stop()
            raise
        try:
            env = dict(running.env())
            for server in plugins.values():
                env.update(server.env())
            for line in export_lines(env):
                click.echo(line)
            summary = running.summary
            click.echo(
                f"# ready: {len(summary.pipedrive_deal_ids)} Pipedrive deals, "
                f"{len(summary.hubspot_deal_ids)} HubSpot deals, {len(summary.lgm_lead_ids)} LGM leads; "
                "Ctrl-C to stop"
            )
            if plugins:
                click.echo(f"# plug-in sandboxes: {', '.join(f'{n} {s.url}' for n, s in plugins.items())}")
            while not stop.wait(0.5):
                pass
        finally:
            for server in plugins.values():
                server.stop()
            running.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("# sandbox stopped", err=True)
