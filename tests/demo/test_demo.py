"""The README's main command: ``sync-worker demo`` against the sandbox, from a clean directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from sync_worker.demo import run_demo
from sync_worker.settings import Settings
from tests.conftest import REDIS_SERVER, service_unavailable

REDIS_URL = f"{REDIS_SERVER}/12"


@pytest.fixture
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_unavailable(f"Redis at {REDIS_URL} does not answer: {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.mark.slow
def test_demo_syncs_every_system_flags_leaks_and_writes_the_report(tmp_path: Path, redis_url: str) -> None:
    lines: list[str] = []
    summary = run_demo(
        Settings(_env_file=None, redis_url=redis_url), output=tmp_path / "out", deals=60, say=lines.append
    )
    # Every system was pulled and every kind of webhook arrived and was accepted
    assert summary.records["pipedrive"]["deal"] >= 60
    assert summary.records["hubspot"]["deal"] > 0
    assert summary.records["lagrowthmachine"]["lead"] > 0
    for system in ("hubspot", "pipedrive", "lagrowthmachine"):
        assert summary.webhooks[system] > 0, system
    # Changes were pushed to both CRMs and the outreach tool, within the providers' limits
    assert summary.writes["hubspot"] > 0 and summary.writes["pipedrive"] > 0
    assert summary.writes["lagrowthmachine"] > 0
    assert sum(summary.rate_limited.values()) == 0
    # The seed has stalled deals: the scan flags them
    assert summary.flags["stalled"] > 0
    assert summary.report is not None and "<svg" in summary.report.read_text(encoding="utf-8")
    assert any(line.startswith("4/4") for line in lines)


@pytest.mark.slow
def test_demo_command_exits_0_from_a_clean_directory(tmp_path: Path, redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    env["SYNC_REDIS_URL"] = redis_url
    script = Path(sys.executable).parent / "sync-worker"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "sync_worker"]
    result = subprocess.run(
        [*command, "demo", "--deals", "40"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "What happened" in result.stdout
    assert (tmp_path / "sync-worker-demo" / "report.html").is_file()


def test_demo_without_redis_says_how_to_start_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    env["SYNC_REDIS_URL"] = "redis://127.0.0.1:1/0"
    script = Path(sys.executable).parent / "sync-worker"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "sync_worker"]
    result = subprocess.run(
        [*command, "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "redis-server" in result.stderr and "SYNC_REDIS_URL" in result.stderr
