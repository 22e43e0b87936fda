"""Held stages: a record moved onto a stage no mapping covers is held, listed, and re-applied
(its twin moves) once a reloaded mapping covers the stage."""

from __future__ import annotations

import logging
import shutil
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from sync_worker.canonical import CanonicalRecord, StageKey, UnmappedStage
from sync_worker.mappings import Mappings, load_mappings

from .conftest import MAPPINGS_DIR
from .fakes import T0
from .world import World, deal

PARTNERSHIPS = """
  - name: Partnerships
    stages:
      - name: Intro
        canonical: negotiation
"""


def _into_partnerships(at: timedelta, stage: str = "14", **extra: object) -> CanonicalRecord:
    """Pipedrive deal 7 moved into stage 14 "Intro" of pipeline 3 "Partnerships", amount 900."""
    return deal(
        "pipedrive",
        "7",
        None,
        T0 + at,
        unmapped=UnmappedStage("pipedrive", "3", stage, pipeline_name="Partnerships", stage_name="Intro"),
        pipeline_id="3",
        source_stage=stage,
        amount=Decimal("900"),
        stage_changed_at=T0 + at,
        **extra,
    )


@pytest.fixture
def covering(tmp_path: Path) -> Mappings:
    """The shipped mappings plus a Partnerships pipeline in pipedrive.yaml (what an operator adds)."""
    directory = tmp_path / "mappings"
    shutil.copytree(MAPPINGS_DIR, directory)
    with (directory / "pipedrive.yaml").open("a", encoding="utf-8") as out:
        out.write(PARTNERSHIPS)
    return load_mappings(directory)


def test_an_unmapped_move_is_held_and_listed_while_the_amount_flows(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a linked pair on contacted
    pd_id, _ = world.linked_pair()
    # When the Pipedrive deal moves into the unmapped Partnerships pipeline (seen twice), on a stage
    # id no other test uses (the warning is once per process)
    stage = f"held-{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.WARNING, logger="sync_worker.metrics"):
        world.service.ingest_record(_into_partnerships(timedelta(minutes=1), stage))
        world.service.ingest_record(_into_partnerships(timedelta(minutes=1), stage))
    world.push_all()
    # Then the amount reaches HubSpot but no stage does
    (update,) = world.hubspot.updates
    assert update.external_id == "15" and update.amount == Decimal("900") and update.stage is None
    # And the record is held on the raw stage, listed once, counted twice
    (held,) = world.store.held_stages()
    assert (held.record_id, held.pipeline, held.stage, held.stage_name) == (pd_id, "3", stage, "Intro")
    assert held.held_count == 2
    stored = world.store.get_record("pipedrive", "deal", "7")
    assert stored is not None and stored.stage is StageKey.CONTACTED and stored.source_stage == stage
    # And the log says so once for the stage, not once per event
    warnings = [r for r in caplog.records if stage in r.getMessage() and "not mapped" in r.getMessage()]
    assert len(warnings) == 1


def test_after_a_reload_covering_the_stage_the_held_move_is_reapplied(
    world: World, covering: Mappings
) -> None:
    # Given a linked pair whose Pipedrive side is held on Partnerships/Intro
    world.linked_pair()
    world.service.ingest_record(_into_partnerships(timedelta(minutes=1)))
    world.push_all()
    world.hubspot.applied.clear()
    # When nothing covers it yet, re-applying changes nothing and keeps it held
    nothing = world.service.reapply_held()
    assert (nothing.held, nothing.reapplied, nothing.still_held, nothing.enqueued) == (1, 0, 1, 0)
    # When a mapping covering Partnerships/Intro is loaded and held stages are re-applied
    world.mappings = covering
    outcome = world.service.reapply_held()
    world.push_all()
    # Then the Pipedrive record takes canonical negotiation from the raw stage, with the source's time
    assert (outcome.reapplied, outcome.still_held, outcome.targets) == (1, 0, frozenset({"hubspot"}))
    stored = world.store.get_record("pipedrive", "deal", "7")
    assert stored is not None and stored.stage is StageKey.NEGOTIATION
    assert stored.stage_entered_at == T0 + timedelta(minutes=1)
    # And its HubSpot twin moves to negotiation, once
    (update,) = world.hubspot.updates
    assert update.external_id == "15" and update.stage is StageKey.NEGOTIATION
    # And nothing is held any more; a second re-application finds nothing to do
    assert world.store.held_stages() == []
    again = world.service.reapply_held()
    assert (again.held, again.reapplied, again.enqueued) == (0, 0, 0)


def test_landing_on_a_mapped_stage_releases_the_held_row(world: World) -> None:
    # Given a Pipedrive deal held on Partnerships/Intro
    world.linked_pair()
    world.service.ingest_record(_into_partnerships(timedelta(minutes=1)))
    assert len(world.store.held_stages()) == 1
    # When it later moves back into a mapped stage
    world.service.ingest_record(deal("pipedrive", "7", StageKey.PROPOSAL, T0 + timedelta(minutes=2)))
    # Then it is no longer held
    assert world.store.held_stages() == []


def test_a_stale_unmapped_record_holds_nothing(world: World) -> None:
    # Given a Pipedrive deal already seen at a later time on a mapped stage
    world.service.ingest_record(deal("pipedrive", "7", StageKey.PROPOSAL, T0 + timedelta(minutes=5)))
    # When an older copy on an unmapped stage arrives late
    world.service.ingest_record(_into_partnerships(timedelta(minutes=1)))
    # Then it is not applied and holds nothing
    assert world.store.held_stages() == []


def test_a_newer_move_wins_over_a_held_stage_reapplied_later(world: World, covering: Mappings) -> None:
    # Given a deal held on Partnerships/Intro, then moved on (in the source) to another unmapped stage
    world.linked_pair()
    world.service.ingest_record(_into_partnerships(timedelta(minutes=1)))
    later = UnmappedStage("pipedrive", "3", "15", pipeline_name="Partnerships", stage_name="Signed")
    world.service.ingest_record(
        deal(
            "pipedrive",
            "7",
            None,
            T0 + timedelta(minutes=2),
            unmapped=later,
            pipeline_id="3",
            source_stage="15",
        )
    )
    # When the mapping covering only Intro is loaded
    world.mappings = covering
    outcome = world.service.reapply_held()
    # Then the deal's current stage (Signed) is still not covered: nothing moves, it stays held on it
    assert (outcome.reapplied, outcome.still_held) == (0, 1)
    (held,) = world.store.held_stages()
    assert held.stage == "15"
    stored = world.store.get_record("pipedrive", "deal", "7")
    assert stored is not None and stored.stage is StageKey.CONTACTED
