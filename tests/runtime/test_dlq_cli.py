"""``sync-worker dlq`` as an operator runs it: purge asks for what to delete, show prints the body."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sync_worker.canonical import WebhookEvent
from sync_worker.store import SyncStore
from tests.core.test_cli import _run


def _env(store_path: Path) -> dict[str, str]:
    return {"SYNC_DATABASE_URL": f"sqlite:///{store_path}"}


def _dead_inbox_letter(store: SyncStore) -> tuple[int, int]:
    event = WebhookEvent(
        source="pipedrive",
        dedupe_key="v2:abc",
        object_type="deal",
        object_id="7",
        action="change",
        occurred_at=datetime(2024, 6, 1, 12, tzinfo=UTC),
        raw={"meta": {"id": "abc"}, "data": {"id": 7, "title": "Acme renewal"}},
    )
    (inbox_id,) = store.accept_events("pipedrive", [event]).new_ids
    dead = store.add_dead_letter(
        queue="inbox",
        actor="process_inbox_event",
        message_id="m-1",
        payload={"args": [inbox_id], "kwargs": {}, "retries": 0},
        reason="not retryable: PermanentError: pipedrive: deal 7 has no update_time",
        error_class="PermanentError",
        inbox_id=inbox_id,
    )
    return dead, inbox_id


def test_dlq_purge_needs_ids_or_all_and_yes_without_a_terminal(
    store: SyncStore, store_path: Path, tmp_path: Path
) -> None:
    first, _ = _dead_inbox_letter(store)
    second = store.add_dead_letter(
        queue="poll", actor="poll_source", message_id="m-2", payload={}, reason="x"
    )
    env = _env(store_path)
    # A bare purge deletes nothing and says what to give
    bare = _run("dlq", "purge", cwd=tmp_path, env=env)
    assert bare.returncode == 2 and "--all" in bare.stderr
    # --all without a terminal needs --yes
    unconfirmed = _run("dlq", "purge", "--all", cwd=tmp_path, env=env)
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert len(store.list_dead_letters()) == 2
    # One id with --yes deletes that one only
    one = _run("dlq", "purge", str(first), "--yes", cwd=tmp_path, env=env)
    assert (one.returncode, one.stdout.strip()) == (0, "purged 1 dead letter(s)"), one.stderr
    assert [letter.id for letter in store.list_dead_letters()] == [second]


def test_dlq_show_prints_the_failed_webhook_body(store: SyncStore, store_path: Path, tmp_path: Path) -> None:
    dead, inbox_id = _dead_inbox_letter(store)
    shown = _run("dlq", "show", str(dead), cwd=tmp_path, env=_env(store_path))
    assert shown.returncode == 0, shown.stderr
    assert f"webhook body (inbox row {inbox_id})" in shown.stdout
    assert "Acme renewal" in shown.stdout and "no update_time" in shown.stdout
