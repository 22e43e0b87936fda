"""A mapping file broken while the service runs: the last good mapping stays and the log says why.

The holder's watcher thread runs as in production (short interval); an admin saves a
``pipedrive.yaml`` naming a canonical stage that does not exist. The service keeps translating with
the previous set, the error log names the file, the line and the key, and fixing the file brings
the new set in.
"""

from __future__ import annotations

import logging
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sync_worker.canonical import CanonicalRecord, StageKey
from sync_worker.engine import EngineConfig, SyncService
from sync_worker.mappings import MappingsHolder
from sync_worker.store import SyncStore

from .conftest import REPO


def _wait(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_broken_mapping_keeps_last_good_and_names_file_line_key(
    tmp_path: Path, store: SyncStore, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", directory)
    holder = MappingsHolder(directory, interval=0.1)
    service = SyncService(store, holder, {}, config=EngineConfig())
    good = holder.current
    holder.start()
    try:
        # When an admin saves pipedrive.yaml with "Demo Scheduled" mapped to a stage that does not exist
        path = directory / "pipedrive.yaml"
        lines = path.read_text().splitlines(keepends=True)
        index = next(i for i, line in enumerate(lines) if "- name: Demo Scheduled" in line)
        broken_line = index + 2  # the ``canonical:`` line under it, 1-based
        assert "canonical: meeting" in lines[index + 1]
        lines[index + 1] = lines[index + 1].replace("canonical: meeting", "canonical: demo_booked")
        with caplog.at_level(logging.ERROR, logger="sync_worker.mappings.reload"):
            path.write_text("".join(lines))
            assert _wait(lambda: any("demo_booked" in r.getMessage() for r in caplog.records))
        # Then the previous set is still in force
        assert holder.current is good
        assert service.mappings() is good
        assert (
            good.to_canonical(
                "pipedrive", pipeline=None, stage=None, pipeline_name="Pipeline", stage_name="Demo Scheduled"
            )
            is StageKey.MEETING
        )
        # And the log names the file, the line and the key
        messages = "\n".join(r.getMessage() for r in caplog.records)
        assert "keeping the previous set" in messages
        issue = next(r.getMessage() for r in caplog.records if "demo_booked" in r.getMessage())
        assert f"pipedrive.yaml:{broken_line}" in issue, issue
        assert "canonical" in issue
        # And the service keeps working on the last good mapping
        record = CanonicalRecord(
            source="pipedrive",
            kind="deal",
            external_id="1",
            updated_at=datetime.now(UTC),
            stage=StageKey.MEETING,
            status="open",
            title="Still syncing",
        )
        assert service.ingest_record(record).record_id > 0
        # When the file is fixed (and a label changed), the new set comes in
        lines[index + 1] = lines[index + 1].replace("canonical: demo_booked", "canonical: meeting")
        lines[index] = lines[index].replace("Demo Scheduled", "Demo Held")
        path.write_text("".join(lines))
        assert _wait(lambda: holder.current is not good)
        fresh = holder.current.to_canonical(
            "pipedrive", pipeline=None, stage=None, pipeline_name="Pipeline", stage_name="Demo Held"
        )
        assert fresh is StageKey.MEETING
    finally:
        holder.stop()
