"""Health checks for the roles that serve no HTTP: the workers, the scheduler, and the migration gate.

The receiver has ``GET /healthz`` (the process is up) and ``GET /readyz`` (store, broker, mappings).
The worker and the scheduler answer no HTTP, so the image carries this script
(``/opt/sync-worker/healthcheck.py``) for Docker's ``HEALTHCHECK``, compose's ``healthcheck`` and
Kubernetes' exec probes::

    python /opt/sync-worker/healthcheck.py worker            # liveness: the Dramatiq worker runs here
    python /opt/sync-worker/healthcheck.py worker --deps     # readiness: and the broker and store answer
    python /opt/sync-worker/healthcheck.py scheduler         # liveness: the scheduler runs here
    python /opt/sync-worker/healthcheck.py scheduler --deps  # readiness: Redis answers, a scheduler leads
    python /opt/sync-worker/healthcheck.py migrated --wait 300  # init container: database at head

Liveness checks only this container's own processes: PID 1 and its descendants, read from
``/proc/<pid>/stat`` and ``cmdline`` (``--root-pid`` names another root, as the tests do on a shared
host). A database outage must not get every worker restarted, since their messages wait on the
broker and are retried. The
dependency checks read the service's own settings (``SYNC_*``), so they test what the process uses.
The scheduler is healthy while *some* scheduler holds the lease (``sync-worker:lock:scheduler``):
of two replicas one leads and the other stands by. Exit 0 healthy, 1 not (the reason on stderr,
never a URL or a credential), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["main", "running"]

WORKER_MARK = "sync_worker.runtime:boot_worker"  # sync_worker.commands.worker.WORKER_ENTRY


def _processes(proc: Path) -> dict[int, tuple[int, list[str]]]:
    """pid -> (parent pid, command line) for every process ``proc`` shows."""
    found: dict[int, tuple[int, list[str]]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])  # after "pid (comm) state"
        found[int(entry.name)] = (
            parent,
            [p.decode("utf-8", "replace") for p in raw.rstrip(b"\0").split(b"\0")],
        )
    return found


def running(matches: Callable[[list[str]], bool], root: int = 1, proc: Path = Path("/proc")) -> bool:
    """Whether ``root`` or one of its descendants has a command line ``matches`` accepts."""
    processes = _processes(proc)
    tree, frontier = set(), [root]
    while frontier:
        pid = frontier.pop()
        if pid in tree:
            continue
        tree.add(pid)
        frontier.extend(child for child, (parent, _) in processes.items() if parent == pid)
    return any(matches(processes[pid][1]) for pid in tree if pid in processes)


def _is_worker(argv: list[str]) -> bool:
    return WORKER_MARK in argv


def _is_scheduler(argv: list[str]) -> bool:
    """``sync-worker scheduler`` (the console script) or ``python -m sync_worker.commands scheduler``."""
    program = any(Path(part).name == "sync-worker" for part in argv) or "sync_worker.commands" in argv
    return program and "scheduler" in argv


def _check_store_and_broker() -> None:
    from sync_worker.broker import build_broker, check_broker
    from sync_worker.settings import load_settings
    from sync_worker.store import SyncStore

    settings = load_settings()
    store = SyncStore(settings.database_url)
    broker = build_broker(settings)
    try:
        store.ping()
        check_broker(broker)
    finally:
        broker.close()
        store.close()


def _check_scheduler_lease() -> None:
    import redis

    from sync_worker.commands.scheduler import LOCK_NAME
    from sync_worker.errors import TransientError
    from sync_worker.locks import LOCK_PREFIX
    from sync_worker.runtime import redis_client
    from sync_worker.settings import load_settings

    client = redis_client(load_settings(), socket_timeout=2.0)
    try:
        held = client.exists(f"{LOCK_PREFIX}:{LOCK_NAME}")
    except redis.RedisError as exc:
        raise TransientError(f"redis unreachable: {type(exc).__name__}") from exc
    finally:
        client.close()
    if not held:
        raise TransientError("no scheduler holds the lease")


def _check_migrated() -> None:
    from sync_worker.errors import TransientError
    from sync_worker.settings import load_settings
    from sync_worker.store import current_revision, head_revision

    current, head = current_revision(load_settings().database_url), head_revision()
    if current != head:
        raise TransientError(f"database at revision {current or 'none'}, the code needs {head}")


def _run(role: str, deps: bool, root: int) -> None:
    from sync_worker.errors import TransientError

    if role == "migrated":
        _check_migrated()
        return
    if not running(_is_worker if role == "worker" else _is_scheduler, root):
        raise TransientError(f"no {role} process is running in this container")
    if deps and role == "worker":
        _check_store_and_broker()
    elif deps:
        _check_scheduler_lease()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="sync-worker health checks (exit 0 healthy, 1 not)")
    parser.add_argument("role", choices=["worker", "scheduler", "migrated"])
    parser.add_argument("--deps", action="store_true", help="also check the services the role needs")
    parser.add_argument("--wait", type=float, default=0.0, help="retry for up to this many seconds")
    parser.add_argument("--root-pid", type=int, default=1, help="look for the role under this process")
    args = parser.parse_args(argv)
    from sync_worker.errors import ConfigError, MappingError, SyncWorkerError

    deadline = time.monotonic() + args.wait
    while True:
        try:
            _run(args.role, args.deps, args.root_pid)
            return 0
        except (ConfigError, MappingError) as exc:
            print(f"unhealthy: {exc}", file=sys.stderr)
            return 2
        except SyncWorkerError as exc:
            if time.monotonic() >= deadline:
                print(f"unhealthy: {exc}", file=sys.stderr)
                return 1
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


if __name__ == "__main__":
    sys.exit(main())
