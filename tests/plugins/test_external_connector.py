"""A fourth connector installed from outside the project, through the entry-point mechanism alone.

Given a package (``acme_crm``, copied to a temporary site directory with its own ``.dist-info``
declaring ``[sync_worker.connectors] acme = acme_crm:SPEC``) and no change to any core file,
the installed ``sync-worker`` command, run in subprocesses that only see that directory on
``PYTHONPATH``, shows it in ``config`` (and with ``--describe`` the descriptions it brings),
validates its mapping, polls it, pushes to it (a route from the Pipedrive sandbox creates deals in
it) and serves its webhook route.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sync_worker.sandbox.runner import RunningSandbox, start_sandbox
from sync_worker.settings import default_mappings_dir

pytestmark = pytest.mark.slow

_ACME_YAML = """\
pipelines:
  - id: main
    name: Main
    stages:
      - {id: Lead, canonical: prospect}
      - {id: Talking, canonical: contacted}
      - {id: Offer, canonical: proposal}
      - {id: Signed, canonical: won}
      - {id: Gone, canonical: lost}
"""
_ROUTES_YAML = """\
routes:
  - name: pipedrive-into-acme
    from: pipedrive
    to: acme
    when: any_change
    match: [link, external_id]
    create: true
    stage: mirror
    fields: [title]
"""
_SECRET = "acme-hook-secret-0123"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site directory holding the package and the metadata that registers it."""
    root = tmp_path_factory.mktemp("site")
    shutil.copy(Path(__file__).with_name("acme_crm.py"), root / "acme_crm.py")
    info = root / "acme_crm-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-crm\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sync_worker.connectors]\nacme = acme_crm:SPEC\n")
    return root


@pytest.fixture(scope="module")
def sandbox() -> Iterator[RunningSandbox]:
    with start_sandbox(seed=5, deals=12) as box:
        yield box


@pytest.fixture
def home(tmp_path: Path, site: Path, sandbox: RunningSandbox) -> tuple[Path, dict[str, str]]:
    mappings = tmp_path / "mappings"
    shutil.copytree(default_mappings_dir(), mappings)
    (mappings / "acme.yaml").write_text(_ACME_YAML)
    (mappings / "routes.yaml").write_text(_ROUTES_YAML)
    data = tmp_path / "acme.json"
    data.write_text(
        json.dumps({"deals": [{"id": "A1", "name": "Existing", "stage": "Offer", "updated": 100}]})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_") or k.startswith("SYNC_TEST_")}
    env.update(
        {
            # The site first; a PYTHONPATH already set (a checkout tested in place) is kept after it.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
            "SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'sync.db'}",
            "SYNC_REDIS_URL": "redis://127.0.0.1:1/0",  # no broker: the one-shot commands do without
            "SYNC_MAPPINGS_DIR": str(mappings),
            "SYNC_ACME__DATA_FILE": str(data),
            "SYNC_ACME__WEBHOOK_SECRET": _SECRET,
            **{k: v for k, v in sandbox.env().items() if k.startswith("SYNC_PIPEDRIVE__")},
        }
    )
    return tmp_path, env


def _cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "sync-worker"
    return subprocess.run(
        [str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False
    )


def _db(tmp: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp / "sync.db")


def test_config_shows_it_with_its_secret_masked(home: tuple[Path, dict[str, str]]) -> None:
    tmp, env = home
    result = _cli(env, tmp, "config")
    assert result.returncode == 0, result.stderr
    assert "SYNC_ACME__DATA_FILE" in result.stdout
    assert "SYNC_ACME__WEBHOOK_SECRET" in result.stdout
    assert _SECRET not in result.stdout + result.stderr


def test_config_describe_shows_the_descriptions_it_brings(home: tuple[Path, dict[str, str]]) -> None:
    tmp, env = home
    result = _cli(env, tmp, "config", "--describe")
    assert result.returncode == 0, result.stderr
    assert _SECRET not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("SYNC_ACME__WEBHOOK_SECRET"))
    assert lines[at].split()[1:] == ["********"]
    assert "X-Acme-Token" in lines[at + 1]


def test_its_mapping_is_validated_like_the_others(home: tuple[Path, dict[str, str]]) -> None:
    tmp, env = home
    assert _cli(env, tmp, "mappings", "validate").returncode == 0
    (Path(env["SYNC_MAPPINGS_DIR"]) / "acme.yaml").write_text(
        _ACME_YAML.replace("canonical: won", "canonical: wun")
    )
    broken = _cli(env, tmp, "mappings", "validate")
    assert broken.returncode == 2
    assert "acme.yaml:" in broken.stdout + broken.stderr


def test_it_is_polled_and_pushed_to(home: tuple[Path, dict[str, str]]) -> None:
    tmp, env = home
    assert _cli(env, tmp, "db", "upgrade").returncode == 0
    # When the service polls it
    polled = _cli(env, tmp, "sync", "--source", "acme")
    assert polled.returncode == 0, polled.stderr
    with _db(tmp) as conn:
        rows = conn.execute("SELECT external_id, stage FROM records WHERE source = 'acme'").fetchall()
    assert rows == [("A1", "proposal")]
    # And a route from Pipedrive creates its deals there
    pushed = _cli(env, tmp, "sync", "--source", "pipedrive")
    assert pushed.returncode == 0, pushed.stderr
    deals = json.loads(Path(env["SYNC_ACME__DATA_FILE"]).read_text())["deals"]
    assert len(deals) > 1
    assert {d["stage"] for d in deals[1:]} <= {"Lead", "Talking", "Offer", "Signed", "Gone"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_its_webhook_route_is_served(home: tuple[Path, dict[str, str]]) -> None:
    tmp, env = home
    assert _cli(env, tmp, "db", "upgrade").returncode == 0
    port = _free_port()
    script = Path(sys.executable).parent / "sync-worker"
    server = subprocess.Popen(
        [str(script), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the receiver did not start"
            time.sleep(0.2)
        body = json.dumps({"id": "A1", "name": "Existing", "stage": "Signed", "updated": 200})
        forged = httpx.post(f"{base}/webhooks/acme", content=body, headers={"X-Acme-Token": "nope"})
        assert forged.status_code == 401
        genuine = httpx.post(f"{base}/webhooks/acme", content=body, headers={"X-Acme-Token": _SECRET})
        assert genuine.status_code == 200, genuine.text
        assert genuine.json()["accepted"] == 1
        unknown = httpx.post(f"{base}/webhooks/nosuchcrm", content=body)
        assert unknown.status_code == 404
    finally:
        server.terminate()
        server.wait(timeout=30)
    with _db(tmp) as conn:
        stored = conn.execute("SELECT object_id FROM inbox WHERE source = 'acme'").fetchall()
    assert stored == [("A1",)]
