"""Deployment files, checked without a Docker engine: the compose file parses and wires the roles,
and the image runs the CLI as a non-root user with a health check."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_compose_file_parses_and_wires_every_role() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"redis", "postgres", "migrate", "receiver", "worker", "scheduler"} <= set(services)
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["receiver"]["command"][0] == "serve"
    assert services["worker"]["command"][0] == "worker"
    assert services["scheduler"]["command"] == ["scheduler"]
    for role in ("receiver", "worker", "scheduler"):
        env = services[role]["environment"]
        assert env["SYNC_DATABASE_URL"].startswith("postgresql://")
        assert env["SYNC_REDIS_URL"].startswith("redis://")
        assert services[role]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_dockerfile_runs_the_cli_as_non_root_with_a_healthcheck() -> None:
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines()]
    assert any(line.startswith("FROM python:3.11-slim") for line in lines)
    assert 'ENTRYPOINT ["sync-worker"]' in lines
    users = [line for line in lines if line.startswith("USER ")]
    assert users and users[-1] != "USER root"
    assert any(line.startswith("HEALTHCHECK") for line in lines)
    assert any("/healthz" in line for line in lines)
