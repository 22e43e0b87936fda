"""``sync-worker mappings check`` against the Pipedrive sandbox: the live stages the mappings do not
cover (exit 1) and the entries that match nothing; unmapped stages warned once and counted."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from sync_worker.canonical import UnmappedStage
from sync_worker.metrics import note_unmapped
from sync_worker.sandbox.common import serve_in_thread
from sync_worker.sandbox.pipedrive import PipedriveSandbox, create_app
from tests.core.test_cli import REPO, _run

TOKEN = "pd-sandbox-token"


@pytest.fixture
def pipedrive_url() -> Iterator[str]:
    # The stock pipeline plus a second one the shipped mappings know nothing of
    sandbox = PipedriveSandbox(api_token=TOKEN, now=lambda: datetime.now(UTC))
    partnerships = sandbox.add_pipeline("Partnerships")
    for name in ("Intro", "Pilot"):
        sandbox.add_stage(partnerships["id"], name)
    handle = serve_in_thread(create_app(sandbox))
    try:
        yield handle.url
    finally:
        handle.stop()
        sandbox.close()


def test_mappings_check_lists_uncovered_stages_and_entries_that_match_nothing(
    pipedrive_url: str, tmp_path: Path
) -> None:
    mappings = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", mappings)
    env = {
        "SYNC_PIPEDRIVE__API_TOKEN": TOKEN,
        "SYNC_PIPEDRIVE__BASE_URL": pipedrive_url,
        "SYNC_MAPPINGS_DIR": str(mappings),
    }
    # The shipped mappings cover the stock pipeline but not Partnerships
    result = _run("mappings", "check", cwd=tmp_path, env=env)
    assert result.returncode == 1, result.stderr
    assert "pipedrive: " in result.stdout and "2 not mapped" in result.stdout
    assert "not mapped: pipeline 'Partnerships'" in result.stdout and "stage 'Intro'" in result.stdout
    # A typo in a stage name is an entry matching nothing (validate cannot know)
    path = mappings / "pipedrive.yaml"
    path.write_text(
        path.read_text(encoding="utf-8").replace("- name: Demo Scheduled", "- name: Demo Sheduled")
    )
    typo = _run("mappings", "check", cwd=tmp_path, env=env)
    assert typo.returncode == 1
    assert "matches nothing: pipeline Pipeline stage 'demo sheduled': no stage of that name" in typo.stdout
    assert "stage 'Demo Scheduled'" in typo.stdout  # and the live stage it meant is now uncovered


def test_mappings_check_with_no_system_enabled_exits_2(tmp_path: Path) -> None:
    result = _run("mappings", "check", cwd=tmp_path)
    assert result.returncode == 2 and "no system has credentials set" in result.stderr


def test_an_unmapped_stage_is_warned_once_and_counted_each_time(caplog: pytest.LogCaptureFixture) -> None:
    gap = UnmappedStage("pipedrive", "Partnerships-test", "Pilot-test")
    labels = {"source": "pipedrive", "pipeline": "Partnerships-test", "stage": "Pilot-test"}
    before = REGISTRY.get_sample_value("sync_worker_unmapped_stages_total", labels) or 0.0
    with caplog.at_level(logging.WARNING, logger="sync_worker.metrics"):
        for _ in range(3):
            note_unmapped(gap)
    assert REGISTRY.get_sample_value("sync_worker_unmapped_stages_total", labels) == before + 3
    warnings = [r for r in caplog.records if "Pilot-test" in r.getMessage()]
    assert len(warnings) == 1 and "mappings check" in warnings[0].getMessage()
