"""Starting the service as an ops team would: the installed ``sync-worker`` in a subprocess, from a
foreign directory, on a fresh database (migrate or refuse), with signals (forwarded, no orphans)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_SERVER
from tests.core.test_cli import REPO, _run

REDIS_URL = f"{REDIS_SERVER}/12"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(directory: Path, **extra: str) -> dict[str, str]:
    return {"SYNC_DATABASE_URL": f"sqlite:///{directory / 'fresh.db'}", "SYNC_REDIS_URL": REDIS_URL, **extra}


@pytest.mark.parametrize("command", ["worker", "scheduler"])
def test_worker_and_scheduler_refuse_an_unmigrated_store_with_the_hint(tmp_path: Path, command: str) -> None:
    # Given a database that was never migrated
    result = _run(command, "--no-migrate", cwd=tmp_path, env=_env(tmp_path))
    # Then nothing starts: exit 2 with the command that fixes it, no traceback
    assert result.returncode == 2, result.stderr
    assert "sync-worker db upgrade" in result.stderr
    assert "Traceback" not in result.stderr


def _sync_worker() -> list[str]:
    script = Path(sys.executable).parent / "sync-worker"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sync_worker"]


class Running:
    """``sync-worker run`` as a child of the test, with its own port."""

    def __init__(self, directory: Path, port: int) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
        self.port = port
        self.process = subprocess.Popen(
            [*_sync_worker(), "run", "--port", str(port), "--threads", "1"],
            cwd=directory,
            env={**base, **_env(directory)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        last: dict[str, object] = {}
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stderr.read() if self.process.stderr else ""
            try:
                response = httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2)
                last = response.json()
                if response.status_code == 200:
                    return last
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"run never became ready: {last}")

    def children(self) -> list[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in out.stdout.split()]


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    run = Running(tmp_path, _free_port())
    yield run
    if run.process.poll() is None:
        run.process.kill()
        run.process.wait(30)
    if run.process.stderr is not None:
        run.process.stderr.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for its (dead) parent's reaping counts as gone.
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().split(") ", 1)[1][0] != "Z"


def _wait_gone(pids: list[int], timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [pid for pid in pids if _alive(pid)]
        if not left:
            return []
        time.sleep(0.2)
    return [pid for pid in pids if _alive(pid)]


@pytest.mark.redis
def test_run_migrates_a_fresh_database_and_stops_on_sigterm(running: Running) -> None:
    # Given `run` on a database that does not exist yet
    ready = running.wait_ready()
    # Then it migrated it before starting its children: the receiver is ready, schema included
    assert ready["checks"] == {"store": "ok", "schema": "ok", "broker": "ok", "mappings": "ok"}
    children = running.children()
    assert len(children) == 3
    # And its /metrics answers with the workers' multiprocess folder attached
    scrape = httpx.get(f"http://127.0.0.1:{running.port}/metrics", timeout=5)
    assert scrape.status_code == 200 and "sync_worker_inbox_depth" in scrape.text
    # When it gets SIGTERM, it stops every child and exits 0
    running.process.send_signal(signal.SIGTERM)
    assert running.process.wait(60) == 0
    assert _wait_gone(children) == []


@pytest.mark.redis
def test_run_forwards_sighup_and_its_children_die_with_it(running: Running) -> None:
    running.wait_ready()
    children = running.children()
    assert len(children) == 3
    # When `run` gets SIGHUP (a reload), it and every child keep running
    running.process.send_signal(signal.SIGHUP)
    time.sleep(3)
    assert running.process.poll() is None
    assert [pid for pid in children if _alive(pid)] == children
    running.wait_ready()
    # When `run` is killed outright, no child is left behind with PPID 1
    running.process.kill()
    running.process.wait(10)
    assert _wait_gone(children) == []


@pytest.mark.parametrize("command", [["run"], ["worker"], ["serve"], ["scheduler"]])
def test_invalid_mappings_exit_2_with_the_validate_lines_before_anything_starts(
    tmp_path: Path, command: list[str]
) -> None:
    # Given a mappings folder with a typo in a canonical key
    broken = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", broken)
    path = broken / "hubspot.yaml"
    path.write_text(
        path.read_text(encoding="utf-8").replace("canonical: qualified\n", "canonical: qualifyed\n", 1),
        encoding="utf-8",
    )
    env = _env(tmp_path, SYNC_MAPPINGS_DIR=str(broken))
    validate = _run("mappings", "validate", cwd=tmp_path, env=env)
    assert validate.returncode == 2 and "hubspot.yaml:" in validate.stderr
    # When the service is started on it
    result = _run(*command, cwd=tmp_path, env=env)
    # Then it exits 2 with the very lines `mappings validate` prints, and started nothing
    assert result.returncode == 2, result.stderr
    assert validate.stderr in result.stderr
    assert "Traceback" not in result.stderr and "ready for action" not in result.stderr
    assert not (tmp_path / "fresh.db").exists()
