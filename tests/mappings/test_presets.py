"""Presets: each one writes, validates, and drives a scan and a report on a constructed history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from sync_worker.canonical import CanonicalRecord, RecordStatus, StageKey, StageKind
from sync_worker.errors import ConfigError
from sync_worker.leaks import scan_leaks
from sync_worker.mappings import load_mappings, validate_directory
from sync_worker.mappings.presets import list_presets, write_preset
from sync_worker.report import build_report
from sync_worker.store import SyncStore, upgrade_database

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)


def test_the_three_presets_are_shipped() -> None:
    assert list_presets() == ("b2b-nurture", "odoo-default", "post-purchase")


@pytest.mark.parametrize("name", ["b2b-nurture", "odoo-default", "post-purchase"])
def test_each_preset_writes_and_validates(name: str, tmp_path: Path) -> None:
    written = write_preset(name, tmp_path / "m")
    assert (tmp_path / "m" / "canonical.yaml") in written
    assert (tmp_path / "m" / "schema" / "canonical.schema.json").is_file()
    mappings, errors, _warnings = validate_directory(tmp_path / "m")
    assert errors == [] and mappings is not None
    assert "$schema=./schema/" in (tmp_path / "m" / "canonical.yaml").read_text()
    # a second write without force refuses to overwrite
    with pytest.raises(ConfigError, match="exists"):
        write_preset(name, tmp_path / "m")
    write_preset(name, tmp_path / "m", overwrite=True)


def test_unknown_preset_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="b2b-nurture"):
        write_preset("nope", tmp_path)


def test_odoo_preset_has_odoos_stages_and_probabilities(tmp_path: Path) -> None:
    write_preset("odoo-default", tmp_path)
    model = load_mappings(tmp_path).model
    got = [(s.label, s.probability) for s in model.ordered()]
    assert got == [
        ("New", 0.05),
        ("Qualified", 0.15),
        ("Proposition", 0.50),
        ("Negotiation", 0.75),
        ("Won", 1.00),
        ("Lost", 0.00),
    ]


def _deal(
    store: SyncStore, ext: str, steps: list[tuple[datetime, StageKey, RecordStatus]], amount: str
) -> None:
    for at, stage, status in steps:
        record = CanonicalRecord(
            source="board",
            kind="deal",
            external_id=ext,
            updated_at=at,
            stage=stage,
            status=status,
            amount=Decimal(amount),
            currency="EUR",
            stage_changed_at=at,
        )
        store.upsert_record(record, origin="board", written_by_worker=False, seen_at=at)


@pytest.mark.parametrize("name", ["b2b-nurture", "odoo-default", "post-purchase"])
def test_each_preset_drives_a_scan_and_a_report(name: str, tmp_path: Path) -> None:
    write_preset(name, tmp_path / "m")
    model = load_mappings(tmp_path / "m").model
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade_database(url)
    store = SyncStore(url, clock=lambda: NOW)
    try:
        opens = [s.key for s in model.ordered() if s.kind is StageKind.OPEN]
        wons = [s.key for s in model.ordered() if s.kind is StageKind.WON]
        # a deal stalled in the first stage, and one that went all the way through to the last won stage
        _deal(store, "stuck", [(NOW - 60 * DAY, opens[0], "open")], "100")
        path = [(NOW - (50 - i) * DAY, key, "open") for i, key in enumerate(opens)]
        path += [(NOW - (40 - i) * DAY, key, "won") for i, key in enumerate(wons)]
        _deal(store, "done", path, "900")
        # the done deal, in its last won stage, is then deleted in the source: never dropped
        _deal(store, "done", [(NOW - DAY, wons[-1], "deleted")], "900")
        result = scan_leaks(store, model, now=NOW)
        assert [f.rule for f in result.raised] == ["stalled"]
        report = build_report(store, model, NOW)
        assert [row.reached for row in report.reach] == [2] + [1] * (len(report.reach) - 1)
        assert report.reach[-1].stage is wons[-1]
        assert report.open_deals == 1
    finally:
        store.close()
