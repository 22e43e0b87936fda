"""Migrations: run from code on an empty database, and match the table definitions exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from sync_worker.canonical import StageKey
from sync_worker.store import create_engine_for, current_revision, head_revision, upgrade_database
from sync_worker.store.schema import FLAG_RULES, RECORD_STATUSES, STAGE_KEYS, metadata


def test_upgrade_from_empty_creates_every_table(db_url: str) -> None:
    # Given a database nobody migrated
    assert current_revision(db_url) is None
    # When it is upgraded twice (the second run must be a no-op)
    upgrade_database(db_url)
    upgrade_database(db_url)
    # Then it is at the packaged head and holds every table
    assert current_revision(db_url) == head_revision() == "0006_held_stages"
    engine = create_engine_for(db_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert tables == set(metadata.tables) | {"alembic_version"}


def test_migration_matches_table_definitions(db_url: str) -> None:
    upgrade_database(db_url)
    engine = create_engine_for(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            assert compare_metadata(context, metadata) == []
            inspector = inspect(conn)
            # compare_metadata does not look at CHECK constraints or index predicates: do it here.
            for table in metadata.sorted_tables:
                reflected = {ck["name"] for ck in inspector.get_check_constraints(table.name)}
                declared = {ck.name for ck in table.constraints if ck.__class__.__name__ == "CheckConstraint"}
                assert reflected == declared, table.name
            partial = {
                ix["name"]: ix
                for ix in inspector.get_indexes("leak_flags") + inspector.get_indexes("inbox")
                if ix["name"] in ("uq_leak_flags_open", "ix_inbox_not_enqueued")
            }
            assert partial["uq_leak_flags_open"]["unique"]
            for index in partial.values():
                where = index.get("dialect_options", {})
                assert any("IS NULL" in str(value) for value in where.values()), index
    finally:
        engine.dispose()


def test_schema_literals_match_the_canonical_model() -> None:
    assert STAGE_KEYS == tuple(key.value for key in StageKey)
    assert RECORD_STATUSES == ("open", "won", "lost", "deleted")
    assert FLAG_RULES == ("stalled", "regressed", "dropped", "unanswered", "diverged")


def test_upgrade_needs_no_alembic_ini_in_the_working_directory(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a working directory with no alembic.ini (as for an installed service)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # When the database is migrated from there, it reaches the head
    upgrade_database(db_url)
    assert current_revision(db_url) == head_revision()
    assert not (elsewhere / "alembic.ini").exists()


def test_0003_accepts_retention_and_diverged_and_still_refuses_other_values(db_url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    upgrade_database(db_url)
    engine = create_engine_for(db_url)
    insert = (
        "INSERT INTO records (source, kind, external_id, stage, status, source_updated_at, first_seen_at,"
        " last_seen_at) VALUES ('crm', 'deal', :ext, :stage, 'won', :t, :t, :t)"
    )
    when = "2024-01-01 00:00:00+00:00"
    try:
        with engine.begin() as conn:
            conn.execute(text(insert), {"ext": "1", "stage": "retention", "t": when})
            record = conn.execute(text("SELECT id FROM records WHERE external_id = '1'")).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO leak_flags (record_id, rule, stage, raised_at)"
                    " VALUES (:r, 'diverged', :s, :t)"
                ),
                {"r": record, "s": "retention", "t": when},
            )
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(insert), {"ext": "2", "stage": "onboarding", "t": when})
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(
                text("INSERT INTO leak_flags (record_id, rule, raised_at) VALUES (:r, 'sleepy', :t)"),
                {"r": record, "t": when},
            )
    finally:
        engine.dispose()


def test_outbox_rows_queued_before_typed_items_get_the_kind_of_what_queued_them(db_url: str) -> None:
    # Given a database at 0004 holding a mirror write, a leak-flag write-back and an alert
    upgrade_database(db_url, "0004_operations")
    engine = create_engine_for(db_url)
    rows = [
        ("hubspot", "push:hubspot:abc", "pending"),
        ("pipedrive", "leak:7:raise:3", "pending"),
        ("alert", "leak:7:alert", "failed"),
    ]
    try:
        with engine.begin() as conn:
            for target, key, status in rows:
                conn.execute(
                    text(
                        "INSERT INTO outbox (target, idempotency_key, payload, status, attempts,"
                        " next_attempt_at, created_at) VALUES (:t, :k, '{}', :s, 0, :at, :at)"
                    ),
                    {"t": target, "k": key, "s": status, "at": "2026-12-01 00:00:00+00:00"},
                )
        # When it is upgraded to the head
        upgrade_database(db_url)
        with engine.connect() as conn:
            kinds = {
                key: kind for key, kind in conn.execute(text("SELECT idempotency_key, kind FROM outbox"))
            }
    finally:
        engine.dispose()
    # Then each row says what it is, so the push reads it the right way
    assert kinds == {"push:hubspot:abc": "mirror", "leak:7:raise:3": "flag", "leak:7:alert": "alert"}
