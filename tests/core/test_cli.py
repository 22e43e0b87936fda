"""The installed ``sync-worker`` command: exit codes, messages that say what to fix, any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync_worker.store.migrate import head_revision
from tests.conftest import service_unavailable

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, from ``cwd``, with a clean SYNC_ environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    base.update(env or {})
    script = Path(sys.executable).parent / "sync-worker"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "sync_worker"]
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory with no checkout files in it."""
    return tmp_path


def test_help_lists_commands(elsewhere: Path) -> None:
    result = _run("--help", cwd=elsewhere)
    assert result.returncode == 0
    for command in ("config", "mappings", "db", "serve"):
        assert command in result.stdout


def test_config_masks_secrets_and_says_what_is_disabled(elsewhere: Path) -> None:
    result = _run("config", cwd=elsewhere, env={"SYNC_HUBSPOT__TOKEN": "pat-na1-VERYSECRET"})
    assert result.returncode == 0, result.stderr
    assert "VERYSECRET" not in result.stdout + result.stderr
    assert "SYNC_HUBSPOT__TOKEN" in result.stdout and "********" in result.stdout
    assert "pipedrive: disabled" in result.stdout
    assert "hubspot: disabled" not in result.stdout


def test_config_describe_explains_every_setting_and_keeps_secrets_masked(elsewhere: Path) -> None:
    env = {
        "SYNC_HUBSPOT__TOKEN": "pat-na1-VERYSECRET",
        "SYNC_ZOHO__CLIENT_SECRET": "zoho-VERYSECRET-2",
        "SYNC_BROKER_URL": "amqp://worker:VERYSECRET3@rabbit:5672/",
        "SYNC_DATABASE_URL": "postgresql://sync:VERYSECRET4@db/sync",
    }
    result = _run("config", "--describe", cwd=elsewhere, env=env)
    assert result.returncode == 0, result.stderr
    assert "VERYSECRET" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    settings = [i for i, line in enumerate(lines) if line.startswith("SYNC_")]
    values = {lines[i].split()[0]: lines[i].split()[1:] for i in settings}
    assert values["SYNC_HUBSPOT__TOKEN"] == ["********"]
    assert values["SYNC_ZOHO__CLIENT_SECRET"] == ["********"]
    assert values["SYNC_DATABASE_URL"] == ["postgresql://sync:***@db/sync"]
    # Every setting, the core's and each connector's, is followed by its description.
    undescribed = [
        lines[i] for i in settings if not lines[i + 1].startswith("    ") or not lines[i + 1].strip()
    ]
    assert undescribed == []
    described = {lines[i].split()[0]: lines[i + 1].strip() for i in settings}
    assert "seconds" in described["SYNC_POLL_INTERVAL_SECONDS"]
    assert "v1 signature" in described["SYNC_HUBSPOT__ACCEPT_SIGNATURE_V1"]
    assert "pipedrive: disabled" in result.stdout
    plain = _run("config", cwd=elsewhere, env=env)
    assert plain.returncode == 0, plain.stderr
    assert [line for line in lines if line.startswith("SYNC_")] == plain.stdout.splitlines()[: len(settings)]


@pytest.mark.parametrize(
    ("name", "value"),
    [("SYNC_REDIS_URL", "localhost"), ("SYNC_POLL_INTERVAL_SECONDS", "-1"), ("SYNC_PUBLIC_URL", "nope")],
)
def test_bad_configuration_exits_2_naming_the_variable(elsewhere: Path, name: str, value: str) -> None:
    result = _run("config", cwd=elsewhere, env={name: value})
    assert result.returncode == 2
    assert name in result.stderr


def test_bad_usage_exits_2(elsewhere: Path) -> None:
    assert _run("no-such-command", cwd=elsewhere).returncode == 2


def test_mappings_validate_defaults_from_any_directory(elsewhere: Path) -> None:
    shipped = _run("mappings", "validate", cwd=elsewhere)
    assert shipped.returncode == 0, shipped.stderr
    checkout = _run("mappings", "validate", str(REPO / "mappings"), cwd=elsewhere)
    assert checkout.returncode == 0, checkout.stderr
    assert "routes valid" in checkout.stdout


def test_mappings_validate_names_file_line_and_key(elsewhere: Path) -> None:
    broken = elsewhere / "mappings"
    shutil.copytree(REPO / "mappings", broken)
    path = broken / "hubspot.yaml"
    text = path.read_text(encoding="utf-8")
    assert "canonical: qualified\n" in text
    path.write_text(text.replace("canonical: qualified\n", "canonical: qualifyed\n", 1), encoding="utf-8")
    line = next(i for i, row in enumerate(path.read_text().splitlines(), 1) if "qualifyed" in row)
    result = _run("mappings", "validate", str(broken), cwd=elsewhere)
    assert result.returncode == 2
    assert f"hubspot.yaml:{line}:" in result.stderr
    assert "canonical" in result.stderr and "qualifyed" in result.stderr


def test_mappings_validate_reports_yaml_syntax_errors(elsewhere: Path) -> None:
    broken = elsewhere / "mappings"
    shutil.copytree(REPO / "mappings", broken)
    (broken / "pipedrive.yaml").write_text("pipelines:\n  - name: [unclosed\n", encoding="utf-8")
    result = _run("mappings", "validate", str(broken), cwd=elsewhere)
    assert result.returncode == 2
    assert "pipedrive.yaml:" in result.stderr


def test_mappings_show_prints_the_resolved_table(elsewhere: Path) -> None:
    result = _run("mappings", "show", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert "closedwon" in result.stdout and "CONVERTED" in result.stdout


def test_db_upgrade_on_sqlite_from_any_directory(elsewhere: Path) -> None:
    result = _run("db", "upgrade", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "sync-worker.db").is_file()
    assert head_revision() in _run("db", "current", cwd=elsewhere).stdout


@pytest.fixture
def pg_url() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    admin_dsn = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
    try:
        admin = psycopg.connect(admin_dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        service_unavailable(f"PostgreSQL at 127.0.0.1:5432 does not answer: {exc}")
    name = f"sync_cli_{uuid.uuid4().hex[:10]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_db_upgrade_on_postgresql(elsewhere: Path, pg_url: str) -> None:
    result = _run("db", "upgrade", cwd=elsewhere, env={"SYNC_DATABASE_URL": pg_url})
    assert result.returncode == 0, result.stderr
    current = _run("db", "current", cwd=elsewhere, env={"SYNC_DATABASE_URL": pg_url})
    assert head_revision() in current.stdout


def test_db_upgrade_against_a_dead_database_exits_1_without_the_password(elsewhere: Path) -> None:
    url = "postgresql://sync:hunter2secret@127.0.0.1:1/none"
    result = _run("db", "upgrade", cwd=elsewhere, env={"SYNC_DATABASE_URL": url})
    assert result.returncode == 1
    assert "hunter2secret" not in result.stdout + result.stderr
    assert "unreachable" in result.stderr
