"""The crash window between storing a change and queueing its writes, made deterministic.

``SyncService.ingest_record`` stores the record (``observe`` -> ``upsert_record``) and queues the
routed writes (``route_observation`` -> ``enqueue_outbox``) in one unit of work, and the inbox
event is marked processed in the same one. Before, these were separate commits: a worker killed
between them left the new state stored with nothing queued, and the redelivered message saw no
change. Here the "kill" is an injected failure of the first outbox write (``mock.patch`` for an
injected fault, house rule 12): the store is rolled back with it, so the redelivery routes it.
"""

from __future__ import annotations

from unittest import mock

import pytest

from sync_worker.canonical import StageKey
from sync_worker.mappings import Mappings
from sync_worker.store import SyncStore
from tests.engine.fakes import T0, FakeClock
from tests.engine.world import World, deal


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs in this process."""


def test_a_change_stored_but_not_yet_routed_is_routed_on_redelivery(
    store: SyncStore, mappings: Mappings
) -> None:
    clock = FakeClock()
    world = World(store, mappings, clock)
    world.linked_pair(StageKey.CONTACTED)
    change = deal("pipedrive", "7", StageKey.MEETING, T0)
    # When the worker dies right after the record is stored, before its write is queued
    with mock.patch.object(SyncStore, "enqueue_outbox", side_effect=_Killed), pytest.raises(_Killed):
        world.service.ingest_record(change)
    assert world.due("hubspot") == []
    # And the message is redelivered to a new worker
    world.service.ingest_record(change)
    # Then the HubSpot write is queued
    due = world.due("hubspot")
    assert len(due) == 1 and due[0].payload["fields"]["stage"]["v"] == StageKey.MEETING.value


def test_without_a_crash_the_same_change_is_queued_once(store: SyncStore, mappings: Mappings) -> None:
    world = World(store, mappings, FakeClock())
    world.linked_pair(StageKey.CONTACTED)
    change = deal("pipedrive", "7", StageKey.MEETING, T0)
    world.service.ingest_record(change)
    world.service.ingest_record(change)  # a plain redelivery
    assert len(world.due("hubspot")) == 1
