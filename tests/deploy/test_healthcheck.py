"""deploy/healthcheck.py, run as Docker and Kubernetes run it: a subprocess reading SYNC_* variables.

Liveness finds the role's process in /proc; ``--deps`` asks the services the role needs (real Redis
and a migrated SQLite store); ``migrated`` gates the roles on the database schema. Real worker and
scheduler processes are started for the positive cases.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sync_worker.commands.worker import worker_argv
from sync_worker.locks import RedisLock
from sync_worker.store import upgrade_database
from tests.conftest import REDIS_SERVER, service_unavailable

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "healthcheck.py"
REDIS_URL = f"{REDIS_SERVER}/9"
CLOSED_REDIS = "redis://:hunter2-secret@127.0.0.1:1/0"

pytestmark = pytest.mark.redis


@pytest.fixture
def lease_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        service_unavailable(f"Redis at {REDIS_URL} is not answering")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    database = tmp_path / "store.db"
    upgrade_database(f"sqlite:///{database}")
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SYNC_")},
        "SYNC_DATABASE_URL": f"sqlite:///{database}",
        "SYNC_REDIS_URL": REDIS_URL,
        "SYNC_MAPPINGS_DIR": str(REPO / "mappings"),
        "PYTHONPATH": str(REPO),
    }


def check(env: dict[str, str], *args: str, root: int | None = None) -> subprocess.CompletedProcess[str]:
    """The script's verdict; ``root`` is the process it looks under (this test's own by default,
    since the host's PID 1 has other people's workers under it)."""
    tree = ["--root-pid", str(root if root is not None else os.getpid())]
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args, *tree],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def wait_healthy(
    env: dict[str, str], *args: str, root: int, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + timeout
    while True:
        done = check(env, *args, root=root)
        if done.returncode == 0 or time.monotonic() > deadline:
            return done
        time.sleep(0.5)


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def test_no_worker_process_is_unhealthy(env: dict[str, str]) -> None:
    done = check(env, "worker")
    assert done.returncode == 1
    assert "no worker process is running" in done.stderr


def test_a_running_worker_is_live_and_ready_and_a_dead_broker_makes_it_not_ready(
    env: dict[str, str], lease_redis: redis.Redis, tmp_path: Path
) -> None:
    worker = start(worker_argv(1, 1, shutdown_timeout_ms=2_000), env, tmp_path / "worker.log")
    try:
        assert wait_healthy(env, "worker", root=worker.pid).returncode == 0
        assert check(env, "worker", "--deps", root=worker.pid).returncode == 0
        # When the broker cannot be reached (the password in its URL never printed)
        down = check({**env, "SYNC_REDIS_URL": CLOSED_REDIS}, "worker", "--deps", root=worker.pid)
        assert down.returncode == 1 and "broker unreachable" in down.stderr
        assert "hunter2" not in down.stderr + down.stdout
        # When the store cannot be reached
        gone = check(
            {**env, "SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'missing' / 'x.db'}"}, "worker", "--deps"
        )
        assert gone.returncode == 1 and "store" in gone.stderr
    finally:
        stop(worker)
    assert check(env, "worker", root=worker.pid).returncode == 1


def test_the_scheduler_is_ready_while_some_scheduler_holds_the_lease(
    env: dict[str, str], lease_redis: redis.Redis, tmp_path: Path
) -> None:
    argv = [sys.executable, "-m", "sync_worker.commands", "scheduler"]
    assert check(env, "scheduler").returncode == 1
    # Given a standby-only world: a scheduler process here, but another holds no lease yet
    other = RedisLock(lease_redis, "scheduler", ttl=30.0)
    assert other.acquire(blocking=False)  # someone else leads: ours will stand by
    scheduler = start(argv, env, tmp_path / "scheduler.log")
    try:
        assert wait_healthy(env, "scheduler", "--deps", root=scheduler.pid).returncode == 0
        # When the other leader's lease is gone, ours takes it over and is still ready
        other.release()
        time.sleep(0.5)
        assert wait_healthy(env, "scheduler", "--deps", root=scheduler.pid).returncode == 0
        assert lease_redis.exists("sync-worker:lock:scheduler")
        down = check({**env, "SYNC_REDIS_URL": CLOSED_REDIS}, "scheduler", "--deps", root=scheduler.pid)
        assert down.returncode == 1 and "hunter2" not in down.stderr
    finally:
        stop(scheduler)
    # Then with no scheduler left the lease is released and nobody leads
    assert check(env, "scheduler", root=scheduler.pid).returncode == 1
    assert not lease_redis.exists("sync-worker:lock:scheduler")


def test_migrated_waits_for_the_schema(env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    fresh = {**env, "SYNC_DATABASE_URL": f"sqlite:///{empty}"}
    done = check(fresh, "migrated")
    assert done.returncode == 1 and "revision none" in done.stderr
    waiting = subprocess.Popen(
        [sys.executable, str(SCRIPT), "migrated", "--wait", "60"], env=fresh, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(1.0)
        upgrade_database(f"sqlite:///{empty}")  # the migration Job runs
        assert waiting.wait(timeout=60) == 0
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert check(env, "migrated").returncode == 0


def test_bad_configuration_exits_2(env: dict[str, str]) -> None:
    done = check({**env, "SYNC_BROKER_URL": "kafka://x"}, "migrated")
    assert done.returncode == 2 and "SYNC_BROKER_URL" in done.stderr
