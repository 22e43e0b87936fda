"""What the runtime commands share: settings once per invocation, errors to exit codes, child processes.

Exit codes (the CLI contract): 0 ok; 1 a failure the command reports; 2 bad usage or configuration.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sync_worker.errors import ConfigError, MappingError, SyncWorkerError
from sync_worker.settings import Settings, load_settings

if TYPE_CHECKING:
    from sync_worker.mappings import Mappings

__all__ = [
    "MIGRATE_OPTION_HELP",
    "errors_to_exit_codes",
    "forward_signal",
    "install_stop_handlers",
    "prepare_start",
    "prepare_store",
    "run_child",
    "settings_from",
    "start_child",
    "validated_mappings",
    "worker_metrics_dir",
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


def validated_mappings(directory: Path) -> Mappings:
    """The mappings in ``directory``, or :class:`MappingError` with every ``file:line: key: message``.

    Warnings go to standard error. ``mappings validate`` and every long-running command call this
    before anything starts, so a bad file reads the same everywhere and exits 2.
    """
    from sync_worker.mappings import validate_directory

    if not directory.is_dir():
        raise ConfigError(f"{directory}: not a directory of mapping files")
    result, errors, warnings = validate_directory(directory)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if errors or result is None:
        raise MappingError(errors)
    return result


def prepare_start(settings: Settings, *, migrate: bool) -> None:
    """What a long-running command checks before it starts anything: the mappings, then the store."""
    validated_mappings(settings.resolved_mappings_dir())
    prepare_store(settings, migrate=migrate)


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


def install_stop_handlers(
    stop: threading.Event, *, on_hup: Callable[[], None] | None = None
) -> Callable[[], None]:
    """SIGINT and SIGTERM set ``stop``; SIGHUP calls ``on_hup`` (a reload) and never stops the process.

    Returns a callable that puts the previous handlers back.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        _log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    def hup(signum: int, frame: FrameType | None) -> None:
        _log.info("received SIGHUP: %s", "reloading" if on_hup is not None else "nothing to reload")
        if on_hup is not None:
            on_hup()

    previous = {
        signum: signal.signal(signum, new)
        for signum, new in ((signal.SIGINT, handler), (signal.SIGTERM, handler), (signal.SIGHUP, hup))
    }

    def restore() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)

    return restore


def _child_preexec(parent: int) -> Callable[[], None]:
    """The ``preexec_fn`` of every child: SIGHUP ignored until the child installs its own handler,
    and (on Linux) SIGTERM when its parent dies (``PR_SET_PDEATHSIG``).

    A SIGHUP (a reload) that reaches a child still importing, before its handler is in place, would
    otherwise kill it with the default action; an ignored disposition survives ``exec`` (signal(7))
    and each child's ``signal.signal(SIGHUP, ...)`` replaces it. A reload missed that way is not lost:
    the child reads its mappings after that moment, and the holder also reloads on file change.
    https://man7.org/linux/man-pages/man2/PR_SET_PDEATHSIG.2const.html: the death signal fires when
    the thread that forked dies, so children are started from the main thread.
    """
    linux = sys.platform.startswith("linux")
    if linux:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if linux:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent:  # the parent died between fork and prctl
                os._exit(1)

    return preexec


_PR_SET_PDEATHSIG = 1


def start_child(argv: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` as a child that stops (SIGTERM) if this process dies, however it dies, and that
    a SIGHUP cannot kill before it has installed its handler.

    ``env`` adds variables to this process's environment for the child.
    """
    environment = {**os.environ, **env} if env else None
    return subprocess.Popen(list(argv), env=environment, preexec_fn=_child_preexec(os.getpid()))  # noqa: S603


@contextlib.contextmanager
def worker_metrics_dir() -> Iterator[str]:
    """A fresh folder for the worker processes' Prometheus files (``PROMETHEUS_MULTIPROC_DIR``),
    removed afterwards: https://prometheus.github.io/client_python/multiprocess/"""
    directory = tempfile.mkdtemp(prefix="sync-worker-metrics-")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def forward_signal(children: Iterable[subprocess.Popen[bytes]], signum: int) -> None:
    """Send ``signum`` to every child still running."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signum)


def run_child(argv: Sequence[str], *, grace: float = 30.0, env: Mapping[str, str] | None = None) -> int:
    """Run one child process until it exits; SIGINT/SIGTERM are passed on as SIGTERM, SIGHUP as SIGHUP.

    Its exit code.
    """
    child = start_child(argv, env)
    stop = threading.Event()
    restore = install_stop_handlers(stop, on_hup=lambda: forward_signal([child], signal.SIGHUP))
    try:
        while child.poll() is None:
            if stop.wait(0.2):
                child.terminate()
                try:
                    return child.wait(grace)
                except subprocess.TimeoutExpired:
                    child.kill()
                    return child.wait()
        return int(child.returncode)
    finally:
        restore()
