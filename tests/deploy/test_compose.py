"""docker-compose.yml, checked without a Docker engine: every long-running service restarts unless
stopped and has a health check that fits its role, the roles mount the mappings where
SYNC_MAPPINGS_DIR points and know SYNC_PUBLIC_URL, and every named volume is declared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sync_worker.mappings import load_mappings

REPO = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
ROLES = ("receiver", "worker", "scheduler")
HEALTHCHECK = "/opt/sync-worker/healthcheck.py"


def test_the_services_are_the_stores_the_migration_and_the_three_roles() -> None:
    assert set(SERVICES) == {"redis", "postgres", "rabbitmq", "migrate", *ROLES}
    assert SERVICES["rabbitmq"]["profiles"] == ["rabbitmq"]  # only with --profile rabbitmq


@pytest.mark.parametrize("name", ["redis", "postgres", "rabbitmq", *ROLES])
def test_long_running_services_restart_unless_stopped_and_have_a_health_check(name: str) -> None:
    service = SERVICES[name]
    assert service["restart"] == "unless-stopped"
    check = service["healthcheck"]
    assert not check.get("disable", False)
    assert check["test"][0] in {"CMD", "CMD-SHELL"} and len(check["test"]) > 1
    assert check["retries"] >= 3


def test_the_migration_runs_once_and_the_roles_wait_for_it() -> None:
    migrate = SERVICES["migrate"]
    assert migrate["command"] == ["db", "upgrade"]
    assert migrate["restart"] == "on-failure"  # a one-shot job: "unless-stopped" would rerun it forever
    for role in ROLES:
        depends = SERVICES[role]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        assert depends["redis"] == {"condition": "service_healthy"}
        assert depends["rabbitmq"] == {"condition": "service_healthy", "required": False}
    assert "--no-migrate" in SERVICES["receiver"]["command"]


@pytest.mark.parametrize("role", ["worker", "scheduler"])
def test_worker_and_scheduler_checks_run_the_shipped_healthcheck(role: str) -> None:
    assert SERVICES[role]["healthcheck"]["test"] == ["CMD", "python", HEALTHCHECK, role, "--deps"]
    assert f"COPY deploy/healthcheck.py {HEALTHCHECK}" in (REPO / "Dockerfile").read_text(encoding="utf-8")


def test_the_receiver_check_asks_readyz_on_its_port() -> None:
    receiver = SERVICES["receiver"]
    assert "http://127.0.0.1:8000/readyz" in receiver["healthcheck"]["test"][-1]
    assert receiver["command"][receiver["command"].index("--port") + 1] == "8000"
    assert "8000:8000" in receiver["ports"]


@pytest.mark.parametrize("role", ROLES)
def test_each_role_mounts_the_mappings_where_sync_mappings_dir_points(role: str) -> None:
    service = SERVICES[role]
    env = service["environment"]
    mounts = [v for v in service["volumes"] if v["target"] == env["SYNC_MAPPINGS_DIR"]]
    assert mounts == [
        {"type": "bind", "source": "./mappings", "target": "/etc/sync-worker/mappings", "read_only": True}
    ]
    load_mappings(REPO / mounts[0]["source"])  # what the services will read is a valid set
    assert env["SYNC_PUBLIC_URL"].startswith("${SYNC_PUBLIC_URL:-http")
    assert env["SYNC_DATABASE_URL"].startswith("postgresql://")
    assert env["SYNC_REDIS_URL"].startswith("redis://")


def test_every_named_volume_is_declared() -> None:
    used = set()
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            if isinstance(volume, str) and not volume.startswith((".", "/")):
                used.add(volume.split(":")[0])
            elif isinstance(volume, dict) and volume["type"] == "volume":
                used.add(volume["source"])
    assert used == set(COMPOSE["volumes"]) == {"redis-data", "pg-data", "rabbitmq-data"}
