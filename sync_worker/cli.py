"""The ``sync-worker`` command line.

Exit codes: 0 ok; 1 a failure the command reports; 2 bad usage or bad configuration, with a message
that says what to fix. Settings are built once here and passed down.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sync_worker import __version__
from sync_worker.errors import ConfigError, MappingError, SyncWorkerError
from sync_worker.settings import Settings, load_settings, setting_rows

if TYPE_CHECKING:
    from sync_worker.leaks.scan import ScanResult
    from sync_worker.store import SyncStore

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _errors_to_exit_codes(func: F) -> F:
    """Turn the project's errors into the documented exit codes at one place."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ConfigError, MappingError) as exc:
            _fail(str(exc), 2)
        except SyncWorkerError as exc:
            _fail(str(exc), 1)
        return None

    return wrapper  # type: ignore[return-value]


def _settings(ctx: click.Context) -> Settings:
    """Build the settings once per invocation (and only for commands that need them)."""
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings()
    settings: Settings = obj["settings"]
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sync-worker")
def main() -> None:
    """Keep outreach tools and CRMs in step, and flag deals that leak out of the funnel."""


@main.command("config")
@click.option(
    "--describe",
    is_flag=True,
    help="Also print what each setting means (its unit, format, and what unset means).",
)
@click.pass_context
@_errors_to_exit_codes
def config_command(ctx: click.Context, describe: bool) -> None:
    """Print the effective configuration, secrets masked."""
    settings = _settings(ctx)
    rows = setting_rows(settings)
    width = max(len(row.name) for row in rows)
    for row in rows:
        click.echo(f"{row.name.ljust(width)}  {row.value}")
        if describe and row.description:
            click.echo(f"    {row.description}")
    from sync_worker.plugins import registry

    for system, spec in registry().items():
        if not spec.enabled(settings.section(system)):
            click.echo(f"# {system}: disabled (no credentials set: {spec.credential_env})")


@main.group("mappings")
def mappings_group() -> None:
    """Validate and inspect the YAML stage mappings."""


@mappings_group.command("validate")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.pass_context
@_errors_to_exit_codes
def mappings_validate(ctx: click.Context, directory: Path | None) -> None:
    """Check every mapping file in DIRECTORY (default: the configured one). Exit 0 or 2."""
    from sync_worker.commands._common import validated_mappings

    target = directory if directory is not None else _settings(ctx).resolved_mappings_dir()
    result = validated_mappings(target)
    click.echo(
        f"{target}: {len(result.files)} stage mapping files and {len(result.routes)} routes valid;"
        f" sources: {', '.join(result.sources())}"
    )


@mappings_group.command("check")
@click.pass_context
@_errors_to_exit_codes
def mappings_check(ctx: click.Context) -> None:
    """Read each enabled system's live pipelines and stages and list what the mappings do not cover
    (exit 1 if any) and every mapping entry that matches nothing in the account."""
    from sync_worker.commands._common import validated_mappings
    from sync_worker.mappings.coverage import check_coverage
    from sync_worker.runtime import build_connectors

    settings = _settings(ctx)
    mappings = validated_mappings(settings.resolved_mappings_dir())
    connectors = build_connectors(settings, mappings, limiter=lambda _name: None)
    if not connectors:
        raise ConfigError("no system has credentials set: nothing to check (see: sync-worker config)")
    gaps = 0
    try:
        for name, connector in sorted(connectors.items()):
            coverage = check_coverage(mappings, name, connector.list_stages())
            click.echo(
                f"{name}: {coverage.stages} live stages, {len(coverage.uncovered)} not mapped,"
                f" {len(coverage.unused)} mapping entries matching nothing"
            )
            for stage in coverage.uncovered:
                click.echo(
                    f"  not mapped: pipeline {stage.pipeline_label!r} (id {stage.pipeline_id})"
                    f" stage {stage.stage_label!r} (id {stage.stage_id})"
                )
            for entry in coverage.unused:
                click.echo(f"  matches nothing: {entry}")
            gaps += 0 if coverage.ok else 1
    finally:
        for connector in connectors.values():
            close = getattr(connector, "close", None)
            if callable(close):
                close()
    if gaps:
        click.echo(
            f"{gaps} system(s) with gaps: edit their mapping files, then `sync-worker mappings check`",
            err=True,
        )
        raise click.exceptions.Exit(1)


@mappings_group.command("init")
@click.option("--preset", required=True, help="a shipped preset (b2b-nurture, post-purchase, odoo-default)")
@click.option("--force", is_flag=True, help="overwrite files that already exist")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
@_errors_to_exit_codes
def mappings_init(ctx: click.Context, preset: str, force: bool, directory: Path) -> None:
    """Write a preset canonical model and its matching source mappings into DIRECTORY."""
    from sync_worker.mappings.presets import write_preset

    written = write_preset(preset, directory, overwrite=force)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"point SYNC_MAPPINGS_DIR at {directory} to use it")


@mappings_group.command("show")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.pass_context
@_errors_to_exit_codes
def mappings_show(ctx: click.Context, directory: Path | None) -> None:
    """Print the resolved source stage -> canonical stage table."""
    from rich.console import Console
    from rich.table import Table

    from sync_worker.mappings import load_mappings

    target = directory if directory is not None else _settings(ctx).resolved_mappings_dir()
    mappings = load_mappings(target)
    table = Table("source", "pipeline", "source stage", "canonical")
    for row in mappings.table():
        table.add_row(*row)
    Console(width=120).print(table)


@main.group("db")
def db_group() -> None:
    """Manage the state store."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_context
@_errors_to_exit_codes
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Apply the database migrations (shipped inside the package)."""
    from sync_worker.store import current_revision, upgrade_database

    url = _settings(ctx).database_url
    upgrade_database(url, revision)
    click.echo(f"database at revision {current_revision(url)}")


@db_group.command("current")
@click.pass_context
@_errors_to_exit_codes
def db_current(ctx: click.Context) -> None:
    """Print the database's migration revision."""
    from sync_worker.store import current_revision

    click.echo(current_revision(_settings(ctx).database_url) or "empty (run: sync-worker db upgrade)")


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--migrate/--no-migrate", default=True, show_default=True, help="apply migrations first")
@click.pass_context
@_errors_to_exit_codes
def serve_command(ctx: click.Context, host: str, port: int, workers: int, migrate: bool) -> None:
    """Run the webhook receiver (POST /webhooks/{source}, /healthz, /readyz, /metrics)."""
    from sync_worker.commands._common import prepare_start
    from sync_worker.logs import configure_logging
    from sync_worker.receiver import serve

    settings = _settings(ctx)
    configure_logging(settings)
    prepare_start(settings, migrate=migrate)
    serve(settings, host, port, workers)


_REPORT_FORMATS = ("table", "csv", "json", "html")
_CSV_TABLES = ("open_flags", "funnel", "forecast_by_stage", "forecast_by_month")


@main.group("leaks", invoke_without_command=True)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(_REPORT_FORMATS),
    default="table",
    show_default=True,
    help="table for a terminal; csv (one table per file), json or one self-contained html page",
)
@click.option(
    "--output",
    type=click.Path(writable=True, path_type=Path),
    default=None,
    help="write the report to FILE instead of standard output (csv without --table: a DIRECTORY"
    " that gets one NAME.csv per table)",
)
@click.option(
    "--table",
    "table_name",
    type=click.Choice(_CSV_TABLES),
    default=None,
    help="csv: only this table",
)
@click.option(
    "--since-days",
    default=90,
    show_default=True,
    type=click.IntRange(1, 3650),
    help="the period of the funnel and the won/lost split, in days before now",
)
@click.pass_context
@_errors_to_exit_codes
def leaks_command(
    ctx: click.Context, output_format: str, output: Path | None, table_name: str | None, since_days: int
) -> None:
    """Report open leak flags, the funnel per stage and the weighted pipeline forecast (per deal)."""
    if ctx.invoked_subcommand is not None:
        return
    from datetime import timedelta

    from sync_worker.mappings import load_mappings
    from sync_worker.plugins import deal_links
    from sync_worker.report import build_report, render_csv_tables, render_html, render_json, render_table
    from sync_worker.store import SyncStore, current_revision, head_revision

    if table_name is not None and output_format != "csv":
        raise ConfigError("--table goes with --format csv")
    if output_format == "csv" and table_name is None and (output is None or not output.is_dir()):
        raise ConfigError(
            "csv writes one table per file: give --table NAME (one of " + ", ".join(_CSV_TABLES) + ")"
            " or --output DIRECTORY (an existing folder)"
        )
    settings = _settings(ctx)
    model = load_mappings(settings.resolved_mappings_dir()).model
    if current_revision(settings.database_url) != head_revision():
        raise ConfigError(
            "the state store is not migrated to the current schema: run `sync-worker db upgrade`"
        )
    store = SyncStore(settings.database_url)
    try:
        now = datetime.now(UTC)
        report = build_report(
            store, model, now, since=now - timedelta(days=since_days), deal_links=deal_links(settings)
        )
    finally:
        store.close()
    if output_format == "csv":
        tables = render_csv_tables(report)
        if table_name is None:
            assert output is not None
            for name, text in tables.items():
                _write_report(output / f"{name}.csv", text, "csv table")
            return
        _emit(tables[table_name], output, f"csv table {table_name}")
        return
    renderers = {"table": render_table, "json": render_json}
    text = render_html(report, model) if output_format == "html" else renderers[output_format](report)
    _emit(text, output, f"{output_format} report")


class _DryRun(Exception):
    """Raised inside the scan's unit of work to roll a dry run back; carries the result."""

    def __init__(self, result: ScanResult) -> None:
        super().__init__("dry run")
        self.result = result


@leaks_command.command("scan")
@click.option(
    "--as-of",
    "as_of",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
    default=None,
    help="evaluate the rules as of this time (ISO 8601; no offset means UTC) instead of now;"
    " implies --dry-run unless --write is given",
)
@click.option(
    "--dry-run/--write",
    "dry_run",
    default=None,
    help="--dry-run: list what the scan would raise and clear, write nothing (default with"
    " --as-of); --write: store the flags and queue their write-backs (default otherwise)",
)
@click.pass_context
@_errors_to_exit_codes
def leaks_scan(ctx: click.Context, as_of: datetime | None, dry_run: bool | None) -> None:
    """Run the leak scan now (the workers also scan after each completed full pull and on the
    interval); write-backs and alerts it queues wait in the outbox for the workers to push.

    With --as-of T the rules are evaluated as if it were T (a reply older than the reply SLA at T
    is unanswered, a deal in a stage longer than its limit at T is stalled): a rehearsal that
    writes nothing unless --write is given."""
    from sync_worker.activity import note_scan
    from sync_worker.commands._common import prepare_store
    from sync_worker.runtime import build_runtime

    when = None if as_of is None else (as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC))
    rehearse = dry_run if dry_run is not None else when is not None
    settings = _settings(ctx)
    prepare_store(settings, migrate=False)
    runtime = build_runtime(settings, watch_mappings=False, shared_limits=False)
    try:
        if rehearse:
            try:
                with runtime.store.unit():
                    raise _DryRun(runtime.scan_leaks(as_of=when))
            except _DryRun as rolled_back:
                result = rolled_back.result
            _echo_dry_run(runtime.store, result, when)
            return
        result = runtime.scan_leaks(as_of=when)
        note_scan(runtime.store, sum(result.open_by_rule.values()))
    finally:
        runtime.close()
    open_flags = ", ".join(f"{rule} {n}" for rule, n in sorted(result.open_by_rule.items()) if n) or "none"
    click.echo(
        f"leak scan done: {len(result.raised)} raised, {len(result.cleared)} cleared,"
        f" {result.queued} write-back(s)/alert(s) queued; open: {open_flags}"
    )


def _echo_dry_run(store: SyncStore, result: ScanResult, when: datetime | None) -> None:
    """What a rolled-back scan would have done, one line per flag it would raise or clear."""
    names: dict[int, str] = {}
    for record_id in {flag.record_id for flag in (*result.raised, *result.cleared)}:
        record = store.get_record_by_id(record_id)
        if record is not None:
            names[record_id] = f"{record.source} {record.kind} {record.external_id}"
    for verb, flags in (("would raise", result.raised), ("would clear", result.cleared)):
        for flag in sorted(flags, key=lambda f: (f.rule, f.record_id)):
            name = names.get(flag.record_id, f"record {flag.record_id}")
            click.echo(f"{verb} {flag.rule}: {name}: {flag.reason}")
    open_flags = ", ".join(f"{rule} {n}" for rule, n in sorted(result.open_by_rule.items()) if n) or "none"
    at = when.isoformat() if when is not None else "now"
    click.echo(
        f"dry run as of {at}: {len(result.raised)} would be raised, {len(result.cleared)} cleared,"
        f" {result.queued} write-back(s)/alert(s) queued; open then: {open_flags}; nothing was written"
    )


def _emit(text: str, output: Path | None, what: str) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    _write_report(output, text, what)


def _write_report(path: Path, text: str, what: str) -> None:
    try:
        path.write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc
    click.echo(f"wrote {what} to {path}", err=True)


def _register_commands() -> None:
    """Commands that live next to what they drive; registered here so there is one entry point."""
    from sync_worker.commands import COMMANDS
    from sync_worker.sandbox.cli import sandbox_command

    for command in (*COMMANDS, sandbox_command):
        main.add_command(command)


_register_commands()


@main.command("demo")
@click.option("--seed", default=7, show_default=True, help="seed of the sandbox data")
@click.option("--deals", default=150, show_default=True, type=click.IntRange(10, 5000))
@click.option(
    "--output",
    default="sync-worker-demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="folder for the demo database and the HTML report",
)
@click.pass_context
@_errors_to_exit_codes
def demo_command(ctx: click.Context, seed: int, deals: int, output: Path) -> None:
    """Run the whole service against the local sandbox and show what it did (about ten seconds;
    needs Redis). Its state stays in OUTPUT/demo.db: inspect it afterwards with
    SYNC_DATABASE_URL=sqlite:///OUTPUT/demo.db and any command (status, dlq list, leaks)."""
    import logging

    from rich.console import Console
    from rich.table import Table

    from sync_worker.demo import records_text, run_demo
    from sync_worker.logs import configure_logging

    settings = _settings(ctx)
    configure_logging(settings.model_copy(update={"log_level": "WARNING"}))
    logging.getLogger("sync_worker.access").setLevel(logging.WARNING)
    console = Console(width=100)
    summary = run_demo(settings, output=output, seed=seed, deals=deals, say=console.print)
    systems = tuple(sorted(set(summary.api_calls) | set(summary.records)))
    table = Table("", *systems, title="What happened")
    table.add_row("records synced", *(records_text(summary, s) for s in systems))
    table.add_row("webhooks accepted", *(str(summary.webhooks[s]) for s in systems))
    table.add_row("writes pushed", *(str(summary.writes[s]) for s in systems))
    table.add_row("writes failed", *(str(summary.failed_writes[s]) for s in systems))
    table.add_row("API calls used", *(str(summary.api_calls[s]) for s in systems))
    table.add_row("429s from the API", *(str(summary.rate_limited[s]) for s in systems))
    console.print(table)
    flags = ", ".join(f"{rule} {n}" for rule, n in sorted(summary.flags.items())) or "none"
    console.print(f"leak flags open: {flags}")
    hint = "  (see: sync-worker dlq list)" if summary.dead_letters else ""
    console.print(f"dead letters: {summary.dead_letters}{hint}")
    console.print(f"report: {summary.report}  (open it in a browser)")
    console.print(
        f"inspect the demo's store: SYNC_DATABASE_URL=sqlite:///{(output / 'demo.db').resolve()}"
        " sync-worker status  (or dlq list, leaks)",
        soft_wrap=True,
    )
    console.print(f"done in {summary.seconds:.0f} s")
