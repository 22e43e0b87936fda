"""First-run safety: reply routes act only on replies newer than the route's start (or its
``since:``) unless routes.yaml says ``history: true``; a paused route routes nothing."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from sync_worker.mappings import load_mappings
from sync_worker.runtime import build_runtime
from sync_worker.store import SyncStore
from tests.engine.fakes import T0, FakeClock
from tests.engine.world import World, reply
from tests.runtime.test_commands import obj

ROOT = Path(__file__).resolve().parents[2]
REPLY_ROUTES = ("lgm-replies-to-hubspot", "lgm-replies-to-pipedrive")


def _mappings(tmp_path: Path, extra: dict[str, str]) -> Path:
    """The shipped mappings with ``key: value`` lines added to the named reply routes."""
    folder = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", folder)
    path = folder / "routes.yaml"
    text = path.read_text(encoding="utf-8")
    for name, line in extra.items():
        anchor = f"  - name: {name}\n"
        assert anchor in text
        text = text.replace(anchor, f"{anchor}    {line}\n", 1)
    path.write_text(text, encoding="utf-8")
    return folder


def _creates(world: World) -> dict[str, int]:
    return {target: len(world.due(target)) for target in ("hubspot", "pipedrive")}


def test_a_first_sync_ignores_replies_older_than_the_routes_start(store: SyncStore) -> None:
    # Given reply routes that started at T0 (the service's first run)
    world = World(store, load_mappings(ROOT / "mappings"), FakeClock())
    store.start_routes(REPLY_ROUTES, at=T0)
    # When the first pull brings a reply from a month ago, then a fresh one
    old = world.service.ingest_record(reply("L1", "old@example.com", T0 - timedelta(days=30)))
    # Then the old reply created nothing anywhere
    assert old.enqueued == 0 and _creates(world) == {"hubspot": 0, "pipedrive": 0}
    fresh = world.service.ingest_record(reply("L2", "new@example.com", T0 + timedelta(hours=1)))
    assert fresh.enqueued == 2 and _creates(world) == {"hubspot": 1, "pipedrive": 1}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"lgm-replies-to-hubspot": "since: 2024-01-01T00:00:00Z"}, {"hubspot": 1, "pipedrive": 0}),
        ({"lgm-replies-to-pipedrive": "history: true"}, {"hubspot": 0, "pipedrive": 1}),
    ],
    ids=["since", "history"],
)
def test_since_or_history_in_routes_yaml_opens_older_replies(
    store: SyncStore, tmp_path: Path, extra: dict[str, str], expected: dict[str, int]
) -> None:
    world = World(store, load_mappings(_mappings(tmp_path, extra)), FakeClock())
    store.start_routes(REPLY_ROUTES, at=T0)
    # A reply from before the routes' start (T0 is in mid-2024), after the `since`
    world.service.ingest_record(reply("L1", "ada@example.com", T0 - timedelta(days=30)))
    assert _creates(world) == expected


def test_a_paused_route_routes_nothing_until_resumed(store: SyncStore) -> None:
    world = World(store, load_mappings(ROOT / "mappings"), FakeClock())
    store.pause("route", "lgm-replies-to-pipedrive")
    world.service.ingest_record(reply("L1", "ada@example.com", T0))
    assert _creates(world) == {"hubspot": 1, "pipedrive": 0}
    store.resume("route", "lgm-replies-to-pipedrive")
    world.service.ingest_record(reply("L2", "bob@example.com", T0 + timedelta(minutes=1)))
    assert _creates(world) == {"hubspot": 2, "pipedrive": 1}


def test_the_runtime_records_each_routes_start_once(store: SyncStore, store_path: Path) -> None:
    settings = obj(store_path)["settings"]
    first = build_runtime(settings, watch_mappings=False)
    first.close()
    started = store.route_starts()
    assert set(REPLY_ROUTES) <= set(started)
    again = build_runtime(settings, watch_mappings=False)
    again.close()
    assert store.route_starts() == started
