"""``sync-worker plan`` against ``sync-worker sandbox``: counts and samples per target, nothing written."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.core.test_cli import _run
from tests.e2e.test_sandbox_command import _read_exports
from tests.runtime.test_startup import _sync_worker


@pytest.fixture
def sandbox_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    process = subprocess.Popen(
        [*_sync_worker(), "sandbox", "--seed", "3", "--deals", "20", "--time-scale", "0.001"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
        env=base,
    )
    try:
        yield _read_exports(process)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)
        if process.stdout is not None:
            process.stdout.close()


def test_plan_says_what_the_first_sync_would_write_and_writes_nothing(
    sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    store = tmp_path / "sync-worker.db"
    env = {**sandbox_env, "SYNC_DATABASE_URL": f"sqlite:///{store}"}
    first = _run("plan", "--sample", "2", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert "nothing was written" in out and "pipedrive/deals: 18 records" in out
    hubspot = next(line for line in out.splitlines() if line.startswith("  hubspot: "))
    assert hubspot.startswith("  hubspot: 0 to create, 5 to update and link (pipedrive-hubspot-mirror 5)")
    samples = [line for line in out.splitlines() if line.startswith("    e.g. pipedrive-hubspot-mirror")]
    assert len(samples) == 2 and all("-> deal 1500000000" in line for line in samples)
    # No reply from the sandbox's history becomes a deal (first-run safety), and nothing was stored
    assert "lgm-replies" not in out
    assert not store.exists()
    # Nothing reached the accounts either: a second plan reads the same and plans the same
    again = _run("plan", "--sample", "2", cwd=tmp_path, env=env)
    assert again.stdout == out
