"""The runtime commands: dlq list/show/replay/purge, sync against the HubSpot sandbox, run's supervisor."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from pydantic import SecretStr

from connectors.hubspot.settings import HubSpotSettings
from sync_worker.commands import COMMANDS, dlq_group, sync_command
from sync_worker.commands._common import start_child
from sync_worker.commands.run import supervise
from sync_worker.commands.sync import since_cursor
from sync_worker.errors import ConfigError
from sync_worker.sandbox.common import serve_in_thread
from sync_worker.sandbox.hubspot.app import create_app
from sync_worker.sandbox.hubspot.state import HubSpotSandbox, HubSpotSandboxConfig
from sync_worker.settings import Settings
from sync_worker.store import SyncStore
from tests.runtime.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parents[2]


def obj(store_path: Path, **overrides: Any) -> dict[str, Any]:
    settings = Settings(
        database_url=f"sqlite:///{store_path}",
        redis_url=REDIS_URL,
        mappings_dir=ROOT / "mappings",
        **overrides,
    )
    return {"settings": settings, "logging_configured": True}


def test_commands_are_exported_for_the_main_group() -> None:
    assert [command.name for command in COMMANDS] == [
        "worker",
        "scheduler",
        "run",
        "sync",
        "dlq",
        "status",
        "pause",
        "resume",
        "plan",
        "held",
    ]


@pytest.mark.redis
def test_dlq_list_show_replay_purge(store: SyncStore, store_path: Path, redis_client: redis.Redis) -> None:
    runner = CliRunner()
    empty = runner.invoke(dlq_group, ["list"], obj=obj(store_path))
    assert (empty.exit_code, empty.output.strip()) == (0, "no dead letters")
    # Given one dead poll
    dead_id = store.add_dead_letter(
        queue="poll",
        actor="poll_source",
        message_id="m-1",
        payload={"args": ["hubspot", "deals"], "kwargs": {"full": True}, "retries": 0},
        reason="not retryable: PermanentError: hubspot: 400 VALIDATION_ERROR",
        error_class="PermanentError",
    )
    listed = runner.invoke(dlq_group, ["list"], obj=obj(store_path))
    assert listed.exit_code == 0
    assert "poll_source" in listed.output and '"hubspot", "deals", full=true' in listed.output
    shown = runner.invoke(dlq_group, ["show", str(dead_id)], obj=obj(store_path))
    assert shown.exit_code == 0 and "VALIDATION_ERROR" in shown.output
    assert runner.invoke(dlq_group, ["show", "999"], obj=obj(store_path)).exit_code == 1
    # Replay needs one ID or --all
    assert runner.invoke(dlq_group, ["replay"], obj=obj(store_path)).exit_code == 2
    # When it is replayed, the original message is back on the Redis queue and the letter marked
    replayed = runner.invoke(dlq_group, ["replay", str(dead_id)], obj=obj(store_path))
    assert replayed.exit_code == 0, replayed.output
    assert redis_client.hlen("sync-worker:poll.msgs") == 1
    letter = store.get_dead_letter(dead_id)
    assert letter is not None and letter.replayed_at is not None
    assert runner.invoke(dlq_group, ["replay", str(dead_id)], obj=obj(store_path)).exit_code == 1
    # And purge --replayed-only removes it
    purged = runner.invoke(dlq_group, ["purge", "--all", "--replayed-only", "--yes"], obj=obj(store_path))
    assert (purged.exit_code, purged.output.strip()) == (0, "purged 1 dead letter(s)")


def test_dlq_replay_with_redis_down_exits_1(store: SyncStore, store_path: Path) -> None:
    store.add_dead_letter(queue="poll", actor="poll_source", message_id="m", payload={"args": []}, reason="x")
    settings = obj(store_path)
    settings["settings"] = settings["settings"].model_copy(update={"redis_url": "redis://127.0.0.1:1/13"})
    result = CliRunner().invoke(dlq_group, ["replay", "--all"], obj=settings)
    assert result.exit_code == 1 and "broker unreachable" in result.output
    assert store.list_dead_letters()[0].replayed_at is None


@pytest.fixture
def hubspot_url() -> Iterator[str]:
    sandbox = HubSpotSandbox(HubSpotSandboxConfig(private_app_tokens=frozenset({"pat-sync-test"})))
    for n in range(3):
        sandbox.put_deal(
            {"dealname": f"Deal {n}", "dealstage": "appointmentscheduled", "pipeline": "default"}
        )
    handle = serve_in_thread(create_app(sandbox))
    try:
        yield handle.url
    finally:
        handle.stop()
        sandbox.close()


@pytest.mark.redis
def test_sync_full_pulls_every_deal_and_prints_a_summary(
    store: SyncStore, store_path: Path, hubspot_url: str, redis_client: redis.Redis
) -> None:
    hubspot = HubSpotSettings(token=SecretStr("pat-sync-test"), base_url=hubspot_url)
    result = CliRunner().invoke(
        sync_command,
        ["--source", "hubspot", "--stream", "deals", "--full"],
        obj=obj(store_path, hubspot=hubspot),
    )
    assert result.exit_code == 0, result.output
    assert "pull hubspot/deals" in result.output
    names = {
        store.get_record("hubspot", "deal", str(i)) is not None for i in range(15_000_000_001, 15_000_000_004)
    }
    assert names == {True}
    assert store.get_cursor("hubspot", "deals")


def test_sync_refuses_a_disabled_source_and_since_with_full(store_path: Path) -> None:
    runner = CliRunner()
    disabled = runner.invoke(sync_command, ["--source", "pipedrive"], obj=obj(store_path))
    assert disabled.exit_code == 2 and "not an enabled source" in disabled.output
    both = runner.invoke(
        sync_command, ["--source", "hubspot", "--full", "--since", "2024-01-01"], obj=obj(store_path)
    )
    assert both.exit_code == 2


def test_since_cursor_per_stream() -> None:
    from datetime import UTC, datetime

    moment = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert since_cursor("hubspot", "deals", moment) == "1714564800000"
    assert since_cursor("pipedrive", "deals", moment) == "2024-05-01T12:00:00Z"
    with pytest.raises(ConfigError):
        since_cursor("lagrowthmachine", "replies", moment)


def test_run_supervisor_stops_everything_when_one_child_dies() -> None:
    stop = threading.Event()
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    crasher = [sys.executable, "-c", "raise SystemExit(3)"]
    assert supervise({"a": sleeper, "b": crasher}, stop, grace=5) == 1


def test_run_supervisor_stops_cleanly_on_request() -> None:
    stop = threading.Event()
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    assert supervise({"a": sleeper, "b": sleeper}, stop, grace=5) == 0


def test_a_sighup_before_a_child_installs_its_handler_does_not_kill_it() -> None:
    # Given a child that is still "importing" (no SIGHUP handler yet) for a moment
    slow_start = (
        "import signal, time\n"
        "time.sleep(1.0)\n"
        "print(signal.getsignal(signal.SIGHUP) == signal.SIG_IGN, flush=True)\n"
        "got = []\n"
        "signal.signal(signal.SIGHUP, lambda *_: got.append(1))\n"
        "signal.raise_signal(signal.SIGHUP)\n"
        "raise SystemExit(0 if got else 4)\n"
    )
    child = start_child([sys.executable, "-c", slow_start])
    # When a reload reaches it at once
    time.sleep(0.2)
    child.send_signal(signal.SIGHUP)
    # Then it lives on, and the handler it installs afterwards receives the next SIGHUP
    assert child.wait(30) == 0
