"""Hot reload: an edit is picked up, a broken edit keeps the last good set and says why."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sync_worker.canonical import StageKey
from sync_worker.errors import MappingError
from sync_worker.mappings import MappingsHolder

Edit = Callable[[str, str, str], Path]
INTERVAL = 0.05
DEADLINE = 10.0


def wait_for(condition: Callable[[], bool], deadline: float = DEADLINE) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def holder(mappings_dir: Path) -> Iterator[MappingsHolder]:
    held = MappingsHolder(mappings_dir, interval=INTERVAL, logger=logging.getLogger("test.mappings"))
    yield held
    held.stop()


def meeting_in_pipedrive(held: MappingsHolder) -> object:
    return held.current.to_canonical("pipedrive", pipeline=None, stage=None, stage_name="Demo Scheduled")


def test_initial_load_failure_raises(mappings_dir: Path, edit: Edit) -> None:
    edit("hubspot.yaml", "canonical: won", "canonical: winner")
    with pytest.raises(MappingError) as caught:
        MappingsHolder(mappings_dir)
    assert caught.value.key == "pipelines[0].stages[5].canonical"


def test_poll_picks_up_an_edit(holder: MappingsHolder, edit: Edit) -> None:
    # Given a running holder with the defaults
    before = holder.current
    assert meeting_in_pipedrive(holder) == StageKey.MEETING
    holder.start()
    # When an admin remaps a stage
    edit(
        "pipedrive.yaml",
        "      - name: Demo Scheduled\n        canonical: meeting",
        "      - name: Demo Scheduled\n        canonical: qualified",
    )
    # Then the new set becomes current without a restart
    assert wait_for(lambda: meeting_in_pipedrive(holder) == StageKey.QUALIFIED)
    assert holder.current is not before
    assert (
        before.to_canonical("pipedrive", pipeline=None, stage=None, stage_name="Demo Scheduled") == "meeting"
    )


def test_broken_edit_keeps_last_good_set_and_logs_where(
    holder: MappingsHolder,
    edit: Edit,
    find_line: Callable[..., int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a running holder
    good = holder.current
    caplog.set_level(logging.ERROR, logger="test.mappings")
    holder.start()
    # When a file is broken
    path = edit(
        "hubspot.yaml", "        canonical: lost\n", "        canonical: lost\n        canonical: won\n"
    )
    # Then the failure is logged with file, line and key ...
    expected = f"{path}:{find_line(path, 'canonical: won', occurrence=2)}: pipelines[0].stages[6].canonical"
    assert wait_for(lambda: any(expected in r.getMessage() for r in caplog.records))
    # ... and the last good set stays current
    assert holder.current is good
    assert holder.current.to_canonical("hubspot", pipeline="default", stage="closedlost") == StageKey.LOST
    # When the file is fixed, the fix is picked up
    edit("hubspot.yaml", "        canonical: lost\n        canonical: won\n", "        canonical: lost\n")
    assert wait_for(lambda: holder.current is not good)
    assert holder.current.to_canonical("hubspot", pipeline="default", stage="closedlost") == StageKey.LOST


def test_reload_returns_whether_a_new_set_was_loaded(holder: MappingsHolder, edit: Edit) -> None:
    first = holder.current
    assert holder.reload() is True
    assert holder.current is not first
    second = holder.current
    edit("canonical.yaml", "reply_sla_days: 3", "reply_sla_days: three")
    assert holder.reload() is False
    assert holder.current is second


def test_new_source_file_is_picked_up(holder: MappingsHolder, mappings_dir: Path) -> None:
    holder.start()
    (mappings_dir / "zoho.yaml").write_text(
        "pipelines:\n  - name: Standard\n    stages:\n      - name: Closed Won\n        canonical: won\n",
        encoding="utf-8",
    )
    assert wait_for(lambda: "zoho" in holder.current.sources())
    assert holder.current.to_canonical("zoho", pipeline=None, stage=None, stage_name="closed won") == "won"


def test_sighup_reloads(holder: MappingsHolder, edit: Edit) -> None:
    previous = signal.getsignal(signal.SIGHUP)
    try:
        holder.install_sighup()
        edit("lagrowthmachine.yaml", "reply: contacted", "reply: qualified")
        # No polling thread is running: only the signal can trigger the reload.
        os.kill(os.getpid(), signal.SIGHUP)
        assert wait_for(lambda: holder.current.reply_stage("lagrowthmachine") == StageKey.QUALIFIED)
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_stop_ends_the_thread(holder: MappingsHolder) -> None:
    holder.start()
    holder.start()  # idempotent
    thread = holder._thread
    assert thread is not None and thread.is_alive()
    holder.stop()
    assert not thread.is_alive()


def test_reload_listeners_hear_good_reloads_only(holder: MappingsHolder, edit: Edit) -> None:
    # Given a listener (what re-applies held stages in a worker)
    heard: list[object] = []
    holder.on_reload(heard.append)
    # When a good edit is reloaded, then a broken one
    edit("pipedrive.yaml", "canonical: meeting", "canonical: qualified")
    assert holder.reload() is True
    edit("pipedrive.yaml", "canonical: qualified", "canonical: nonsense")
    assert holder.reload() is False
    # Then the listener heard the good set once, and not the broken edit
    assert heard == [holder.current]
    assert meeting_in_pipedrive(holder) == StageKey.QUALIFIED
