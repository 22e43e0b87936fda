"""``sync-worker held list|reapply`` and the held stages in ``status``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from sync_worker.canonical import CanonicalRecord, StageKey, UnmappedStage
from sync_worker.commands import held_group, status_command
from sync_worker.store import SyncStore
from tests.runtime.test_commands import obj

NOW = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)
INTRO = UnmappedStage("pipedrive", "3", "14", pipeline_name="Partnerships", stage_name="Intro")


def _hold(store: SyncStore, external_id: str) -> None:
    record = CanonicalRecord(
        source="pipedrive", kind="deal", external_id=external_id, updated_at=NOW, stage=StageKey.CONTACTED
    )
    change = store.upsert_record(record, origin="pipedrive", written_by_worker=False, seen_at=NOW)
    store.hold_stage(change.record.id, INTRO, at=NOW)


def test_held_list_shows_each_held_record_with_its_raw_stage(store: SyncStore, store_path: Path) -> None:
    runner = CliRunner()
    empty = runner.invoke(held_group, ["list"], obj=obj(store_path))
    assert (empty.exit_code, empty.output.strip()) == (0, "no held stages")
    # Given two Pipedrive deals held on Partnerships/Intro
    _hold(store, "39")
    _hold(store, "40")
    # Then both are listed with the pipeline and stage names and ids
    listed = runner.invoke(held_group, ["list"], obj=obj(store_path))
    assert listed.exit_code == 0, listed.output
    assert "deal 39" in listed.output and "deal 40" in listed.output
    assert "Partnerships (3)" in listed.output and "Intro (14)" in listed.output
    assert "2 held" in listed.output
    # And --json says the same as data; another source has none
    as_json = json.loads(runner.invoke(held_group, ["list", "--json"], obj=obj(store_path)).output)
    assert [(r["external_id"], r["pipeline_name"], r["stage"]) for r in as_json] == [
        ("39", "Partnerships", "14"),
        ("40", "Partnerships", "14"),
    ]
    other = runner.invoke(held_group, ["list", "--source", "hubspot"], obj=obj(store_path))
    assert other.output.strip() == "no held stages"


def test_status_counts_held_stages_by_pipeline_and_stage(store: SyncStore, store_path: Path) -> None:
    _hold(store, "39")
    _hold(store, "40")
    runner = CliRunner()
    text = runner.invoke(status_command, [], obj=obj(store_path))
    assert text.exit_code == 0, text.output
    assert "held stages (no mapping covers them): 2  (see: sync-worker held list)" in text.output
    assert "pipedrive pipeline Partnerships (3) stage Intro (14): 2" in text.output
    as_json = json.loads(runner.invoke(status_command, ["--json"], obj=obj(store_path)).output)
    assert as_json["held_stages"] == [
        {
            "source": "pipedrive",
            "pipeline": "3",
            "stage": "14",
            "records": 2,
            "pipeline_name": "Partnerships",
            "stage_name": "Intro",
        }
    ]


@pytest.mark.redis
def test_held_reapply_sends_the_job_to_the_workers(store_path: Path, redis_client: redis.Redis) -> None:
    result = CliRunner().invoke(held_group, ["reapply"], obj=obj(store_path))
    assert result.exit_code == 0, result.output
    assert "sent reapply_held_job" in result.output
    assert redis_client.hlen("sync-worker:maintenance.msgs") == 1


def test_held_reapply_with_redis_down_exits_1(store_path: Path) -> None:
    settings = obj(store_path)
    settings["settings"] = settings["settings"].model_copy(update={"redis_url": "redis://127.0.0.1:1/13"})
    result = CliRunner().invoke(held_group, ["reapply"], obj=settings)
    assert result.exit_code == 1 and "broker unreachable" in result.output
