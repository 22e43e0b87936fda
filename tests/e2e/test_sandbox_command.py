"""``sync-worker sandbox`` in a subprocess: eval-able ``SYNC_*`` exports, live servers, SIGINT exits 0."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from sync_worker.sandbox.cli import sandbox_command

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
_RUNNER = "import sys; from sync_worker.sandbox.cli import sandbox_command; sandbox_command(sys.argv[1:])"


def _read_exports(process: subprocess.Popen[str], timeout: float = 30.0) -> dict[str, str]:
    assert process.stdout is not None
    env: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith("# ready"):
            return env
        words = shlex.split(line)
        assert words[0] == "export", line
        name, _, value = words[1].partition("=")
        env[name] = value
    raise AssertionError(f"no '# ready' line; got {sorted(env)}")


def test_sandbox_command_prints_env_serves_and_stops_on_sigint() -> None:
    child_env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", _RUNNER, "--seed", "3", "--deals", "20", "--time-scale", "0.001"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=child_env,
    )
    try:
        env = _read_exports(process)
        assert {
            "SYNC_HUBSPOT__BASE_URL",
            "SYNC_HUBSPOT__TOKEN",
            "SYNC_PIPEDRIVE__BASE_URL",
            "SYNC_PIPEDRIVE__API_TOKEN",
            "SYNC_LAGROWTHMACHINE__BASE_URL",
            "SYNC_LAGROWTHMACHINE__API_KEY",
            "SYNC_LAGROWTHMACHINE__WEBHOOK_SECRET",
        } <= set(env)

        hub = httpx.get(
            env["SYNC_HUBSPOT__BASE_URL"] + "/crm/v3/pipelines/deals",
            headers={"Authorization": "Bearer " + env["SYNC_HUBSPOT__TOKEN"]},
        )
        assert hub.status_code == 200 and hub.json()["results"][0]["id"] == "default"
        deals = httpx.get(
            env["SYNC_PIPEDRIVE__BASE_URL"] + "/api/v2/deals",
            headers={"x-api-token": env["SYNC_PIPEDRIVE__API_TOKEN"]},
            params={"limit": 500},
        )
        assert deals.status_code == 200 and len(deals.json()["data"]) > 0
        refused = httpx.get(env["SYNC_PIPEDRIVE__BASE_URL"] + "/api/v2/deals")
        assert refused.status_code == 401
        campaigns = httpx.get(
            env["SYNC_LAGROWTHMACHINE__BASE_URL"] + "/campaigns",
            params={"apikey": env["SYNC_LAGROWTHMACHINE__API_KEY"]},
        )
        assert campaigns.status_code == 200 and len(campaigns.json()["campaigns"]) == 3
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    assert process.returncode == 0, stderr
    assert "sandbox stopped" in stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(env["SYNC_HUBSPOT__BASE_URL"] + "/crm/v3/pipelines/deals", timeout=2)


def test_sandbox_command_refuses_a_bad_webhook_url() -> None:
    outcome = CliRunner().invoke(sandbox_command, ["--webhook-base-url", "ftp://nope"])
    assert outcome.exit_code == 2 and "--webhook-base-url" in outcome.output
